#!/usr/bin/env bash
# Installs everything the test suite needs (the package, test tools and the Paddle oracle) and runs it.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch: this machine kind keeps torch 2.14.1 / torchvision 0.29.1 wheels on disk; any torch >= 2.4 works.
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
"$PY" -m pip install -q -e ".[dev]"
# The Paddle oracle (see ../shared/spec/paddle_oracle.md): ppdet 2.6.0 without its pinned dependencies.
"$PY" -m pip install -q "paddlepaddle==3.3.1" "setuptools<81" scipy
"$PY" -m pip install -q --no-deps "paddledet==2.6.0"
"$PY" -c "import paddle, ppdet" >/dev/null 2>&1 || { echo "the Paddle oracle failed to import" >&2; exit 1; }

# PaddleX 3.7.2 (end-to-end oracle) pins its own dependencies, so it lives in a venv of its own, kept outside the
# checkout so that clean clones reuse it.
PDX_VENV=${PPYOLOE_SOD_PADDLEX_VENV:-$HOME/.cache/ppyoloe_sod/venv-paddlex}
if ! "$PDX_VENV/bin/python" -c "import paddlex" >/dev/null 2>&1; then
  "$PY" -m venv "$PDX_VENV"
  "$PDX_VENV/bin/pip" install -q "paddlepaddle==3.3.1" "paddlex==3.7.2" opencv-contrib-python pypdfium2
fi
export PPYOLOE_SOD_PADDLEX_PYTHON="$PDX_VENV/bin/python"

exec "$PY" -m pytest -q -p no:cacheprovider "$@"
