"""`relkd demo`: the main job on the embedded stack."""

from __future__ import annotations

import time

import grpc
import typer
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from services.core.logging import configure_logging
from services.core.settings import get_settings
from services.stack import SERVICES, health_status, running_stack


def reflected_services(address: str) -> list[str]:
    """Service names the server at `address` lists through gRPC reflection."""
    with grpc.insecure_channel(address) as channel:
        return list(ProtoReflectionDescriptorDatabase(channel).get_services())


def demo_command() -> None:
    """Bring the embedded stack up, check every service over gRPC, and bring it down."""
    configure_logging("relkd-demo", get_settings().log_level)
    started = time.monotonic()
    with running_stack() as stack:
        typer.echo(f"stack SERVING in {time.monotonic() - started:.1f}s (kafka {stack.bootstrap})")
        for name, spec in SERVICES.items():
            address = stack.address(name)
            status = health_status(address, spec.grpc_service)
            listed = spec.grpc_service in reflected_services(address)
            typer.echo(f"{name:<20}{address}  health={status}  reflection lists {spec.grpc_service}: {listed}")
    typer.echo(f"stack stopped after {time.monotonic() - started:.1f}s")
