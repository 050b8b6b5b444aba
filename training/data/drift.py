"""Simulated drift: a catalog and a query stream that change over rounds.

``simulate_drift`` draws one world (a catalog over every product type and brand of the
taxonomy) and lets it arrive in rounds, deterministically per seed:

* **new product types and brands**: a share of the types and of the brands is held out
  of round 0; each enters in a later round, with its products;
* **renamed products**: each round re-lists a share of the products already on sale
  under a new title (the type named by a synonym, a new layout: "Sofa" becomes
  "Settee");
* **new query styles**: round 0's shoppers write the standard profile's queries; each
  round moves the mix towards the hard profile's (paraphrases, negations, "alternative
  to <brand>"), which round 0 never had;
* traffic and test queries are anchored half on the products that arrived or were
  renamed since round 0, so the drift is what they ask about.

Written under ``out_dir``:

* ``base/``: round 0's dataset: its catalog, human-judged train/dev/test queries and an
  unlabeled pool (the traffic before any drift);
* ``teacher/``: a human-judged dataset over the whole world (every type, brand, style),
  queries disjoint from the rest: what the teacher is fine-tuned on. It stands in for
  the broad knowledge an LLM teacher brings (brands, synonyms, paraphrases) and a small
  student trained on round 0's judgments lacks;
* ``round-NN/`` for rounds 1..``rounds``: ``catalog/`` (the catalog on sale in that
  round with current titles, its drifted human-judged ``test`` queries and its traffic
  as ``unlabeled`` queries), ``changes/`` (the products new or renamed in the round,
  as a catalog feed would send them) and ``human/`` (what a team's human judges hold
  that round: round 0's train and dev judgments plus, as ``test``, fresh judgments of
  queries written like the round's traffic, disjoint from the test queries: the
  controller's gate set);
* ``drift.json``: what changed in each round.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts.schema import Split
from training.data import storage
from training.data.rules import CatalogArrays
from training.data.settings import DataSettings
from training.data.simulator import (
    PROFILES,
    PoolShape,
    SimulatorProfile,
    _Query,
    _query_lengths,
    _QueryWriter,
    judge_queries,
    make_catalog,
    render_products,
)
from training.data.taxonomy import BRANDS, TYPES

# Renamed listings name the type by a synonym: what changes is the word shoppers match.
RENAMED_LISTINGS = SimulatorProfile(
    query_mix=PROFILES["standard"].query_mix,
    pool=PROFILES["standard"].pool,
    listing_type_name_share=0.0,
)


@dataclass(frozen=True)
class DriftConfig:
    products: int = 3000  # the whole world; round 0 sells the part without new types/brands
    rounds: int = 3
    base_queries: int = 300  # human-judged round-0 queries (train/dev/test)
    bootstrap_queries: int = 200  # round 0's unlabeled traffic
    traffic_queries: int = 150  # per drift round
    test_queries: int = 60  # human-judged drifted test queries per round
    gate_queries: int = 40  # human-judged queries per round for the controller's gate
    teacher_queries: int = 600  # human-judged queries over the whole world
    new_type_share: float = 0.3
    new_brand_share: float = 0.3
    rename_share: float = 0.15  # of the products on sale, per round
    new_anchor_share: float = 0.5  # traffic/test anchored on arrived or renamed products
    pool: PoolShape = field(default_factory=PoolShape)
    seed: int = 0


@dataclass(frozen=True)
class DriftWorld:
    root: Path

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def teacher(self) -> Path:
        return self.root / "teacher"

    def round_dir(self, number: int) -> Path:
        return self.root / f"round-{number:02d}"

    def catalog(self, number: int) -> Path:
        """Round `number`'s dataset: catalog, drifted test queries, traffic (0: base)."""
        return self.base if number == 0 else self.round_dir(number) / "catalog"

    def human(self, number: int) -> Path:
        """The human-judged dataset a controller works from in round `number`: round 0's
        train and dev judgments, and as its test split (the gate's human queries) fresh
        judgments of queries written like the round's traffic (0: round 0's test split)."""
        return self.base if number == 0 else self.round_dir(number) / "human"

    def changes(self, number: int) -> Path:
        return self.round_dir(number) / "changes"

    def summary(self) -> dict[str, Any]:
        return json.loads((self.root / "drift.json").read_text())


