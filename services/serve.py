"""One service in the foreground: what a container runs and what `relkd up` supervises.

    relkd serve NAME            (or, without the whole CLI: python -m services.serve NAME)

Kept apart from the CLI so a service process imports only what it serves.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from typing import Annotated

import typer

from services.core.logging import configure_logging
from services.core.settings import Settings, get_settings


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    grpc_service: str
    port_setting: str

    def port(self, settings: Settings) -> int:
        return int(getattr(settings, self.port_setting))


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec(
            "candidate-generation",
            "services.candidate_generation.service",
            "relevance.v1.CandidateGeneration",
            "candidate_generation_port",
        ),
        ServiceSpec(
            "teacher-labeling",
            "services.teacher_labeling.service",
            "relevance.v1.TeacherLabeling",
            "teacher_labeling_port",
        ),
        ServiceSpec(
            "student-inference",
            "services.student_inference.service",
            "relevance.v1.StudentInference",
            "student_inference_port",
        ),
        # Health and metrics only: the store is read through its snapshots on disk.
        ServiceSpec("label-store", "services.label_store.service", "", "label_store_port"),
        # Health only: the monitor serves no RPCs.
        ServiceSpec(
            "disagreement-monitor",
            "services.disagreement_monitor.service",
            "",
            "disagreement_monitor_port",
        ),
    )
}


def serve_command(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}.")],
) -> None:
    """Run one service in the foreground until SIGINT/SIGTERM."""
    if service not in SERVICES:
        raise typer.BadParameter(f"expected one of {', '.join(SERVICES)}", param_hint="SERVICE")
    settings = get_settings()
    configure_logging(service, settings.log_level)
    module = importlib.import_module(SERVICES[service].module)
    asyncio.run(module.serve(settings))


if __name__ == "__main__":
    typer.run(serve_command)
