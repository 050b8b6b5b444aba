"""Plots of evaluation results that more than one report draws."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_ndcg_vs_augmented(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    references: Sequence[tuple[str, float]],
    path: Path,
    split: str = "test",
) -> None:
    """NDCG@10 against augmented-set size, one line per student; references as flat lines.

    ``curves`` maps a label to (teacher-labeled queries, NDCG@10) points; the first
    reference (the teacher, by convention) is drawn black and dashed, the rest grey.
    """
    import matplotlib

    matplotlib.use("Agg")  # file output only: servers and CI have no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (label, points), marker in zip(curves.items(), "os^vD", strict=False):
        ax.plot(*zip(*sorted(points), strict=True), marker=marker or "o", label=label)
    for i, (name, value) in enumerate(references):
        style = (
            {"color": "black", "linestyle": "--"} if i == 0 else {"color": "grey", "linestyle": ":"}
        )
        ax.axhline(value, linewidth=1, label=f"{name} ({value:.3f})", **style)
    ax.set_xlabel("teacher-labeled (augmented) queries added to the human-labeled ones")
    ax.set_ylabel(f"NDCG@10 on the held-out {split} queries")
    ax.set_title("Student quality as the augmented set grows")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
