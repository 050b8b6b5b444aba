"""Command lines built from pydantic config classes.

A config-driven command (``relkd student train|scale``, ``relkd teacher train|label``,
``relkd jobs submit``, ``relkd rollout deploy``) takes

* ``--config FILE``: a YAML or JSON mapping of the config class's fields;
* ``--set FIELD=VALUE`` (repeatable): any field, nested ones with dots
  (``--set loss_weights.kl=0``); the value is read as YAML (``null``, ``true``, ``[a, b]``)
  when the field's type accepts that, else as the literal string;
* a few real flags for the fields people type every day (dataset and output directories).

Later sources win: file < ``--set`` < flags. pydantic validates the merged mapping, so a bad
value fails with exit code 2 and a message naming the field, and ``--help`` lists every
field with its type, default and description (the ``Field`` descriptions), so the config
class stays the one place a field is written.
"""

from __future__ import annotations

import copy
import difflib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from typer.core import TyperCommand

Config = TypeVar("Config", bound=BaseModel)

ConfigFileOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        dir_okay=False,
        help="YAML or JSON file of config fields (listed below).",
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="FIELD=VALUE",
        help="Set one config field (repeatable; nested fields with dots); wins over --config.",
    ),
]


class ConfigError(typer.BadParameter):
    """A config file, ``--set`` or flag the config class rejects (exit code 2)."""


def load_config(
    config_class: type[Config],
    path: Path | None = None,
    assignments: Sequence[str] = (),
    /,
    *,
    defaults: Mapping[str, Any] | None = None,
    file_option: str = "--config",
    **flags: Any,
) -> Config:
    """``config_class`` from ``defaults``, then ``path``, then ``assignments``
    (``FIELD=VALUE``), then ``flags``.

    ``flags`` maps top-level field names to values; ``None`` means "not given".
    ``file_option`` is the option that named ``path``, for messages. Raises
    :class:`ConfigError` naming the offending field and where it came from.
    """
    from_file = read_config_file(path, file_option) if path is not None else {}
    data = copy.deepcopy({**(defaults or {}), **from_file})
    # Where each given field came from, so an error points at the option to fix.
    origins: dict[tuple[str, ...], str] = {(key,): file_option for key in from_file}
    for item in assignments:
        keys, value = parse_assignment(config_class, item)
        _assign(data, keys, value)
        origins[tuple(keys)] = "--set"
    for name, value in flags.items():
        if name not in config_class.model_fields:
            raise ValueError(f"{config_class.__name__} has no field {name!r}")  # a code bug
        if value is not None:
            data[name] = value
            origins[(name,)] = "--" + name.replace("_", "-")
    try:
        return config_class.model_validate(data)
    except ValidationError as error:
        sources = [_origin(origins, p["loc"]) or f"{file_option}/--set" for p in error.errors()]
        hints = dict.fromkeys(hint for source in sources for hint in source.split("/"))
        raise ConfigError(
            f"invalid {config_class.__name__}:\n{describe(error)}", param_hint="/".join(hints)
        ) from error


def read_config_file(path: Path, file_option: str = "--config") -> dict[str, Any]:
    """The mapping in a YAML or JSON (``.json``) file."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror or error}", param_hint=file_option) from error
    try:
        loaded = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(
            f"{path}: not valid {_format_name(path)}: {error}", param_hint=file_option
        ) from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: expected a mapping of config fields at the top level", param_hint=file_option
        )
    return loaded


def parse_assignment(config_class: type[BaseModel], item: str) -> tuple[list[str], Any]:
    """``"a.b=VALUE"`` as (["a", "b"], value), the value typed for field ``a.b``."""
    key, sep, raw = item.partition("=")
    keys = [part.strip() for part in key.split(".")]
    if not sep or not all(keys):
        raise ConfigError(f"{item!r}: expected FIELD=VALUE", param_hint="--set")
    field = _field(config_class, keys, item)
    return keys, _typed_value(field, raw)


def describe(error: ValidationError) -> str:
    """One line per problem: ``field.path: message (got VALUE)``."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(config)"
        line = f"  {field}: {problem['msg']}"
        value = problem.get("input")
        if problem["type"] != "missing" and not isinstance(value, dict):
            line += f" (got {value!r})"
        lines.append(line)
    return "\n".join(lines)


def _origin(origins: dict[tuple[str, ...], str], loc: tuple[int | str, ...]) -> str | None:
    """The option that gave the field at ``loc`` (None: a required field nobody gave)."""
    path = tuple(str(part) for part in loc)
    for length in range(len(path), 0, -1):
        if path[:length] in origins:
            return origins[path[:length]]
    return None


def _format_name(path: Path) -> str:
    return "JSON" if Path(path).suffix == ".json" else "YAML"


