"""Structured JSON logs on stderr, one object per line, with the service name on each."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


class _ServiceFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{service}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_ServiceFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries (kafka-python's reconnects, ONNX Runtime's quantizer) log chattily at
    # INFO; only the platform's own loggers follow `level`.
    root.setLevel(logging.WARNING)
    for own in ("services", "training"):
        logging.getLogger(own).setLevel(level.upper())
