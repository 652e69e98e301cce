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


def _disassembled_functions(select):
    """libtorchplastic's machine code by objdump, function by function: (key, instruction lines)
    for each function whose demangled name `select` maps to a key that is not None. Skips the
    test where objdump or the library is missing."""
    import re
    import shutil

    lib = os.path.join(os.path.dirname(tp.__file__), "libtorchplastic.so")
    if shutil.which("objdump") is None or not os.path.exists(lib):
        pytest.skip("needs objdump and libtorchplastic.so")
    header = re.compile(r"^[0-9a-f]+ <(.*)>:$")
    key, lines = None, []
    proc = subprocess.Popen(["objdump", "-d", "-C", "--no-show-raw-insn", lib],
                            stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        m = header.match(line)
        if m:
            if key is not None:
                yield key, lines
            key, lines = select(m.group(1)), []
        elif key is not None:
            lines.append(line)
    if key is not None:
        yield key, lines
    assert proc.wait() == 0


def test_backward_row_loops_are_vectorised_in_every_build():
    """Every instantiation of the backward's row loop (backward_row) in each build holds vector
    arithmetic: at least 0.3 vector instructions per scalar one, counted in the disassembly of
    libtorchplastic. GCC can leave a loop scalar without a word (it did, for the one-step
    replays of the clipped rules: 0 to 0.17 there, against 0.43 and more for the others), and
    the values tests cannot see it."""
    import re

    if tp.build_info()["cpu_kernels"] not in WIDTH:
        pytest.skip("not an x86-64 build")
    arithmetic = r"\tv?(?:add|sub|mul|fn?madd\d*|fn?msub\d*|max|min)"
    vector = {isa: re.compile(arithmetic + (r"p[sd]\s.*%xmm" if isa == "generic" else r"p[sd]\s.*%[yz]mm"))
              for isa in WIDTH}
    scalar = re.compile(arithmetic + r"s[sd]\s")

    def backward_row(name):
        isa = next((i for i in WIDTH if f"cpu::{i}::backward_row<" in name), None)
        return (isa, name) if isa and "@plt" not in name else None

    counts = {}  # (isa, function) -> [vector, scalar]
    for (isa, name), lines in _disassembled_functions(backward_row):
        current = counts.setdefault((isa, name), [0, 0])
        for line in lines:
            if vector[isa].search(line):
                current[0] += 1
            elif scalar.search(line):
                current[1] += 1
    for isa in tp.build_info()["cpu_kernels_built"].split(","):
        assert sum(1 for i, _ in counts if i == isa) >= 100, f"{isa}: backward_row not found"
    scalar_loops = [f"{isa}: {v} vector / {s} scalar: {name[:160]}"
                    for (isa, name), (v, s) in counts.items() if v < 0.3 * s]
    assert not scalar_loops, "\n".join(scalar_loops)


def test_row_loops_load_every_element_before_they_store():
    """The backward's fused row loops (backward_row with both halves; rules without
    per-connection gradients or coefficients, η per row) in the AVX2 and AVX-512 builds, and the
    forward's (forward_group_deferred) in the AVX-512 build, read all their rows' elements before
    the first store: read off the disassembly of libtorchplastic, in each function's element loop
    (the innermost loop with the most full-width arithmetic), no full-width load from a tensor
    follows a full-width store. A load after a store to an address equal to it modulo 4 KiB
    waits for that store, so with the caller's α or W at the trace's or a gradient slab's offset
    modulo 4 KiB each element waited: the forward took 1.45× its time on a Zen 4
    (docs/performance.md, "4 KiB aliasing"). The values tests cannot see the order."""
    import collections
    import re

    built = [isa for isa in ("avx2", "avx512") if isa in tp.build_info()["cpu_kernels_built"].split(",")]
    if not built:
        pytest.skip("no AVX2 or AVX-512 kernels in this build")
    rules = r"torchplastic::kernels::Variant<torchplastic::kernels::rules::(?:Hebb|Oja|Modulated|Retroactive), (?:true|false), false>"
    wanted = re.compile(r"cpu::(avx2|avx512)::(?:backward_row<" + rules + r", true, true, \d, \d, float>"
                        r"|forward_group_deferred<" + rules + r", float>)\(")
    # The AVX2 forward keeps its order (forward.h says why).
    skipped = re.compile(r"cpu::avx2::forward_group_deferred<")
    instruction = re.compile(r"^\s+([0-9a-f]+):\s+(\S+)\s*(.*)$")

    def element_loop_function(name):
        w = wanted.search(name)
        return (w.group(1), name) if w and not skipped.search(name) else None

    arithmetic = re.compile(r"^v(?:add|sub|mul|fn?madd\d*|fn?msub\d*)ps$")
    checked, late = collections.Counter(), []
    for (isa, name), lines in _disassembled_functions(element_loop_function):
        code = [(int(m.group(1), 16), m.group(2), m.group(3))  # (address, mnemonic, operands)
                for m in map(instruction.match, lines) if m]
        width = "%zmm" if isa == "avx512" else "%ymm"
        tensor = lambda operand: "(" in operand and not re.search(r"%r[sb]p|%rip", operand)  # noqa: E731
        def is_store(mnemonic, operands):
            m = re.match(r"(%[xyz]mm\d+),(.*)$", operands)
            return mnemonic.startswith("vmov") and m and width in m.group(1) and tensor(m.group(2))
        at = {address: k for k, (address, _, _) in enumerate(code)}
        loops = []
        for k, (address, mnemonic, operands) in enumerate(code):
            target = re.match(r"([0-9a-f]+) ", operands + " ")
            if mnemonic.startswith("j") and target and int(target.group(1), 16) in at \
                    and int(target.group(1), 16) < address:
                loops.append((at[int(target.group(1), 16)], k))
        innermost = [a for a in loops if not any(b != a and a[0] <= b[0] and b[1] <= a[1] for b in loops)]
        if not innermost:
            continue  # a part of the function without its loops (GCC's .cold split)
        def full_width_arithmetic(loop):
            return sum(1 for _, mn, ops in code[loop[0]:loop[1] + 1] if arithmetic.match(mn) and width in ops)
        first, last = max(innermost, key=full_width_arithmetic)
        body = code[first:last + 1]
        stores = [k for k, (_, mn, ops) in enumerate(body) if is_store(mn, ops)]
        assert stores, f"{isa}: no store in the element loop of {name[:160]}"
        checked[isa] += 1
        after = [f"{mn} {ops}" for _, mn, ops in body[stores[0] + 1:]
                 if width in ops and tensor(ops) and not is_store(mn, ops)]
        if after:
            late.append(f"{isa}: {len(after)} loads after a store, first `{after[0]}`: {name[:160]}")
    for isa in built:
        # 4 rules × 2 clippings × (8 backward_row + 1 forward_group_deferred under AVX-512)
        expected = 72 if isa == "avx512" else 64
        assert checked[isa] == expected, f"{isa}: {checked[isa]} element loops found, expected {expected}"
    assert not late, "\n".join(late)
