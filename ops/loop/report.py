"""The loop demo's report: a Markdown table per round, a plot, the rounds as JSON.

``loop_demo.json`` has exactly the documented schema (docs/loop.md#the-loop-demo);
the per-round extras (ledger round, serving version, paired serving − frozen
difference, hop counts, gate metrics) go to ``details.json`` and the Markdown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops.demo.report import markdown_cell, pyplot

if TYPE_CHECKING:
    from ops.loop.demo import LoopRun

ROUND_KEYS = (
    "round",
    "labels_added",
    "snapshot",
    "decision",
    "reason",
    "candidate",
    "serving",
    "frozen",
    "teacher",
)


def check_rounds_json(document: Any) -> list[str]:
    """Where `document` departs from the loop demo's JSON schema (empty: it conforms)."""
    problems: list[str] = []
    if not isinstance(document, dict) or set(document) != {"rounds"}:
        return ['expected an object with exactly one key, "rounds"']
    rounds = document["rounds"]
    if not isinstance(rounds, list) or not rounds:
        return ["rounds: expected a non-empty list"]
    for i, row in enumerate(rounds):
        where = f"rounds[{i}]"
        if not isinstance(row, dict) or set(row) != set(ROUND_KEYS):
            problems.append(f"{where}: expected exactly the keys {list(ROUND_KEYS)}")
            continue
        if not isinstance(row["round"], int) or not isinstance(row["labels_added"], int):
            problems.append(f"{where}: round and labels_added must be integers")
        for key in ("snapshot", "decision", "reason"):
            if not isinstance(row[key], str) or not row[key]:
                problems.append(f"{where}.{key}: expected a non-empty string")
        for key in ("candidate", "serving"):
            part = row[key]
            if not isinstance(part, dict) or set(part) != {"ndcg@10", "ci95"}:
                problems.append(f'{where}.{key}: expected exactly "ndcg@10" and "ci95"')
                continue
            ci = part["ci95"]
            if not (
                isinstance(ci, list)
                and len(ci) == 2
                and all(isinstance(v, float) for v in ci)
                and isinstance(part["ndcg@10"], float)
                and ci[0] <= part["ndcg@10"] <= ci[1]
            ):
                problems.append(f"{where}.{key}: ci95 must be [low, high] around ndcg@10")
        for key in ("frozen", "teacher"):
            part = row[key]
            if (
                not isinstance(part, dict)
                or set(part) != {"ndcg@10"}
                or not isinstance(part["ndcg@10"], float)
            ):
                problems.append(f'{where}.{key}: expected exactly a float "ndcg@10"')
    return problems


def _plot(run: LoopRun, path: Path) -> None:
    plt = pyplot()
    rows, extra = run.rows, run.extra
    x = [r["round"] for r in rows]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    serving = [r["serving"]["ndcg@10"] for r in rows]
    low = [r["serving"]["ndcg@10"] - r["serving"]["ci95"][0] for r in rows]
    high = [r["serving"]["ci95"][1] - r["serving"]["ndcg@10"] for r in rows]
    top.errorbar(
        x, serving, yerr=[low, high], marker="o", capsize=4, label="serving student (95% CI)"
    )
    top.plot(x, [r["frozen"]["ndcg@10"] for r in rows], "s--", label="frozen round-0 student")
    top.plot(x, [r["teacher"]["ndcg@10"] for r in rows], "^:", label="teacher")
    top.plot(
        x, [r["candidate"]["ndcg@10"] for r in rows], "x", color="grey", label="round's candidate"
    )
    top.set_ylabel("NDCG@10, round's drifted test queries")
    top.set_title(f"Distillation loop under drift ({run.scale_name} scale, seed {run.seed})")
    top.legend(fontsize=8, loc="lower left")
    top.grid(alpha=0.3)
    bottom.bar(x, [r["labels_added"] for r in rows], color="tab:green")
    bottom.set_ylabel("labels added")
    bottom.set_xlabel("round (0: before drift), decision, Triton version serving after it")
    bottom.set_xticks(
        x,
        [
            f"{r['round']}\n{r['decision']}\nv{e['serving_version']} serves"
            for r, e in zip(rows, extra, strict=True)
        ],
    )
    bottom.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(run: LoopRun) -> list[str]:
    lines = [
        "| round | labels added | snapshot | decision | serving version | candidate NDCG@10 "
        "[95% CI] | serving NDCG@10 [95% CI] | frozen | teacher | serving − frozen [95% CI] |",
        "| ---: | ---: | --- | --- | ---: | --- | --- | ---: | ---: | --- |",
    ]
    for r, e in zip(run.rows, run.extra, strict=True):
        c, s, d = r["candidate"], r["serving"], e["serving_minus_frozen"]
        lines.append(
            f"| {r['round']} | {r['labels_added']:,} | {r['snapshot']} | {r['decision']} | "
            f"{e['serving_version']} | {c['ndcg@10']:.4f} [{c['ci95'][0]:.4f}, {c['ci95'][1]:.4f}]"
            f" | {s['ndcg@10']:.4f} [{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}] | "
            f"{r['frozen']['ndcg@10']:.4f} | {r['teacher']['ndcg@10']:.4f} | "
            f"{d['value']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] |"
        )
    return lines


def _hops_table(run: LoopRun) -> list[str]:
    keys = [k for k in run.hops[0] if k not in ("round", "serving_version")]
    lines = [
        "| round | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
        "| ---: | " + " | ".join("---:" for _ in keys) + " |",
    ]
    for h in run.hops:
        lines.append(f"| {h['round']} | " + " | ".join(f"{h[k]:,}" for k in keys) + " |")
    return lines


def write_loop_report(
    run: LoopRun, drift: dict[str, Any], json_path: Path | None, elapsed_s: float
) -> Path:
    """Writes report.md, ndcg_by_round.png, loop_demo.json and details.json under
    run_dir/report (and the JSON to `json_path`); returns report.md."""
    out = run.path("report")
    out.mkdir(parents=True, exist_ok=True)
    document = {"rounds": run.rows}
    problems = check_rounds_json(document)
    if problems:
        raise ValueError("loop demo JSON: " + "; ".join(problems))
    text = json.dumps(document, indent=2) + "\n"
    (out / "loop_demo.json").write_text(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text)
    details = {"drift": drift, "rounds": run.extra, "hops": run.hops, "elapsed_s": elapsed_s}
    (out / "details.json").write_text(json.dumps(details, indent=2, default=str) + "\n")
    _plot(run, out / "ndcg_by_round.png")
    lines = [
        "# Distillation loop under drift",
        "",
        f"Scale `{run.scale_name}`, seed {run.seed}: round 0 (before drift) and "
        f"{len(run.rows) - 1} drift round(s) in {elapsed_s / 60:.1f} min. NDCG@10 on each "
        "round's drifted test queries "
        "(human-judged by the simulator's raters); intervals are 95% bootstrap intervals "
        "over queries, the serving − frozen one paired.",
        "",
        *_table(run),
        "",
        "![NDCG@10 by round](ndcg_by_round.png)",
        "",
        "## Decisions",
        "",
        *[
            f"* round {r['round']}: **{r['decision']}**: {markdown_cell(r['reason'])}"
            for r in run.rows
        ],
        "",
        "## What went through each hop",
        "",
        *_hops_table(run),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
