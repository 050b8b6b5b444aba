"""Every Job the platform submits starts a command that exists, with options it accepts.

The containers' arguments are parsed by the real `relkd` click application (command path
resolved, then ``make_context``: unknown commands or options and missing required ones
fail), and a ``--config`` file from the training ConfigMap is validated by the command's
config class. Nothing is run.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

from ops.cli import app as relkd_app
from ops.jobs.launcher import _COMMANDS, RunKind, RunSpec, build_job
from ops.jobs.settings import REPO_ROOT, K8sSettings
from ops.jobs.validate import kustomizations, render, split_documents
from training.config_cli import load_config

# Where the Jobs' /etc/relkd files come from: the training ConfigMap's generator inputs.
CONFIG_MOUNT = Path("/etc/relkd")
CONFIG_SOURCES = REPO_ROOT / "k8s/training/base/config"
# The module torchrun (or `python -m`) starts -> the relkd command its __main__ runs.
MODULE_COMMANDS = {module: args for args, module in _COMMANDS.values() if module}


class CommandError(AssertionError):
    pass


def _entrypoint(dockerfile: Path) -> list[str]:
    [line] = [ln for ln in dockerfile.read_text().splitlines() if ln.startswith("ENTRYPOINT")]
    return json.loads(line.removeprefix("ENTRYPOINT"))


def relkd_args(container: dict[str, Any]) -> list[str]:
    """The `relkd` arguments a trainer container's command line amounts to."""
    command, args = container.get("command"), list(container.get("args") or [])
    if command is None:  # the trainer image's entrypoint
        entrypoint = _entrypoint(REPO_ROOT / "training/Dockerfile")
        if entrypoint != ["relkd"]:
            raise CommandError(f"trainer image entrypoint is {entrypoint}, not relkd")
        return args
    line = [*command, *args]
    if line[0] == "relkd":
        return line[1:]
    if line[0] in ("torchrun", "python") and "-m" in line:
        module = line[line.index("-m") + 1]
        if module not in MODULE_COMMANDS or importlib.util.find_spec(module) is None:
            raise CommandError(f"{module}: no such training entry module")
        return [*MODULE_COMMANDS[module], *line[line.index("-m") + 2 :]]
    raise CommandError(f"cannot tell what {line} runs")


def parse(args: Sequence[str]) -> Any:
    """The click context `relkd ARGS` would run with; raises CommandError if it cannot."""
    command: Any = typer.main.get_command(relkd_app)
    name, remaining, parent = "relkd", list(args), None
    try:
        # What TyperGroup.invoke does on the way to the command, without invoking anything.
        while isinstance(command, TyperGroup):
            if not remaining:
                raise CommandError(f"relkd {' '.join(args)}: names a group, not a command")
            parent = command.make_context(name, remaining, parent=parent)
            remaining = [*parent._protected_args, *parent.args]
            name, command, remaining = command.resolve_command(parent, remaining)
        ctx = command.make_context(name, remaining, parent=parent)
    except typer.TyperException as error:  # typer's (vendored) click usage errors
        raise CommandError(f"relkd {' '.join(args)}: {error}") from error
    config_class = getattr(command, "config_class", None)
    config_file = ctx.params.get("config") or ctx.params.get("file")
    if config_class is not None and config_file is not None:
        source = CONFIG_SOURCES / Path(config_file).relative_to(CONFIG_MOUNT)
        if not source.exists():
            raise CommandError(f"{config_file}: not a file of the training ConfigMap")
        try:
            load_config(config_class, source, ctx.params.get("set_") or [])
        except typer.BadParameter as error:
            raise CommandError(f"{config_file}: {error.format_message()}") from error
    return ctx


def _containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    if manifest["kind"] == "TrainJob":
        return [manifest["spec"]["trainer"]]
    spec = manifest["spec"]
    pod = (
        spec["jobTemplate"]["spec"]["template"]
        if manifest["kind"] == "CronJob"
        else spec["template"]
    )
    return pod["spec"]["containers"]


@pytest.fixture(scope="module")
def rendered_jobs(k8s_settings: K8sSettings) -> list[tuple[str, dict[str, Any]]]:
    jobs = []
    for directory in kustomizations(REPO_ROOT / "k8s"):
        for doc in split_documents(render(directory, k8s_settings.kubectl)):
            if doc["kind"] in ("Job", "CronJob", "TrainJob"):
                name = f"{directory.relative_to(REPO_ROOT).as_posix()}:{doc['metadata']['name']}"
                jobs.append((name, doc))
    return jobs


def test_every_rendered_job_runs_an_existing_command(rendered_jobs) -> None:
    names = {name for name, _ in rendered_jobs}
    assert {
        "k8s/training/base:relkd-teacher-train",
        "k8s/training/base:relkd-teacher-label",
        "k8s/training/base:relkd-student-train",
        "k8s/training/prod-gpu:relkd-teacher-label",
        "k8s/training/kubeflow:relkd-student-train",
    } <= names
    commands = {}
    for name, manifest in rendered_jobs:
        for container in _containers(manifest):
            ctx = parse(relkd_args(container))
            commands[name] = ctx.command_path
    assert commands["k8s/training/base:relkd-teacher-label"] == "relkd teacher label"
    assert commands["k8s/training/base:relkd-teacher-train"] == "relkd teacher train"
    assert commands["k8s/training/kubeflow:relkd-student-train"] == "relkd student train"


@pytest.mark.parametrize("kind", list(RunKind))
def test_every_launcher_run_kind_runs_an_existing_command(kind: RunKind) -> None:
    specs = [RunSpec(kind=kind, name="run-1"), RunSpec(kind=kind, name="run-1", gpus=2)]
    if _COMMANDS[kind][1] is not None:
        specs.append(RunSpec(kind=kind, name="run-1", nodes=3, gpus=4))
    for spec in specs:
        [container] = build_job(spec)["spec"]["template"]["spec"]["containers"]
        ctx = parse(relkd_args(container))
        assert ctx.command_path == "relkd " + " ".join(_COMMANDS[kind][0])


def test_the_check_fails_on_commands_that_would_not_start() -> None:
    # What the teacher-label Job ran before it had --config: exit code 2 at start-up.
    with pytest.raises(CommandError, match="No such option: --split"):
        parse(["teacher", "label", "--config", "/etc/relkd/teacher-label.yaml", "--split", "x"])
    with pytest.raises(CommandError, match="No such command"):
        parse(["teacher", "distill", "--config", "/etc/relkd/teacher.yaml"])
    with pytest.raises(CommandError, match="names a group"):
        parse(["teacher"])
    with pytest.raises(CommandError, match="not a file of the training ConfigMap"):
        parse(["student", "train", "--config", "/etc/relkd/missing.yaml"])
    # A ConfigMap file the command's config class rejects.
    with pytest.raises(CommandError, match="checkpoint: Field required"):
        parse(["teacher", "label", "--config", "/etc/relkd/student.yaml"])
    with pytest.raises(CommandError, match="no such training entry module"):
        relkd_args({"command": ["torchrun"], "args": ["-m", "training.teacher.missing"]})
    assert re.fullmatch(r"relkd student train", parse(["student", "train"]).command_path)
