"""Triton paused (SIGSTOP/SIGCONT) and killed (SIGKILL) under Score load, supervised as
`relkd up` supervises it (`Stack.supervise_once`): Score fails fast while Triton is
gone, answers again after it, a killed Triton is restarted on the same ports, and its
Python-backend stubs do not outlive it."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
import pytest
from relevance.v1 import student_inference_pb2, student_inference_pb2_grpc
from service_processes import start_service, stop_service

from ops.stack import Stack
from services.core.broker import free_port
from services.core.settings import Settings
from services.student_inference.backends import triton_env
from services.student_inference.triton_runtime import TritonServer
from training.export.exporter import export_student
from training.export.triton_repo import write_cpu_repository

MODEL_NAME = "ce"
# The caller's deadline; Score's own wait for Triton is shorter (RELKD_TRITON_TIMEOUT_S).
CALL_TIMEOUT_S = 3.0
# Codes that say "not now, try again": what a caller may see while Triton is gone.
FAIL_FAST = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
RECOVERY_BOUND_S = 30.0


@dataclass
class ScoreLoad:
    """Callers scoring in a loop; every call's outcome is recorded under the phase then."""

    address: str
    callers: int = 4
    phase: str = "before"
    outcomes: list[tuple[str, grpc.StatusCode, float]] = field(default_factory=list)
    last_failure: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> ScoreLoad:
        for _ in range(self.callers):
            thread = threading.Thread(target=self._call_in_a_loop, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CALL_TIMEOUT_S + 5)

    def _call_in_a_loop(self) -> None:
        request = student_inference_pb2.ScoreRequest(
            query="grey sofa",
            products=[{"product_id": f"p{i}", "title": f"grey sofa {i}"} for i in range(8)],
        )
        with grpc.insecure_channel(self.address) as channel:
            stub = student_inference_pb2_grpc.StudentInferenceStub(channel)
            while not self._stop.is_set():
                phase, started = self.phase, time.monotonic()
                try:
                    stub.Score(request, timeout=CALL_TIMEOUT_S)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    code = exc.code()
                    self.last_failure = f"{code.name}: {exc.details()}"
                self.outcomes.append((phase, code, time.monotonic() - started))
                if code != grpc.StatusCode.OK:
                    time.sleep(0.05)  # a caller backs off a little on failure

    def codes(self, phase: str) -> Counter[grpc.StatusCode]:
        return Counter(code for p, code, _ in list(self.outcomes) if p == phase)

    def wait_ok(
        self, phase: str, timeout_s: float, context: Callable[[], object] = lambda: ""
    ) -> float:
        """Seconds from now until a call that started in `phase` answers OK."""
        started = time.monotonic()
        while not self.codes(phase)[grpc.StatusCode.OK]:
            assert time.monotonic() - started < timeout_s, (
                f"Score not OK within {timeout_s}s of {phase}: {self.codes(phase)}, "
                f"last: {self.last_failure} {context()}"
            )
            time.sleep(0.1)
        return time.monotonic() - started


@pytest.fixture
def triton(
    triton_install: object, cross_encoder_checkpoint: Path, tmp_path: Path
) -> Iterator[TritonServer]:
    """Triton serving the tiny cross-encoder through the Python backend (stubs and all)."""
    export = tmp_path / "export"
    export_student(cross_encoder_checkpoint, export, int8=False)
    repository = tmp_path / "repo"
    write_cpu_repository(export, repository, model_name=MODEL_NAME)
    with TritonServer(repository, model_control="explicit", load_models=(MODEL_NAME,)) as server:
        yield server


def _supervise(stack: Stack, stop: threading.Event, errors: list[BaseException]) -> None:
    """What `relkd up` does between its other work: `supervise_once` every half second."""
    try:
        while not stop.wait(0.5):
            stack.supervise_once()
    except BaseException as exc:
        errors.append(exc)


def _stubs(triton: TritonServer) -> list[psutil.Process]:
    assert triton.pid is not None
    return psutil.Process(triton.pid).children(recursive=True)


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=10)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@dataclass
class Supervised:
    triton: TritonServer
    stack: Stack
    load: ScoreLoad
    errors: list[BaseException]


@pytest.fixture
def supervised(triton: TritonServer, tmp_path: Path) -> Iterator[Supervised]:
    """Triton supervised as `relkd up` does it, behind a real student-inference process
    under Score load that answers OK at first."""
    stack = Stack(
        "unused:0", Settings(data_dir=tmp_path), {"RELKD_STUDENT_MODEL": MODEL_NAME}, triton=triton
    )
    port = free_port()
    service = start_service(
        "student-inference",
        port,
        {**triton_env(triton, MODEL_NAME), "RELKD_TRITON_TIMEOUT_S": "1.0"},
    )
    stop_supervising = threading.Event()
    errors: list[BaseException] = []
    supervisor = threading.Thread(
        target=_supervise, args=(stack, stop_supervising, errors), daemon=True
    )
    supervisor.start()
    try:
        with ScoreLoad(f"127.0.0.1:{port}") as load:
            load.wait_ok("before", 30)
            yield Supervised(triton, stack, load, errors)
    finally:
        stop_supervising.set()
        supervisor.join(30)
        try:
            assert stop_service(service) == 0
        finally:
            if service.poll() is None:
                os.killpg(service.pid, signal.SIGKILL)
                service.wait()
    # No call, in any phase, failed with UNKNOWN or INTERNAL, and none outlasted its deadline.
    assert {code for _, code, _ in load.outcomes} <= FAIL_FAST | {grpc.StatusCode.OK}
    assert max(elapsed for _, _, elapsed in load.outcomes) < CALL_TIMEOUT_S + 1
    assert not errors


def _failed_fast(load: ScoreLoad, phase: str) -> None:
    codes = load.codes(phase)
    assert codes.keys() - {grpc.StatusCode.OK} <= FAIL_FAST, f"{phase}: {codes}"
    assert sum(codes.values()) - codes[grpc.StatusCode.OK] > 0, f"{phase}: no call failed"


def test_triton_paused_under_load_fails_fast_and_recovers(supervised: Supervised) -> None:
    triton, load = supervised.triton, supervised.load
    # Paused: Triton accepts connections but answers nothing.
    paused_pid = triton.pid
    assert paused_pid is not None
    os.kill(paused_pid, signal.SIGSTOP)
    load.phase = "paused"
    try:
        time.sleep(4)
    finally:
        os.kill(paused_pid, signal.SIGCONT)
    load.phase = "resumed"
    load.wait_ok("resumed", RECOVERY_BOUND_S)
    _failed_fast(load, "paused")
    # A paused Triton is alive: the supervisor left it alone.
    assert (triton.pid, supervised.stack.triton_restarts) == (paused_pid, 0)


def test_triton_killed_under_load_is_restarted_and_scoring_resumes(
    supervised: Supervised,
) -> None:
    triton, stack, load = supervised.triton, supervised.stack, supervised.load
    stubs = _stubs(triton)
    assert stubs, "the Python-backend model runs in a stub process"
    killed_pid, grpc_port = triton.pid, triton.grpc_port
    assert killed_pid is not None
    os.kill(killed_pid, signal.SIGKILL)
    load.phase = "killed"
    load.wait_ok("killed", RECOVERY_BOUND_S, lambda: (stack.triton_restarts, supervised.errors))
    # The supervisor restarted it on the same ports; the old stubs are gone.
    assert stack.triton_restarts == 1
    assert triton.pid != killed_pid and triton.grpc_port == grpc_port
    assert not _alive(stubs), "the killed Triton's stubs outlived it"
    _failed_fast(load, "killed")
