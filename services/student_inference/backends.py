"""Scoring backends of the student-inference service.

* :class:`TritonBackend` - a cross-encoder served by NVIDIA Triton (or any KServe v2
  gRPC server), called with ``tritonclient``'s asyncio gRPC client. One request carries
  one query and all its candidates (``product_text`` BYTES [-1]), so a request is
  already a batch; cross-request batching is Triton's (the GPU repository's ONNX model
  has a dynamic batcher).
* :class:`TwoTowerBackend` - a two-tower student: product embeddings were precomputed
  at export; per request only the small query tower runs, in-process with ONNX Runtime.

Neither imports torch: tokenisation (for the truncation count and the query tower) uses
the exported ``tokenizer.json`` with the ``tokenizers`` library.

Every result names the student's training identity (``student.json``'s name and
version, of the version that answered) and, separately, the serving revision.

Settings (environment variables, prefix ``RELKD_``) are documented on
:class:`TritonBackendSettings` and :class:`TwoTowerSettings` and in
``docs/student-inference.md``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import operator
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from prometheus_client import Counter
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from relevance.v1 import student_inference_pb2
from tokenizers import Encoding, Tokenizer
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from contracts.artifacts import (
    EXPORT_TOKENIZER,
    PRODUCT_EMBEDDINGS,
    PRODUCT_IDS,
    QUERY_TOWER_INT8,
    QUERY_TOWER_ONNX,
    SCORING_JSON,
    TOKENIZER_JSON,
    CrossEncoderSpec,
    TwoTowerSpec,
    read_student_spec,
)
from contracts.identity import ModelRef
from contracts.text import product_text
from services.core.grpc_server import DeadlineExceeded, InvalidArgument, Unavailable
from services.core.settings import Settings
from services.student_inference.service import ScoreResult
from services.student_inference.triton_runtime import TritonServer, triton_client_tls
from training.export.triton_models.pair_tokens import (
    LeastRecentlyUsed,
    PairAssembler,
    ProductTokenCache,
)

log = logging.getLogger(__name__)

# The text fields a ScoreProduct carries; a student trained on others cannot be served.
REQUEST_TEXT_FIELDS = ("title", "product_type", "brand")

# Reconnect quickly after Triton comes back: gRPC's default backoff grows to 120 s,
# during which every request would fail fast with UNAVAILABLE.
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


class TritonBackendSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELKD_", extra="ignore")

    triton_url: str = Field("127.0.0.1:8001", description="host:port of Triton's gRPC endpoint.")
    student_model: str = Field("relkd-student", description="Triton model name of the student.")
    student_model_version: str = Field(
        "", description="Triton model version to call; empty = the latest loaded version."
    )
    triton_timeout_s: float = Field(
        2.0,
        gt=0,
        description="Longest wait for one Triton call (the caller's deadline may cut it).",
    )
    triton_model_repository: Path = Field(
        Path(".relkd/triton-repo"),
        description="The Triton model repository (mounted read-only): the service reads each "
        "version's student.json and tokenizer.json from it for text fields and truncation.",
    )


class TwoTowerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELKD_", extra="ignore")

    student_export_dir: Path = Field(
        Path(".relkd/export/student"), description="Export directory of a two-tower student."
    )
    query_tower_int8: bool = Field(False, description="Run the int8 query tower.")
    query_tower_threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads.")
    query_tower_inline: bool = Field(
        True,
        description="Score on the event loop's thread instead of a worker thread: saves the "
        "thread hop (~0.3 ms of CPU per request, measured), but one request's query tower "
        "holds the loop, so requests no longer overlap on a second core (false: throughput).",
    )
    query_embedding_cache_size: int = Field(
        10_000,
        ge=0,
        description="Query embeddings kept in a least-recently-used cache of the loaded model, "
        "keyed by the query's token ids (head queries repeat: a hit skips the query tower); "
        "0 turns the cache off.",
    )


def _request_rows(products: Sequence[student_inference_pb2.ScoreProduct]) -> list[dict[str, str]]:
    return [{f: getattr(p, f) for f in REQUEST_TEXT_FIELDS} for p in products]


def _check_text_fields(spec: CrossEncoderSpec | TwoTowerSpec, where: Path) -> None:
    unsupported = sorted(set(spec.text_fields) - set(REQUEST_TEXT_FIELDS))
    if unsupported:
        raise ValueError(
            f"{where}: text_fields {unsupported} are not carried by ScoreProduct "
            f"({list(REQUEST_TEXT_FIELDS)}); this student cannot be served"
        )


@dataclass(frozen=True)
class TextPolicy:
    """How one student version reads products: its text fields and token limit."""

    # The training identity of the student version this policy belongs to.
    model: ModelRef
    text_fields: tuple[str, ...]
    max_length: int
    # Product ids -> token ids (keyed by id and text hash), so a product is tokenized
    # once, not per request: a pair's length is the query's plus the cached product's.
    products: ProductTokenCache
    # Special tokens the tokenizer adds around a text alone ([CLS] t [SEP]: 2).
    single_specials: int

    @classmethod
    def load(cls, spec_dir: Path, tokenizer_json: Path) -> TextPolicy:
        spec = read_student_spec(spec_dir)
        _check_text_fields(spec, spec_dir)
        # Counting never pads, so the assembler's pad id is unused here.
        assembler = PairAssembler(str(tokenizer_json), spec.max_length, pad_id=0)
        tokenizer = assembler.tokenizer
        single_specials = len(tokenizer.encode("a").ids) - len(
            tokenizer.encode("a", add_special_tokens=False).ids
        )
        return cls(
            spec.model_ref,
            tuple(spec.text_fields),
            spec.max_length,
            ProductTokenCache(assembler),
            single_specials,
        )

    def texts(self, products: Sequence[student_inference_pb2.ScoreProduct]) -> list[str]:
        return [product_text(row, self.text_fields) for row in _request_rows(products)]

    def truncated_texts(self, product_ids: Sequence[str], texts: Sequence[str]) -> list[bool]:
        """Whether each text is longer than ``max_length`` tokens alone (a two-tower
        product tower).

        Products come from the token cache (tokenized on first sight or text change).
        """
        limit = self.max_length - self.single_specials
        return [p.full_length > limit for p in self.products.get(product_ids, texts)]

    def count_truncated_pairs(
        self, query: str, product_ids: Sequence[str], texts: Sequence[str]
    ) -> int:
        """``(query, text)`` pairs longer than ``max_length`` tokens.

        Products come from the token cache (tokenized on first sight or text change).
        """
        assembler = self.products.assembler
        query_length = len(assembler.encode([query])[0].ids)
        return sum(
            assembler.is_truncated(query_length, product)
            for product in self.products.get(product_ids, texts)
        )


def _latest_version(model_dir: Path) -> str:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise ValueError(
            f"{model_dir}: no numbered version directories (RELKD_TRITON_MODEL_REPOSITORY)"
        )
    return str(max(versions))


class TritonBackend:
    """A cross-encoder behind Triton; one asyncio gRPC client per event loop, reused.

    Text fields, the truncation limit and the training identity come from the served
    version's ``student.json``/``tokenizer.json`` in the model repository. They are
    reloaded when a response reports a new version, so a request that straddles a
    version switch is rendered with the previous version's fields (versions of one model
    share them) and reported with the identity of the version that answered.
    """

    def __init__(self, settings: TritonBackendSettings | None = None) -> None:
        self.settings = settings or TritonBackendSettings()
        self.model_dir = self.settings.triton_model_repository / self.settings.student_model
        version = self.settings.student_model_version or _latest_version(self.model_dir)
        self._policy = self._load_policy(version)
        self._version = version
        self._client: InferenceServerClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def _load_policy(self, version: str) -> TextPolicy:
        version_dir = self.model_dir / version
        return TextPolicy.load(version_dir, version_dir / TOKENIZER_JSON)

    def _get_client(self) -> InferenceServerClient:
        # grpc.aio channels belong to the loop that created them.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = InferenceServerClient(
                self.settings.triton_url,
                channel_args=_CHANNEL_ARGS,
                **triton_client_tls(Settings()),  # type: ignore[arg-type]
            )
            self._client_loop = loop
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def score(
        self,
        query: str,
        products: Sequence[student_inference_pb2.ScoreProduct],
        timeout_s: float | None,
    ) -> ScoreResult:
        policy, policy_version = self._policy, self._version
        texts = policy.texts(products)
        query_input = InferInput("query", [1], "BYTES")
        query_input.set_data_from_numpy(np.array([query.encode()], dtype=np.object_))
        text_input = InferInput("product_text", [len(texts)], "BYTES")
        text_input.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
        product_ids = [p.product_id for p in products]
        # Keys Triton's product token cache: each product is tokenized once per version.
        id_input = InferInput("product_id", [len(texts)], "BYTES")
        id_input.set_data_from_numpy(np.array([i.encode() for i in product_ids], dtype=np.object_))
        limit = self.settings.triton_timeout_s
        caller_binds = timeout_s is not None and timeout_s < limit
        wait_s = min(limit, timeout_s) if timeout_s is not None else limit
        # The Rust tokenizer releases the GIL: count truncations while Triton scores.
        counting = asyncio.create_task(
            asyncio.to_thread(policy.count_truncated_pairs, query, product_ids, texts)
        )
        try:
            result = await self._get_client().infer(
                self.settings.student_model,
                [query_input, text_input, id_input],
                model_version=self.settings.student_model_version,
                outputs=[InferRequestedOutput("score")],
                client_timeout=wait_s,
                # Triton's queue policy rejects the request once this has passed, rather
                # than computing scores nobody is waiting for.
                timeout=int(wait_s * 1_000_000),
            )
        except InferenceServerException as exc:
            counting.cancel()
            raise self._translate(exc, caller_binds) from exc
        truncated = await counting
        # The reply names the version that answered, which during a switch may not be
        # the one this request started with.
        version = result.get_response().model_version or policy_version
        if version == policy_version:
            answered = policy
        elif version == self._version:
            answered = self._policy
        else:
            answered = await asyncio.to_thread(self._load_policy, version)
            log.info("serving new model version", extra={"from": self._version, "to": version})
            self._policy, self._version = answered, version
        scores = result.as_numpy("score")
        if scores is None or scores.shape != (len(texts),):
            raise Unavailable(f"Triton answered a malformed score tensor for {len(texts)} products")
        return ScoreResult(
            scores=scores.astype(float).tolist(),
            truncated=truncated,
            model=answered.model,
            serving=student_inference_pb2.ServingRevision(
                backend="triton", model=self.settings.student_model, version=version
            ),
        )

    def _translate(self, exc: InferenceServerException, caller_binds: bool) -> Exception:
        status = exc.status()
        target = f"Triton at {self.settings.triton_url} (model {self.settings.student_model})"
        # A request that expired in Triton's queue comes back UNAVAILABLE with this text.
        expired = "timeout expired" in (exc.message() or "").lower()
        if status == str(grpc.StatusCode.DEADLINE_EXCEEDED) or expired:
            if caller_binds:
                return DeadlineExceeded(f"{target} did not answer within the caller's deadline")
            return Unavailable(
                f"{target} did not answer within {self.settings.triton_timeout_s} s "
                "(RELKD_TRITON_TIMEOUT_S)"
            )
        # Connection refused or reset, model or version not loaded, a failing model:
        # the student cannot answer, which the caller handles like an outage (retry
        # elsewhere or fall back to unscored ranking).
        return Unavailable(f"{target} failed: {status}: {exc.message()}")


QUERY_EMBEDDING_CACHE = Counter(
    "relkd_query_embedding_cache_total",
    "Two-tower query embeddings looked up in the query embedding cache, by outcome (hit, miss).",
    ["outcome"],
)
# Bound once: labels() on every request would cost a lookup in the counter's children.
_QUERY_CACHE_HITS = QUERY_EMBEDDING_CACHE.labels("hit")
_QUERY_CACHE_MISSES = QUERY_EMBEDDING_CACHE.labels("miss")


# A query as the query tower reads it: its token ids and type ids (one sequence, no
# padding: the attention mask is all ones).
QueryKey = tuple[tuple[int, ...], tuple[int, ...]]


class QueryEmbeddingCache:
    """The least recently used query embeddings of one loaded query tower.

    Keyed by what the tower reads of a query (:data:`QueryKey`): the tokenizer's own
    normalisation (case, accents, whitespace) and truncation decide which queries share
    an entry, so a hit is exactly the embedding the tower would compute. One cache per
    backend, i.e. per loaded model (its version): another model is another backend with
    an empty cache. Hits and misses are counted in ``relkd_query_embedding_cache_total``.
    Worker threads share it.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"query_embedding_cache_size: must be >= 1, got {size}")
        self._entries: LeastRecentlyUsed[QueryKey, np.ndarray] = LeastRecentlyUsed(size)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: QueryKey) -> np.ndarray | None:
        with self._lock:
            embedding = self._entries.get(key)
            if embedding is None:
                self.misses += 1
            else:
                self.hits += 1
        (_QUERY_CACHE_MISSES if embedding is None else _QUERY_CACHE_HITS).inc()
        return embedding

    def put(self, key: QueryKey, embedding: np.ndarray) -> None:
        # Every request that hits the entry reads this array.
        embedding.setflags(write=False)
        with self._lock:
            self._entries.put(key, embedding)


