"""Plots of evaluation results that more than one report draws."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

Interval = tuple[float, float]
# (teacher-labeled queries, NDCG@10, its 95% interval or None)
CurvePoint = tuple[int, float, Interval | None]
# (name, NDCG@10, its 95% interval or None)
Reference = tuple[str, float, Interval | None]


def plot_ndcg_vs_augmented(
    curves: Mapping[str, Sequence[CurvePoint]],
    references: Sequence[Reference],
    path: Path,
    split: str = "test",
) -> None:
    """NDCG@10 against augmented-set size, one line per student; references as flat lines.

    Points with an interval get error bars; a reference with an interval is drawn as a
    band. The first reference (the teacher, by convention) is black and dashed, the rest
    grey and dotted.
    """
    import matplotlib

    matplotlib.use("Agg")  # file output only: servers and CI have no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for (label, points), marker in zip(curves.items(), "os^vD", strict=False):
        ordered = sorted(points, key=lambda p: p[0])
        xs = [p[0] for p in ordered]
        ys = [p[1] for p in ordered]
        line = ax.plot(xs, ys, marker=marker or "o", label=label)[0]
        if all(p[2] is not None for p in ordered):
            lows = [y - p[2][0] for y, p in zip(ys, ordered, strict=True) if p[2]]
            highs = [p[2][1] - y for y, p in zip(ys, ordered, strict=True) if p[2]]
            ax.errorbar(xs, ys, yerr=[lows, highs], fmt="none", capsize=3, color=line.get_color())
    for i, (name, value, interval) in enumerate(references):
        color, style = ("black", "--") if i == 0 else ("grey", ":")
        text = f"{name} ({value:.3f})"
        if interval is not None:
            ax.axhspan(*interval, color=color, alpha=0.08, linewidth=0)
            text = f"{name} ({value:.3f}, 95% CI {interval[0]:.3f}-{interval[1]:.3f})"
        ax.axhline(value, linewidth=1, color=color, linestyle=style, label=text)
    ax.set_xlabel("teacher-labeled (augmented) queries added to the human-labeled ones")
    ax.set_ylabel(f"NDCG@10 on the held-out {split} queries")
    ax.set_title("Student quality as the augmented set grows")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
