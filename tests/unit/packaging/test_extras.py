"""Each image installs only its role's extra, and a heavy import cannot creep back.

The import tree of each image's code (ops/images.py), read with `ast`, imports
inside functions included, must stay within the distributions its extra installs:
pyproject.toml's requirements of that extra, and everything those require in turn
(the installed packages' Requires-Dist). Nothing is imported or installed, so this
runs in seconds.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pytest
from import_tree import REPO_ROOT, Reach, SourceTree, reach
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ops.images import IMAGES, RUN_BY_TRITON, Image, declared_requirements

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
TREE = SourceTree()


def installed_closure(roots: Iterable[Requirement]) -> set[str]:
    """The distributions ``roots`` install: themselves and, through the installed
    metadata's Requires-Dist (markers evaluated, requested extras included), all that
    they require."""
    found: set[str] = set()
    pending = [(canonicalize_name(r.name), frozenset(r.extras)) for r in roots]
    expanded: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        found.add(name)
        if (name, extras) in expanded:
            continue
        expanded.add((name, extras))
        try:
            texts = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: counted, its own requirements unknown
        for text in texts:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in {"", *extras}):
                pending.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return found


@cache
def installed(extra: str | None) -> frozenset[str]:
    """The distributions an install of the project with ``extra`` contains."""
    return frozenset(installed_closure(declared_requirements(extra)))


@cache
def module_distributions() -> dict[str, list[str]]:
    return {
        top: [canonicalize_name(d) for d in dists]
        for top, dists in importlib.metadata.packages_distributions().items()
    }


def image_reach(image: Image) -> Reach:
    full = [module for source in image.sources for module in TREE.modules_under(source)]
    return reach(TREE, full, [image.entrypoint], skip=RUN_BY_TRITON)


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_image_imports_only_what_its_extra_installs(image: Image) -> None:
    contents = installed(image.extra)
    found = image_reach(image)
    assert image.entrypoint in found.modules
    missing = []
    for top in sorted(found.third_party):
        candidates = module_distributions().get(top)
        if not candidates:
            missing.append(f"{top}: no installed distribution provides it")
        elif not contents & set(candidates):
            chain = " -> ".join(found.chain(top))
            missing.append(f"{top} ({'/'.join(candidates)}), imported by {chain}")
    assert not missing, f"[{image.extra}] does not install what {image.name} imports:\n" + (
        "\n".join(missing)
    )


@pytest.mark.parametrize("image", [i for i in IMAGES if i.never], ids=lambda image: image.name)
def test_image_never_contains(image: Image) -> None:
    never = {canonicalize_name(name) for name in image.never}
    contents = installed(image.extra)
    assert not contents & never, f"[{image.extra}] installs {sorted(contents & never)}"
    found = image_reach(image)
    reached = {
        top: chain
        for top in found.third_party
        if set(module_distributions().get(top, ())) & never
        for chain in [" -> ".join(found.chain(top))]
    }
    assert not reached, f"{image.name}'s code imports {reached}"


def test_student_inference_never_reaches_torch() -> None:
    (image,) = [i for i in IMAGES if i.name == "student-inference"]
    found = image_reach(image)
    assert "services.student_inference.backends" in found.modules
    assert "tritonclient" in found.third_party
    assert "torch" not in found.third_party, " -> ".join(found.chain("torch"))
    assert "torch" not in installed(image.extra)


def test_imports_inside_functions_count_and_type_checking_ones_do_not(tmp_path: Path) -> None:
    package = tmp_path / "services" / "svc"
    package.mkdir(parents=True)
    (tmp_path / "services" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "from . import b\n"
        "if TYPE_CHECKING:\n    import pandas\n"
        "def load():\n    from services.svc.c import model\n"
    )
    (package / "b.py").write_text("import json\n")
    (package / "c.py").write_text("def model():\n    import torch\n")
    tree = SourceTree(root=tmp_path)

    everything = reach(tree, ["services.svc.a"])
    assert set(everything.third_party) == {"numpy", "torch"}
    assert everything.chain("torch") == ["services.svc.a", "services.svc.c", "torch"]
    at_import = reach(tree, [], ["services.svc.a"])
    assert set(at_import.third_party) == {"numpy"}
    assert "services.svc.b" in at_import.modules


def test_extras_resolve_through_the_project_and_installed_metadata() -> None:
    inference = installed("inference")
    # tritonclient[grpc] brings grpcio through its own extra; the base brings pydantic's
    # pydantic-core through Requires-Dist.
    assert {"tritonclient", "grpcio", "pydantic-core", "onnxruntime"} <= inference
    train = installed("train")
    # [train] names the project's own extras.
    assert {"torch", "peft", "faiss-cpu", "tritonclient", "matplotlib"} <= train
    assert "kserve" not in train


def test_dev_installs_every_extra_and_the_design_card_packages() -> None:
    dev = installed("dev")
    for extra in PROJECT["optional-dependencies"]:
        assert installed(extra) <= dev, extra
    assert {
        "grpcio",
        "protobuf",
        "kserve",
        "torch",
        "transformers",
        "kafka-python",
        "tritonclient",
    } <= dev


def test_torch_is_pinned_exactly_wherever_it_is_declared() -> None:
    declared = [
        Requirement(text)
        for texts in [PROJECT["dependencies"], *PROJECT["optional-dependencies"].values()]
        for text in texts
    ]
    torch = [r for r in declared if canonicalize_name(r.name) == "torch"]
    assert torch
    assert {str(r.specifier) for r in torch} == {"==2.13.0"}
