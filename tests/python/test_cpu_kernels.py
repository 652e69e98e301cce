"""Every build of the CPU kernels against the reference.

The library holds the CPU kernels three times (generic x86-64, AVX2, AVX-512) and runs the widest
this CPU has; the rest of the suite therefore tests only that one. Here each narrower one, chosen
with TORCHPLASTIC_CPU_ISA in a fresh process (the choice is made once per process), runs the
reference comparisons, gradcheck, the K-invariance tests and the test that a sequence equals its
steps taken one call at a time (two forwards) of test_plastic_scan.py, and test_random.py's wide
families. Shapes there include rows shorter than a vector (I = 1, 2, 6) and the lane loops'
remainders.
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
    if isa not in tp.build_info()["cpu_kernels_built"].split(","):
        pytest.skip(f"this build has no {isa} kernels (TORCHPLASTIC_CPU_ISAS)")
    env = dict(os.environ, TORCHPLASTIC_CPU_ISA=isa)
    check = [sys.executable, "-c", "import torchplastic as tp; print(tp.build_info()['cpu_kernels'])"]
    assert subprocess.run(check, env=env, capture_output=True, text=True, check=True).stdout.strip() == isa
    selection = ("matches_reference or gradcheck or checkpoint_interval or reused"
                 " or one_call_at_a_time or random_wide")
    # test_random's wide families (vector loops and their rests at many sizes, float32 too),
    # a few seconds each here.
    env.setdefault("TORCHPLASTIC_RANDOM_SECONDS", "15")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", selection,
         os.path.join(HERE, "test_plastic_scan.py"), os.path.join(HERE, "test_random.py")],
        env=env, capture_output=True, text=True, cwd=HERE)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_backward_row_loops_are_vectorised_in_every_build():
    """Every instantiation of the backward's row loop (backward_row) in each build holds vector
    arithmetic: at least 0.3 vector instructions per scalar one, counted in the disassembly of
    libtorchplastic. GCC can leave a loop scalar without a word (it did, for the one-step
    replays of the clipped rules: 0 to 0.17 there, against 0.43 and more for the others), and
    the values tests cannot see it."""
    import re
    import shutil

    lib = os.path.join(os.path.dirname(tp.__file__), "libtorchplastic.so")
    if shutil.which("objdump") is None or not os.path.exists(lib):
        pytest.skip("needs objdump and libtorchplastic.so")
    if tp.build_info()["cpu_kernels"] not in WIDTH:
        pytest.skip("not an x86-64 build")
    header = re.compile(r"^[0-9a-f]+ <(.*)>:$")
    arithmetic = r"\tv?(?:add|sub|mul|fn?madd\d*|fn?msub\d*|max|min)"
    vector = {isa: re.compile(arithmetic + (r"p[sd]\s.*%xmm" if isa == "generic" else r"p[sd]\s.*%[yz]mm"))
              for isa in WIDTH}
    scalar = re.compile(arithmetic + r"s[sd]\s")
    counts = {}  # (isa, function) -> [vector, scalar]
    current = None
    proc = subprocess.Popen(["objdump", "-d", "-C", "--no-show-raw-insn", lib],
                            stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        m = header.match(line)
        if m:
            name = m.group(1)
            isa = next((i for i in WIDTH if f"cpu::{i}::backward_row<" in name), None)
            current = counts.setdefault((isa, name), [0, 0]) if isa and "@plt" not in name else None
        elif current is not None:
            if vector[isa].search(line):
                current[0] += 1
            elif scalar.search(line):
                current[1] += 1
    assert proc.wait() == 0
    for isa in tp.build_info()["cpu_kernels_built"].split(","):
        assert sum(1 for i, _ in counts if i == isa) >= 100, f"{isa}: backward_row not found"
    scalar_loops = [f"{isa}: {v} vector / {s} scalar: {name[:160]}"
                    for (isa, name), (v, s) in counts.items() if v < 0.3 * s]
    assert not scalar_loops, "\n".join(scalar_loops)
