"""Training examples and the query-grouped pair sampler.

Human judgments and teacher labels become one kind of example: a (query, product)
pair with a soft target grade distribution, its expected grade, the rationale targets
and the source. For human judgments the distribution is the raters' vote shares, so
the same losses (Margin-MSE, MSE, KL, CoT) apply to both sources and the human-only
baseline differs from the distilled student only in its data.

Rationale targets are one distribution over the Match values per field (category,
brand, attribute match): one-hot of a judgment's rationale field, the teacher's
distribution (``*_match_probs``) for a teacher label. A field with none (a dataset
without rationales, a teacher without rationale heads, a label written before the
distributions existed, whose value column held a NOT_STATED placeholder) is *missing*:
``rationale_known`` is False there and the chain-of-thought loss skips it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from contracts import schema
from contracts.label_snapshots import snapshot_dir
from contracts.text import product_text
from training.data.storage import has_table, read_table
from training.data.subsets import seeded_subset
from training.student.config import StudentTrainConfig

HUMAN = "human"
TEACHER = "teacher"


@dataclass(frozen=True)
class Example:
    query_id: str
    query: str
    product_id: str
    product_text: str
    grade_probs: np.ndarray  # float32 [NUM_GRADES], sums to 1
    score: float  # expected grade sum_g p(g) * g
    # float32 [len(RATIONALE_FIELDS), NUM_MATCH]: p(Match value) per field; zeros where
    # the field is missing.
    rationale: np.ndarray
    rationale_known: np.ndarray  # bool [len(RATIONALE_FIELDS)]
    source: str  # HUMAN or TEACHER


@dataclass(frozen=True)
class TrainingSet:
    examples: list[Example]
    human_queries: int
    teacher_queries: int
    # The label store snapshot the teacher labels came from (None: the dataset's table).
    teacher_snapshot: str | None = None

    @property
    def num_queries(self) -> int:
        return len({e.query_id for e in self.examples})

    def rationale_examples(self, source: str) -> int:
        """Examples of ``source`` with at least one rationale target."""
        return sum(1 for e in self.examples if e.source == source and e.rationale_known.any())


def _probs(value: list[float] | None, grade: int | None, where: str) -> np.ndarray:
    if value is None:
        if grade is None:
            raise ValueError(f"{where}: neither grade_probs nor grade is set")
        probs = np.zeros(schema.NUM_GRADES, dtype=np.float32)
        probs[grade] = 1.0
        return probs
    probs = np.asarray(value, dtype=np.float32)
    total = float(probs.sum())
    if probs.shape != (schema.NUM_GRADES,) or total <= 0 or (probs < 0).any():
        raise ValueError(f"{where}: grade_probs must be {schema.NUM_GRADES} non-negative values")
    return probs / total


def _judgment_rationale(row: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One-hot targets of a judgment's rationale fields; a null field is missing."""
    probs = np.zeros((len(schema.RATIONALE_FIELDS), schema.NUM_MATCH), dtype=np.float32)
    known = np.zeros(len(schema.RATIONALE_FIELDS), dtype=bool)
    for i, field in enumerate(schema.RATIONALE_FIELDS):
        value = row.get(field)
        if value is None:
            continue
        if int(value) not in schema.Match._value2member_map_:
            raise ValueError(f"{where}: {field}={value} is not a Match value")
        probs[i, int(value)], known[i] = 1.0, True
    return probs, known


