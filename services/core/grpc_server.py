"""gRPC server bootstrap shared by the three services (grpc.aio).

Every server gets the standard health service (``grpc.health.v1.Health``), server
reflection, Prometheus metrics and request logging per RPC, and a translation of
:class:`ServiceError` into status codes, so a servicer only raises
``InvalidArgument("query", "must not be empty")`` and the caller sees
``INVALID_ARGUMENT: query: must not be empty``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.core import bus, metrics
from services.core.grpc_security import TokenAuthenticator, authenticator, server_credentials
from services.core.settings import Settings

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error with the gRPC status the caller should see."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(ServiceError):
    """Overloaded: the request was refused before work began, so a retry is safe."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class BackgroundFailure(RuntimeError):
    """A service's background consumer died: the process exits non-zero to be restarted."""


def require(condition: bool, field: str, problem: str) -> None:
    """Raises InvalidArgument naming `field` unless `condition` holds."""
    if not condition:
        raise InvalidArgument(field, problem)


def require_count(count: int, cap: int, field: str, setting: str) -> None:
    """Raises InvalidArgument naming `field` unless it holds 1..`cap` items."""
    require(count > 0, field, "must not be empty")
    require(count <= cap, field, f"at most {cap} per request ({setting}), got {count}")


def require_unique(keys: Sequence[object], field: Callable[[int], str]) -> None:
    """Rejects a request whose items repeat a key, naming the repeat and its first use.

    The platform's rule for duplicates: a request that names the same item twice is
    refused (INVALID_ARGUMENT), never silently merged, so a caller's bug surfaces.
    """
    first: dict[object, int] = {}
    for i, key in enumerate(keys):
        seen = first.setdefault(key, i)
        require(seen == i, field(i), f"duplicate of {field(seen)}")


def check_deadline(context: grpc.aio.ServicerContext) -> None:
    """Stops work whose caller has already given up."""
    left = context.time_remaining()
    if left is not None and left <= 0:
        raise DeadlineExceeded("deadline exceeded before the request was processed")


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to mount: its full name, the servicer and the generated adder."""

    name: str
    servicer: object
    add_to_server: Callable[[object, grpc.aio.Server], None]


def _code_of(exc: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    if isinstance(exc, ServiceError):
        return exc.code
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


# Health and reflection stay open (probes and tooling carry no token) and unmeasured.
_OPEN_PREFIXES = ("/grpc.health", "/grpc.reflection")

Deserializer = Callable[[bytes], Any]


async def _decode(
    deserialize: Deserializer | None, raw: bytes, context: grpc.aio.ServicerContext
) -> Any:
    """The request message, or INVALID_ARGUMENT for bytes that are not one.

    gRPC would otherwise answer UNKNOWN for a request its deserializer cannot parse.
    """
    if deserialize is None:
        return raw
    try:
        return deserialize(raw)
    except (DecodeError, ValueError, TypeError) as exc:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"request: not a valid protobuf message: {exc}"
        )


def _decoding(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """Same handler, but decoding its request where a bad one can be answered properly."""
    deserialize = handler.request_deserializer
    if handler.unary_unary:
        unary_inner = handler.unary_unary

        async def unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            return await unary_inner(await _decode(deserialize, raw, context), context)

        return grpc.unary_unary_rpc_method_handler(unary, None, handler.response_serializer)
    if handler.unary_stream:
        stream_inner = handler.unary_stream

        async def stream(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for response in stream_inner(await _decode(deserialize, raw, context), context):
                yield response

        return grpc.unary_stream_rpc_method_handler(stream, None, handler.response_serializer)
    return handler


def _refusal(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers `code` without reading the request."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover - abort raises; this makes the function a generator

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, None, handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            refuse_stream, None, handler.response_serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, None, handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, None, handler.response_serializer)


class _ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, decodes, counts, times and logs each RPC; maps ServiceError to codes."""

    def __init__(self, authenticator: TokenAuthenticator | None = None) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None:
            return handler
        if method.startswith(_OPEN_PREFIXES):
            return _decoding(handler)
        caller = ""
        if self._authenticator is not None:
            found = self._authenticator.caller(details.invocation_metadata)
            if found is None:
                _observe(method, grpc.StatusCode.UNAUTHENTICATED, time.perf_counter(), "")
                return _refusal(
                    handler,
                    grpc.StatusCode.UNAUTHENTICATED,
                    "authorization: missing or unknown bearer token",
                )
            caller = found
        handler = _decoding(handler)
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                start, code = time.perf_counter(), grpc.StatusCode.OK
                try:
                    return await inner(request, context)
                except ServiceError as exc:
                    code = exc.code
                    await context.abort(exc.code, str(exc))
                except BaseException as exc:
                    code = _code_of(exc, context)
                    raise
                finally:
                    _observe(method, code, start, caller)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                start, code = time.perf_counter(), grpc.StatusCode.OK
                try:
                    async for response in inner_stream(request, context):
                        yield response
                except ServiceError as exc:
                    code = exc.code
                    await context.abort(exc.code, str(exc))
                except BaseException as exc:
                    code = _code_of(exc, context)
                    raise
                finally:
                    _observe(method, code, start, caller)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler


