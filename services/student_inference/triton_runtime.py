"""A real Triton Inference Server on this machine, from the PyPI ``nvidia-pytriton`` wheel.

The wheel bundles ``tritonserver`` 2.51 with the Python backend and runs on CPU. It
needs numpy<2, so it lives in its own virtual environment (``RELKD_TRITON_VENV``),
which also holds what the Python-backend models import (onnxruntime, tokenizers).

* ``python -m services.student_inference.triton_runtime setup`` creates that venv
  (idempotent: a marker records what was installed);
* :class:`TritonServer` starts ``tritonserver`` on free loopback ports, waits until it
  is READY and stops it by PID (SIGTERM, then SIGKILL after a grace period).

Settings (environment variables):

* ``RELKD_TRITON_VENV`` - the Triton venv (default ``<repo>/.triton-venv``);
* ``RELKD_TRITON_READY_TIMEOUT_S`` - seconds to wait for READY (default 60);
* ``RELKD_TRITON_STOP_GRACE_S`` - seconds between SIGTERM and SIGKILL (default 15).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Annotated, Self

import tritonclient.grpc as grpcclient
import typer
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core import process
from services.core.broker import free_port
from services.core.settings import Settings

_REPO_ROOT = Path(__file__).resolve().parents[2]
# What the server and the Python-backend models import; changing this list makes
# `setup` reinstall.
REQUIREMENTS = (
    "nvidia-pytriton==0.7.0",
    "numpy>=1.26,<2",
    "onnxruntime>=1.20,<2",
    "tokenizers>=0.20,<1",
)
_MARKER = "relkd-triton.json"


class TritonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELKD_", extra="ignore")

    triton_venv: Path = Field(
        _REPO_ROOT / ".triton-venv", description="Virtual environment of the local Triton."
    )
    triton_ready_timeout_s: float = Field(60.0, description="Seconds to wait for READY.")
    triton_stop_grace_s: float = Field(15.0, description="Seconds from SIGTERM to SIGKILL.")


class TritonNotInstalledError(RuntimeError):
    pass


@dataclass(frozen=True)
class TritonInstall:
    """Paths of a set-up Triton venv."""

    venv: Path

    @property
    def _site_packages(self) -> Path:
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        return self.venv / "lib" / version / "site-packages"

    @property
    def server_binary(self) -> Path:
        return self._site_packages / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def backend_dir(self) -> Path:
        """``--backend-directory``: the wheel's backends plus the Python stub."""
        return self.venv / "triton-backends"

    def check(self) -> None:
        marker = self.venv / _MARKER
        if not marker.is_file() or not self.server_binary.is_file():
            raise TritonNotInstalledError(
                f"No Triton venv at {self.venv} (RELKD_TRITON_VENV). Create it with "
                "`python -m services.student_inference.triton_runtime setup`."
            )

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [
            str(self._site_packages / "nvidia_pytriton.libs"),
            # The Python backend stub links libpython of this interpreter version.
            str(sysconfig.get_config_var("LIBDIR")),
        ]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        # The stub runs the first `python3` on PATH, so the venv's must come first.
        env["PATH"] = os.pathsep.join([str(self.venv / "bin"), env.get("PATH", "")])
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        return env


def setup_venv(venv: Path | None = None, *, quiet: bool = False) -> TritonInstall:
    """Create (or complete) the Triton venv; a no-op when it is already set up."""
    install = TritonInstall(Path(venv or TritonSettings().triton_venv).resolve())
    wanted = {"python": sys.version.split()[0], "requirements": list(REQUIREMENTS)}
    marker = install.venv / _MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return install
    python = install.venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(install.venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, *(["-q"] if quiet else []), *REQUIREMENTS], check=True)
    _prepare_backends(install)
    marker.write_text(json.dumps(wanted, indent=2) + "\n")
    return install


def _prepare_backends(install: TritonInstall) -> None:
    wheel = install.server_binary.parents[1]
    stub = (
        wheel
        / "python_backend_stubs"
        / f"{sys.version_info.major}.{sys.version_info.minor}"
        / "triton_python_backend_stub"
    )
    if not stub.is_file():
        raise TritonNotInstalledError(f"{stub}: no Python backend stub for this Python version")
    if install.backend_dir.exists():
        shutil.rmtree(install.backend_dir)
    shutil.copytree(wheel / "backends", install.backend_dir)
    shutil.copy2(stub, install.backend_dir / "python" / stub.name)


def triton_client_tls(settings: Settings) -> dict[str, object]:
    """tritonclient keyword arguments for the platform's gRPC client TLS settings.

    Triton is one of the platform's gRPC servers: when `RELKD_GRPC_TLS_CA_FILE` is set,
    student-inference (and the readiness probe here) reach it over TLS, presenting the
    client certificate under mTLS. Triton checks no tokens: it is reachable only from
    student-inference (NetworkPolicy on a cluster, loopback on the embedded stack).
    """
    if settings.grpc_tls_ca_file is None:
        return {}
    tls: dict[str, object] = {"ssl": True, "root_certificates": str(settings.grpc_tls_ca_file)}
    if settings.grpc_tls_client_cert_file is not None:
        tls["certificate_chain"] = str(settings.grpc_tls_client_cert_file)
    if settings.grpc_tls_client_key_file is not None:
        tls["private_key"] = str(settings.grpc_tls_client_key_file)
    return tls


