#!/usr/bin/env bash
# Every GPU check of the project in one run (about 8 minutes on one H100/H200-class GPU), reports under OUT_DIR:
#   bash benchmarks/gpu_check.sh OUT_DIR
# 1. the test suite's CUDA tests (NMS on CUDA equals the CPU, the fast path on the GPU);
# 2. benchmarks/gpu_check.py for SOD-S at 640 (checks, inference latency, the training half);
# 3. inference latency for SOD-L at 640 and largesize-L at 1920 (no training half).
# Each stage has its own time limit, so one that hangs does not cost the others. Exit status: 1 if any failed.
set -u
out="${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
stage() {  # stage NAME SECONDS COMMAND...: run with a limit, log to OUT_DIR/NAME.log, remember a failure
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start))s"
  tail -n 40 "$out/$name.log"
  [ "$rc" -eq 0 ] || status=1
}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
} 2>&1 | tee "$out/environment.txt"
stage cuda_tests 110 python3 -m pytest -q -p no:cacheprovider -rs tests/test_nms_fast.py tests/infer/test_gpu_fast.py \
      tests/test_device.py
stage gpu_check_S 280 python3 benchmarks/gpu_check.py --out "$out/S640" --model PP-YOLOE_plus_SOD-S --size 640
stage gpu_check_L 75 python3 benchmarks/gpu_check.py --out "$out/L640" --model PP-YOLOE_plus_SOD-L --size 640 \
      --runs 20 --no-train
stage gpu_check_largesize 75 python3 benchmarks/gpu_check.py --out "$out/largesize1920" \
      --model PP-YOLOE_plus_SOD-largesize-L --size 1920 --batches 1,4 --runs 10 --no-train
exit $status