def _observe(method: str, code: grpc.StatusCode, start: float, caller: str) -> None:
    elapsed = time.perf_counter() - start
    metrics.RPC_REQUESTS.labels(method, code.name).inc()
    metrics.RPC_LATENCY.labels(method).observe(elapsed)
    log.info(
        "rpc",
        extra={
            "method": method,
            "code": code.name,
            "ms": round(elapsed * 1000, 2),
            "caller": caller,
        },
    )


def _exit_if_stop_hangs(deadline_s: float) -> threading.Timer:
    """Bounds the graceful stop: a handler mid-batch or a flush to a vanished broker may
    take minutes, and a child whose supervisor died (its death signal is a SIGTERM) has
    no one left to SIGKILL it. Exiting without committing loses nothing: the batch in
    flight is redelivered to the partition's next owner."""

    def exit_now() -> None:
        log.error(
            "graceful stop exceeded its deadline; exiting now (uncommitted input is redelivered)",
            extra={"deadline_s": deadline_s},
        )
        logging.shutdown()
        os._exit(1)

    watchdog = threading.Timer(deadline_s, exit_now)
    watchdog.daemon = True
    watchdog.start()
    return watchdog


class GrpcServer:
    """An aio gRPC server with health, reflection and observability, bound to one port."""

    def __init__(
        self,
        services: Sequence[ServiceBinding],
        host: str,
        port: int,
        grace_s: float = 5.0,
        options: Sequence[tuple[str, Any]] = (),
        *,
        tls: grpc.ServerCredentials | None = None,
        auth: TokenAuthenticator | None = None,
        shutdown_deadline_s: float = 25.0,
        health_port: int = 0,
    ) -> None:
        self.services = list(services)
        self.grace_s = grace_s
        self.shutdown_deadline_s = shutdown_deadline_s
        # SO_REUSEPORT off: a second server on a taken port must fail, not silently share
        # the port's traffic with the first.
        options = [("grpc.so_reuseport", 0), *options]
        self.server = grpc.aio.server(
            interceptors=[_ObservabilityInterceptor(auth)], options=options
        )
        self.health = health.aio.HealthServicer()
        for binding in self.services:
            binding.add_to_server(binding.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [b.name for b in self.services]
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self.tls = tls is not None
        try:
            self.port = (
                self.server.add_secure_port(f"{host}:{port}", tls)
                if tls is not None
                else self.server.add_insecure_port(f"{host}:{port}")
            )
        except RuntimeError as exc:
            self.port = 0
            cause: BaseException | None = exc
        else:
            cause = None
        if self.port == 0:
            raise OSError(
                f"could not bind gRPC server to {host}:{port}: the port is in use (another "
                "server running?) or the address is not local"
            ) from cause
        self.address = f"{host}:{self.port}"
        # Health alone, in plaintext, on a port of its own: Kubernetes' native gRPC probe
        # cannot do TLS, and health carries no data and needs no token. Nothing else is
        # served there, so TLS and tokens still guard every RPC.
        self.health_server: grpc.aio.Server | None = None
        self.health_port = 0
        if health_port:
            self.health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            try:
                self.health_port = self.health_server.add_insecure_port(f"{host}:{health_port}")
            except RuntimeError as exc:
                cause = exc
            if self.health_port == 0:
                raise OSError(
                    f"could not bind the gRPC health port {host}:{health_port}: the port is "
                    "in use or the address is not local"
                ) from cause

    @classmethod
    def from_settings(
        cls, services: Sequence[ServiceBinding], settings: Settings, port: int
    ) -> GrpcServer:
        """A server on `port` with the host, grace period, TLS and tokens `settings` name."""
        return cls(
            services,
            settings.grpc_host,
            port,
            settings.grpc_grace_s,
            tls=server_credentials(settings),
            auth=authenticator(settings),
            shutdown_deadline_s=settings.shutdown_deadline_s,
            health_port=settings.grpc_health_port,
        )

    async def _set_status(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", *(b.name for b in self.services)):
            await self.health.set(name, status)

    async def start(self) -> None:
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        await self._set_status(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            extra={
                "address": self.address,
                "services": [b.name for b in self.services],
                "tls": self.tls,
                "health_port": self.health_port or None,
            },
        )

    async def stop(self) -> None:
        """Reports NOT_SERVING first so balancers drain us, then lets in-flight RPCs finish."""
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.grace_s)
        if self.health_server is not None:
            await self.health_server.stop(0)

    async def serve_until_signal(
        self,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        background: Sequence[bus.BackgroundConsumer] = (),
    ) -> None:
        """Starts (with the `background` consumers), waits for SIGINT/SIGTERM, then stops
        gracefully: NOT_SERVING, `on_stop`, the consumers, in-flight RPCs.

        A consumer whose batch keeps failing transiently turns health NOT_SERVING until
        it recovers; a consumer that dies stops the server and raises BackgroundFailure,
        so the process exits non-zero and its supervisor restarts it. The whole stop is
        bounded by `shutdown_deadline_s`, past which the process exits at once.
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Installed before anything starts: a SIGTERM during start-up is a clean stop too.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        died: list[tuple[str, BaseException]] = []
        health_updates: set[asyncio.Task[None]] = set()  # referenced until done

        def report_health(healthy: bool) -> None:
            if not died and not stop.is_set():
                status = health_pb2.HealthCheckResponse.SERVING
                if not healthy:
                    status = health_pb2.HealthCheckResponse.NOT_SERVING
                task = loop.create_task(self._set_status(status))
                health_updates.add(task)
                task.add_done_callback(health_updates.discard)

        def report_death(name: str, exc: BaseException) -> None:
            died.append((name, exc))
            stop.set()

        for consumer in background:
            consumer.start(
                on_health=lambda healthy: loop.call_soon_threadsafe(report_health, healthy),
                on_death=lambda exc, name=consumer.name: loop.call_soon_threadsafe(
                    report_death, name, exc
                ),
            )
        await stop.wait()
        log.info("stopping", extra={"address": self.address, "failed": [n for n, _ in died]})
        watchdog = _exit_if_stop_hangs(self.shutdown_deadline_s)
        try:
            await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
            if on_stop is not None:
                await on_stop()
            for consumer in background:
                await asyncio.to_thread(consumer.stop, self.shutdown_deadline_s)
            await self.stop()
        finally:
            watchdog.cancel()  # the stop finished (or failed) in time
        if died:
            name, exc = died[0]
            raise BackgroundFailure(f"background consumer {name} died: {exc!r}") from exc
