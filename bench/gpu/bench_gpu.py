#!/usr/bin/env python3
"""One-shot GPU measurements of relevance-kd (run by run_gpu.sh, one subcommand per part).

Parts (each its own process, so a hang or a CUDA fault in one cannot take the others):

  setup       environment facts; random-init MiniLM-L6-shaped student base, random-init
              decoder teacher backbone of Qwen2-0.5B's shape (LlamaForCausalLM, MiniLM
              WordPiece tokenizer, Qwen's 151936-row vocabulary), a simulated dataset
  serve       cross-encoder student serving floor (1 query x 100 products, concurrency 1):
              fp32 / tf32 / fp16 / bf16 eager, manual CUDA graph, tokenization, batch-1000
              throughput, the same on the CPU (fp32, all cores), two-tower query encoding
  assembly    Score as served: query tokenized + rows assembled from cached product ids
              (PairAssembler), then the bf16 student eager and as a CUDA graph [100, 40]
  student     project train() on CUDA (AMP) vs sentence-transformers CrossEncoder +
              MarginMSELoss on the same GPU, same pairs and steps; AMP correctness runs
  teacher     project teacher train() with the 0.5B decoder, LoRA, bf16; TeacherLabeler
  compile     torch.compile of the bf16 serving graph (reduce-overhead)
  generative  generative (explainable) teacher: a few LoRA steps + explain=True labeling
  profile     torch.profiler table of a train() run

The project's own copy of ../shared/tools/gpu-check (bench/gpu/README.md): kept in step
with the code it measures.

Every result goes into $OUT/gpu_results.json as soon as it exists; an exception is
recorded there with the tail of its traceback. Weights are random: speeds are real,
quality numbers (NDCG, accuracy) are meaningless. GPU_SMOKE=1 shrinks everything so
the whole script runs on a CPU in a few minutes.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = Path(os.environ.get("OUT") or HERE / "out")
RESULTS = OUT / "gpu_results.json"
WORK = Path(os.environ.get("GPU_WORK", "/tmp/gpuwork"))
SMOKE = os.environ.get("GPU_SMOKE") == "1"
PART_TIMEOUT = float(os.environ.get("PART_TIMEOUT", "600"))
STARTED = time.monotonic()

MINILM_SRC = HERE / "model" / "minilm"  # MiniLM-L6 config + tokenizer files, no weights
MINILM = WORK / "minilm"  # random-init BertModel of that shape (made by `setup`)
LLM = WORK / "llm05b"  # random-init decoder of Qwen2-0.5B's shape + MiniLM tokenizer (`setup`)
DATASET = WORK / "dataset"
CE_CKPT = WORK / "ce-student"
TT_CKPT = WORK / "tt-student"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)

# Serving request shape: ~40 tokens per (query, product) pair.
SERVE_FIELDS = ["title", "product_type", "brand", "category"]
SERVE_MAX_LEN = 40
PRODUCTS_PER_REQUEST = 100
QUERIES = [
    "grey fabric sofa",
    "oak writing desk with drawers",
    "floor lamp linen shade",
    "wool area rug 5x8",
    "ergonomic office chair",
    "king size bed frame",
    "outdoor patio dining set",
    "kids bookshelf white",
]


def n(full: int, smoke: int) -> int:
    return smoke if SMOKE else full


# ----------------------------------------------------------------------------- results


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:7.1f}s] {message}", flush=True)


def load_results() -> dict[str, Any]:
    try:
        return json.loads(RESULTS.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def put(part: str, key: str, value: Any) -> None:
    """results[part][key] = value, written atomically."""
    OUT.mkdir(parents=True, exist_ok=True)
    data = load_results()
    data.setdefault(part, {})[key] = value
    tmp = RESULTS.with_name(RESULTS.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, RESULTS)


def brief(value: Any, limit: int = 400) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def guarded(part: str, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one measurement; record its value, or its error, under results[part][key]."""
    log(f"{part}.{key} ...")
    started = time.perf_counter()
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        tail = traceback.format_exc()[-3000:]
        put(part, key, {"error": f"{type(exc).__name__}: {exc}"[:500], "traceback": tail})
        log(f"{part}.{key} FAILED after {time.perf_counter() - started:.1f}s:\n{tail}")
        return None
    put(part, key, value)
    log(f"{part}.{key} done in {time.perf_counter() - started:.1f}s: {brief(value)}")
    return value


def time_left() -> float:
    return PART_TIMEOUT - (time.monotonic() - STARTED)


# ----------------------------------------------------------------------------- helpers


def torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_stats(seconds: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "min_ms": round(float(ms.min()), 3),
        "n": len(ms),
    }


def timed_loop(call: Callable[[int], Any], warmup: int, count: int, device) -> dict[str, float]:
    """Closed loop at concurrency 1: each call's wall time, the GPU synchronised after it."""
    for i in range(warmup):
        call(i)
    sync(device)
    samples = []
    for i in range(count):
        start = time.perf_counter()
        call(i)
        sync(device)
        samples.append(time.perf_counter() - start)
    return latency_stats(samples)


def gpu_memory(device) -> dict[str, float] | None:
    import torch

    if device.type != "cuda":
        return None
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / 2**30, 3),
    }


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def products_and_requests(fields: list[str], requests: int, per_request: int, seed: int = 1):
    """(query, [product text]) requests drawn from the simulated catalog."""
    import numpy as np

    from contracts.text import product_text
    from training.data.storage import read_table

    rows = read_table(DATASET, "products").to_pylist()
    texts = [product_text(row, fields) for row in rows]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(requests):
        pick = rng.choice(len(texts), per_request, replace=len(texts) < per_request)
        out.append((QUERIES[i % len(QUERIES)], [texts[j] for j in pick]))
    return out


# ----------------------------------------------------------------------------- setup


