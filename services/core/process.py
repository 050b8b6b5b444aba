"""Child processes the platform starts itself: brokers, services, Triton.

Each runs in its own session (process group): a Ctrl-C in the terminal reaches only
the parent, which then stops its children in order. A stop asks the child itself
(SIGTERM to its PID, so Triton can shut its Python-backend stubs down cleanly) and,
after the grace period, kills the whole group, forks included; once the child is gone
its group is swept too, so nothing it forked outlives it.

A child also dies with its parent, even a SIGKILLed one: the kernel sends it SIGTERM
when the parent dies (``PR_SET_PDEATHSIG``), so `relkd up` or a Triton runtime that is
killed leaves no orphan holding ports.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
# Resolved before any fork: the child only calls it (a pre-exec hook must not load
# libraries or take locks, since the parent may have other threads).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def die_with_parent(parent_pid: int) -> None:
    """Run first thing in a child: the kernel SIGTERMs it when ``parent_pid`` dies, and
    it exits at once if that parent is already gone (it died before this ran)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def spawn(
    command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a new session, stdout and stderr appended to ``log_path``.

    The child gets SIGTERM when this process dies, however it dies. The death signal
    follows the thread that spawned the child: spawn from a thread that lives as long
    as the child should (the main thread).
    """
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever is left of the child's process group (e.g. forks of a dead child)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child if it still runs (a graceful stop request)."""
    if process.poll() is None:
        process.terminate()


def wait_or_kill(process: subprocess.Popen[bytes], grace_s: float) -> int:
    """Wait up to ``grace_s`` for the exit, then SIGKILL the group; returns the exit code.

    The group is swept either way: a child that exited may leave forks behind.
    """
    try:
        code = process.wait(grace_s)
    except subprocess.TimeoutExpired:
        kill_group(process)
        return process.wait()
    kill_group(process)
    return code


def stop(process: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGTERM, then SIGKILL after ``grace_s``; returns the exit code."""
    terminate(process)
    return wait_or_kill(process, grace_s)


def log_tail(log_path: Path | None, chars: int = 2000) -> str:
    if log_path is None or not log_path.exists():
        return ""
    return log_path.read_text(errors="replace")[-chars:]


def wait_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    what: str,
    timeout_s: float,
    log_path: Path | None = None,
    poll_s: float = 0.2,
) -> None:
    """Poll ``ready()`` until true; raise with the log's tail if the process exits or time runs out.

    The caller stops the process on failure: only it knows the grace period.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {process.returncode} before it was ready; "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
        if ready():
            return
        time.sleep(poll_s)
    raise TimeoutError(
        f"{what} not ready within {timeout_s} s; log {log_path}:\n{log_tail(log_path)}"
    )
