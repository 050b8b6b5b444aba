"""Score goodput under overload and during a Triton kill.

    python bench/bench_score_overload.py [--products 100] [--seconds 8] [--deadline 2.0]
                                         [--triton-timeout 2.0]
                                         [--out bench/results/score_overload.json]

The student-inference service (its own process, TritonBackend, default admission
settings: RELKD_SCORE_MAX_IN_FLIGHT / RELKD_SCORE_MAX_QUEUED) in front of the CPU
tritonserver, the cross-encoder of bench_inference.py (trainer's default shape).
Closed-loop clients send one query with ``--products`` candidates each, with a
``--deadline`` per call as a search frontend would, and back off 50 ms after a
RESOURCE_EXHAUSTED or UNAVAILABLE (no work was done; the caller should retry later).
Recorded per phase: goodput (OK answers per second), every status code's count, and OK
latency.

Phases: c=1, c=8, c=32 for ``--seconds`` each, then c=8 while tritonserver is
SIGKILLed at 2 s and restarted on the same ports; that phase also records when the
first answer after the restart came back. The machine's load average is recorded before
and after, since the cores may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from bench_inference import (
    QUERIES,
    STOP_GRACE_S,
    THREADS,
    build_students,
    catalog,
    start_service,
)
from relevance.v1 import student_inference_pb2, student_inference_pb2_grpc

from services.core import process
from services.student_inference import triton_runtime
from services.student_inference.backends import triton_env
from services.student_inference.triton_runtime import TritonServer, setup_venv
from training.export.exporter import export_student
from training.export.triton_repo import write_cpu_repository

SHED_BACKOFF_S = 0.05
# Answers after which a frontend backs off before its next call (no work was done).
RETRY_LATER = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
KILL_AT_S = 2.0


async def phase(
    stub: student_inference_pb2_grpc.StudentInferenceStub,
    requests: list[student_inference_pb2.ScoreRequest],
    concurrency: int,
    seconds: float,
    deadline_s: float,
    during: Any = None,
) -> dict[str, Any]:
    codes: Counter[str] = Counter()
    ok_latencies: list[float] = []
    ok_times: list[float] = []
    start = time.perf_counter()
    stop_at = start + seconds

    async def client(worker: int) -> None:
        i = worker
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            try:
                await stub.Score(requests[i % len(requests)], timeout=deadline_s)
                codes["OK"] += 1
                ok_latencies.append(time.perf_counter() - sent)
                ok_times.append(time.perf_counter() - start)
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1
                if exc.code() in RETRY_LATER:
                    await asyncio.sleep(SHED_BACKOFF_S)
            i += concurrency

    tasks = [asyncio.create_task(client(w)) for w in range(concurrency)]
    extra: dict[str, Any] = {}
    if during is not None:
        extra = await during(start)
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    ms = np.asarray(ok_latencies) * 1000
    result: dict[str, Any] = {
        "concurrency": concurrency,
        "seconds": round(wall, 2),
        "goodput_ok_per_s": round(codes["OK"] / wall, 2),
        "codes": dict(codes),
        "ok_p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "ok_p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        **extra,
    }
    if "restarted_at_s" in extra:
        after = [t for t in ok_times if t > extra["restarted_at_s"]]
        result["first_ok_after_restart_s"] = (
            round(after[0] - extra["restarted_at_s"], 2) if after else None
        )
    return result


async def warm_up(
    stub: student_inference_pb2_grpc.StudentInferenceStub,
    requests: list[student_inference_pb2.ScoreRequest],
) -> None:
    """Until every request has been answered once (the first ones load the model)."""
    deadline = time.monotonic() + 120
    for request in requests:
        while True:
            try:
                await stub.Score(request, timeout=30)
                break
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(THREADS)
    _, rows = catalog(max(1000, args.products * 4), work)
    checkpoint, _ = build_students(work, None)
    export = work / "ce-export"
    export_student(checkpoint, export, int8=False)
    rng = np.random.default_rng(1)
    requests = [
        student_inference_pb2.ScoreRequest(
            query=q,
            products=[rows[i] for i in rng.choice(len(rows), args.products, replace=False)],
        )
        for q in QUERIES
    ]
    setup_venv(quiet=True)
    repository = work / "triton-repo"
    name = write_cpu_repository(export, repository, cpu_threads=THREADS)
    report: dict[str, Any] = {"phases": {}}
    with TritonServer(repository, model_control="explicit", load_models=(name,)) as server:
        env = {**triton_env(server, name), "RELKD_TRITON_TIMEOUT_S": str(args.triton_timeout)}
        service = start_service(env, work / "service.log")
        try:
            async with grpc.aio.insecure_channel(service.address) as channel:
                stub = student_inference_pb2_grpc.StudentInferenceStub(channel)
                await warm_up(stub, requests)
                for c in (1, 8, 32):
                    result = await phase(stub, requests, c, args.seconds, args.deadline)
                    print(f"c={c}: {result}", flush=True)
                    report["phases"][f"c{c}"] = result

                async def kill_and_restart(start: float) -> dict[str, Any]:
                    await asyncio.sleep(KILL_AT_S)
                    ports = (server.http_port, server.grpc_port, server.metrics_port)
                    os.kill(server.pid or 0, signal.SIGKILL)
                    killed = time.perf_counter() - start
                    await asyncio.to_thread(server.stop)
                    reuse = iter(ports)
                    original = triton_runtime.free_port
                    triton_runtime.free_port = lambda host="127.0.0.1": next(reuse)
                    try:
                        await asyncio.to_thread(server.start)
                    finally:
                        triton_runtime.free_port = original
                    return {
                        "killed_at_s": round(killed, 2),
                        "restarted_at_s": round(time.perf_counter() - start, 2),
                    }

                result = await phase(
                    stub,
                    requests,
                    8,
                    max(args.seconds, 2 * KILL_AT_S) + 8,
                    args.deadline,
                    during=kill_and_restart,
                )
                print(f"triton kill, c=8: {result}", flush=True)
                report["phases"]["c8_triton_kill"] = result
        finally:
            process.stop(service.process, STOP_GRACE_S)
    phases = report["phases"]
    report["goodput_c32_over_c8"] = round(
        phases["c32"]["goodput_ok_per_s"] / max(phases["c8"]["goodput_ok_per_s"], 1e-9), 3
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100, help="Products per request.")
    parser.add_argument("--seconds", type=float, default=8.0, help="Length of each phase.")
    parser.add_argument("--deadline", type=float, default=2.0, help="Per-call deadline (s).")
    parser.add_argument(
        "--triton-timeout", type=float, default=2.0, help="RELKD_TRITON_TIMEOUT_S (s)."
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/score_overload.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        report = asyncio.run(run(args, Path(tmp)))
    report["conditions"] = {
        "products_per_request": args.products,
        "deadline_s": args.deadline,
        "phase_s": args.seconds,
        "shed_backoff_s": SHED_BACKOFF_S,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "settings": "RELKD_SCORE_MAX_IN_FLIGHT=4, RELKD_SCORE_MAX_QUEUED=64 (defaults), "
        f"RELKD_TRITON_TIMEOUT_S={args.triton_timeout}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