def part_setup() -> None:
    import torch
    import transformers

    quiet_transformers()
    device = torch_device()

    def environment() -> dict[str, Any]:
        import importlib.metadata as md

        versions = {}
        for name in (
            "torch",
            "transformers",
            "sentence-transformers",
            "peft",
            "accelerate",
            "tokenizers",
            "pydantic",
            "pydantic-core",
            "pydantic-settings",
            "typing-extensions",
            "numpy",
            "pyarrow",
            "triton",
        ):
            try:
                versions[name] = md.version(name)
            except md.PackageNotFoundError:
                versions[name] = None
        env: dict[str, Any] = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads_default": torch.get_num_threads(),
            "versions": versions,
            "cuda_available": torch.cuda.is_available(),
            "smoke": SMOKE,
            "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "(unset: on)"),
            "project_commit": (HERE / "project" / "COMMIT").read_text().strip()
            if (HERE / "project" / "COMMIT").exists()
            else None,
        }
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            env.update(
                gpu=props.name,
                gpu_memory_gib=round(props.total_memory / 2**30, 1),
                sms=props.multi_processor_count,
                capability=list(torch.cuda.get_device_capability(0)),
                cuda=torch.version.cuda,
                bf16_supported=torch.cuda.is_bf16_supported(),
                allow_tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            )
        try:
            env["nvidia_smi"] = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=15,
            ).stdout.strip()
        except Exception as exc:
            env["nvidia_smi"] = f"unavailable: {exc}"
        return env

    def make_minilm() -> dict[str, Any]:
        config = transformers.AutoConfig.from_pretrained(MINILM_SRC)
        if SMOKE:
            config.num_hidden_layers = 2
        torch.manual_seed(0)
        model = transformers.AutoModel.from_config(config)
        shutil.rmtree(MINILM, ignore_errors=True)
        model.save_pretrained(MINILM)
        for name in TOKENIZER_FILES:
            shutil.copy(MINILM_SRC / name, MINILM / name)
        return {
            "dir": str(MINILM),
            "layers": config.num_hidden_layers,
            "hidden": config.hidden_size,
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        }

    def make_llm() -> dict[str, Any]:
        """Qwen2-0.5B's shape as a LlamaForCausalLM (Qwen2 = Llama + q/k/v biases).

        Not Qwen2 itself: transformers 5's AutoTokenizer forces Qwen2Tokenizer on any
        model_type "qwen2" directory, which mangles the WordPiece tokenizer shipped here.
        """
        tokenizer = transformers.AutoTokenizer.from_pretrained(MINILM_SRC)
        if SMOKE:
            shape = dict(
                vocab_size=151936,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
            )
        else:  # Qwen2-0.5B; its vocabulary rows, of which the WordPiece ids use 30522
            shape = dict(
                vocab_size=151936,
                hidden_size=896,
                intermediate_size=4864,
                num_hidden_layers=24,
                num_attention_heads=14,
                num_key_value_heads=2,
            )
        config = transformers.LlamaConfig(
            **shape,
            max_position_embeddings=32768,
            rope_theta=1_000_000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
            eos_token_id=None,
        )
        torch.manual_seed(0)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        try:  # random init on the GPU takes a second; on 16 CPU cores ~20 s
            with torch.device(device):
                model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
        except Exception as exc:
            log(f"LLM init on {device} failed ({exc!r}); initialising on the CPU")
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
        shutil.rmtree(LLM, ignore_errors=True)
        model.save_pretrained(LLM)
        tokenizer.save_pretrained(LLM)
        params = sum(p.numel() for p in model.parameters())
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {
            "dir": str(LLM),
            "architecture": "LlamaForCausalLM",
            **shape,
            "params_m": round(params / 1e6, 1),
            "dtype_saved": str(dtype),
            "tokenizer": "MiniLM WordPiece (30522 of the ids used)",
        }

    def make_dataset() -> dict[str, Any]:
        from training.data.simulator import simulate
        from training.data.storage import read_table

        shutil.rmtree(DATASET, ignore_errors=True)
        simulate(
            DATASET,
            num_products=n(2000, 300),
            num_queries=n(300, 40),
            num_unlabeled=0,
            show_progress=False,
        )
        judgments = read_table(DATASET, "judgments")
        return {
            "dir": str(DATASET),
            "products": n(2000, 300),
            "queries": n(300, 40),
            "judgments": judgments.num_rows,
        }

    WORK.mkdir(parents=True, exist_ok=True)
    guarded("setup", "environment", environment)
    guarded("setup", "dataset", make_dataset)
    guarded("setup", "minilm_random_init", make_minilm)
    guarded("setup", "llm_random_init", make_llm)


# ----------------------------------------------------------------------------- serve


def serving_fn(model):
    """What the exported ONNX graph computes: expected grade from the 4 grade logits."""

    from training.student.models.base import cross_encoder_head

    def score(inputs: dict[str, Any]):
        # The project's head: expected grade plus the free score logit.
        return cross_encoder_head(model(**inputs).logits)[0]

    return score


def capture_graph(score: Callable[[dict[str, Any]], Any], static: dict[str, Any]):
    """A CUDA graph of ``score`` on the ``static`` input tensors (warmed up on a side
    stream first, as graph capture requires); replay it after copying into ``static``."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            score(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = score(static)
    return graph, static_out


def build_cross_encoder(max_length: int, fields: list[str]):
    """The project's cross-encoder student, saved and re-loaded through its checkpoint code."""
    import torch

    from training.student.checkpoint import load_model
    from training.student.models.cross_encoder import CrossEncoderStudent

    if not (CE_CKPT / "student.json").exists():
        torch.manual_seed(0)
        CrossEncoderStudent.from_base(
            str(MINILM), num_layers=None, max_length=SERVE_MAX_LEN, text_fields=SERVE_FIELDS
        ).save(CE_CKPT, name="gpu-bench", version="1")
    student = load_model(CE_CKPT)
    student.max_length = max_length
    student.text_fields = list(fields)
    return student.eval()


def to_dev(inputs: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=False) for k, v in inputs.items()}