class TwoTowerBackend:
    """A two-tower student: precomputed product embeddings, the query tower in-process
    (its embeddings cached per query, :class:`QueryEmbeddingCache`).

    Products missing from the precomputed table are rejected with INVALID_ARGUMENT
    naming ``products[i].product_id``: the export ships no product tower, and an
    unindexed product means the catalog and the export are out of step (re-export).
    """

    def __init__(self, settings: TwoTowerSettings | None = None) -> None:
        self.settings = settings or TwoTowerSettings()
        export_dir = self.settings.student_export_dir
        spec = read_student_spec(export_dir)
        if not isinstance(spec, TwoTowerSpec):
            raise ValueError(
                f"{export_dir}: kind={spec.kind!r}; TwoTowerBackend needs a two-tower export"
            )
        self.spec = spec
        self.model = spec.model_ref
        self.policy = TextPolicy.load(export_dir, export_dir / EXPORT_TOKENIZER)
        self._encoder = Tokenizer.from_file(str(export_dir / EXPORT_TOKENIZER))
        self._encoder.enable_truncation(spec.max_length)
        self._encoder.no_padding()
        scoring = json.loads((export_dir / SCORING_JSON).read_text())
        self.scale, self.bias = float(scoring["scale"]), float(scoring["bias"])
        self.embeddings = np.load(export_dir / PRODUCT_EMBEDDINGS).astype(np.float32)
        ids = json.loads((export_dir / PRODUCT_IDS).read_text())
        if len(ids) != len(self.embeddings):
            raise ValueError(
                f"{export_dir}: {PRODUCT_IDS} has {len(ids)} ids but {PRODUCT_EMBEDDINGS} "
                f"has {len(self.embeddings)} rows"
            )
        self.rows = {product_id: row for row, product_id in enumerate(ids)}
        # The same training run can be exported against different catalogs; the
        # embeddings and their ids are what distinguishes those deployments.
        catalog = hashlib.sha256(json.dumps(ids).encode())
        catalog.update(self.embeddings.tobytes())
        self.serving = student_inference_pb2.ServingRevision(
            backend="two-tower", model=str(export_dir), version=catalog.hexdigest()[:12]
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.settings.query_tower_threads
        options.inter_op_num_threads = 1
        # Idle intra-op threads sleep instead of spinning: they share the cores with the
        # server's own threads (measured on 2 loaded cores: 16 % less CPU per request
        # and a lower median, docs/triton.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        graph = QUERY_TOWER_INT8 if self.settings.query_tower_int8 else QUERY_TOWER_ONNX
        self.session = ort.InferenceSession(
            str(export_dir / graph), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        size = self.settings.query_embedding_cache_size
        self.query_cache = QueryEmbeddingCache(size) if size else None
        # The request's text fields the product tower reads, as one value per product.
        self._text_of = operator.attrgetter(*self.policy.text_fields)
        # Product id -> (its text fields as last seen, whether that text is truncated):
        # a Score request re-sends the same products' texts, so the count is a dict
        # lookup per product instead of rendering and hashing 100 texts every time. A
        # changed text is counted afresh. Bounded by the export's catalog: unknown ids
        # are rejected before counting. Worker threads share it; a race only recounts.
        self._truncated: dict[str, tuple[object, bool]] = {}

    def embed_query(self, query: str) -> np.ndarray:
        """The L2-normalised query embedding [hidden]: from the cache, else the tower's."""
        encoding = self._encoder.encode(query)
        if self.query_cache is None:
            return self._run_tower(encoding)
        key = (tuple(encoding.ids), tuple(encoding.type_ids))
        embedding = self.query_cache.get(key)
        if embedding is None:
            embedding = self._run_tower(encoding)
            self.query_cache.put(key, embedding)
        return embedding

    def _run_tower(self, encoding: Encoding) -> np.ndarray:
        fields = {
            "input_ids": encoding.ids,
            "attention_mask": encoding.attention_mask,
            "token_type_ids": encoding.type_ids,
        }
        feeds = {name: np.asarray([fields[name]], dtype=np.int64) for name in self.input_names}
        (embedding,) = self.session.run(["embedding"], feeds)
        return embedding[0]

    def score_blocking(
        self, query: str, products: Sequence[student_inference_pb2.ScoreProduct]
    ) -> ScoreResult:
        """What :meth:`score` runs, inline or in a worker thread (the bench calls it
        directly)."""
        # One pass over the products: their embedding rows, and their truncation flags
        # where the memo holds their current text.
        rows, truncated, unseen = [], 0, []
        for i, product in enumerate(products):
            product_id = product.product_id
            row = self.rows.get(product_id)
            if row is None:
                raise InvalidArgument(
                    f"products[{i}].product_id",
                    f"unknown product {product_id!r}: not in the two-tower export's "
                    "precomputed embeddings",
                )
            rows.append(row)
            seen = self._truncated.get(product_id)
            if seen is not None and seen[0] == self._text_of(product):
                truncated += seen[1]
            else:
                unseen.append(product)
        cosine = self.embeddings[rows] @ self.embed_query(query)
        if unseen:
            truncated += self._count_unseen(unseen)
        return ScoreResult(
            scores=(self.scale * cosine + self.bias).tolist(),
            truncated=truncated,
            model=self.model,
            serving=self.serving,
        )

    def _count_unseen(self, products: Sequence[student_inference_pb2.ScoreProduct]) -> int:
        """Counts and memoises products whose current text the memo lacks.

        The embeddings were computed at export from the catalog's text; the request's
        text is counted as the product tower read it (text alone, not paired).
        """
        product_ids = [p.product_id for p in products]
        flags = self.policy.truncated_texts(product_ids, self.policy.texts(products))
        for product_id, product, flag in zip(product_ids, products, flags, strict=True):
            self._truncated[product_id] = (self._text_of(product), flag)
        return sum(flags)

    async def score(
        self,
        query: str,
        products: Sequence[student_inference_pb2.ScoreProduct],
        timeout_s: float | None,
    ) -> ScoreResult:
        if self.settings.query_tower_inline:
            # A ~2 ms int8 tower costs less than handing it to a worker thread and back
            # (docs/student-inference.md: the thread hop was ~0.3 ms of CPU per request).
            return self.score_blocking(query, products)
        # ONNX Runtime releases the GIL: in a worker thread, the towers of concurrent
        # requests overlap on the second core while the event loop keeps serving.
        return await asyncio.to_thread(self.score_blocking, query, products)

    async def close(self) -> None:
        """Nothing to release: the ONNX Runtime session holds no connection."""


def triton_env(server: TritonServer, model_name: str) -> dict[str, str]:
    """The environment student-inference needs to score through ``server``."""
    return {
        "RELKD_STUDENT_BACKEND": "triton",
        "RELKD_TRITON_URL": server.grpc_url,
        "RELKD_STUDENT_MODEL": model_name,
        "RELKD_STUDENT_MODEL_VERSION": "",
        "RELKD_TRITON_MODEL_REPOSITORY": str(server.model_repository),
    }


def two_tower_env(export_dir: Path) -> dict[str, str]:
    """The environment student-inference needs to serve a two-tower export."""
    return {
        "RELKD_STUDENT_BACKEND": "two-tower",
        "RELKD_STUDENT_EXPORT_DIR": str(Path(export_dir).resolve()),
    }
