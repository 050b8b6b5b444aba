"""What `relkd eval` can score: the ``Scorer`` protocol and a registry of kinds.

A scorer is anything with a ``name`` and a batched ``score_pairs``; the teacher and
the students implement it. Scorers that also predict grades implement
``grade_probs`` and get grade accuracy / macro-F1 reported.

The registry maps a kind (``bm25``, ``bi-encoder``, later ``teacher``, ``student``)
to a factory ``(dataset_dir, argument) -> Scorer``; on the command line a model is
``KIND`` or ``KIND=ARGUMENT`` (e.g. ``student=runs/student-v3``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Scorer(Protocol):
    name: str

    def score_pairs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        """One relevance score per (queries[i], products[i]) pair, higher is better."""
        ...


@runtime_checkable
class GradeScorer(Scorer, Protocol):
    def score_and_grade_probs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``score_pairs`` and the probabilities over the grades 0..3 per pair ([n, 4]),
        from one forward pass: evaluation needs both, and a model costs the same for one."""
        ...


ScorerFactory = Callable[[Path, str | None], Scorer]
SCORERS: dict[str, ScorerFactory] = {}


def register_scorer(kind: str) -> Callable[[ScorerFactory], ScorerFactory]:
    """Register a factory for ``kind``: the baselines (baselines.py) here, the trained
    ``teacher`` and ``student`` in their own packages (the harness knows no model)."""

    def add(factory: ScorerFactory) -> ScorerFactory:
        if kind in SCORERS:
            raise ValueError(f"scorer kind {kind!r} is already registered")
        SCORERS[kind] = factory
        return factory

    return add


def build_scorer(spec: str, dataset_dir: Path | str) -> Scorer:
    """Build the scorer named by ``spec`` (``KIND`` or ``KIND=ARGUMENT``)."""
    # Importing registers the built-in baselines.
    from training.eval import baselines  # noqa: F401

    kind, _, argument = spec.partition("=")
    if kind not in SCORERS:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {sorted(SCORERS)}")
    return SCORERS[kind](Path(dataset_dir), argument or None)


def checkpoint_argument(kind: str, argument: str | None) -> Path:
    """The checkpoint directory of a ``KIND=PATH`` model spec."""
    if not argument:
        raise ValueError(f"{kind}: give the checkpoint directory as `{kind}=PATH`")
    return Path(argument)
