"""Cross-encoder rows from cached product token ids: products are tokenized once.

A Score request pairs one query with many products, and product texts repeat from
request to request. Tokenizing every ``(query, product)`` pair re-tokenizes each
product every time (7.4 ms of a ~9 ms Score on a GPU for 100 products). Here each
product's text is tokenized once, without special tokens, and kept in a
:class:`ProductTokenCache` keyed by product id and text hash (a changed text has a
new hash, so the stale ids are replaced on first sight). A request tokenizes only its
query, and :class:`PairAssembler` builds the rows the tokenizer would have produced
for the pairs: the same ``longest_first`` truncation at ``max_length``, the same
special tokens and type ids (read from the tokenizer's own pair encoding, so BERT's
``[CLS] q [SEP] p [SEP]`` and RoBERTa's ``<s> q </s></s> p </s>`` both hold), right
padding to the longest row.

This file is copied next to ``model.py`` into Triton version directories and also
imported by student-inference, so it imports nothing from the project: numpy and
``tokenizers`` only (Triton's interpreter has both).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from tokenizers import Encoding, Tokenizer

# ONNX input name -> the assembled array holding it.
INPUT_ARRAYS = ("input_ids", "attention_mask", "token_type_ids")

# One template slot: ("A", type_id) / ("B", type_id) for the two sequences' tokens,
# or (token_id, type_id) for a special token.
_Slot = tuple[object, int]


@dataclass(frozen=True)
class ProductTokens:
    """One product text's token ids (no special tokens), capped at what a row can hold."""

    text_hash: bytes
    ids: np.ndarray
    # Length before the cap: a pair is truncated when query + product exceed the limit.
    full_length: int


def text_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _pair_template(tokenizer: Tokenizer) -> list[_Slot]:
    """The special-token layout of a pair, read from an encoded pair (no truncation/padding)."""
    processed = tokenizer.encode("a", "b", add_special_tokens=True)
    template: list[_Slot] = []
    for token_id, type_id, sequence in zip(
        processed.ids, processed.type_ids, processed.sequence_ids, strict=True
    ):
        if sequence is None:
            template.append((token_id, type_id))
        else:
            slot = ("A", type_id) if sequence == 0 else ("B", type_id)
            if not template or template[-1] != slot:
                template.append(slot)
    if [slot for slot, _ in template if slot in ("A", "B")] != ["A", "B"]:
        raise ValueError("tokenizer: its pair template does not hold each sequence once")
    return template


