"""``thyrofast info``: what this installation can do."""
from __future__ import annotations

import argparse
import json
import platform


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def gather() -> dict:
    from thyrofast import __version__, build_info

    info = {"thyrofast": __version__, "python": platform.python_version(), "machine": platform.machine(),
            "core": build_info()}
    try:
        from thyrofast.engines.select import available_backends, cuda_available

        info["backends"] = available_backends()
        info["cuda_for_torch"] = cuda_available()
    except ImportError as exc:  # pragma: no cover - engines import only numpy at module level
        info["backends"] = {"error": str(exc)}
    return info


def main(args: argparse.Namespace) -> int:
    info = gather()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    core = info["core"]
    print(f"thyrofast {info['thyrofast']} (Python {info['python']}, {info['machine']})")
    print(f"  core: {core['compiler']}, OpenMP {'yes' if core['openmp'] else 'no'}, "
          f"CUDA {'compiled for ' + core['cuda_architectures'] if core['cuda'] else 'not compiled'}, "
          f"CUDA devices {core['cuda_devices']}")
    print(f"  CPU code: {core['cpu_variant']} (built: {core['cpu_variants_built']}; "
          f"this CPU runs: {core['cpu_variants_runnable']}; THYROFAST_CPU_VARIANT forces one)")
    print("  backends: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["backends"].items()))
    return 0
