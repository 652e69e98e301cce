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
