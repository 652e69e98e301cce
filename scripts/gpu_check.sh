#!/usr/bin/env bash
# `make gpu-check`: on a machine with a GPU (the device tool's), build the extension with that
# machine's python3 and torch, run the CUDA tests and the GPU benchmark. Logs go to $OUT
# (default ./gpu-check-out). Bounded to about 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0
step() { echo; echo "=== $* ($(date +%T))"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
nvcc --version | tail -1

step "build"
BUILD=build-gpu
cmake -S . -B $BUILD -G Ninja -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$(command -v $PY)" \
  -DCMAKE_PREFIX_PATH="$($PY -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')" \
  > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
cmake --build $BUILD -j "$(nproc)" > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import torchplastic as tp; print(tp.build_info())"

step "CUDA tests"
timeout 300 $PY -m pytest -q -p no:cacheprovider tests/python/test_cuda.py -rfE --durations=5 \
  2>&1 | tee "$OUT/pytest_cuda.log" | tail -60
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "smoke: the benchmark's sizes, step by step"
timeout 60 $PY -X faulthandler scripts/cuda_smoke.py || status=1

step "GPU benchmark"
timeout 180 $PY -X faulthandler benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" || status=1

step "plastic LSTM benchmark (B=32, H=256, T=256, against cuDNN's LSTM)"
timeout 45 $PY -X faulthandler benchmarks/bench_lstm.py --device cuda --steps 256 --no-reference \
  --rounds 5 2>&1 | tee "$OUT/bench_lstm.log" || status=1

step "done: status $status"
exit $status