def query_mix(round_number: int, rounds: int) -> dict[str, float]:
    """Round 0: the standard mix; then linearly towards the hard profile's mix."""
    weight = 0.0 if rounds == 0 else min(1.0, round_number / rounds)
    standard, hard = PROFILES["standard"].query_mix, PROFILES["hard"].query_mix
    kinds = dict.fromkeys([*standard, *hard])
    return {
        k: (1 - weight) * standard.get(k, 0.0) + weight * hard.get(k, 0.0)
        for k in kinds
        if (1 - weight) * standard.get(k, 0.0) + weight * hard.get(k, 0.0) > 0
    }


def _subset(catalog: CatalogArrays, rows: np.ndarray) -> CatalogArrays:
    return CatalogArrays(**{f.name: getattr(catalog, f.name)[rows] for f in fields(catalog)})


def _write_queries(
    catalog: CatalogArrays,
    anchors_from: tuple[np.ndarray, np.ndarray],
    count: int,
    mix: Mapping[str, float],
    rng: np.random.Generator,
    seen: set[str],
    new_anchor_share: float,
) -> list[_Query]:
    """`count` queries with texts not in `seen` (added to it); anchors drawn from the
    second array of `anchors_from` with probability `new_anchor_share`, else the first."""
    writer = _QueryWriter(
        catalog, rng, _query_lengths(DataSettings().wands_queries), attribute_variant=0.35
    )
    kinds = list(mix)
    p = np.array([mix[k] for k in kinds])
    old, new = anchors_from
    out: list[_Query] = []
    for _ in range(count * 30):
        if len(out) == count:
            break
        source = new if len(new) and (rng.random() < new_anchor_share or not len(old)) else old
        anchor = int(source[int(rng.integers(len(source)))])
        query = writer.write(anchor, kinds[int(rng.choice(len(kinds), p=p / p.sum()))])
        key = re.sub(r"\W+", " ", query.text.lower()).strip()
        if key and key not in seen:
            seen.add(key)
            out.append(query)
    if len(out) < count:
        raise ValueError(f"only {len(out)} distinct queries of {count}: add products")
    return out


def _local(queries: Sequence[_Query], rows: np.ndarray) -> list[_Query]:
    """Queries re-anchored on `rows` (the part of the world a dataset holds)."""
    position = {int(r): i for i, r in enumerate(rows)}
    return [_Query(q.text, q.query_type, q.spec, position[q.anchor]) for q in queries]


def _write_dataset(
    out: Path,
    products: pa.Table,
    world: CatalogArrays,
    rows: np.ndarray,
    labeled: Sequence[tuple[_Query, str]],
    unlabeled: Sequence[_Query],
    prefix: str,
    pool: PoolShape,
    rng_seed: Sequence[int],
    source: str,
    extra: Mapping[str, Any],
    keep: tuple[pa.Table, pa.Table] | None = None,
) -> None:
    """A dataset of the products at `rows` of `world`, `labeled` queries (with their
    split) judged over them and `unlabeled` queries; `keep` (queries, judgments of
    another dataset) are written beside them."""
    catalog = _subset(world, rows)
    queries = [q for q, _ in labeled] + list(unlabeled)
    ids = [f"{prefix}{i:05d}" for i in range(len(queries))]
    storage.write_table(out, "products", products)
    table = pa.table(
        {
            "query_id": ids,
            "query": [q.text for q in queries],
            "query_type": [q.query_type for q in queries],
            "split": [s for _, s in labeled] + [Split.UNLABELED] * len(unlabeled),
        }
    )
    if keep is not None:
        table = pa.concat_tables([keep[0].select(table.column_names).cast(table.schema), table])
    storage.write_table(out, "queries", table)
    if labeled:
        judgments, _ = judge_queries(
            _local([q for q, _ in labeled], rows),
            ids[: len(labeled)],
            catalog,
            pool,
            pool_rng=np.random.default_rng([*rng_seed, 1]),
            rater_rng=np.random.default_rng([*rng_seed, 2]),
            global_rows=rows,
        )
        if keep is not None:
            judgments = pa.concat_tables(
                [keep[1].select(judgments.column_names).cast(judgments.schema), judgments]
            )
        storage.write_table(out, "judgments", judgments)
    storage.write_manifest(out, source=source, seed=int(rng_seed[0]), extra=dict(extra))


