from __future__ import annotations

import sys
from pathlib import Path

import pytest

from services.core import process


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_wait_ready_reports_an_early_exit_with_the_log_tail(tmp_path: Path):
    log = tmp_path / "child.log"
    child = process.spawn(_python("print('bad config: port'); raise SystemExit(3)"), log)
    with pytest.raises(RuntimeError, match=r"exited with code 3(.|\n)*bad config: port"):
        process.wait_ready(child, lambda: False, what="child", timeout_s=30, log_path=log)


def test_wait_ready_times_out_naming_what_it_waited_for(tmp_path: Path):
    child = process.spawn(_python("import time; time.sleep(60)"), tmp_path / "child.log")
    try:
        with pytest.raises(TimeoutError, match=r"sleeper not ready within 0\.5 s"):
            process.wait_ready(child, lambda: False, what="sleeper", timeout_s=0.5)
    finally:
        process.stop(child, grace_s=5)
    assert child.poll() is not None


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path):
    log = tmp_path / "child.log"
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('armed', flush=True); time.sleep(60)"
    )
    child = process.spawn(_python(code), log)
    process.wait_ready(child, lambda: "armed" in log.read_text(), what="child", timeout_s=30)
    assert process.stop(child, grace_s=0.5) == -9  # SIGKILL after the grace period


def test_stop_lets_a_cooperative_child_exit_cleanly(tmp_path: Path):
    log = tmp_path / "child.log"
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "print('armed', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = process.spawn(_python(code), log)
    process.wait_ready(child, lambda: "armed" in log.read_text(), what="child", timeout_s=30)
    assert process.stop(child, grace_s=10) == 0


def test_a_child_dies_with_its_sigkilled_parent(tmp_path: Path):
    """`relkd up` or a Triton runtime killed with SIGKILL leaves no orphan behind."""
    import os
    import signal
    import subprocess

    import psutil

    parent_code = (
        "import sys, time; from pathlib import Path; from services.core import process\n"
        f"child = process.spawn([sys.executable, '-c', 'import time; time.sleep(60)'], "
        f"Path({str(tmp_path / 'child.log')!r}))\n"
        "print(child.pid, flush=True); time.sleep(60)\n"
    )
    parent = subprocess.Popen(_python(parent_code), stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(parent.stdout.readline()))
    assert child.is_running()
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    psutil.wait_procs([child], timeout=10)
    assert not child.is_running()


def test_stop_sweeps_what_the_child_forked(tmp_path: Path):
    import psutil

    log = tmp_path / "child.log"
    code = (
        "import os, subprocess, sys, time\n"
        "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(grandchild.pid, flush=True); time.sleep(60)\n"
    )
    child = process.spawn(_python(code), log)
    process.wait_ready(child, lambda: log.read_text().strip() != "", what="child", timeout_s=30)
    grandchild = psutil.Process(int(log.read_text().split()[0]))
    process.stop(child, grace_s=5)
    psutil.wait_procs([grandchild], timeout=10)
    assert not grandchild.is_running()
