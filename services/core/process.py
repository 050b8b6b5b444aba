"""Child processes the platform starts itself: brokers, services, Triton.

Each runs in its own session (process group): a Ctrl-C in the terminal reaches only
the parent, which then stops its children in order. A stop asks the child itself
(SIGTERM to its PID, so Triton can shut its Python-backend stubs down cleanly) and,
after the grace period, kills the whole group, forks included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def spawn(
    command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a new session, stdout and stderr appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            start_new_session=True,
        )


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child if it still runs (a graceful stop request)."""
    if process.poll() is None:
        process.terminate()


def wait_or_kill(process: subprocess.Popen[bytes], grace_s: float) -> int:
    """Wait up to ``grace_s`` for the exit, then SIGKILL the group; returns the exit code."""
    try:
        return process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


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
