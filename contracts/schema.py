"""The dataset schema every loader writes and every trainer reads.

One dataset is a directory of Parquet tables (see ``training.data.storage``):

* ``products``  - the catalog, one row per product;
* ``queries``   - one row per query, with its split;
* ``judgments`` - human (or simulated-rater) graded labels per (query, product);
* ``teacher_labels`` - teacher soft labels for (query, product) pairs: written by
  ``relkd teacher label``, or read from a label store snapshot (``contracts.label_snapshots``).

Grades use the ESCI scale mapped to integers so that "higher is more relevant":
``3 = Exact, 2 = Substitute, 1 = Complement, 0 = Irrelevant``. WANDS' three grades map
onto it as ``Exact -> 3, Partial -> 2, Irrelevant -> 0`` (WANDS has no Complement).
"""

from __future__ import annotations

from enum import IntEnum

import pyarrow as pa

SCHEMA_VERSION = 1
NUM_GRADES = 4


class Grade(IntEnum):
    IRRELEVANT = 0
    COMPLEMENT = 1
    SUBSTITUTE = 2
    EXACT = 3


class Split:
    TRAIN = "train"
    DEV = "dev"
    TEST = "test"
    # Queries with no human judgments, kept for augmentation (candidate generation).
    UNLABELED = "unlabeled"
    ALL = (TRAIN, DEV, TEST, UNLABELED)


# Values of the chain-of-thought rationale fields (Taobao ELLM-rele's step-by-step
# judgment: category, brand, attribute/model). Stored as int8.
class Match(IntEnum):
    NOT_STATED = 0
    MATCH = 1
    MISMATCH = 2


RATIONALE_FIELDS = ("category_match", "brand_match", "attribute_match")
NUM_MATCH = len(Match)
# The teacher's soft rationale: p(Match value) per field, values in Match order. Null
# where the teacher stated nothing for that field (a teacher without rationale heads):
# a missing target, which the student's chain-of-thought loss masks.
RATIONALE_PROBS_FIELDS = tuple(f"{field}_probs" for field in RATIONALE_FIELDS)
# Columns added after SCHEMA_VERSION 1 was first written; all nullable, so a table
# written before them reads with nulls there (training.data.storage).
ADDED_COLUMNS = frozenset(RATIONALE_PROBS_FIELDS)

PRODUCTS = pa.schema(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("product_type", pa.string()),
        # Coarse family of related types (e.g. "living room seating"); substitutes
        # share a family, complements are linked across families.
        pa.field("category", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("attributes", pa.map_(pa.string(), pa.string())),
        pa.field("description", pa.string()),
        pa.field("features", pa.list_(pa.string())),
    ]
)

QUERIES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        # How the query was written (type_only, brand_type, misspelling, ...) or the
        # source dataset's query class.
        pa.field("query_type", pa.string()),
        pa.field("split", pa.string(), nullable=False),
    ]
)

JUDGMENTS = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("grade", pa.int8(), nullable=False),
        # Soft grade distribution over the NUM_GRADES grades (index = grade); the
        # raters' vote shares, the teacher's soft targets.
        pa.field("grade_probs", pa.list_(pa.float32(), NUM_GRADES)),
        pa.field("num_raters", pa.int16()),
        # Ground-truth rationale fields derived from the simulator's rules (Match
        # values; NOT_STATED = the query asks for no such thing). Null where the source
        # has no rationale (WANDS, ESCI): unknown, not NOT_STATED.
        pa.field("category_match", pa.int8()),
        pa.field("brand_match", pa.int8()),
        pa.field("attribute_match", pa.int8()),
    ]
)

TEACHER_LABELS = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("grade_probs", pa.list_(pa.float32(), NUM_GRADES), nullable=False),
        # sum_g p(g) * g, in [0, NUM_GRADES - 1]
        pa.field("expected_score", pa.float32(), nullable=False),
        pa.field("teacher_model", pa.string(), nullable=False),
        pa.field("teacher_version", pa.string(), nullable=False),
        # The teacher's most likely Match value per rationale field, and its
        # distribution (RATIONALE_PROBS_FIELDS); null where the teacher stated none.
        pa.field("category_match", pa.int8()),
        pa.field("brand_match", pa.int8()),
        pa.field("attribute_match", pa.int8()),
        *(pa.field(name, pa.list_(pa.float32(), NUM_MATCH)) for name in RATIONALE_PROBS_FIELDS),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "products": PRODUCTS,
    "queries": QUERIES,
    "judgments": JUDGMENTS,
    "teacher_labels": TEACHER_LABELS,
}
