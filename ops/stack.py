"""The embedded stack: a broker and the services as supervised processes.

`relkd serve NAME` runs one service in the foreground (what a container runs);
`relkd up` runs them all on one machine, each in its own process, restarting a
crashed one, Triton included (a bounded number of times), and stopping all of them,
by PID, on Ctrl-C/SIGTERM, even one that arrives while they are still starting.
Every child dies with `relkd up`, even a SIGKILLed one (see services.core.process).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from services.core import process
from services.core.broker import kafka_for_stack
from services.core.grpc_security import client_channel
from services.core.logging import configure_logging
from services.core.settings import Settings, get_settings
from services.serve import SERVICES, ServiceSpec

if TYPE_CHECKING:
    from services.student_inference.triton_runtime import TritonServer

log = logging.getLogger(__name__)


def health_status(
    address: str, service: str = "", timeout_s: float = 1.0, settings: Settings | None = None
) -> str:
    """The grpc.health.v1 status name of `service` at `address`, or the RPC error's code name.

    The channel is secured as `settings` (default: the environment's) say.
    """
    with client_channel(address, settings or get_settings()) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def reflected_services(address: str) -> list[str]:
    """Service names the server at `address` lists through gRPC reflection."""
    with client_channel(address, get_settings()) as channel:
        return list(ProtoReflectionDescriptorDatabase(channel).get_services())


class _Child:
    def __init__(self, spec: ServiceSpec, env: Mapping[str, str], log_path: Path) -> None:
        self.spec = spec
        self.env = dict(env)
        self.log_path = log_path
        self.restarts = 0
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "services.serve", self.spec.name]
        return process.spawn(command, self.log_path, self.env)

    def respawn(self, env: Mapping[str, str] | None = None) -> None:
        self.restarts += 1
        self.env.update(env or {})
        self.process = self._spawn()


class Stack:
    """The services as child processes sharing one Kafka cluster."""

    def __init__(
        self,
        bootstrap: str,
        settings: Settings,
        extra_env: Mapping[str, str] | None = None,
        max_restarts: int = 3,
        triton: TritonServer | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.triton = triton
        self.triton_restarts = 0
        # The student model Triton serves, and its version directories when last loaded.
        self.student_model = (extra_env or {}).get("RELKD_STUDENT_MODEL") if triton else None
        self._student_versions = self._versions()
        self.settings = settings
        self.max_restarts = max_restarts
        self.log_dir = settings.data_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            # The label store lives under the data dir unless placed elsewhere.
            "RELKD_LABEL_STORE_DIR": str(settings.data_dir / "label-store"),
            **os.environ,
            **(extra_env or {}),
            "RELKD_KAFKA_BOOTSTRAP": bootstrap,
        }
        self.children: dict[str, _Child] = {}

    def address(self, name: str) -> str:
        return f"{self.settings.grpc_host}:{SERVICES[name].port(self.settings)}"

    def start(self, timeout_s: float = 20.0) -> None:
        for spec in SERVICES.values():
            self.children[spec.name] = _Child(spec, self.env, self.log_dir / f"{spec.name}.log")
        self.wait_serving(timeout_s)

    def roll(self, name: str, env: Mapping[str, str], timeout_s: float = 60.0) -> None:
        """Restarts one service with new settings (e.g. a new model) and waits until SERVING."""
        child = self.children[name]
        process.stop(child.process, self.settings.grpc_grace_s + 5)
        child.respawn(env)
        child.restarts = 0
        self.wait_serving(timeout_s, [name])

    def wait_serving(self, timeout_s: float, names: list[str] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(names or self.children)
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                child = self.children[name]
                if child.process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with code {child.process.returncode}; see {child.log_path}"
                    )
                if health_status(self.address(name), child.spec.grpc_service) == "SERVING":
                    pending.discard(name)
            time.sleep(0.2)
        if pending:
            raise TimeoutError(f"not SERVING after {timeout_s}s: {', '.join(sorted(pending))}")

    def _versions(self) -> frozenset[str]:
        if self.triton is None or not self.student_model:
            return frozenset()
        folder = self.triton.model_repository / self.student_model
        return frozenset(p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def reload_new_student(self) -> bool:
        """Loads the student again when a rollout added a version to its repository
        (`relkd student triton-repo` into the same directory): Triton switches to the
        latest version and student-inference follows it, with no restart."""
        versions = self._versions()
        if versions == self._student_versions:
            return False
        assert self.triton is not None and self.student_model
        log.info("new student version", extra={"versions": sorted(versions, key=int)})
        self.triton.load_model(self.student_model)
        self._student_versions = versions
        return True

    def supervise_once(self) -> None:
        """Restarts children that died, Triton included, up to `max_restarts` each, and
        loads a student version a rollout added."""
        self.reload_new_student()
        if self.triton is not None and not self.triton.is_running():
            if self.triton_restarts >= self.max_restarts:
                raise RuntimeError("tritonserver keeps exiting")
            log.warning("restarting tritonserver", extra={"restarts": self.triton_restarts})
            self.triton_restarts += 1
            # Same ports: student-inference reconnects without a restart of its own.
            self.triton.restart()
        for name, child in self.children.items():
            code = child.process.poll()
            if code is None:
                continue
            if child.restarts >= self.max_restarts:
                raise RuntimeError(f"{name} keeps exiting (code {code}); see {child.log_path}")
            log.warning("restarting service", extra={"service": name, "code": code})
            child.respawn()

    def stop(self) -> None:
        # All at once, then wait: the services drain in parallel.
        for child in self.children.values():
            process.terminate(child.process)
        for child in self.children.values():
            process.wait_or_kill(child.process, self.settings.grpc_grace_s + 5)
        self.children.clear()


@contextlib.contextmanager
def running_stack(
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = 20.0,
    triton_repository: Path | None = None,
) -> Iterator[Stack]:
    """Broker (unless RELKD_KAFKA_BOOTSTRAP is set), Triton serving `triton_repository`
    when given, and the services; all torn down on exit."""
    settings = get_settings()
    env = dict(extra_env or {})
    with contextlib.ExitStack() as exits:
        bootstrap = exits.enter_context(kafka_for_stack())
        triton = None
        if triton_repository is not None:
            triton, triton_env = exits.enter_context(_triton(triton_repository))
            env.update(triton_env)
        stack = Stack(bootstrap, settings, env, triton=triton)
        exits.callback(stack.stop)
        stack.start(timeout_s)
        yield stack


@contextlib.contextmanager
def _triton(repository: Path) -> Iterator[tuple[TritonServer, dict[str, str]]]:
    """A real Triton serving the student of `repository`, and student-inference's env."""
    from services.student_inference.backends import TritonBackendSettings, triton_env
    from services.student_inference.triton_runtime import TritonServer

    model = TritonBackendSettings().student_model
    models = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").exists())
    if model not in models:
        if len(models) != 1:
            raise ValueError(
                f"student_model: {model!r} is not in {repository} (models: {models}); "
                "set RELKD_STUDENT_MODEL"
            )
        model = models[0]
    with TritonServer(repository, model_control="explicit", load_models=(model,)) as server:
        yield server, triton_env(server, model)


def up_command(
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every service to be SERVING.")
    ] = 20.0,
    triton_repository: Annotated[
        Path | None,
        typer.Option(
            help="Serve the student of this Triton model repository through a local Triton "
            "[default: the newest under RELKD_DATA_DIR, e.g. from `relkd demo`]."
        ),
    ] = None,
    teacher: Annotated[
        Path | None,
        typer.Option(
            help="Teacher checkpoint teacher-labeling loads [default: RELKD_TEACHER_CHECKPOINT, "
            "else the newest under RELKD_DATA_DIR]."
        ),
    ] = None,
) -> None:
    """Start the broker, Triton and the services, serving the newest trained teacher and
    student under RELKD_DATA_DIR unless told otherwise; Ctrl-C stops all."""
    from ops.served_models import MAKE_STUDENT, MAKE_TEACHER, discover

    # First: a stop request while things are still starting must stop what started.
    stop_on_signal()
    settings = get_settings()
    configure_logging("relkd-up", settings.log_level)
    started = time.monotonic()
    found = discover(settings.data_dir)
    teacher = teacher or _env_path("RELKD_TEACHER_CHECKPOINT") or found.teacher
    triton_repository = triton_repository or found.triton_repository
    env = {"RELKD_TEACHER_CHECKPOINT": str(teacher)} if teacher else {}
    try:
        with running_stack(
            extra_env=env, timeout_s=timeout, triton_repository=triton_repository
        ) as stack:
            typer.echo(f"kafka               {stack.bootstrap}")
            if "RELKD_TRITON_URL" in stack.env:
                typer.echo(f"triton              {stack.env['RELKD_TRITON_URL']}  READY")
            typer.echo(
                f"teacher             {teacher}"
                if teacher
                else f"teacher             none under {settings.data_dir}: {MAKE_TEACHER} makes one"
            )
            typer.echo(
                f"student             {triton_repository}"
                if triton_repository
                else f"student             none under {settings.data_dir}: {MAKE_STUDENT} makes one"
            )
            for name in SERVICES:
                typer.echo(f"{name:<20}{stack.address(name)}  SERVING")
            typer.echo(
                f"all SERVING in {time.monotonic() - started:.1f}s; "
                f"logs in {stack.log_dir}; Ctrl-C stops"
            )
            while True:
                stack.supervise_once()
                time.sleep(0.5)
    except StopRequested as stop:
        log.info("stopped", extra={"signal": signal.Signals(stop.args[0]).name})


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "")
    return Path(value) if value else None


class StopRequested(BaseException):
    """SIGINT/SIGTERM reached `relkd up`: unwinds whatever it was doing, stopping all."""


def stop_on_signal() -> None:
    """SIGINT/SIGTERM raise StopRequested once (later ones are ignored while stopping)."""

    def handler(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise StopRequested(signum)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handler)
