#!/usr/bin/env bash
# Developer build: install the package into the active environment and copy
# the compiled module next to the sources, so `python -m pytest` from the
# repository root sees edits to .py files without reinstalling.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --no-build-isolation --no-deps -q . "$@"
so=$(python - <<'PY'
import importlib.util, os, sys
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.getcwd()]
spec = importlib.util.find_spec("thyrofast._core")
print(spec.origin)
PY
)
# atomic: a running test process may have the old module mapped
cp -f "$so" "thyrofast/.$(basename "$so").tmp" && mv -f "thyrofast/.$(basename "$so").tmp" "thyrofast/$(basename "$so")"
echo "built $(basename "$so")"
