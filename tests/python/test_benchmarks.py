"""The benchmark scripts run: --help on each, and the grid at a tiny size (timings are printed,
never asserted)."""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "bench_*.py"))) + [
    os.path.join(ROOT, "benchmarks", "roofline.py")]


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_benchmark_has_help(script):
    out = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


def test_grid_runs_and_refuses_to_compare_a_build_with_itself(tmp_path):
    script = os.path.join(ROOT, "benchmarks", "bench_grid.py")
    tiny = ["--hidden", "8", "--steps", "1", "3", "--rules", "hebb", "retroactive", "modulated",
            "--batch", "2", "--rounds", "1", "--calls", "1", "--min-round-seconds", "0"]
    out = subprocess.run([sys.executable, script, *tiny, "--json", str(tmp_path / "grid.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("[") >= 6 and "[6/6]" in out.stdout
    import torchplastic
    same = os.path.dirname(os.path.dirname(torchplastic.__file__))
    out = subprocess.run([sys.executable, script, *tiny, "--against", same], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode != 0 and "the same torchplastic" in out.stderr


def test_counting_system_time_sees_page_faults_and_skips_the_warm_up():
    import mmap
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from common import CountingSystemTime
    finally:
        sys.path.pop(0)
    pages = 1024

    def touch_fresh_pages():
        m = mmap.mmap(-1, pages * mmap.PAGESIZE)  # anonymous: each page faults on its first write
        if hasattr(mmap, "MADV_NOHUGEPAGE"):  # where transparent huge pages are always on
            m.madvise(mmap.MADV_NOHUGEPAGE)
        for page in range(pages):
            m[page * mmap.PAGESIZE] = 1
        m.close()

    meter = CountingSystemTime(touch_fresh_pages)
    meter()
    assert meter.per_call() == (0, 0.0, 0.0)  # the warm-up is not counted
    meter()
    meter()
    faults, system_s, wall_s = meter.per_call()
    assert meter.calls == 2
    assert pages <= faults < 4 * pages
    assert system_s >= 0.0 and wall_s > 0.0


def test_cpu_benchmark_reports_page_faults(tmp_path):
    import json
    script = os.path.join(ROOT, "benchmarks", "bench_cpu.py")
    out = subprocess.run([sys.executable, script, "-B", "2", "-N", "8", "-T", "3", "--memory-steps", "3",
                          "--rounds", "1", "--json", str(tmp_path / "cpu.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "page faults per step" in out.stdout and "system time ms/step" in out.stdout
    res = json.loads((tmp_path / "cpu.json").read_text())
    for side in ("fused", "reference"):
        assert res[f"{side}_fwd_bwd_page_faults_per_step"] >= 0
        assert res[f"{side}_fwd_bwd_system_ms_per_step"] >= 0


def test_step_benchmark_reports_the_plain_cell_and_the_floor():
    script = os.path.join(ROOT, "benchmarks", "bench_step.py")
    out = subprocess.run([sys.executable, script, "-B", "2", "-H", "8", "-S", "3", "--rounds", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "torch.nn.RNNCell(17, 8), no plasticity, forward+backward" in out.stdout
    assert "memory floor: 3 traces" in out.stdout and "before any plastic arithmetic" in out.stdout