def _label_rationale(row: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A teacher label's rationale distributions; a null one is missing."""
    probs = np.zeros((len(schema.RATIONALE_FIELDS), schema.NUM_MATCH), dtype=np.float32)
    known = np.zeros(len(schema.RATIONALE_FIELDS), dtype=bool)
    for i, field in enumerate(schema.RATIONALE_PROBS_FIELDS):
        value = row.get(field)
        if value is None:
            continue
        field_probs = np.asarray(value, dtype=np.float32)
        total = float(field_probs.sum())
        if field_probs.shape != (schema.NUM_MATCH,) or total <= 0 or (field_probs < 0).any():
            raise ValueError(
                f"{where}: {field} must be {schema.NUM_MATCH} non-negative values, got {value}"
            )
        probs[i], known[i] = field_probs / total, True
    return probs, known


def _product_texts(products: pa.Table, fields: list[str]) -> dict[str, str]:
    return {row["product_id"]: product_text(row, fields) for row in products.to_pylist()}


def load_training_set(config: StudentTrainConfig) -> TrainingSet:
    """Build the training examples the config asks for from ``config.dataset_dir``.

    Only train-split queries contribute human examples; teacher labels of dev or test
    queries are dropped so that early stopping and the final evaluation stay honest.
    Where a pair has both a human judgment and a teacher label, the human one is kept.
    """
    root = config.dataset_dir
    queries = read_table(root, "queries").to_pylist()
    split_of = {q["query_id"]: q["split"] for q in queries}
    text_of = {q["query_id"]: q["query"] for q in queries}
    products = _product_texts(read_table(root, "products"), config.text_fields)
    # Teacher labels come from a label store snapshot, or else the dataset's own table.
    labels_root, snapshot_id = root, None
    if config.use_teacher_labels and config.label_store is not None:
        labels_root = snapshot_dir(config.label_store, config.snapshot)
        snapshot_id = labels_root.name
        # The store's product text is the catalog's newest: it adds new products and
        # replaces edited ones.
        products.update(_product_texts(read_table(labels_root, "products"), config.text_fields))

    def text(product_id: str, where: str) -> str:
        try:
            return products[product_id]
        except KeyError:
            raise ValueError(f"{where}: product_id {product_id!r} is not in products") from None

    judgments = [
        j
        for j in read_table(root, "judgments").to_pylist()
        if split_of.get(j["query_id"]) == schema.Split.TRAIN
    ]
    train_ids = sorted({j["query_id"] for j in judgments})
    keep_human = seeded_subset(
        train_ids, round(config.human_fraction * len(train_ids)), config.seed
    )
    examples: list[Example] = []
    seen: set[tuple[str, str]] = set()
    for j in judgments:
        if j["query_id"] not in keep_human:
            continue
        where = f"judgments[{j['query_id']}, {j['product_id']}]"
        probs = _probs(j.get("grade_probs"), j.get("grade"), where)
        rationale, known = _judgment_rationale(j, where)
        examples.append(
            Example(
                query_id=j["query_id"],
                query=text_of[j["query_id"]],
                product_id=j["product_id"],
                product_text=text(j["product_id"], where),
                grade_probs=probs,
                score=float(probs @ np.arange(schema.NUM_GRADES)),
                rationale=rationale,
                rationale_known=known,
                source=HUMAN,
            )
        )
        seen.add((j["query_id"], j["product_id"]))

    teacher_queries: set[str] = set()
    if config.use_teacher_labels:
        if not has_table(labels_root, "teacher_labels"):
            raise ValueError(
                f"{labels_root}: use_teacher_labels is on but the dataset has no "
                "teacher_labels table"
            )
        labels = [
            t
            for t in read_table(labels_root, "teacher_labels").to_pylist()
            if split_of.get(t["query_id"]) not in (schema.Split.DEV, schema.Split.TEST)
        ]
        label_ids = sorted({t["query_id"] for t in labels})
        count = len(label_ids) if config.augmented_queries is None else config.augmented_queries
        teacher_queries = seeded_subset(label_ids, count, config.seed)
        for t in labels:
            key = (t["query_id"], t["product_id"])
            if t["query_id"] not in teacher_queries or key in seen:
                continue
            where = f"teacher_labels[{t['query_id']}, {t['product_id']}]"
            rationale, known = _label_rationale(t, where)
            examples.append(
                Example(
                    query_id=t["query_id"],
                    query=t["query"],
                    product_id=t["product_id"],
                    product_text=text(t["product_id"], where),
                    grade_probs=_probs(t["grade_probs"], None, where),
                    score=float(t["expected_score"]),
                    rationale=rationale,
                    rationale_known=known,
                    source=TEACHER,
                )
            )
            seen.add(key)
    if not examples:
        raise ValueError(
            f"{root}: no training examples (human_fraction={config.human_fraction}, "
            f"use_teacher_labels={config.use_teacher_labels})"
        )
    return TrainingSet(
        examples=examples,
        human_queries=len(keep_human),
        teacher_queries=len(teacher_queries),
        teacher_snapshot=snapshot_id,
    )


class QueryPairSampler:
    """Batches of same-query product pairs whose target scores differ by a real margin.

    Margin-MSE learns from score *differences*, so pairs of equally relevant products
    carry no signal; only pairs with ``|t_i - t_j| >= min_margin`` are formed. Each
    batch takes ``queries_per_batch`` queries and up to ``pairs_per_query`` pairs from
    each; queries are reshuffled every pass over them.
    """

    def __init__(
        self,
        examples: list[Example],
        *,
        queries_per_batch: int,
        pairs_per_query: int,
        min_margin: float,
        seed: int,
    ) -> None:
        by_query: dict[str, list[int]] = {}
        for index, example in enumerate(examples):
            by_query.setdefault(example.query_id, []).append(index)
        scores = np.array([e.score for e in examples], dtype=np.float64)
        self._pairs: list[np.ndarray] = []
        for indices in by_query.values():
            idx = np.array(indices)
            diff = scores[idx][:, None] - scores[idx][None, :]
            # Ordered (higher, lower) so each unordered pair appears once.
            hi, lo = np.nonzero(diff >= max(min_margin, 1e-6))
            if len(hi):
                self._pairs.append(np.stack([idx[hi], idx[lo]], axis=1))
        if not self._pairs:
            raise ValueError(
                f"no query has two products whose target scores differ by >= {min_margin} "
                "(min_margin)"
            )
        self.queries_per_batch = queries_per_batch
        self.pairs_per_query = pairs_per_query
        self.seed = seed

    @property
    def num_queries(self) -> int:
        """Queries with at least one usable pair."""
        return len(self._pairs)

    @property
    def num_pairs(self) -> int:
        return sum(len(p) for p in self._pairs)

    @property
    def batches_per_pass(self) -> int:
        return -(-len(self._pairs) // self.queries_per_batch)

    def batch(self, number: int) -> np.ndarray:
        """Batch ``number`` as an int array [pairs, 2] of (higher, lower)-target indices.

        A pure function of (seed, number), so a resumed run continues with exactly
        the batches the interrupted one would have seen.
        """
        epoch, position = divmod(number, self.batches_per_pass)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self._pairs))
        rng = np.random.default_rng([self.seed, epoch, position])
        start = position * self.queries_per_batch
        chosen = []
        for q in order[start : start + self.queries_per_batch]:
            pairs = self._pairs[q]
            take = min(self.pairs_per_query, len(pairs))
            chosen.append(pairs[rng.choice(len(pairs), take, replace=False)])
        return np.concatenate(chosen)

    def __iter__(self) -> Iterator[np.ndarray]:
        """Batches 0, 1, 2, ... without end."""
        return (self.batch(number) for number in itertools.count())
