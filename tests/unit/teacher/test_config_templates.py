"""Config loading (file, --set, flags) and the input templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config_cli import ConfigError, load_config
from training.teacher.config import TeacherTrainConfig
from training.teacher.labeler import token_budget_batches
from training.teacher.templates import render, resolve_template

PRODUCT = {
    "product_id": "p1",
    "title": "Acme Red Sofa",
    "product_type": "sofa",
    "category": "seating",
    "brand": "Acme",
    "attributes": [("color", "red"), ("size", "large")],
    "description": "A sofa.",
    "features": ["sturdy", "washable"],
}


def test_yaml_then_set_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\nlr: 0.001\nlora: true\nbackbone: /models/x\nname: file\n")
    config = load_config(
        TeacherTrainConfig, path, ["lr=0.01", "name=no", "epochs=4"], epochs=5.0, batch_size=None
    )
    assert config.lr == 0.01
    # A str field keeps the literal text YAML would read as a bool.
    assert config.name == "no"
    assert config.epochs == 5.0
    assert config.lora is True
    assert config.batch_size == TeacherTrainConfig.model_fields["batch_size"].default


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("epochz: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_config(TeacherTrainConfig, path)
    with pytest.raises(ConfigError, match="label_smoothing"):
        load_config(TeacherTrainConfig, None, ["label_smoothing=1.5"], backbone="x")


def test_rich_template_shows_attributes_from_parquet_pairs_or_dicts() -> None:
    text = render(resolve_template("rich"), "red sofa", PRODUCT)
    assert "Query: red sofa" in text
    assert "color: red; size: large" in text
    assert "Features: sturdy; washable" in text
    as_dict = render(resolve_template("rich"), "q", {**PRODUCT, "attributes": {"color": "red"}})
    assert "Attributes: color: red" in as_dict
    assert "color" not in render(resolve_template("title"), "q", PRODUCT)


def test_custom_template_fields_are_checked() -> None:
    assert render(resolve_template("{query} || {brand}"), "q", PRODUCT) == "q || Acme"
    with pytest.raises(ValueError, match="colour"):
        resolve_template("{query} {colour}")
    with pytest.raises(ValueError, match="query"):
        resolve_template("{title}")
    with pytest.raises(ValueError, match="title"):
        render(resolve_template("rich"), "q", {"product_id": "p9"})


def test_token_budget_batches_cover_every_pair_once_within_budget() -> None:
    lengths = [5, 40, 12, 7, 33, 3, 90, 18, 18, 2, 150]
    batches = list(token_budget_batches(lengths, max_tokens=64))
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        # An over-long pair travels alone; every other batch respects the budget.
        assert len(batch) * longest <= 64 or len(batch) == 1
        assert [lengths[i] for i in batch] == sorted(lengths[i] for i in batch)


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    import torch

    from training.teacher.train import fit_temperature

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn((400, 4), generator=generator) * 4
    assert fit_temperature(logits, torch.softmax(logits / 2.5, -1)) == pytest.approx(2.5, rel=1e-3)
    assert fit_temperature(logits, torch.softmax(logits / 0.5, -1)) == pytest.approx(0.5, rel=1e-3)