def _splits(count: int, rng: np.random.Generator) -> list[str]:
    cuts = (round(count * 0.7), round(count * 0.85))
    order = rng.permutation(count)
    splits = [Split.TRAIN] * count
    for rank, i in enumerate(order):
        splits[i] = Split.TRAIN if rank < cuts[0] else Split.DEV if rank < cuts[1] else Split.TEST
    return splits


def simulate_drift(out_dir: Path | str, config: DriftConfig = DriftConfig()) -> DriftWorld:
    """Write a drifting world (see the module docstring); the same config gives the same
    tables."""
    if config.rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {config.rounds}")
    for name in ("new_type_share", "new_brand_share", "rename_share", "new_anchor_share"):
        value = getattr(config, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    world_dir = DriftWorld(Path(out_dir))
    seed = config.seed
    rng = np.random.default_rng([seed, 100])
    world = make_catalog(config.products, rng)
    rows_all = np.arange(config.products)
    listings = render_products(world, 0, config.products, np.random.default_rng([seed, 101]))

    # When each type and brand enters: 0, or a drift round (new ones spread over rounds).
    present_types = np.unique(world.product_type)
    new_types = rng.choice(
        present_types, size=round(config.new_type_share * len(present_types)), replace=False
    )
    new_brands = rng.choice(
        len(BRANDS), size=round(config.new_brand_share * len(BRANDS)), replace=False
    )
    type_round = np.zeros(len(TYPES), dtype=int)
    type_round[new_types] = 1 + np.arange(len(new_types)) % config.rounds
    brand_round = np.zeros(len(BRANDS), dtype=int)
    brand_round[new_brands] = 1 + np.arange(len(new_brands)) % config.rounds
    arrives = np.maximum(type_round[world.product_type], brand_round[world.brand])

    titles = listings.column("title").to_pylist()
    renamed_in = np.zeros(config.products, dtype=int)  # 0: never renamed
    rename_rng = np.random.default_rng([seed, 102])
    seen: set[str] = set()
    query_rng = np.random.default_rng([seed, 103])
    summary: dict[str, Any] = {"config": _jsonable(config), "rounds": []}

    def listing_table(rows: np.ndarray) -> pa.Table:
        table = listings.take(pa.array(rows))
        return table.set_column(
            table.schema.get_field_index("title"),
            "title",
            pa.array([titles[int(r)] for r in rows], pa.string()),
        )

    # Round 0.
    base_rows = rows_all[arrives == 0]
    base_catalog = (base_rows[:0], base_rows)
    labeled = _write_queries(
        world, base_catalog, config.base_queries, query_mix(0, config.rounds), query_rng, seen, 0.0
    )
    bootstrap = _write_queries(
        world,
        base_catalog,
        config.bootstrap_queries,
        query_mix(0, config.rounds),
        query_rng,
        seen,
        0.0,
    )
    _write_dataset(
        world_dir.base,
        listing_table(base_rows),
        world,
        base_rows,
        list(zip(labeled, _splits(len(labeled), query_rng), strict=True)),
        bootstrap,
        "q",
        config.pool,
        (seed, 0),
        "simulator drift: round 0",
        {"round": 0, "products": len(base_rows)},
    )
    summary["rounds"].append(
        {
            "round": 0,
            "products": len(base_rows),
            "types": len(np.unique(world.product_type[base_rows])),
            "brands": len(np.unique(world.brand[base_rows])),
            "query_mix": query_mix(0, config.rounds),
        }
    )

    eras: dict[int, tuple[np.ndarray, np.ndarray, dict[str, float]]] = {}
    for number in range(1, config.rounds + 1):
        on_sale = rows_all[arrives < number]
        arrived = rows_all[arrives == number]
        candidates = on_sale[renamed_in[on_sale] == 0]
        renamed = np.sort(
            rename_rng.choice(
                candidates,
                size=min(len(candidates), round(config.rename_share * len(on_sale))),
                replace=False,
            )
        )
        for row in renamed:
            fresh = render_products(
                _subset(world, np.array([row])),
                0,
                1,
                np.random.default_rng([seed, 104, number, int(row)]),
                RENAMED_LISTINGS,
            )
            titles[int(row)] = fresh.column("title")[0].as_py()
        renamed_in[renamed] = number
        now = np.sort(np.concatenate([on_sale, arrived]))
        drifted = now[(arrives[now] > 0) | (renamed_in[now] > 0)]
        mix = query_mix(number, config.rounds)
        eras[number] = (now, drifted, mix)
        test = _write_queries(
            world,
            (now, drifted),
            config.test_queries,
            mix,
            query_rng,
            seen,
            config.new_anchor_share,
        )
        traffic = _write_queries(
            world,
            (now, drifted),
            config.traffic_queries,
            mix,
            query_rng,
            seen,
            config.new_anchor_share,
        )
        _write_dataset(
            world_dir.catalog(number),
            listing_table(now),
            world,
            now,
            [(q, Split.TEST) for q in test],
            traffic,
            f"r{number}q",
            config.pool,
            (seed, number),
            f"simulator drift: round {number}",
            {"round": number, "products": len(now)},
        )
        changed = np.sort(np.concatenate([arrived, renamed]))
        storage.write_table(world_dir.changes(number), "products", listing_table(changed))
        storage.write_manifest(
            world_dir.changes(number),
            source=f"simulator drift: round {number} catalog changes",
            seed=seed,
        )
        summary["rounds"].append(
            {
                "round": number,
                "products": len(now),
                "new_products": len(arrived),
                "renamed_products": len(renamed),
                "new_types": sorted(TYPES[t].name for t in new_types if type_round[t] == number),
                "new_brands": sorted(BRANDS[b] for b in new_brands if brand_round[b] == number),
                "query_mix": mix,
                "traffic_queries": len(traffic),
                "test_queries": len(test),
            }
        )

    # The teacher's knowledge: every type, brand and query style, the newest titles.
    teacher = _write_queries(
        world,
        (rows_all, rows_all),
        config.teacher_queries,
        query_mix(config.rounds, 2 * config.rounds),  # half standard, half hard
        query_rng,
        seen,
        0.0,
    )
    splits = [Split.DEV if i % 7 == 0 else Split.TRAIN for i in range(len(teacher))]
    _write_dataset(
        world_dir.teacher,
        listing_table(rows_all),
        world,
        rows_all,
        list(zip(teacher, splits, strict=True)),
        [],
        "t",
        config.pool,
        (seed, 99),
        "simulator drift: teacher's world",
        {"products": config.products},
    )
    # The gate's fresh human judgments, drawn last from a stream of their own so that
    # everything above is the same with or without them, and unlike any query above.
    base_queries = storage.read_table(world_dir.base, "queries")
    kept = pc.is_in(base_queries.column("split"), pa.array([Split.TRAIN, Split.DEV]))
    base_queries = base_queries.filter(kept)
    base_judgments = storage.read_table(world_dir.base, "judgments")
    base_judgments = base_judgments.filter(
        pc.is_in(base_judgments.column("query_id"), base_queries.column("query_id"))
    )
    for number, (now, drifted, mix) in eras.items():
        gate = _write_queries(
            world,
            (now, drifted),
            config.gate_queries,
            mix,
            np.random.default_rng([seed, 105, number]),
            seen,
            config.new_anchor_share,
        )
        _write_dataset(
            world_dir.human(number),
            storage.read_table(world_dir.catalog(number), "products"),
            world,
            now,
            [(q, Split.TEST) for q in gate],
            [],
            f"r{number}g",
            config.pool,
            (seed, 105, number),
            f"simulator drift: round {number} human judgments",
            {"round": number, "products": len(now)},
            keep=(base_queries, base_judgments),
        )
        summary["rounds"][number]["gate_queries"] = len(gate)
    (world_dir.root / "drift.json").write_text(json.dumps(summary, indent=2) + "\n")
    return world_dir


def _jsonable(config: DriftConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out[f.name] = (
            {g.name: getattr(value, g.name) for g in fields(value)}
            if isinstance(value, PoolShape)
            else value
        )
    return out


def changed_products(world: DriftWorld, number: int) -> list[dict[str, Any]]:
    """Round `number`'s new and renamed products, as rows of the products table."""
    return storage.read_table(world.changes(number), "products").to_pylist()


def product_titles(dataset: Path, product_ids: Sequence[str]) -> dict[str, str]:
    table = storage.read_table(dataset, "products", ["product_id", "title"])
    table = table.filter(pc.is_in(table.column("product_id"), pa.array(list(product_ids))))
    return dict(
        zip(table.column("product_id").to_pylist(), table.column("title").to_pylist(), strict=True)
    )
