"""``thyrofast bench [preprocess|infer|e2e|stream|all] [--device cpu|cuda] [--json OUT]``."""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import time

from thyrofast.cli import _options as opt
from thyrofast.cli._errors import CommandError, reported


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", default="preprocess", choices=["preprocess", "infer", "e2e", "stream", "all"])
    opt.add_device(p, default="cpu", auto=False)
    p.add_argument("--rounds", type=int, default=60, help="timed rounds per contender (default 60)")
    p.add_argument("--bundle", help="model bundle for infer/e2e (default: a freshly exported demo-sized model)")
    opt.add_threads(p, default=2, help="CPU threads for inference backends and peers (default 2)")
    p.add_argument("--json", type=pathlib.Path, help="write all numbers to this JSON file")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed (for CI gates)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="stream: the OpenVINO graph the C++ runtime runs (default fp32)")

#: fewest timed rounds that give a median and a p99 worth printing
MIN_ROUNDS = 5


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(args: argparse.Namespace) -> int:
    from thyrofast._extras import require
    from thyrofast.bench import bench_preprocess_cpu, bench_preprocess_cuda, format_rows

    if args.rounds < MIN_ROUNDS:
        raise CommandError(f"error: --rounds must be >= {MIN_ROUNDS}, got {args.rounds}")
    if args.threads < 1:
        raise CommandError(f"error: --threads must be >= 1, got {args.threads}")
    # what needs an extra says so before anything is measured
    if args.device == "cuda":
        require("torch", needed_for="the CUDA benchmarks")
    if args.what != "preprocess" and args.bundle is None:
        require("torch", "torchvision", needed_for="building the timing bundle (or pass --bundle BUNDLE)")
    results = []
    # e.g. --device cuda without a GPU, or a build without CUDA / the runtime
    with reported(RuntimeError):
        if args.what in ("preprocess", "all"):
            res = (bench_preprocess_cuda(rounds=args.rounds) if args.device == "cuda"
                   else bench_preprocess_cpu(args.rounds))
            results.append(("preprocess", res))
        if args.what in ("infer", "e2e", "all"):
            from thyrofast.bench import inference_bench

            res = inference_bench.run(args.what, device=args.device, rounds=args.rounds, bundle=args.bundle,
                                      threads=args.threads)
            results.extend(res)
        if args.what == "stream":  # live cine through the C++ runtime (not part of "all": it takes 20 s)
            import tempfile

            from thyrofast.bench import stream_bench

            with tempfile.TemporaryDirectory(prefix="thyrofast-bench-stream-") as tmp:
                results.append(("stream", stream_bench.run(_stream_bundle(args, tmp), precision=args.precision)))
    meta = {"machine": platform.node(), "processor": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": _commit()}
    for name, res in results:
        print(f"== {name} ==")
        if name == "stream":
            from thyrofast.bench.stream_bench import format_stream

            print(format_stream(res))
        else:
            print(format_rows(res))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": dict(results)}, indent=2))
    failed = [r for _, res in results for r in res["rows"] if r.get("pass") is False or r.get("limit_pass") is False]
    if failed:
        print(f"{len(failed)} target(s) missed: " + ", ".join(r["case"] for r in failed))
    return 1 if failed and args.check else 0


def _stream_bundle(args: argparse.Namespace, tmp: str):
    """--bundle, or the timing bundle (ResNet-18 at 224 x 224) built into ``tmp``."""
    if args.bundle is not None:
        return args.bundle
    from pathlib import Path

    from thyrofast.bench.inference_bench import timing_bundle

    return timing_bundle(Path(tmp))
