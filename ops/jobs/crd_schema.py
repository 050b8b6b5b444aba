"""Strict validation helpers for CRD schemas, shared by the offline checks and rollouts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def field_path(path: Iterable[Any]) -> str:
    return ".".join(str(part) for part in path) or "<root>"


def forbid_unknown_fields(schema: Any) -> Any:
    """A CRD schema that rejects fields it does not declare, as the API server's
    strict field validation does (CRD schemas allow them unless told otherwise)."""
    if isinstance(schema, dict):
        strict = {key: forbid_unknown_fields(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            strict["additionalProperties"] = False
        return strict
    if isinstance(schema, list):
        return [forbid_unknown_fields(item) for item in schema]
    return schema
