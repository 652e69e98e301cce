"""Every build of the CPU kernels against the reference.

The library holds the CPU kernels three times (generic x86-64, AVX2, AVX-512) and runs the widest
this CPU has; the rest of the suite therefore tests only that one. Here each narrower one, chosen
with TORCHPLASTIC_CPU_ISA in a fresh process (the choice is made once per process), runs the
reference comparisons, gradcheck and the K-invariance tests of test_plastic_scan.py. Shapes there
include rows shorter than a vector (I = 1, 2, 6) and the lane loops' remainders.
"""

import os
import subprocess
import sys

import pytest

import torchplastic as tp

HERE = os.path.dirname(os.path.abspath(__file__))
WIDTH = {"generic": 0, "avx2": 1, "avx512": 2}


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_narrower_cpu_kernels_match_reference(isa):
    if WIDTH[tp.build_info()["cpu_kernels"]] < WIDTH[isa]:
        pytest.skip(f"this CPU cannot run the {isa} kernels")
    env = dict(os.environ, TORCHPLASTIC_CPU_ISA=isa)
    check = [sys.executable, "-c", "import torchplastic as tp; print(tp.build_info()['cpu_kernels'])"]
    assert subprocess.run(check, env=env, capture_output=True, text=True, check=True).stdout.strip() == isa
    selection = "matches_reference or gradcheck or checkpoint_interval or reused"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", selection,
         os.path.join(HERE, "test_plastic_scan.py")],
        env=env, capture_output=True, text=True, cwd=HERE)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
