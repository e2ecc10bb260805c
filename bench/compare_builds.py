"""Time `thyrofast bench preprocess` of several builds of the core side by side.

Each contender is a compiled module (``_core*.so``), optionally with a forced
CPU variant; the runs alternate (round r runs every contender once, in an
order rotated per round), so drifting load on a shared machine hits them all
alike.  Prints, per bench row, each contender's median over the rounds of its
per-run median time and the ratio to the first contender.

    python bench/compare_builds.py --rounds 20 --repeats 6 \\
        native=build/native/_core.cpython-311-x86_64-linux-gnu.so \\
        dispatched=build/dev/_core.cpython-311-x86_64-linux-gnu.so \\
        baseline=build/dev/_core.cpython-311-x86_64-linux-gnu.so@baseline
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]


def _package(core: pathlib.Path, into: pathlib.Path) -> pathlib.Path:
    """A copy of the thyrofast package with `core` as its compiled module."""
    dst = into / "thyrofast"
    shutil.copytree(REPO / "thyrofast", dst, ignore=shutil.ignore_patterns("_core*.so", "__pycache__"))
    shutil.copy2(core, dst / core.name)
    return into


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("contenders", nargs="+", help="NAME=path/to/_core.so[@variant]")
    ap.add_argument("--rounds", type=int, default=20, help="rounds per bench run")
    ap.add_argument("--repeats", type=int, default=6, help="bench runs per contender")
    ap.add_argument("--json", type=pathlib.Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cont = []
        for i, spec in enumerate(args.contenders):
            name, _, rest = spec.partition("=")
            path, _, variant = rest.partition("@")
            cont.append((name, _package(pathlib.Path(path).resolve(), pathlib.Path(tmp) / str(i)), variant))
        times: dict[str, dict[str, list[float]]] = {name: {} for name, _, _ in cont}
        for r in range(args.repeats):
            for k in range(len(cont)):
                name, pkg, variant = cont[(r + k) % len(cont)]
                env = dict(os.environ, PYTHONPATH=str(pkg))
                env.pop("THYROFAST_CPU_VARIANT", None)
                if variant:
                    env["THYROFAST_CPU_VARIANT"] = variant
                out = pathlib.Path(tmp) / "run.json"
                subprocess.run([sys.executable, "-m", "thyrofast.cli", "bench", "preprocess", "--rounds",
                                str(args.rounds), "--json", str(out)], env=env, cwd=tmp, check=False,
                               capture_output=True, timeout=1800)
                for row in json.loads(out.read_text())["results"]["preprocess"]["rows"]:
                    times[name].setdefault(row["case"], []).append(row["ours"]["median_ms"])
                out.unlink()
    first = cont[0][0]
    summary = {}
    print(f"{'row (median ms over runs)':46s}" + "".join(f"{n:>18s}" for n, _, _ in cont))
    for case in times[first]:
        med = {n: statistics.median(times[n][case]) for n, _, _ in cont}
        summary[case] = {n: {"median_ms": med[n], "runs_ms": times[n][case], "ratio_to_" + first: med[n] / med[first]}
                         for n in med}
        print(f"{case:46s}" + "".join(f"{med[n]:9.3f} {med[n] / med[first]:5.2f}x".rjust(18) for n in med))
    if args.json:
        args.json.write_text(json.dumps({"contenders": args.contenders, "rounds": args.rounds,
                                         "repeats": args.repeats, "rows": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