def measure_serving(
    student,
    hf_model,
    requests,
    device,
    dtype_name: str,
    count: int,
    warmup: int,
    pad_to_max: bool = False,
) -> dict[str, Any]:
    """e2e (tokenize + H2D + forward + scores to host) and model-only latency."""
    import torch

    score = serving_fn(hf_model)
    padding = "max_length" if pad_to_max else True

    def tokenize(i: int):
        query, texts = requests[i % len(requests)]
        return dict(
            student.tokenizer(
                [query] * len(texts),
                texts,
                truncation="longest_first",
                max_length=student.max_length,
                padding=padding,
                return_tensors="pt",
            )
        )

    pre = [to_dev(tokenize(i), device) for i in range(len(requests))]
    lengths = sorted({int(p["input_ids"].shape[1]) for p in pre})
    with torch.inference_mode():
        e2e = timed_loop(lambda i: score(to_dev(tokenize(i), device)).cpu(), warmup, count, device)
        model_only = timed_loop(lambda i: score(pre[i % len(pre)]), warmup, count, device)
        out = score(pre[0]).float().cpu()
    return {
        "dtype": dtype_name,
        "e2e": e2e,
        "model_only": model_only,
        "padded_len": lengths,
        "pairs_per_request": len(requests[0][1]),
        "scores_finite": bool(torch.isfinite(out).all()),
        "score_sample": [round(float(x), 4) for x in out[:3]],
    }


def part_serve() -> None:
    import numpy as np
    import torch

    quiet_transformers()
    device = torch_device()
    put("serve", "device", str(device))
    requests = products_and_requests(SERVE_FIELDS, 16, PRODUCTS_PER_REQUEST)
    student = build_cross_encoder(SERVE_MAX_LEN, SERVE_FIELDS)
    base = student.model.eval()
    count, warmup = n(300, 5), n(30, 2)
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

    def tokenization() -> dict[str, Any]:
        def call(i: int):
            query, texts = requests[i % len(requests)]
            return student.tokenize([query] * len(texts), texts)

        return {
            "per_request_100_pairs": timed_loop(call, 5, n(200, 5), torch.device("cpu")),
            "tokenizer": type(student.tokenizer).__name__,
        }

    guarded("serve", "tokenization", tokenization)

    models: dict[str, Any] = {}
    for name, dtype in dtypes.items():

        def run(name=name, dtype=dtype):
            models[name] = copy.deepcopy(base).to(device=device, dtype=dtype).eval()
            return measure_serving(student, models[name], requests, device, name, count, warmup)

        guarded("serve", f"gpu_{name}_eager", run)

    def tf32() -> dict[str, Any]:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        try:
            return measure_serving(
                student, models["fp32"], requests, device, "fp32+tf32", count, warmup
            )
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False

    if device.type == "cuda" and "fp32" in models:
        guarded("serve", "gpu_fp32_tf32_eager", tf32)

    def fixed_shape_bf16() -> dict[str, Any]:
        return measure_serving(
            student, models["bf16"], requests, device, "bf16", count, warmup, pad_to_max=True
        )

    if "bf16" in models:
        guarded("serve", "gpu_bf16_eager_fixed_shape_100x40", fixed_shape_bf16)

    def cuda_graph_bf16() -> dict[str, Any]:
        """Manually captured CUDA graph of the bf16 serving graph at [100, 40]."""
        model = models["bf16"]
        score = serving_fn(model)
        query, texts = requests[0]
        static = to_dev(
            dict(
                student.tokenizer(
                    [query] * len(texts),
                    texts,
                    truncation="longest_first",
                    max_length=SERVE_MAX_LEN,
                    padding="max_length",
                    return_tensors="pt",
                )
            ),
            device,
        )
        with torch.inference_mode():
            graph, static_out = capture_graph(score, static)

            def replay(i: int):
                q, t = requests[i % len(requests)]
                enc = student.tokenizer(
                    [q] * len(t),
                    t,
                    truncation="longest_first",
                    max_length=SERVE_MAX_LEN,
                    padding="max_length",
                    return_tensors="pt",
                )
                for key, tensor in static.items():
                    tensor.copy_(enc[key], non_blocking=False)
                graph.replay()
                return static_out.cpu()

            e2e = timed_loop(replay, warmup, count, device)
            model_only = timed_loop(lambda i: graph.replay(), warmup, count, device)
            eager = score(static).float().cpu()
            graph.replay()
            same = float((static_out.float().cpu() - eager).abs().max())
        return {
            "dtype": "bf16",
            "shape": [len(texts), SERVE_MAX_LEN],
            "e2e": e2e,
            "model_only": model_only,
            "max_abs_diff_vs_eager": same,
        }

    if device.type == "cuda" and "bf16" in models:
        guarded("serve", "gpu_bf16_cuda_graph_100x40", cuda_graph_bf16)

    def default_shape_bf16() -> dict[str, Any]:
        """The trainer's default student input: title only, max_length 32."""
        reqs = products_and_requests(["title"], 16, PRODUCTS_PER_REQUEST)
        small = copy.copy(student)
        small.max_length = 32
        return measure_serving(small, models["bf16"], reqs, device, "bf16", count, warmup)

    if "bf16" in models:
        guarded("serve", "gpu_bf16_eager_title_maxlen32", default_shape_bf16)

    def throughput(batch: int) -> dict[str, Any]:
        pairs = products_and_requests(SERVE_FIELDS, 1, batch, seed=7)[0][1]
        queries = [QUERIES[i % len(QUERIES)] for i in range(batch)]
        start = time.perf_counter()
        reps = n(5, 1)
        for _ in range(reps):
            inputs = student.tokenize(queries, pairs)
        tok_s = (time.perf_counter() - start) / reps
        inputs = to_dev(inputs, device)
        result: dict[str, Any] = {
            "batch": batch,
            "padded_len": int(inputs["input_ids"].shape[1]),
            "tokenize_pairs_per_s": round(batch / tok_s, 1),
        }
        iters = n(20, 2)
        with torch.inference_mode():
            for name, model in models.items():
                score = serving_fn(model)
                for _ in range(3):
                    score(inputs)
                sync(device)
                start = time.perf_counter()
                for _ in range(iters):
                    score(inputs)
                sync(device)
                per = (time.perf_counter() - start) / iters
                result[f"{name}_model_pairs_per_s"] = round(batch / per, 1)
                result[f"{name}_model_ms_per_batch"] = round(per * 1000, 3)
        return result

    guarded("serve", "gpu_throughput_batch1000", throughput, 1000)
    if not SMOKE:
        guarded("serve", "gpu_throughput_batch4096", throughput, 4096)

    def two_tower(dev, dtype_name: str, count_: int) -> dict[str, Any]:
        from training.student.checkpoint import load_model
        from training.student.models.base import to_device
        from training.student.models.two_tower import TwoTowerStudent

        if not (TT_CKPT / "student.json").exists():
            torch.manual_seed(0)
            TwoTowerStudent.from_base(
                str(MINILM), num_layers=None, max_length=32, text_fields=["title"]
            ).save(TT_CKPT, name="tt", version="1")
        tt = load_model(TT_CKPT).eval().to(dev, dtype=dtypes[dtype_name])

        def call(i: int):
            tokens = tt._tokens([QUERIES[i % len(QUERIES)]])
            return tt.embed_queries(to_device(tokens, dev)).cpu()

        with torch.inference_mode():
            stats = timed_loop(call, n(30, 2), count_, dev)
            emb = call(0)
        return {
            "dtype": dtype_name,
            "query_encode_e2e": stats,
            "dim": int(emb.shape[-1]),
            "norm": round(float(emb.norm()), 4),
            "shared_towers": tt.shared,
        }

    guarded("serve", "gpu_two_tower_query_fp32", two_tower, device, "fp32", count)
    guarded("serve", "gpu_two_tower_query_bf16", two_tower, device, "bf16", count)

    # ---- CPU, fp32, all cores (the remote's 16) -------------------------------------
    for m in list(models):
        del models[m]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    cpu = torch.device("cpu")
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    put("serve", "cpu_threads", threads)
    cpu_model = copy.deepcopy(base).to(cpu, dtype=torch.float32).eval()
    guarded(
        "serve",
        "cpu_fp32",
        measure_serving,
        student,
        cpu_model,
        requests,
        cpu,
        "fp32",
        n(50, 3),
        n(5, 1),
    )

    def cpu_throughput() -> dict[str, Any]:
        pairs = products_and_requests(SERVE_FIELDS, 1, 1000, seed=7)[0][1]
        queries = [QUERIES[i % len(QUERIES)] for i in range(len(pairs))]
        inputs = student.tokenize(queries, pairs)
        score = serving_fn(cpu_model)
        with torch.inference_mode():
            score(inputs)
            start = time.perf_counter()
            iters = n(3, 1)
            for _ in range(iters):
                score(inputs)
            per = (time.perf_counter() - start) / iters
        return {
            "batch": 1000,
            "padded_len": int(inputs["input_ids"].shape[1]),
            "fp32_model_pairs_per_s": round(1000 / per, 1),
        }

    guarded("serve", "cpu_throughput_batch1000", cpu_throughput)
    guarded("serve", "cpu_two_tower_query_fp32", two_tower, cpu, "fp32", n(100, 3))
    _ = np  # numpy imported for latency_stats users


