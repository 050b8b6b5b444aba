"""The demo's report: a Markdown results table, two plots and the run's configuration."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.eval.intervals import Difference, paired_difference


@dataclass(frozen=True)
class ModelResult:
    """One evaluated model (a configuration over its seeds): quality on the test split and
    scoring latency. Metrics are means over seeds; ``ndcg10_ci`` is the bootstrap 95%
    interval over test queries of the seed-mean per-query NDCG@10."""

    model: str
    family: str  # baseline | teacher | cross-encoder | two-tower | served
    augmented_queries: int | None
    ndcg10: float
    ndcg5: float
    mrr: float
    accuracy: float | None
    latency_p50_ms: float
    latency_p99_ms: float
    ndcg10_ci: tuple[float, float] | None = None
    ndcg_esci10: float | None = None
    seeds: int = 1
    dev_ndcg10: float | None = None  # mean over seeds of the best checkpoint's dev NDCG@10


PerQueryRuns = Mapping[str, Sequence[Mapping[str, float]]]  # model -> per seed: query -> NDCG@10


@dataclass(frozen=True)
class Comparison:
    """``student`` minus ``reference`` on the same test queries (paired bootstrap)."""

    student: str
    reference: str
    family: str
    augmented_queries: int
    difference: Difference

    def as_dict(self) -> dict[str, Any]:
        return {
            "student": self.student,
            "reference": self.reference,
            "family": self.family,
            "augmented_queries": self.augmented_queries,
            "ndcg10_difference": self.difference.as_dict(),
        }


def compare_students(results: Sequence[ModelResult], per_query: PerQueryRuns) -> list[Comparison]:
    """Every distilled student against its kind's human-only student (equal human data) and
    against the teacher. No model is picked by its test score: all sizes are compared."""
    teacher = next((r for r in results if r.family == "teacher"), None)
    found = []
    for family in ("cross-encoder", "two-tower"):
        runs = sorted(
            (r for r in results if r.family == family), key=lambda r: r.augmented_queries or 0
        )
        human = next((r for r in runs if not r.augmented_queries), None)
        for r in runs:
            if not r.augmented_queries:
                continue
            for reference in (human, teacher):
                if reference is None:
                    continue
                difference = paired_difference(per_query[r.model], per_query[reference.model])
                found.append(
                    Comparison(r.model, reference.model, family, r.augmented_queries, difference)
                )
    return found


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


def _ci(interval: Sequence[float] | None) -> str:
    return "" if interval is None else f" ({interval[0]:.4f}-{interval[1]:.4f})"


def results_table(results: Sequence[ModelResult]) -> str:
    lines = [
        "| model | augmented queries | seeds | NDCG@10 (95% CI) | NDCG@10 ESCI gains | NDCG@5 "
        "| MRR | grade accuracy | dev NDCG@10 | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        aug = "–" if r.augmented_queries is None else str(r.augmented_queries)
        lines.append(
            f"| {markdown_cell(r.model)} | {aug} | {r.seeds} | "
            f"{_fmt(r.ndcg10)}{_ci(r.ndcg10_ci)} | {_fmt(r.ndcg_esci10)} | {_fmt(r.ndcg5)} | "
            f"{_fmt(r.mrr)} | {_fmt(r.accuracy)} | "
            f"{_fmt(r.dev_ndcg10)} | {r.latency_p50_ms:.1f} | {r.latency_p99_ms:.1f} |"
        )
    return "\n".join(lines)


def _signed(d: Difference) -> str:
    return f"{d.mean:+.4f} ({d.low:+.4f} to {d.high:+.4f})"


def comparison_table(comparisons: Sequence[Comparison]) -> str:
    """Distilled students against the human-only one and the teacher, paired intervals."""
    lines = [
        "| student | augmented queries | vs | NDCG@10 difference (95% CI) | better? "
        "| intervals disjoint? |",
        "| --- | ---: | --- | ---: | --- | --- |",
    ]
    for c in comparisons:
        d = c.difference
        verdict = "yes" if d.a_better else ("no: worse" if d.high < 0 else "no: within noise")
        lines.append(
            f"| {markdown_cell(c.student)} | {c.augmented_queries} | "
            f"{markdown_cell(c.reference)} | {_signed(d)} | {verdict} | "
            f"{'yes' if d.intervals_disjoint else 'no'} |"
        )
    return "\n".join(lines)


def plot_scaling(results: Sequence[ModelResult], path: Path) -> None:
    """NDCG@10 (with 95% intervals) of each student family against augmented-set size;
    the teacher and the baselines as reference bands / lines."""
    from training.eval.plots import CurvePoint, Reference, plot_ndcg_vs_augmented

    curves: dict[str, list[CurvePoint]] = {}
    for r in results:
        if r.family in ("cross-encoder", "two-tower"):
            curves.setdefault(f"student: {r.family}", []).append(
                (r.augmented_queries or 0, r.ndcg10, _interval(r))
            )
    references: list[Reference] = [
        (r.model, r.ndcg10, _interval(r)) for r in results if r.family == "teacher"
    ]
    references += [(r.model, r.ndcg10, None) for r in results if r.family == "baseline"]
    plot_ndcg_vs_augmented(curves, references, path)


def _interval(r: ModelResult) -> tuple[float, float] | None:
    return None if r.ndcg10_ci is None else (r.ndcg10_ci[0], r.ndcg10_ci[1])


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


def answer(results: Sequence[ModelResult], comparisons: Sequence[Comparison]) -> list[str]:
    """The papers' two questions, answered from the numbers and their intervals."""
    teacher = next((r for r in results if r.family == "teacher"), None)
    lines = []
    for family in ("cross-encoder", "two-tower"):
        runs = sorted(
            (r for r in results if r.family == family), key=lambda r: r.augmented_queries or 0
        )
        if len(runs) < 2:
            continue
        gains = [b.ndcg10 - a.ndcg10 for a, b in itertools.pairwise(runs)]
        trend = (
            "rises at every step"
            if all(g > 0 for g in gains)
            else (
                "rises overall but not at every step"
                if runs[-1].ndcg10 > runs[0].ndcg10
                else "does not rise"
            )
        )
        sizes = " → ".join(str(r.augmented_queries or 0) for r in runs)
        lines.append(
            f"- **{family}** ({runs[0].seeds} seeds): NDCG@10 {trend} as augmented queries are "
            f"added ({' → '.join(f'{r.ndcg10:.4f}' for r in runs)} for {sizes})."
        )
        # The largest augmented set answers the question: fixed in advance, never picked
        # by its test score.
        largest = runs[-1]
        for c in comparisons:
            if c.student != largest.model:
                continue
            d = c.difference
            what = "the human-only student" if c.reference == runs[0].model else "the teacher"
            verdict = (
                "beats"
                if d.a_better
                else ("is below" if d.high < 0 else "is not distinguishable from")
            )
            lines.append(
                f"  - +{largest.augmented_queries} augmented queries {verdict} {what} at equal "
                f"human data: {_signed(d)} NDCG@10, paired 95% CI"
                f"{'; the two intervals are disjoint' if d.intervals_disjoint else ''}."
            )
        if teacher is not None:
            speedup = teacher.latency_p50_ms / max(largest.latency_p50_ms, 1e-9)
            lines.append(f"  - {speedup:.1f}x lower p50 latency than the teacher.")
    return lines


