"""The demo's report: a Markdown results table, two plots and the run's configuration."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelResult:
    """One evaluated model: its quality on the test split and its scoring latency."""

    model: str
    family: str  # baseline | teacher | cross-encoder | two-tower | served
    augmented_queries: int | None
    ndcg10: float
    ndcg5: float
    mrr: float
    accuracy: float | None
    latency_p50_ms: float
    latency_p99_ms: float


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display on servers and CI).

    Imported on first plot so that loading the demo command stays fast.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def markdown_cell(text: str) -> str:
    """Text for a Markdown table cell: listing titles may contain `|`."""
    return text.replace("|", "\\|")


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def results_table(results: Sequence[ModelResult]) -> str:
    lines = [
        "| model | augmented queries | NDCG@10 | NDCG@5 | MRR | grade accuracy | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        aug = "–" if r.augmented_queries is None else str(r.augmented_queries)
        lines.append(
            f"| {markdown_cell(r.model)} | {aug} | {_fmt(r.ndcg10)} | {_fmt(r.ndcg5)} | "
            f"{_fmt(r.mrr)} | {_fmt(r.accuracy)} | {r.latency_p50_ms:.1f} | "
            f"{r.latency_p99_ms:.1f} |"
        )
    return "\n".join(lines)


def plot_scaling(results: Sequence[ModelResult], path: Path) -> None:
    """NDCG@10 of each student family against augmented-set size, teacher as a reference line."""
    from training.eval.plots import plot_ndcg_vs_augmented

    curves: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if r.family in ("cross-encoder", "two-tower"):
            curves.setdefault(f"student: {r.family}", []).append(
                (r.augmented_queries or 0, r.ndcg10)
            )
    teacher = [(r.model, r.ndcg10) for r in results if r.family == "teacher"]
    baselines = [(r.model, r.ndcg10) for r in results if r.family == "baseline"]
    plot_ndcg_vs_augmented(curves, teacher + baselines, path)


def plot_latency_quality(results: Sequence[ModelResult], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in results:
        ax.scatter(r.latency_p50_ms, r.ndcg10, s=30)
        ax.annotate(
            r.model,
            (r.latency_p50_ms, r.ndcg10),
            fontsize=7,
            xytext=(4, 2),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per request of 100 products (ms, log scale)")
    ax.set_ylabel("NDCG@10 on held-out test queries")
    ax.set_title("Latency against quality")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def answer(results: Sequence[ModelResult]) -> list[str]:
    """The papers' two questions, answered from the numbers."""
    teacher = next((r for r in results if r.family == "teacher"), None)
    lines = []
    for family in ("cross-encoder", "two-tower"):
        runs = sorted(
            (r for r in results if r.family == family), key=lambda r: r.augmented_queries or 0
        )
        if len(runs) < 2:
            continue
        human, best = runs[0], max(runs, key=lambda r: r.ndcg10)
        gains = [b.ndcg10 - a.ndcg10 for a, b in itertools.pairwise(runs)]
        trend = (
            "rises at every step"
            if all(g > 0 for g in gains)
            else (
                "rises overall but not at every step"
                if runs[-1].ndcg10 > human.ndcg10
                else "does not rise"
            )
        )
        lines.append(
            f"- **{family}**: NDCG@10 {trend} as augmented queries are added "
            f"({' → '.join(f'{r.ndcg10:.4f}' for r in runs)} for "
            f"{' → '.join(str(r.augmented_queries or 0) for r in runs)} augmented queries); "
            f"best {best.ndcg10:.4f} vs {human.ndcg10:.4f} on human labels only."
        )
        if teacher is not None:
            gap = best.ndcg10 - teacher.ndcg10
            speedup = teacher.latency_p50_ms / max(best.latency_p50_ms, 1e-9)
            verdict = "passes" if gap > 0 else ("matches" if abs(gap) < 1e-4 else "stays below")
            lines.append(
                f"  Its best run {verdict} the teacher ({best.ndcg10:.4f} vs "
                f"{teacher.ndcg10:.4f}, {gap:+.4f}) at {speedup:.1f}x lower p50 latency."
            )
    return lines


def write_report(
    out_dir: Path,
    results: Sequence[ModelResult],
    config: Mapping[str, Any],
    served: Sequence[Mapping[str, Any]] = (),
    notes: Sequence[str] = (),
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_scaling(results, out_dir / "ndcg_vs_augmented.png")
    plot_latency_quality(results, out_dir / "latency_vs_quality.png")
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    (out_dir / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    parts = [
        "# relevance-kd demo report",
        "",
        "Does the student improve with more teacher-labeled (augmented) data, and does it reach",
        "or pass the teacher? Measured on the held-out test queries' human labels.",
        "",
        *answer(results),
        "",
        "## Results",
        "",
        results_table(results),
        "",
        "Latency: in-process scoring of one query against 100 products on this machine's CPU",
        "(p50/p99 over test queries); `served` rows go through gRPC, student-inference and Triton.",
        "",
        "![NDCG@10 against augmented set size](ndcg_vs_augmented.png)",
        "",
        "![Latency against quality](latency_vs_quality.png)",
    ]
    if served:
        parts += [
            "",
            "## Frontend requests through Triton",
            "",
            "| query | top product | score | model |",
            "| --- | --- | ---: | --- |",
        ]
        for e in served:
            query, title = markdown_cell(e["query"]), markdown_cell(e["top_title"])
            parts.append(f"| {query} | {title} | {e['top_score']:.3f} | {e['model']} |")
    if notes:
        parts += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    parts += [
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(config, indent=2, default=str),
        "```",
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts))
    return path
