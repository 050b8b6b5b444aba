"""Installed size of each image's Python environment, measured without Docker.

    python bench/bench_image_sizes.py [--image NAME ...] [--out FILE]

For each image of ops/images.py: a fresh venv (``python -m venv``), torch==2.13.0
first where the image's extra declares torch (here the CPU wheel; the CUDA images
install the CUDA wheel, several GB more), then the project with the image's extra
from a copy of exactly what the Dockerfiles COPY. Records the venv's size (``du``),
its largest packages, how many distributions it holds, whether torch is among them,
and whether every module the image runs imports in it (a clean-environment check of
tests/unit/packaging's static one). Each venv is deleted after it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging.utils import canonicalize_name
from rich.console import Console
from rich.table import Table

from ops.images import IMAGES, REPO_ROOT, RUN_BY_TRITON, Image, declared_requirements

# What the Dockerfiles COPY into the build context before `pip install`.
BUILD_CONTEXT = ("pyproject.toml", "README.md", "proto", "contracts", "ops", "services", "training")
MIB = 1024 * 1024
# The venv's own installed copy must be what imports, not this checkout; no model hub.
VENV_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}

# Run inside the venv: import each module; print the failures as JSON.
IMPORT_CHECK = """
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as error:
        failed[name] = f"{type(error).__name__}: {error}"
print(json.dumps(failed))
"""


def disk_bytes(path: Path) -> int:
    """What `du -sb` reports: apparent size of every file below ``path``."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python3*/site-packages")
    return found


def runs(image: Image) -> list[str]:
    """The modules the image runs: its entry point and every module of its sources."""
    modules = {image.entrypoint}
    for source in image.sources:
        base = REPO_ROOT.joinpath(*source.split("."))
        for file in base.rglob("*.py"):
            name = ".".join((source, *file.relative_to(base).with_suffix("").parts))
            modules.add(name.removesuffix(".__init__"))
    return sorted(
        m for m in modules if not any(m == s or m.startswith(f"{s}.") for s in RUN_BY_TRITON)
    )


def pip(venv: Path, *args: str) -> None:
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", *args], check=True, env=VENV_ENV)


def measure(image: Image, work: Path, console: Console) -> dict:
    context = work / "context"
    context.mkdir()
    for name in BUILD_CONTEXT:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / name)
    venv = work / "venv"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    empty_bytes = disk_bytes(venv)
    torch = [r for r in declared_requirements(image.extra) if r.name == "torch"]
    if torch:
        pip(venv, f"torch{torch[0].specifier}")
    target = f"{context}/[{image.extra}]" if image.extra else str(context)
    pip(venv, target)
    install_s = time.perf_counter() - started

    packages = site_packages(venv)
    sizes = sorted(
        ((entry.name, disk_bytes(entry)) for entry in packages.iterdir() if entry.is_dir()),
        key=lambda item: -item[1],
    )
    freeze = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        env=VENV_ENV,
    )
    distributions = {canonicalize_name(d["name"]): d["version"] for d in json.loads(freeze.stdout)}
    modules = runs(image)
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", IMPORT_CHECK, *modules],
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
        env=VENV_ENV,
    )
    failed = json.loads(check.stdout.strip().splitlines()[-1])
    size = disk_bytes(venv)
    console.print(f"{image.name}: {size / MIB:.0f} MiB, {len(distributions)} distributions")
    return {
        "dockerfile": image.dockerfile,
        "extra": image.extra,
        "venv_mib": round(size / MIB, 1),
        "packages_mib": round((size - empty_bytes) / MIB, 1),
        "distributions": len(distributions),
        "torch": distributions.get("torch"),
        "never_installed": sorted({canonicalize_name(n) for n in image.never} & set(distributions)),
        "largest_mib": {name: round(n / MIB, 1) for name, n in sizes[:8]},
        "modules_imported": len(modules) - len(failed),
        "import_failures": failed,
        "install_s": round(install_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", action="append", choices=[i.name for i in IMAGES])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/image_sizes.json")
    args = parser.parse_args()
    console = Console()
    chosen = [i for i in IMAGES if not args.image or i.name in args.image]
    results = {}
    for image in chosen:
        with tempfile.TemporaryDirectory(prefix=f"relkd-size-{image.name}-") as work:
            results[image.name] = measure(image, Path(work), console)

    table = Table("image", "extra", "venv MiB", "distributions", "torch", "largest")
    for name, r in results.items():
        largest = ", ".join(f"{k} {v:.0f}" for k, v in list(r["largest_mib"].items())[:3])
        table.add_row(
            name, r["extra"], f"{r['venv_mib']:.0f}", str(r["distributions"]),
            r["torch"] or "-", largest,
        )  # fmt: skip
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "conditions": {
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "measure": "du -sb of a fresh venv after pip install (no pip cache inside)",
                    "torch_wheel": "torch==2.13.0 CPU build where the extra declares torch; "
                    "the CUDA images install the CUDA build instead",
                },
                "images": results,
            },
            indent=2,
        )
        + "\n"
    )
    bad = {n: r["import_failures"] or r["never_installed"] for n, r in results.items()}
    if any(bad.values()):
        raise SystemExit(f"images that would not run as built: {bad}")


if __name__ == "__main__":
    main()