def _server_tls_args(settings: Settings) -> list[str]:
    """tritonserver flags for the platform's gRPC server TLS settings (none: plaintext)."""
    if settings.grpc_tls_cert_file is None or settings.grpc_tls_key_file is None:
        return []
    args = [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={settings.grpc_tls_cert_file}",
        f"--grpc-server-key={settings.grpc_tls_key_file}",
    ]
    if settings.grpc_tls_client_ca_file is not None:
        args += [
            f"--grpc-root-cert={settings.grpc_tls_client_ca_file}",
            "--grpc-use-ssl-mutual=true",
        ]
    return args


def _server_ready(client: grpcclient.InferenceServerClient) -> bool:
    try:
        return bool(client.is_server_ready())
    except Exception:  # refused or not yet listening: not ready yet
        return False


class TritonServer:
    """A ``tritonserver`` process on loopback; use as a context manager.

    ``model_control="explicit"`` starts with no model loaded except ``load_models``;
    :meth:`load_model` / :meth:`unload_model` then (re)load models, a load picking up
    new version directories. ``"none"`` loads the whole repository at start.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        model_repository: Path,
        *,
        model_control: str = "explicit",
        load_models: tuple[str, ...] = (),
        settings: TritonSettings | None = None,
        log_path: Path | None = None,
    ) -> None:
        if model_control not in ("explicit", "none"):
            raise ValueError(f"model_control: expected 'explicit' or 'none', got {model_control!r}")
        self.settings = settings or TritonSettings()
        # TLS as for every gRPC server of the platform (docs/security.md).
        self.security = Settings()
        self.install = TritonInstall(self.settings.triton_venv.resolve())
        self.model_repository = Path(model_repository).resolve()
        self.model_control = model_control
        self.load_models = load_models
        self.log_path = log_path
        self.http_port = self.grpc_port = self.metrics_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Path | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.grpc_url, **triton_client_tls(self.security))

    def command(self) -> list[str]:
        # A unique shared-memory prefix keeps several servers on one host apart.
        shm_prefix = f"relkd{os.getpid()}_{secrets.token_hex(3)}_"
        args = [
            str(self.install.server_binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.install.backend_dir}",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            f"--model-control-mode={self.model_control}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            f"--exit-timeout-secs={max(1, int(self.settings.triton_stop_grace_s))}",
            *_server_tls_args(self.security),
        ]
        args += [f"--load-model={name}" for name in self.load_models]
        return args

    def start(self) -> Self:
        if self._process is not None:
            raise RuntimeError("TritonServer already started")
        self.install.check()
        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"model repository {self.model_repository} does not exist")
        if not self.grpc_port:  # a restart keeps the ports its clients know
            self.http_port, self.grpc_port, self.metrics_port = (free_port() for _ in range(3))
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(handle)
            self._log_file = Path(name)
        else:
            self._log_file = self.log_path
        self._log_file.write_bytes(b"")
        self._process = process.spawn(self.command(), self._log_file, self.install.environment())
        try:
            with self.client() as client:
                process.wait_ready(
                    self._process,
                    lambda: _server_ready(client),
                    what="tritonserver (wait bounded by RELKD_TRITON_READY_TIMEOUT_S)",
                    timeout_s=self.settings.triton_ready_timeout_s,
                    log_path=self._log_file,
                )
        except BaseException:
            self.stop()
            raise
        return self

    def load_model(self, name: str) -> None:
        """Load (or reload, picking up new versions) ``name``; waits until it is READY."""
        with self.client() as client:
            client.load_model(name)
            if not client.is_model_ready(name):
                tail = process.log_tail(self._log_file)
                raise RuntimeError(f"model {name!r} not READY after load:\n{tail}")

    def unload_model(self, name: str) -> None:
        with self.client() as client:
            client.unload_model(name)

    def restart(self) -> Self:
        """A fresh server on the same ports (clients reconnect), once whatever is left of
        the old one (its Python-backend stubs, if it was killed) is gone."""
        self.stop()
        return self.start()

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after the grace period; returns the exit code.

        The process group is swept in any case, so the stubs of a server that was
        killed do not outlive it.
        """
        child, self._process = self._process, None
        if child is None:
            return None
        code = process.stop(child, self.settings.triton_stop_grace_s)
        if self.log_path is None and self._log_file is not None:
            self._log_file.unlink(missing_ok=True)
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


app = typer.Typer(help="The local Triton Inference Server (PyPI nvidia-pytriton).")


@app.command("setup")
def setup_command(
    venv: Annotated[
        Path | None, typer.Option(help="Venv path (default: RELKD_TRITON_VENV).")
    ] = None,
) -> None:
    """Create the Triton virtual environment (idempotent)."""
    install = setup_venv(venv)
    typer.echo(f"Triton venv ready: {install.venv}")


@app.command("serve")
def serve_command(
    model_repository: Annotated[Path, typer.Argument(help="Triton model repository.")],
    model_control: Annotated[str, typer.Option(help="'none' (load all) or 'explicit'.")] = "none",
) -> None:
    """Run Triton on free loopback ports until interrupted."""
    with TritonServer(model_repository, model_control=model_control) as server:
        typer.echo(
            f"Triton READY: gRPC {server.grpc_url}, HTTP {server.http_url}, pid {server.pid}"
        )
        try:
            while server.is_running():
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    app()