# ----------------------------------------------------------------------------- compile


def part_compile() -> None:
    import torch

    quiet_transformers()
    device = torch_device()
    requests = products_and_requests(SERVE_FIELDS, 16, PRODUCTS_PER_REQUEST)
    student = build_cross_encoder(SERVE_MAX_LEN, SERVE_FIELDS)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = student.model.to(device=device, dtype=dtype).eval()
    count, warmup = n(300, 5), n(30, 2)
    modes = os.environ.get(
        "GPU_COMPILE_MODES",
        "reduce-overhead,max-autotune-no-cudagraphs" if device.type == "cuda" else "default",
    ).split(",")

    def tokenize(i: int):
        query, texts = requests[i % len(requests)]
        return dict(
            student.tokenizer(
                [query] * len(texts),
                texts,
                truncation="longest_first",
                max_length=SERVE_MAX_LEN,
                padding="max_length",
                return_tensors="pt",
            )
        )

    pre = [to_dev(tokenize(i), device) for i in range(len(requests))]
    eager = serving_fn(model)
    with torch.no_grad():
        reference = eager(pre[0]).float().cpu()
        eager_stats = timed_loop(lambda i: eager(pre[i % len(pre)]), warmup, count, device)
    put("compile", "eager_reference_model_only", {"dtype": str(dtype), **eager_stats})

    for mode in modes:
        if time_left() < 70 and mode != modes[0]:
            put("compile", mode, {"skipped": f"only {time_left():.0f}s left in this part"})
            continue

        def run(mode=mode) -> dict[str, Any]:
            torch._dynamo.reset()
            compiled = torch.compile(serving_fn(model), mode=mode, dynamic=False)
            mark = getattr(torch.compiler, "cudagraph_mark_step_begin", None)

            def call(inputs):
                if mark is not None and mode == "reduce-overhead":
                    mark()
                return compiled(inputs)

            with torch.no_grad():
                start = time.perf_counter()
                first = call(pre[0]).float().cpu()
                compile_s = time.perf_counter() - start
                log(f"compile {mode}: first call {compile_s:.1f}s")
                for i in range(3):
                    call(pre[i % len(pre)])
                sync(device)
                model_only = timed_loop(lambda i: call(pre[i % len(pre)]), warmup, count, device)
                e2e = timed_loop(
                    lambda i: call(to_dev(tokenize(i), device)).float().cpu(), warmup, count, device
                )
            return {
                "dtype": str(dtype),
                "shape": [PRODUCTS_PER_REQUEST, SERVE_MAX_LEN],
                "first_call_s": round(compile_s, 1),
                "model_only": model_only,
                "e2e": e2e,
                "max_abs_diff_vs_eager": float((first - reference).abs().max()),
            }

        guarded("compile", mode, run)


