"""What every benchmark's results file records about its run: the commit and the machine.

Benchmarks run as scripts (``python bench/NAME.py``), so this sibling module is on their
import path.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any


def commit() -> str:
    """The checkout's HEAD, as the results file's provenance."""
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    return done.stdout.strip()


def machine(load_before: float, **extra: Any) -> dict[str, Any]:
    """CPUs and the 1-minute load average before and now (a shared machine's context)."""
    return {
        "cpus": os.cpu_count(),
        "load_avg_1m_before": load_before,
        "load_avg_1m_after": os.getloadavg()[0],
        **extra,
    }
