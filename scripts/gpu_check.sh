#!/usr/bin/env bash
# `make gpu-check`: on a machine with a GPU (the device tool's), build the extension with that
# machine's python3 and torch, run the CUDA tests and the GPU benchmark. Logs go to $OUT
# (default ./gpu-check-out), seven files at most, as the device tool brings back eight: this
# script's whole output (gpu_check.log), the build's ptxas report, the CUDA tests' log, the
# benchmark's figures (bench_gpu.json), the Nsight Compute profile of the benchmark's kernels and
# the two compute-sanitizer logs; the build's own logs stay beside the build. Each step has its
# own time bound; together they can outlast one device call (10 minutes), so the steps run in
# the order they are needed in and GPU_CHECK_ONLY (below) reruns those a call had no time for.
# Its build (build-gpu) puts _C and libtorchplastic into python/torchplastic, as `make build`
# does: run on a development machine (GPU_CHECK_ONLY=none builds and stops), it replaces that
# build's, which `rm python/torchplastic/*.so && make build` brings back.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
# Nsight Compute and compute-sanitizer where the CUDA toolkit keeps them, if not on PATH.
for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer /usr/local/cuda/nsight-compute* /opt/nvidia/nsight-compute/*; do
  [ -d "$d" ] && PATH="$PATH:$d"
done
export PATH
status=0
step() { echo; echo "=== $* ($(date +%T))"; }
# GPU_CHECK_ONLY="profile sanitizer" runs only those steps after the build (a rerun of what a
# first call had no time left for); the steps, in this order (what #14 needs first, first): tests
# smoke bench profile lstm sanitizer.
want() { [ -z "${GPU_CHECK_ONLY:-}" ] || [[ " $GPU_CHECK_ONLY " == *" $1 "* ]]; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
nvcc --version | tail -1

step "build"
BUILD=build-gpu
mkdir -p $BUILD
# The CPU kernels of the instruction set this machine's CPU runs (and generic, always built),
# not all three: the CUDA tests compare against the CPU kernels this process runs, and a third
# fewer objects shorten a build that each fresh machine pays again.
cpu_isas="generic"
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
if [[ " $flags " == *" avx512f "* && " $flags " == *" avx512vl "* ]]; then cpu_isas="generic;avx512"
elif [[ " $flags " == *" avx2 "* && " $flags " == *" fma "* ]]; then cpu_isas="generic;avx2"; fi
echo "CPU kernels: $cpu_isas"
cmake -S . -B $BUILD -G Ninja -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$(command -v $PY)" \
  -DTORCHPLASTIC_CPU_ISAS="$cpu_isas" \
  -DCMAKE_PREFIX_PATH="$($PY -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')" \
  > "$BUILD/configure.log" 2>&1 || { tail -30 "$BUILD/configure.log"; exit 1; }
cmake --build $BUILD -j "$(nproc)" > "$BUILD/build.log" 2>&1 || { tail -40 "$BUILD/build.log"; exit 1; }
echo "slowest build steps (seconds):"
awk 'NR > 1 { printf "%7.1f  %s\n", ($2 - $1) / 1000, $4 }' $BUILD/.ninja_log | sort -rn | head -5
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import torchplastic as tp; print(tp.build_info())"
grep '^ptxas:' "$BUILD/build.log"
cp $BUILD/ptxas_report.txt "$OUT/" 2>/dev/null || true

if want tests; then
  step "CUDA tests"
  # Eight pytest-xdist workers where the machine has the plugin, two CPU threads each (the CPU
  # side of each comparison is small); one process otherwise. test_errors.py has the CUDA
  # mutation fuzz and device checks (and its CPU cases, a few seconds).
  xdist=()
  $PY -c "import xdist" 2> /dev/null && xdist=(-n 8)
  OMP_NUM_THREADS=2 timeout 300 $PY -m pytest -q -p no:cacheprovider tests/python/test_cuda.py \
    tests/python/test_errors.py \
    "${xdist[@]}" -rfE --durations=5 2>&1 | tee "$OUT/pytest_cuda.log" | tail -60
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if want smoke; then
  step "smoke: the benchmark's sizes, step by step"
  timeout 60 $PY -X faulthandler scripts/cuda_smoke.py || status=1
fi

if want bench; then
  step "GPU benchmark"
  # With each launch plan the benchmark meets printed (cluster size, what is on chip, how many
  # clusters are resident at once).
  TORCHPLASTIC_CUDA_PLAN_LOG=1 timeout 180 $PY -X faulthandler benchmarks/bench_gpu.py \
    --dtypes --layouts --checkpoints --grid --json "$OUT/bench_gpu.json" || status=1
fi

# Where the time goes (issue #14): the benchmark's forward and backward kernels under Nsight
# Compute (scripts/ncu_profile.sh; a machine that withholds the performance counters is reported,
# not counted as a failure).
if want profile; then
  step "Nsight Compute: the benchmark's kernels"
  bash scripts/ncu_profile.sh "$OUT" "$PY" || status=1
fi

if want lstm; then
  step "plastic LSTM benchmark (B=32, H=256, T=256, against cuDNN's LSTM)"
  for rule in retroactive hebb; do
    timeout 45 $PY -X faulthandler benchmarks/bench_lstm.py --device cuda --steps 256 --no-reference \
      --rounds 5 --rule $rule || status=1
  done
fi

# Every launch shape at small sizes under compute-sanitizer: out-of-bounds and misaligned
# accesses (memcheck) and shared-memory hazards (racecheck). Without torch's caching allocator,
# so that each tensor is an allocation of its own and an access past its end is seen.
if want sanitizer; then
  step "compute-sanitizer"
  if command -v compute-sanitizer > /dev/null; then
    for tool in memcheck racecheck; do
      cases=small; [ $tool = racecheck ] && cases=on-chip
      PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 \
        $PY scripts/cuda_case.py --cases $cases > "$OUT/sanitizer_$tool.log" 2>&1
      rc=$?; echo "$tool: exit $rc"; tail -3 "$OUT/sanitizer_$tool.log"
      [ $rc -eq 0 ] || status=1
    done
  else
    echo "compute-sanitizer not found: skipped"
  fi
fi

step "done: status $status"
exit $status
