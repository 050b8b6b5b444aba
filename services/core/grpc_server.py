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
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.core import metrics

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


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


def require(condition: bool, field: str, problem: str) -> None:
    """Raises InvalidArgument naming `field` unless `condition` holds."""
    if not condition:
        raise InvalidArgument(field, problem)


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


class _ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Counts, times and logs each RPC, and maps ServiceError onto status codes."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
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
                    _observe(method, code, start)

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
                    _observe(method, code, start)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler


def _observe(method: str, code: grpc.StatusCode, start: float) -> None:
    elapsed = time.perf_counter() - start
    metrics.RPC_REQUESTS.labels(method, code.name).inc()
    metrics.RPC_LATENCY.labels(method).observe(elapsed)
    log.info("rpc", extra={"method": method, "code": code.name, "ms": round(elapsed * 1000, 2)})


class GrpcServer:
    """An aio gRPC server with health, reflection and observability, bound to one port."""

    def __init__(
        self,
        services: Sequence[ServiceBinding],
        host: str,
        port: int,
        grace_s: float = 5.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.services = list(services)
        self.grace_s = grace_s
        self.server = grpc.aio.server(interceptors=[_ObservabilityInterceptor()], options=options)
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
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"could not bind gRPC server to {host}:{port}")
        self.address = f"{host}:{self.port}"

    async def _set_status(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in ("", *(b.name for b in self.services)):
            await self.health.set(name, status)

    async def start(self) -> None:
        await self.server.start()
        await self._set_status(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving", extra={"address": self.address, "services": [b.name for b in self.services]}
        )

    async def stop(self) -> None:
        """Reports NOT_SERVING first so balancers drain us, then lets in-flight RPCs finish."""
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.grace_s)

    async def serve_until_signal(
        self, on_stop: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Starts, waits for SIGINT/SIGTERM, then stops gracefully (running `on_stop` first)."""
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping", extra={"address": self.address})
        if on_stop is not None:
            await on_stop()
        await self.stop()