def write_report(
    out_dir: Path,
    results: Sequence[ModelResult],
    config: Mapping[str, Any],
    served: Sequence[Mapping[str, Any]] = (),
    notes: Sequence[str] = (),
    per_query: PerQueryRuns | None = None,
) -> Path:
    """Write report.md, results.json (models and comparisons), the plots and config.json.

    ``per_query`` (model -> per seed: query -> NDCG@10) gives the paired comparisons.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    comparisons = compare_students(results, per_query) if per_query else []
    plot_scaling(results, out_dir / "ndcg_vs_augmented.png")
    plot_latency_quality(results, out_dir / "latency_vs_quality.png")
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    (out_dir / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    (out_dir / "comparisons.json").write_text(
        json.dumps([c.as_dict() for c in comparisons], indent=2) + "\n"
    )
    parts = [
        "# relevance-kd demo report",
        "",
        "Does the student improve with more teacher-labeled (augmented) data, and does it reach",
        "or pass the teacher? Measured on the held-out test queries' human labels; every",
        "student configuration is trained with several seeds and the intervals are bootstrap",
        "95% intervals over test queries (training.eval.intervals).",
        "",
        *answer(results, comparisons),
        "",
        "## At equal human data",
        "",
        "Each distilled student minus its kind's human-only student and minus the teacher,",
        "per test query (seed means), paired bootstrap 95% interval. *better?*: the interval",
        "lies above zero; *intervals disjoint*: the stricter test of the two models' own",
        "intervals not overlapping.",
        "",
        comparison_table(comparisons) if comparisons else "(no per-query results)",
        "",
        "## Results",
        "",
        results_table(results),
        "",
        "Latency: in-process scoring of one query against 100 products on this machine's CPU",
        "(p50/p99 over test queries, the first seed's checkpoint); `served` rows go through gRPC,",
        "student-inference and Triton. *dev NDCG@10*: the best checkpoint's, the only score",
        "any choice is made on (early stopping, the served student).",
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
