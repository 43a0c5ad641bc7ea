#!/usr/bin/env bash
# Installs everything the test suite needs (the package, test tools and the Paddle oracle) and runs it.
# Usage: bash scripts/test.sh [pytest args...]    (PYTHON=/path/to/python to use another interpreter or venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch: this machine kind keeps torch 2.14.1 / torchvision 0.29.1 wheels on disk; any torch >= 2.4 works.
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
"$PY" -m pip install -q -e ".[dev]"

# The reference implementations the tests compare against (their imports are checked below):
# - PaddleDetection 2.6.0's own code (tests/oracle/ppdet_reference.py builds its modules; tests marked `oracle`).
#   Its pinned requirements clash with ours, so it is installed without them, plus what the ppdet modules the tests
#   use import (found by importing each in a new venv): requests, six, scikit-learn, pandas, and setuptools'
#   pkg_resources (gone from setuptools 81). scipy comes with .[dev].
# - SAHI 0.12.8 (slicing and merge parity): without its opencv-python requirement, which would install a second cv2
#   over opencv-python-headless; the modules the tests use need only shapely.
"$PY" -m pip install -q "paddlepaddle==3.3.1" "setuptools<81" "requests>=2" "six>=1.16" "scikit-learn>=1" \
  "pandas>=1.3" "shapely>=2"
"$PY" -m pip install -q --no-deps "paddledet==2.6.0" "sahi==0.12.8"
# Every ppdet / paddle / sahi module the tests import, read from the tests themselves so the list cannot go stale.
REFERENCE_MODULES=$(grep -rhoE '^[[:space:]]*(from|import) (ppdet|paddle|sahi)(\.[A-Za-z0-9_.]+)?([ ,]|$)' \
  --include='*.py' tests | awk '{print $2}' | tr -d ',' | sort -u)
# ppdet prints warnings about optional trackers on import: shown only when an import fails, above the error.
if ! import_log=$("$PY" -c 'import importlib, sys, traceback
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        traceback.print_exc()
        sys.exit(f"{name}: {type(exc).__name__}: {exc}")' $REFERENCE_MODULES 2>&1); then
  printf '%s\n' "$import_log" | tail -n 20 >&2
  echo "the reference implementations (Paddle oracle, SAHI) failed to import: $(printf '%s\n' "$import_log" | tail -n 1)" >&2
  exit 1
fi

# Debian packages some tests need, installed when missing and we may (root with apt-get); otherwise those tests
# skip and say how to install them. apt_install_missing COMMAND OVERRIDE PACKAGE WHO: nothing when COMMAND is on
# the PATH or the variable OVERRIDE is set.
apt_install_missing() {
  if command -v "$1" >/dev/null 2>&1 || [ -n "${!2:-}" ]; then
    return 0
  fi
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$3" >/dev/null
  else
    echo "note: $1 is not installed; $4 will skip (apt-get install $3)" >&2
  fi
}
# The demo page's test drives a real headless browser: Debian's chromium through Playwright (whose own browser
# download is not used); PPYOLOE_SOD_CHROMIUM names another binary.
apt_install_missing chromium PPYOLOE_SOD_CHROMIUM chromium "the demo page's browser test"
# The Spark batch test runs a local Spark, whose JVM needs Java (17 for Spark 4).
apt_install_missing java JAVA_HOME default-jre-headless "the Spark batch tests"

# PaddleX 3.7.2 (end-to-end oracle) pins its own dependencies, so it lives in a venv of its own, kept outside the
# checkout so that clean clones reuse it. The venv is named after a hash of its exact requirement list: changing
# the list builds a new one instead of reusing a stale one.
PDX_REQUIREMENTS=("paddlepaddle==3.3.1" "paddlex==3.7.2" "opencv-contrib-python" "pypdfium2")
PDX_HASH=$("$PY" -c 'import hashlib, sys; print(hashlib.sha256("\n".join(sys.argv[1:]).encode()).hexdigest()[:12])' \
  "${PDX_REQUIREMENTS[@]}")
PDX_VENV=${PPYOLOE_SOD_PADDLEX_VENV:-$HOME/.cache/ppyoloe_sod/venv-paddlex-$PDX_HASH}
if ! "$PDX_VENV/bin/python" -c "import paddlex" >/dev/null 2>&1; then
  if [ -n "${PPYOLOE_SOD_PADDLEX_VENV:-}" ]; then
    "$PY" -m venv "$PDX_VENV"  # a folder the user named is never emptied
  else
    "$PY" -m venv --clear "$PDX_VENV"  # our cache: a half-built venv starts over
  fi
  "$PDX_VENV/bin/pip" install -q "${PDX_REQUIREMENTS[@]}"
fi
export PPYOLOE_SOD_PADDLEX_PYTHON="$PDX_VENV/bin/python"

# With arguments: one pytest run of exactly those. Without: the suite, one pytest process per test folder. A single
# process holding torch, Paddle, OpenVINO, ONNX Runtime and Ray at once (with their own thread pools) segfaulted
# twice near the 40% mark in full runs on this project's machines, never in any smaller group; no user process
# loads Paddle beside us, so each folder gets a fresh interpreter (a few seconds of imports each).
if [ $# -gt 0 ]; then
  exec "$PY" -m pytest -q -p no:cacheprovider "$@"
fi
status=0
failed_groups=()
for group in tests/*/ tests/test_*.py; do
  [ -d "$group" ] && { ls "$group"test_*.py >/dev/null 2>&1 || continue; }
  [ -f "$group" ] && continue  # the top-level test files run together below
  echo "== $group" >&2
  "$PY" -m pytest -q -p no:cacheprovider "$group" || { status=1; failed_groups+=("$group"); }
done
echo "== tests/test_*.py" >&2
"$PY" -m pytest -q -p no:cacheprovider tests/test_*.py || { status=1; failed_groups+=("tests/test_*.py"); }
if [ "$status" -ne 0 ]; then
  echo "failed (or collected nothing): ${failed_groups[*]}" >&2
fi
exit "$status"
