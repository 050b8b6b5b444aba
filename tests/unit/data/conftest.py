from __future__ import annotations

from pathlib import Path

import pytest

from training.data.simulator import simulate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated catalog (600 products, 60 labeled + 20 unlabeled queries)."""
    return simulate(
        tmp_path_factory.mktemp("sim"),
        num_products=600,
        num_queries=60,
        num_unlabeled=20,
        seed=7,
        show_progress=False,
    )
