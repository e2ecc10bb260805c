"""Run code under each CPU variant of the core (THYROFAST_CPU_VARIANT).

The variant is chosen once per process, at the first call into the core, so
each variant runs in a subprocess of its own.  The child imports this
repository's ``tests`` helpers (``_reference``) and whatever ``thyrofast`` the
parent imports.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import thyrofast

TESTS = pathlib.Path(__file__).resolve().parent


def runnable_variants() -> list[str]:
    """The variants of this build that this CPU can run, lowest first."""
    return thyrofast.build_info()["cpu_variants_runnable"].split(",")


def run_in_variant(variant: str, code: str, cwd: pathlib.Path, *, path: pathlib.Path | None = None) -> dict:
    """Run ``code`` (which must print one JSON object last) with the variant forced; return that object.

    The child imports from ``tests/`` and from ``path`` (the calling test's folder, for its own module)."""
    env = dict(os.environ, THYROFAST_CPU_VARIANT=variant)
    pkg = str(pathlib.Path(thyrofast.__file__).resolve().parents[1])
    extra = [str(path)] if path is not None else []
    env["PYTHONPATH"] = os.pathsep.join([pkg, str(TESTS), *extra, env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
