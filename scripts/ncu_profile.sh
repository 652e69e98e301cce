#!/usr/bin/env bash
# The profile step of `make gpu-check` (issue #14: where the GPU time goes): Nsight Compute over
# the benchmark's forward and backward kernels, one call, with the stall reasons and memory
# traffic of each, and the SASS instructions their warps stalled on most
# (scripts/ncu_hot_instructions.py). Usage: ncu_profile.sh OUT_DIR [PYTHON]. Writes
# OUT_DIR/ncu.txt and prints a summary.
#
# Exit status: 0 when the kernels were profiled, and also when this machine withholds the GPU's
# performance counters (ERR_NVGPUCTRPERM: a setting of the machine, which we leave as it is, not a
# fault of the kernels); 1 for any other failure of ncu or of the profiled program, and when ncu
# profiled no kernel (the kernel-name filter no longer matches the kernels' names).
set -uo pipefail
OUT=${1:?usage: ncu_profile.sh OUT_DIR [PYTHON]}
PY=${2:-python3}
OUT=$(cd "$OUT" && pwd) || exit 1
cd "$(dirname "$0")/.."
if ! command -v ncu > /dev/null; then
  echo "ncu not found: skipped"
  exit 0
fi
# The report goes to a scratch directory (the device tool brings back few files); its details
# page into ncu.txt, then the instructions the warps stalled on most (SourceCounters' samples).
REPORT=$(mktemp -d)/plastic_scan
timeout 90 ncu --profile-from-start off --kernel-name regex:plastic_scan --section SpeedOfLight \
  --section LaunchStats --section Occupancy --section MemoryWorkloadAnalysis \
  --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
  --section SourceCounters -o "$REPORT" \
  "$PY" scripts/cuda_case.py --cases bench --profile > "$OUT/ncu.txt" 2>&1
rc=$?
if [ -f "$REPORT.ncu-rep" ]; then
  timeout 30 ncu --import "$REPORT.ncu-rep" >> "$OUT/ncu.txt" 2>&1
  if timeout 30 ncu --import "$REPORT.ncu-rep" --page source --csv --print-source sass \
      > "$REPORT.csv" 2>> "$OUT/ncu.txt"; then
    "$PY" scripts/ncu_hot_instructions.py "$REPORT.csv" >> "$OUT/ncu.txt"
  else
    echo "ncu: no source page from this version (--page source --print-source sass)" >> "$OUT/ncu.txt"
  fi
fi
if grep -q ERR_NVGPUCTRPERM "$OUT/ncu.txt"; then
  echo "ncu: this machine does not give access to the GPU's performance counters" \
       "(ERR_NVGPUCTRPERM); its settings are left as they are"
  exit 0
fi
if [ $rc -ne 0 ]; then
  echo "ncu: exit $rc; the end of $OUT/ncu.txt:"
  tail -20 "$OUT/ncu.txt"
  exit 1
fi
if grep -q "No kernels were profiled" "$OUT/ncu.txt"; then
  echo "ncu: no kernel matched regex:plastic_scan; see $OUT/ncu.txt"
  exit 1
fi
grep -E "plastic_scan|Duration|Registers Per|Achieved Occupancy|Memory Throughput|Compute \(SM\) Th" \
  "$OUT/ncu.txt" | head -40
grep -A12 "warp-stall samples; the top" "$OUT/ncu.txt" | head -30 || true