def _segments(widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, offset in its row) of every token when row r holds ``widths[r]`` tokens,
    listed row after row."""
    rows = np.repeat(np.arange(len(widths)), widths)
    return rows, np.arange(len(rows)) - np.repeat(np.cumsum(widths) - widths, widths)


class PairAssembler:
    """Builds ``longest_first``-truncated pair rows from pre-tokenized ids."""

    def __init__(self, tokenizer_json: str, max_length: int, pad_id: int) -> None:
        self.tokenizer = Tokenizer.from_file(tokenizer_json)
        # Ids are taken without special tokens and before any truncation: the
        # assembler truncates the pair as a whole, as the tokenizer would.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_length = max_length
        self.pad_id = pad_id
        self.template = _pair_template(self.tokenizer)
        self.num_special = sum(s[0] not in ("A", "B") for s in self.template)
        if max_length <= self.num_special:
            raise ValueError(
                f"max_length: {max_length} leaves no room for a pair's "
                f"{self.num_special} special tokens"
            )
        # The longest product ids worth keeping: the query takes at least one token
        # when the product is the longer sequence, and never more than half otherwise.
        self.keep = max_length - self.num_special

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        return self.tokenizer.encode_batch(list(texts), add_special_tokens=False)

    def product_tokens(self, text: str, encoding: Encoding) -> ProductTokens:
        """``encoding`` is ``text``'s, from :meth:`encode`."""
        ids = encoding.ids
        return ProductTokens(text_hash(text), np.asarray(ids[: self.keep], np.int64), len(ids))

    def truncated_lengths(self, query_length: int, product_lengths: np.ndarray) -> np.ndarray:
        """[rows, 2] lengths kept of (query, product): the ``tokenizers`` ``longest_first``.

        The shorter sequence stays whole when the longer one can take the rest of the
        budget; otherwise the budget is halved, the odd token to the longer sequence
        (to the product on a tie). Mirrors ``truncate_encodings`` in tokenizers 0.2x.
        """
        budget = self.keep
        query = np.full_like(product_lengths, query_length)
        short = np.minimum(query, product_lengths)
        long = np.where(short > budget, short, np.maximum(short, budget - short))
        halved = short + long > budget
        short = np.where(halved, budget // 2, short)
        long = np.where(halved, budget // 2 + budget % 2, long)
        query_longer = query > product_lengths
        kept_query = np.minimum(np.where(query_longer, long, short), query)
        kept_product = np.minimum(np.where(query_longer, short, long), product_lengths)
        fits = query + product_lengths <= budget
        return np.stack(
            [np.where(fits, query, kept_query), np.where(fits, product_lengths, kept_product)], 1
        )

    def is_truncated(self, query_length: int, product: ProductTokens) -> bool:
        return query_length + product.full_length > self.keep

    def assemble(self, query_ids: Sequence[int], products: Sequence[ProductTokens]) -> dict:
        """``input_ids``/``attention_mask``/``token_type_ids`` [rows, longest] int64.

        Vectorized over rows (a Python loop per row cost ~1.7 ms for 100 products):
        each template slot starts at a per-row offset, and the query's and products'
        kept tokens are scattered into place with one fancy-indexed write each.
        """
        query = np.asarray(query_ids, np.int64)
        rows = len(products)
        full = np.fromiter((p.full_length for p in products), np.int64, rows)
        kept = self.truncated_lengths(len(query), full)
        widths = {"A": kept[:, 0], "B": kept[:, 1]}
        lengths = kept.sum(1) + self.num_special
        width = int(lengths.max(initial=0))
        input_ids = np.full((rows, width), self.pad_id, np.int64)
        type_ids = np.zeros((rows, width), np.int64)
        # The products' kept ids, row after row (the query's are indexed from ``query``).
        product_ids = np.concatenate(
            [p.ids[:k] for p, k in zip(products, widths["B"].tolist(), strict=True)]
            or [np.zeros(0, np.int64)]
        )
        row_index = np.arange(rows)
        position = np.zeros(rows, np.int64)
        for slot, type_id in self.template:
            if slot in widths:
                # Token j of row r's sequence lands at position[r] + j.
                r, j = _segments(widths[slot])
                input_ids[r, position[r] + j] = query[j] if slot == "A" else product_ids
                type_ids[r, position[r] + j] = type_id
                position = position + widths[slot]
            else:
                input_ids[row_index, position] = slot
                type_ids[row_index, position] = type_id
                position = position + 1
        attention = (np.arange(width) < lengths[:, None]).astype(np.int64)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "token_type_ids": type_ids,
        }


K = TypeVar("K")
V = TypeVar("V")


class LeastRecentlyUsed(Generic[K, V]):
    """A mapping bounded to ``capacity`` entries: a store past it drops the entry read or
    stored longest ago. Not locked: its owner locks around its own batches of calls
    (also student-inference's query embedding cache)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


class ProductTokenCache:
    """Product id -> its text's token ids; a changed text replaces the entry.

    Bounded (least recently used entries go first). Thread-safe: student-inference
    counts truncations from worker threads.
    """

    def __init__(self, assembler: PairAssembler, capacity: int = 1_000_000) -> None:
        self.assembler = assembler
        self._entries: LeastRecentlyUsed[str, ProductTokens] = LeastRecentlyUsed(capacity)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, product_ids: Sequence[str], texts: Sequence[str]) -> None:
        """Tokenize and store products (the catalog's add/change path)."""
        if len(product_ids) != len(texts):
            raise ValueError(f"product_id: {len(product_ids)} ids for {len(texts)} product texts")
        encodings = self.assembler.encode(texts)
        with self._lock:
            for product_id, text, encoding in zip(product_ids, texts, encodings, strict=True):
                self._entries.put(product_id, self.assembler.product_tokens(text, encoding))

    def get(self, product_ids: Sequence[str], texts: Sequence[str]) -> list[ProductTokens]:
        """Each product's tokens; unknown or changed products are tokenized and cached."""
        if len(product_ids) != len(texts):
            raise ValueError(f"product_id: {len(product_ids)} ids for {len(texts)} product texts")
        hashes = [text_hash(t) for t in texts]
        found: list[ProductTokens | None] = []
        with self._lock:
            for product_id, digest in zip(product_ids, hashes, strict=True):
                entry = self._entries.get(product_id)
                # A changed text's stale entry is replaced below.
                found.append(entry if entry is not None and entry.text_hash == digest else None)
        missing = [i for i, entry in enumerate(found) if entry is None]
        if missing:
            encodings = self.assembler.encode([texts[i] for i in missing])
            with self._lock:
                for i, encoding in zip(missing, encodings, strict=True):
                    tokens = self.assembler.product_tokens(texts[i], encoding)
                    self._entries.put(product_ids[i], tokens)
                    found[i] = tokens
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        return found  # type: ignore[return-value]


def request_rows(
    cache: ProductTokenCache, input_tensor: Callable[[str], Any | None]
) -> dict[str, np.ndarray]:
    """The pair rows of one Triton request from cached product ids; only the query is
    tokenized. ``input_tensor(name)`` is the request's input tensor or None (Triton's
    ``pb_utils.get_input_tensor_by_name`` bound to the request)."""

    def strings(name: str) -> list[str] | None:
        tensor = input_tensor(name)
        if tensor is None:
            return None
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy()]

    def required(name: str) -> list[str]:
        values = strings(name)
        if values is None:
            raise ValueError(f"input {name!r} is missing")
        return values

    query = required("query")
    if len(query) != 1:
        raise ValueError(f"input 'query' must hold exactly 1 string, got {len(query)}")
    texts = required("product_text")
    # Without ids (an older caller) the text itself keys the cache.
    product_ids = strings("product_id") or texts
    if len(product_ids) != len(texts):
        raise ValueError(f"input 'product_id' has {len(product_ids)} ids for {len(texts)} texts")
    products = cache.get(product_ids, texts)
    (query_encoding,) = cache.assembler.encode(query)
    return cache.assembler.assemble(query_encoding.ids, products)
