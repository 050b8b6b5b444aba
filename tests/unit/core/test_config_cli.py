"""Config-driven commands: --config FILE, --set FIELD=VALUE, a few flags, --help lists fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from pydantic import BaseModel
from typer.testing import CliRunner

from ops.cli import app as relkd
from ops.jobs.launcher import RunSpec
from ops.rollout.service_spec import StudentService
from training.config_cli import ConfigError, config_fields, load_config
from training.student.config import StudentKind, StudentTrainConfig
from training.teacher.config import TeacherLabelConfig, TeacherTrainConfig

CONFIG_COMMANDS: dict[tuple[str, ...], type[BaseModel]] = {
    ("student", "train"): StudentTrainConfig,
    ("student", "scale"): StudentTrainConfig,
    ("teacher", "train"): TeacherTrainConfig,
    ("teacher", "label"): TeacherLabelConfig,
    ("jobs", "submit"): RunSpec,
    ("rollout", "deploy"): StudentService,
}


@pytest.mark.parametrize("config_class", sorted(set(CONFIG_COMMANDS.values()), key=str))
def test_every_config_field_has_a_description(config_class: type[BaseModel]) -> None:
    undocumented = [name for name, _, _, text in config_fields(config_class) if not text]
    assert undocumented == []


@pytest.mark.parametrize("command", list(CONFIG_COMMANDS), ids=" ".join)
def test_help_lists_every_field_with_type_and_default(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(relkd, [*command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    lines = result.output.split("Config fields")[1].splitlines()
    for name, kind, default, text in config_fields(CONFIG_COMMANDS[command]):
        row = next((line for line in lines if line.lstrip("│ ").startswith(f"{name} ")), None)
        assert row is not None, name
        assert kind in row and default in row and text.split()[0] in row, row


def test_file_then_set_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "student.json"
    config.write_text(json.dumps({"dataset_dir": "d", "max_steps": 5, "lr": 0.1, "name": "file"}))
    resolved = load_config(
        StudentTrainConfig,
        config,
        ["max_steps=7", "loss_weights.kl=0", "text_fields=[title, brand]", "num_layers=null"],
        max_steps=9,
        output_dir=None,
    )
    assert resolved.max_steps == 9  # flag > --set > file
    assert resolved.lr == 0.1 and resolved.name == "file"
    assert resolved.loss_weights.kl == 0 and resolved.loss_weights.margin_mse == 1.0
    assert resolved.text_fields == ["title", "brand"] and resolved.num_layers is None
    assert resolved.output_dir == StudentTrainConfig.model_fields["output_dir"].default
    # A string field keeps text YAML would read as another type.
    assert (
        load_config(StudentTrainConfig, None, ["dataset_dir=d", "version=1.10"]).version == "1.10"
    )
    assert load_config(StudentTrainConfig, None, ["dataset_dir=d", "kind=two-tower"]).kind is (
        StudentKind.TWO_TOWER
    )


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        (["max_stpes=3"], "unknown field 'max_stpes'; did you mean 'max_steps'"),
        (["loss_weights.foo=1"], "unknown field 'loss_weights.foo'"),
        (["lr.x=1"], "lr has no sub-fields"),
        (["max_steps"], "expected FIELD=VALUE"),
        (["max_steps=many"], "max_steps: Input should be a valid integer"),
        (["loss_weights.kl=-1"], "loss_weights.kl: Input should be greater than or equal to 0"),
        (["kind=three-tower"], "kind: Input should be 'cross-encoder' or 'two-tower'"),
    ],
)
def test_bad_set_names_the_field(assignments: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(StudentTrainConfig, None, ["dataset_dir=d", *assignments])
    assert error.value.param_hint == "--set"
    assert message in error.value.format_message()


def test_bad_file_names_the_file_and_field(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(StudentTrainConfig, missing)
    listed = tmp_path / "list.yaml"
    listed.write_text("- max_steps\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(StudentTrainConfig, listed)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(StudentTrainConfig, broken)
    extra = tmp_path / "extra.yaml"
    extra.write_text("dataset_dir: d\nmax_step: 3\n")
    with pytest.raises(ConfigError) as error:
        load_config(StudentTrainConfig, extra)
    assert "max_step: Extra inputs are not permitted" in error.value.format_message()
    assert error.value.param_hint == "--config"
    with pytest.raises(ConfigError) as error:
        load_config(StudentTrainConfig, None)
    assert "dataset_dir: Field required" in error.value.format_message()


def test_cli_exits_2_naming_the_field(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        relkd, ["student", "train", "--dataset-dir", str(tmp_path), "--set", "patience=0"]
    )
    assert result.exit_code == 2
    assert "patience: Input should be greater than or equal to 1" in result.output
    assert isinstance(result.exception, SystemExit)


def test_config_error_is_a_typer_usage_error() -> None:
    # Typer only turns its own (vendored click) exceptions into exit code 2.
    assert issubclass(ConfigError, typer.BadParameter)