# ----------------------------------------------------------------------------- student


def part_student() -> None:
    import csv
    import math

    import numpy as np
    import torch
    from transformers import get_linear_schedule_with_warmup

    quiet_transformers()
    device = torch_device()
    from training.student.config import LossWeights, StudentTrainConfig
    from training.student.examples import QueryPairSampler, load_training_set
    from training.student.train import train

    put("student", "device", str(device))
    margin_only = LossWeights(margin_mse=1.0, mse=0.0, kl=0.0, cot=0.0)

    def config(tag: str, steps: int, **kw: Any) -> StudentTrainConfig:
        out = WORK / f"student-{tag}"
        shutil.rmtree(out, ignore_errors=True)
        fields = dict(
            dataset_dir=DATASET,
            output_dir=out,
            base_model=str(MINILM),
            use_teacher_labels=False,
            num_layers=None,
            max_length=32,
            loss_weights=margin_only,
            max_steps=steps,
            eval_every=steps,
            progress=False,
        )
        fields.update(kw)
        return StudentTrainConfig(**fields)

    def per_step(out: Path) -> dict[str, Any]:
        with (out / "metrics.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        rates = [float(r["pairs_per_s"]) for r in rows]
        losses = [float(r["loss"]) for r in rows]
        steady = rates[5:] if len(rates) > 10 else rates
        return {
            "median_step_pairs_per_s": round(float(np.median(steady)), 1),
            "losses_finite": all(math.isfinite(x) for x in losses),
            "first_loss": round(losses[0], 4),
            "last_loss": round(losses[-1], 4),
        }

    def ours(cfg: StudentTrainConfig) -> dict[str, Any]:
        reset_peak(device)
        started = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - started
        return {
            "pairs_per_s": round(result.pairs_per_s, 1),
            "steps": result.steps,
            "train_seconds": round(result.train_seconds, 2),
            "wall_s": round(wall, 1),
            "best_dev_ndcg10": round(result.best_dev_ndcg10, 4),
            **per_step(cfg.output_dir),
            "memory": gpu_memory(device),
            "amp": "bf16"
            if device.type == "cuda" and torch.cuda.is_bf16_supported()
            else ("fp16" if device.type == "cuda" else "off (cpu)"),
        }

    def st(cfg: StudentTrainConfig, batches, examples, autocast_bf16: bool) -> dict[str, Any]:
        """bench/bench_student_train.py's sentence-transformers loop, on the same device."""
        from sentence_transformers.cross_encoder import CrossEncoder
        from sentence_transformers.cross_encoder.losses import MarginMSELoss

        reset_peak(device)
        torch.manual_seed(cfg.seed)
        model = CrossEncoder(
            str(MINILM), num_labels=1, max_length=cfg.max_length, device=str(device)
        )
        model.model.get_input_embeddings().requires_grad_(not cfg.freeze_embeddings)
        loss_fn = MarginMSELoss(model)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(cfg.warmup_ratio * cfg.max_steps), cfg.max_steps
        )
        model.train()
        use_amp = autocast_bf16 and device.type == "cuda"
        times, pairs_done, losses = [], 0, []
        for pairs in batches:
            started = time.perf_counter()
            hi = [examples[i] for i in pairs[:, 0]]
            lo = [examples[j] for j in pairs[:, 1]]
            labels = torch.tensor(
                [a.score - b.score for a, b in zip(hi, lo, strict=True)], device=device
            )
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = loss_fn(
                    [
                        [e.query for e in hi],
                        [e.product_text for e in hi],
                        [e.product_text for e in lo],
                    ],
                    labels,
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            losses.append(float(loss.detach()))
            sync(device)
            times.append(time.perf_counter() - started)
            pairs_done += len(pairs)
        steady = times[5:] if len(times) > 10 else times
        return {
            "pairs_per_s": round(pairs_done / sum(times), 1),
            "median_step_pairs_per_s": round(len(batches[0]) / float(np.median(steady)), 1),
            "steps": len(batches),
            "train_seconds": round(sum(times), 2),
            "autocast_bf16": use_amp,
            "losses_finite": all(math.isfinite(x) for x in losses),
            "first_loss": round(losses[0], 4),
            "last_loss": round(losses[-1], 4),
            "memory": gpu_memory(device),
        }

    # Warm-up: CUDA context, cuBLAS handles, lazy kernel loading, off the clock.
    guarded("student", "warmup_ours_3_steps", ours, config("warmup", 3))

    shapes = [("batch32", n(60, 3), 8, 4)]
    if not SMOKE:
        shapes.append(("batch256", 30, 32, 8))
    for tag, steps, qpb, ppq in shapes:
        cfg = config(tag, steps, queries_per_batch=qpb, pairs_per_query=ppq)
        try:
            examples = load_training_set(cfg).examples
            sampler = QueryPairSampler(
                examples,
                queries_per_batch=qpb,
                pairs_per_query=ppq,
                min_margin=cfg.min_margin,
                seed=cfg.seed,
            )
            batches = [sampler.batch(i) for i in range(steps)]
        except Exception:
            put("student", f"{tag}_setup", {"error": traceback.format_exc()[-3000:]})
            continue
        put(
            "student",
            f"{tag}_setup",
            {
                "steps": steps,
                "pairs_per_step": len(batches[0]),
                "queries_per_batch": qpb,
                "pairs_per_query": ppq,
                "max_length": 32,
                "layers": "all (MiniLM-L6 shape)",
                "loss": "margin_mse only (as bench_student_train.py)",
            },
        )
        st_fp32 = guarded(
            "student", f"{tag}_sentence_transformers_fp32", st, cfg, batches, examples, False
        )
        st_bf16 = guarded(
            "student",
            f"{tag}_sentence_transformers_bf16_autocast",
            st,
            cfg,
            batches,
            examples,
            True,
        )
        mine = guarded("student", f"{tag}_relkd_train_amp", ours, cfg)
        if mine and st_fp32 and st_bf16:
            put(
                "student",
                f"{tag}_speedup",
                {
                    "relkd_vs_st_fp32": round(mine["pairs_per_s"] / st_fp32["pairs_per_s"], 2),
                    "relkd_vs_st_bf16": round(mine["pairs_per_s"] / st_bf16["pairs_per_s"], 2),
                    "relkd_vs_st_bf16_median_step": round(
                        mine["median_step_pairs_per_s"] / st_bf16["median_step_pairs_per_s"], 2
                    ),
                },
            )

    def all_losses() -> dict[str, Any]:
        """Default loss mix (Margin-MSE + MSE + KL + CoT), dev eval + checkpoints on GPU."""
        from training.student.checkpoint import load_student
        from training.student.train import LAST

        steps = n(20, 4)
        cfg = config("all-losses", steps, loss_weights=LossWeights(), eval_every=steps // 2)
        result = ours(cfg)
        scorer = load_student(cfg.output_dir, device=str(device))
        rows = [{"title": "grey sofa"}, {"title": "oak desk"}]
        scores = scorer.score_pairs(["sofa", "sofa"], rows)
        result.update(
            checkpoint_files=sorted(p.name for p in cfg.output_dir.iterdir()),
            last_dir_removed=not (cfg.output_dir / LAST).exists(),
            reload_scores=[round(float(s), 4) for s in scores],
            reload_scores_finite=bool(np.isfinite(scores).all()),
        )
        return result

    guarded("student", "amp_check_all_losses", all_losses)

    def resume() -> dict[str, Any]:
        """--resume on CUDA: a run killed right after its first output_dir/last checkpoint
        (CUDA RNG state, optimizer, scheduler) is continued by a second run."""
        import training.loop as training_loop
        import training.student.train as student_train

        class Killed(Exception):
            pass

        steps = n(6, 4)
        cfg = config("resume", steps, loss_weights=LossWeights(), eval_every=2, patience=10)
        real_save_last = training_loop.TrainingLoop._save_resume_state

        def save_last_then_die(*args: Any, **kwargs: Any) -> None:
            real_save_last(*args, **kwargs)
            raise Killed

        training_loop.TrainingLoop._save_resume_state = save_last_then_die
        try:
            train(cfg)
            killed = False
        except Killed:
            killed = True
        finally:
            training_loop.TrainingLoop._save_resume_state = real_save_last
        left_behind = (cfg.output_dir / student_train.LAST / training_loop.RESUME_STATE).exists()
        resumed = train(cfg.model_copy(update={"resume": True}))
        return {
            "killed_after_checkpoint": killed,
            "last_state_left": left_behind,
            "resumed_steps": resumed.steps,
            "pairs_per_s": round(resumed.pairs_per_s, 1),
            **per_step(cfg.output_dir),
        }

    guarded("student", "amp_check_resume", resume)

    def two_tower() -> dict[str, Any]:
        steps = n(20, 4)
        cfg = config(
            "two-tower", steps, kind="two-tower", loss_weights=LossWeights(), eval_every=steps // 2
        )
        return ours(cfg)

    guarded("student", "amp_check_two_tower", two_tower)


# ----------------------------------------------------------------------------- teacher


class StepClock:
    """Times each optimizer step of a training run (GPU synchronised), through torch's
    global optimizer step hook: nothing of the trainer's own objects is touched."""

    def __init__(self, device) -> None:
        self.device = device
        self.stamps: list[float] = []

    def install(self) -> Callable[[], None]:
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
            if not isinstance(optimizer, torch.optim.AdamW):  # not calibration's LBFGS
                return
            sync(self.device)
            self.stamps.append(time.perf_counter())

        self.stamps.clear()
        return register_optimizer_step_post_hook(hook).remove

    def summary(self, batch_size: int) -> dict[str, Any]:
        import numpy as np

        gaps = np.diff(self.stamps)
        if len(gaps) == 0:
            return {"steps_timed": len(self.stamps)}
        steady = gaps[2:] if len(gaps) > 6 else gaps
        median = float(np.median(steady))
        return {
            "steps_timed": len(self.stamps),
            "median_step_s": round(median, 4),
            "mean_step_s": round(float(steady.mean()), 4),
            "steps_per_s": round(1 / median, 2),
            "rows_per_s": round(batch_size / median, 1),
        }


def teacher_config(kind: str, out: Path, steps: int, batch: int):
    import torch

    from training.teacher.config import TeacherTrainConfig

    per_step = batch if kind == "classifier" else batch // 2  # generative: 2 sequences a pair
    return TeacherTrainConfig(
        backbone=str(LLM),
        kind=kind,
        dataset_dir=DATASET,
        output_dir=out,
        name=f"gpu-{kind}",
        epochs=1.0,
        batch_size=batch,
        max_length=n(128, 64),
        lora=True,
        precision="bf16" if torch.cuda.is_available() else "auto",
        max_train_examples=steps * per_step,
        max_dev_examples=n(256, 16),
        patience=0,
        eval_every=0,
    )


def run_teacher_training(kind: str, steps: int, batch: int) -> tuple[dict[str, Any], Path]:
    import torch

    import training.teacher.train as teacher_train

    device = torch_device()
    out = WORK / f"teacher-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = teacher_config(kind, out, steps, batch)
    clock = StepClock(device)
    restore = clock.install()
    reset_peak(device)
    started = time.perf_counter()
    try:
        info = teacher_train.train(cfg)
    finally:
        restore()
    wall = time.perf_counter() - started
    timing = clock.summary(batch)
    return {
        "ok": True,
        "kind": kind,
        "lora": True,
        "precision": cfg.precision,
        "batch_size": batch,
        "max_length": cfg.max_length,
        "steps": info["steps"],
        "train_pairs": info["train_pairs"],
        "wall_s_incl_load_eval_save": round(wall, 1),
        **timing,
        "pairs_per_s": timing.get("rows_per_s", 0) / (1 if kind == "classifier" else 2),
        "rows": "pairs" if kind == "classifier" else "SFT sequences (2 per pair)",
        "memory": gpu_memory(device),
        "dev_accuracy_random_weights": round(float(info["dev"].get("accuracy", float("nan"))), 4),
        "temperature": round(float(info["temperature"]), 4),
        "saved_files": sorted(p.name for p in out.iterdir()),
        "checkpoint_gib": round(
            sum(p.stat().st_size for p in out.glob("*.safetensors")) / 2**30, 3
        ),
        "torch_cuda": torch.version.cuda,
    }, out


def token_stats(kind: str, count: int) -> dict[str, Any]:
    import numpy as np

    from contracts.schema import Split
    from training.teacher import explain
    from training.teacher.data import load_split
    from training.teacher.modeling import load_tokenizer
    from training.teacher.templates import render, resolve_template

    tokenizer = load_tokenizer(LLM)
    template = resolve_template("rich")
    pairs = load_split(DATASET, Split.TRAIN, count, 13)
    pair_ids = tokenizer([render(template, p.query, p.product) for p in pairs])["input_ids"]
    lengths = np.array([len(ids) for ids in pair_ids])
    if kind == "generative":  # intro + pair text + instructions, as the labeler builds it
        lengths = np.array(
            [
                len(explain.prompt_ids(tokenizer, template, p.query, p.product, True, 10**6))
                for p in pairs
            ]
        )
    limit = n(128, 64)  # the teacher's max_length: it bounds the pair text only
    return {
        "mean_tokens_untruncated": round(float(lengths.mean()), 1),
        "p90_tokens": float(np.percentile(lengths, 90)),
        "pair_text_truncated_fraction": round(
            float(np.mean([len(ids) > limit for ids in pair_ids])), 3
        ),
    }


def label_throughput(out: Path, count: int, explain_: bool, max_tokens: int | None = None):
    import numpy as np

    from contracts.schema import Split
    from training.teacher.data import load_split
    from training.teacher.labeler import LabelerStats, TeacherLabeler

    device = torch_device()
    labeler = TeacherLabeler.from_checkpoint(out, device="auto")
    if max_tokens:
        labeler.max_tokens = max_tokens
    pairs = [(p.query, p.product) for p in load_split(DATASET, Split.TRAIN, count, 1)]
    reset_peak(device)
    labeler.label(pairs[: min(64, len(pairs))], explain=explain_)  # warm-up
    sync(device)
    labeler.stats = LabelerStats()
    started = time.perf_counter()
    labels = labeler.label(pairs, explain=explain_)
    sync(device)
    seconds = time.perf_counter() - started
    probs = np.array([label.grade_probs for label in labels])
    return {
        "pairs": len(pairs),
        "explain": explain_,
        "max_tokens": labeler.max_tokens,
        "seconds": round(seconds, 3),
        "pairs_per_s": round(len(pairs) / seconds, 1),
        "batches": labeler.stats.batches,
        "model_dtype": str(next(labeler.model.parameters()).dtype),
        "probs_sum_ok": bool(np.allclose(probs.sum(1), 1.0, atol=1e-3)),
        "labels_finite": bool(np.isfinite(probs).all()),
        "malformed_generations": labeler.stats.malformed_generations,
        "explained": labeler.stats.explained,
        "memory": gpu_memory(device),
    }


def train_then_label(
    part: str, kind: str, steps: int, token_pairs: int, labelings: dict[str, tuple]
) -> None:
    """Token statistics, a few LoRA training steps of a ``kind`` teacher, then each of
    ``labelings`` (name -> label_throughput's pairs, explain, max_tokens)."""
    quiet_transformers()
    tokens_key = (
        "tokens_classifier_rich_template"
        if kind == "classifier"
        else ("tokens_step_by_step_prompt")
    )
    guarded(part, tokens_key, token_stats, kind, token_pairs)
    trained = guarded(
        part,
        f"train_{kind}_lora_bf16",
        lambda: run_teacher_training(kind, steps, n(32, 4))[0],
    )
    if trained:
        for name, args in labelings.items():
            guarded(part, name, label_throughput, WORK / f"teacher-{kind}", *args)


def part_teacher() -> None:
    pairs = n(2000, 40)
    train_then_label(
        "teacher",
        "classifier",
        n(40, 3),
        500,
        {
            "labeler_classifier": (pairs, False),
            "labeler_classifier_max_tokens_65536": (pairs, False, 65536),
        },
    )


def part_generative() -> None:
    train_then_label(
        "generative",
        "generative",
        n(12, 2),
        200,
        {
            "labeler_direct": (n(1000, 20), False),
            "labeler_explain": (n(128, 6), True),
            "labeler_explain_1000": (n(1000, 12), True),
        },
    )


# ----------------------------------------------------------------------------- main


def part_profile() -> None:
    """Where a `train()` step of ours spends its time on the GPU (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    quiet_transformers()
    device = torch_device()
    from training.student.config import LossWeights, StudentTrainConfig
    from training.student.train import train

    def cfg(tag: str, steps: int) -> StudentTrainConfig:
        out = WORK / f"profile-{tag}"
        shutil.rmtree(out, ignore_errors=True)
        return StudentTrainConfig(
            dataset_dir=DATASET,
            output_dir=out,
            base_model=str(MINILM),
            use_teacher_labels=False,
            num_layers=None,
            max_length=32,
            loss_weights=LossWeights(margin_mse=1.0, mse=0.0, kl=0.0, cot=0.0),
            max_steps=steps,
            eval_every=steps,
            progress=False,
        )

    train(cfg("warm", 3))
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        started = time.perf_counter()
        train(cfg("prof", 30))
        wall = time.perf_counter() - started
    ka = prof.key_averages()
    text = [f"wall {wall:.2f}s for 30 steps incl. load/eval/save"]
    text.append(ka.table(sort_by="self_cpu_time_total", row_limit=35))
    if device.type == "cuda":
        text.append(ka.table(sort_by="self_cuda_time_total", row_limit=15))
    (OUT / "profile.txt").write_text("\n\n".join(text))
    interesting = {}
    for e in ka:
        if any(
            k in e.key
            for k in (
                "item",
                "_local_scalar_dense",
                "cudaStreamSynchronize",
                "cudaDeviceSynchronize",
                "cudaMemcpy",
                "to_copy",
                "tokeniz",
            )
        ):
            interesting[e.key] = {
                "count": e.count,
                "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 2),
            }
    put("profile", "wall_s", round(wall, 2))
    put("profile", "sync_like_ops", interesting)
    total_cpu = sum(e.self_cpu_time_total for e in ka) / 1e3
    put("profile", "total_self_cpu_ms", round(total_cpu, 1))
    if device.type == "cuda":
        total_cuda = sum(getattr(e, "self_device_time_total", 0) or 0 for e in ka) / 1e3
        put("profile", "total_self_cuda_ms", round(total_cuda, 1))
    print((OUT / "profile.txt").read_text()[:6000])


def part_assembly() -> None:
    """Score as served now: products tokenized once (ProductTokenCache), a request
    tokenizes its query and assembles rows (PairAssembler), then the bf16 student:
    eager, and a CUDA graph at [100, SERVE_MAX_LEN] (rows padded to the graph's width)."""
    import numpy as np
    import torch

    from training.export.triton_models.pair_tokens import PairAssembler, ProductTokenCache

    quiet_transformers()
    device = torch_device()
    requests = products_and_requests(SERVE_FIELDS, 16, PRODUCTS_PER_REQUEST)
    student = build_cross_encoder(SERVE_MAX_LEN, SERVE_FIELDS)
    model = copy.deepcopy(student.model.eval()).to(device=device, dtype=torch.bfloat16).eval()
    score = serving_fn(model)
    count, warmup = n(300, 5), n(30, 2)
    tok_dir = WORK / "tokenizer"
    student.tokenizer.save_pretrained(tok_dir)
    pad_id = int(student.tokenizer.pad_token_id or 0)
    assembler = PairAssembler(str(tok_dir / "tokenizer.json"), SERVE_MAX_LEN, pad_id=pad_id)
    cache = ProductTokenCache(assembler)
    keyed = [(q, [f"p{hash(t)}" for t in texts], texts) for q, texts in requests]
    for _, ids, texts in keyed:
        cache.put(ids, texts)

    def rows(i: int) -> dict[str, np.ndarray]:
        query, ids, texts = keyed[i % len(keyed)]
        (encoding,) = assembler.encode([query])
        return assembler.assemble(encoding.ids, cache.get(ids, texts))

    put("assembly", "assembly_only_cpu", timed_loop(rows, 5, n(300, 5), torch.device("cpu")))

    def eager(i: int):
        inputs = {k: torch.from_numpy(v).to(device) for k, v in rows(i).items()}
        return score(inputs).cpu()

    with torch.inference_mode():
        guarded("assembly", "e2e_assembly_bf16_eager", timed_loop, eager, warmup, count, device)

    def graph_e2e() -> dict[str, Any]:
        static = {
            k: torch.full(
                (PRODUCTS_PER_REQUEST, SERVE_MAX_LEN),
                pad_id if k == "input_ids" else 0,
                dtype=torch.long,
                device=device,
            )
            for k in ("input_ids", "attention_mask", "token_type_ids")
        }
        host = {k: torch.zeros_like(v, device="cpu").pin_memory() for k, v in static.items()}
        with torch.inference_mode():
            graph, static_out = capture_graph(score, static)

            def replay(i: int):
                arrays = rows(i)
                for key, buffer in host.items():
                    buffer.fill_(pad_id if key == "input_ids" else 0)
                    width = arrays[key].shape[1]
                    buffer[:, :width] = torch.from_numpy(arrays[key])
                    static[key].copy_(buffer, non_blocking=True)
                graph.replay()
                return static_out.cpu()

            e2e = timed_loop(replay, warmup, count, device)
            model_only = timed_loop(lambda i: graph.replay(), warmup, count, device)
            replay(0)
            graph_scores = static_out.float().cpu()
            eager_scores = eager(0).float()
        return {
            "shape": [PRODUCTS_PER_REQUEST, SERVE_MAX_LEN],
            "e2e": e2e,
            "model_only": model_only,
            "max_abs_diff_vs_eager": float((graph_scores - eager_scores).abs().max()),
        }

    if device.type == "cuda":
        guarded("assembly", "e2e_assembly_bf16_cuda_graph", graph_e2e)
    put("assembly", "cache", {"hits": cache.hits, "misses": cache.misses})


PARTS = {
    "setup": part_setup,
    "serve": part_serve,
    "assembly": part_assembly,
    "compile": part_compile,
    "student": part_student,
    "profile": part_profile,
    "teacher": part_teacher,
    "generative": part_generative,
}


def main() -> None:
    command = sys.argv[1]
    if command == "mark":  # mark PART STATUS [DETAIL]: written by run_gpu.sh
        part, status = sys.argv[2], sys.argv[3]
        detail = sys.argv[4] if len(sys.argv) > 4 else ""
        put(part, "_status", {"status": status, "detail": detail})
        return
    if command == "finish":
        put("run", "total_wall_s", float(sys.argv[2]))
        data = load_results()
        print(json.dumps({k: v.get("_status") for k, v in data.items() if isinstance(v, dict)}))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    put(command, "_status", {"status": "started"})
    started = time.perf_counter()
    PARTS[command]()
    put(command, "_status", {"status": "done", "seconds": round(time.perf_counter() - started, 1)})


if __name__ == "__main__":
    main()