def _field(config_class: type[BaseModel], keys: list[str], item: str) -> FieldInfo:
    model: type[BaseModel] | None = config_class
    field: FieldInfo | None = None
    for depth, key in enumerate(keys):
        if model is None:
            parent = ".".join(keys[:depth])
            raise ConfigError(f"{item!r}: {parent} has no sub-fields", param_hint="--set")
        fields = model.model_fields
        if key not in fields:
            name = ".".join(keys[: depth + 1])
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {'.'.join([*keys[:depth], close[0]])!r}?" if close else ""
            raise ConfigError(f"{item!r}: unknown field {name!r}{hint}", param_hint="--set")
        field = fields[key]
        model = _nested_model(field.annotation)
    assert field is not None  # keys is not empty
    return field


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The config class of a nested field (``Model`` or ``Model | None``), else None."""
    candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _typed_value(field: FieldInfo, raw: str) -> Any:
    # YAML first, so `null`, `true`, `3`, `[title, description]` and `{kl: 0}` work; the
    # literal string when only it fits the field's type (`--set name=no` is the string "no",
    # not False). Constraints and the error message come from validating the whole config.
    try:
        parsed = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    adapter = TypeAdapter(field.annotation)
    for candidate in (parsed, raw):
        try:
            adapter.validate_python(candidate)
        except ValidationError:
            continue
        return candidate
    return parsed


def _assign(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        child = data.get(key)
        if not isinstance(child, dict):
            child = data[key] = {}
        data = child
    data[keys[-1]] = value


# --- --help -------------------------------------------------------------------------------


def config_fields(
    config_class: type[BaseModel], prefix: str = ""
) -> list[tuple[str, str, str, str]]:
    """(field, type, default, description) of every field, nested ones expanded with dots."""
    rows = []
    for name, field in config_class.model_fields.items():
        nested = _nested_model(field.annotation)
        if nested is not None:
            rows += config_fields(nested, f"{prefix}{name}.")
            continue
        rows.append(
            (
                f"{prefix}{name}",
                type_name(field.annotation),
                _default(field),
                field.description or "",
            )
        )
    return rows


def type_name(annotation: Any) -> str:
    """A short name of a field's type: ``int``, ``path | null``, ``classifier|generative``."""
    if annotation is None or annotation is type(None):
        return "null"
    if _is_union(annotation):
        return " | ".join(type_name(arg) for arg in typing.get_args(annotation))
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "|".join(str(arg) for arg in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(arg) for arg in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "|".join(str(member.value) for member in annotation)
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed"
    if field.default is PydanticUndefined:
        return "required"
    value = field.default
    if isinstance(value, Enum):
        value = value.value
    return json.dumps(value if not isinstance(value, Path) else str(value))


def config_command(
    config_class: type[BaseModel], file_option: str = "--config"
) -> type[TyperCommand]:
    """A typer command class whose ``--help`` ends with a table of ``config_class``'s fields.

    Use as ``@app.command("train", cls=config_command(MyConfig))``.
    """

    class ConfigCommand(TyperCommand):
        # What a caller (e.g. the test of the Job specs) validates a --config file with.
        config_class: type[BaseModel]

        def format_help(self, ctx: Any, formatter: Any) -> None:
            super().format_help(ctx, formatter)
            rows = config_fields(config_class)
            title = (
                f"Config fields ({config_class.__name__}: {file_option} FILE, --set FIELD=VALUE)"
            )
            if self.rich_markup_mode is None:
                with formatter.section(title):
                    formatter.write_dl(
                        [
                            (f"{name} ({kind}, {default})", text)
                            for name, kind, default, text in rows
                        ]
                    )
                return
            _print_fields_panel(title, rows)

    ConfigCommand.config_class = config_class
    return ConfigCommand


def _print_fields_panel(title: str, rows: Sequence[tuple[str, str, str, str]]) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text
    from typer import rich_utils

    table = Table(show_header=True, header_style="dim", box=None, expand=True, pad_edge=False)
    table.add_column("field", style=rich_utils.STYLE_OPTION, no_wrap=True)
    table.add_column("type", style=rich_utils.STYLE_TYPES, overflow="fold")
    table.add_column("default", overflow="fold")
    table.add_column("description", ratio=10)
    for name, kind, default, text in rows:
        # Text, not markup: `list[str]` is no rich style tag.
        table.add_row(Text(name), Text(kind), Text(default), Text(text))
    console = Console(
        width=rich_utils.MAX_WIDTH,
        force_terminal=rich_utils.FORCE_TERMINAL,
        color_system=rich_utils.COLOR_SYSTEM,
    )
    console.print(
        Panel(
            table,
            title=title,
            title_align=rich_utils.ALIGN_OPTIONS_PANEL,
            border_style=rich_utils.STYLE_OPTIONS_PANEL_BORDER,
        )
    )
