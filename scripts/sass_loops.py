#!/usr/bin/env python3
"""The inner loops of the CUDA kernels, as the GPU will run them, read off the compiled SASS:
for each kernel, each loop (a backward branch) of up to --max-length instructions, with its
instruction count and mix. No GPU is needed, only cuobjdump (not in every CUDA toolkit install;
PyPI's nvidia-cuda-cuobjdump has it), so a change to the kernels' per-element cost can be
checked where it is made: fewer instructions per element, LDS/STS (shared memory) where the data
is on chip rather than generic LD/ST.

    python3 scripts/sass_loops.py build/CMakeFiles/torchplastic.dir/cuda/forward.cu.o \\
        --kernel 'forward.*Hebb.*Lb0ELb0E' --dtype float

With --spills it lists instead where each kernel's register spills are: every local-memory
store and load (STL, LDL) with the innermost loop around it, so that the spills `ptxas -v`
counts (build/ptxas_report.txt) can be told apart: in an element loop (one with floating-point
arithmetic, run for every element of a row) a spill costs a local-memory access per element; in
set-up, write-back or once per row or step it costs next to nothing.
"""

import argparse
import collections
import importlib.util
import os
import re
import shutil
import subprocess
import sys

INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
FUNCTION = re.compile(r"Function : (\S+)")
BRANCH_TARGET = re.compile(r"\bBRA\b.*?0x([0-9a-f]+)")


def opcode(text):
    """`@!P0 FFMA.FTZ R1, R2, R3, R4` → `FFMA`."""
    text = re.sub(r"^@!?U?P\w+\s+", "", text)
    return text.split()[0].split(".")[0]


def kernels(sass):
    """cuobjdump -sass text → {mangled kernel name: [(address, instruction text)]}."""
    out, current = {}, None
    for line in sass.splitlines():
        if m := FUNCTION.search(line):
            current = out.setdefault(m.group(1), [])
        elif current is not None and (m := INSTRUCTION.match(line)):
            current.append((int(m.group(1), 16), m.group(2)))
    return out


def loops(instructions, max_length):
    """[(start, end, [opcode counts, most common first])] for every backward branch whose body
    has at most max_length instructions, in address order."""
    index = {address: k for k, (address, _) in enumerate(instructions)}
    found = []
    for k, (address, text) in enumerate(instructions):
        m = BRANCH_TARGET.search(text)
        if not m:
            continue
        target = int(m.group(1), 16)
        if target < address and target in index and k + 1 - index[target] <= max_length:
            body = instructions[index[target]:k + 1]
            mix = collections.Counter(opcode(t) for _, t in body).most_common()
            found.append((target, address, mix))
    return sorted(found)


def find_cuobjdump():
    """cuobjdump from PATH, else the CUDA toolkit's (CUDA_HOME, /usr/local/cuda), else the copy
    that PyPI's triton (a dependency of torch's CUDA builds) ships; None if there is none."""
    candidates = [shutil.which("cuobjdump"),
                  os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "cuobjdump")]
    triton = importlib.util.find_spec("triton")
    if triton is not None and triton.origin:
        candidates.append(os.path.join(os.path.dirname(triton.origin), "backends", "nvidia",
                                       "bin", "cuobjdump"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def disassemble(tool, path):
    """cuobjdump -sass of an object file (its notes on stderr, such as an older cuobjdump's
    format warning, are dropped)."""
    return subprocess.run([tool, "-sass", path], capture_output=True, text=True,
                          check=True).stdout


SPILL_OPCODES = ("STL", "LDL")
ARITHMETIC = ("FMA", "MUL", "ADD")


def is_arithmetic(op):
    """A floating-point multiply or add of any width: FFMA, DMUL, HADD2 (suffixes dropped)."""
    return op[:1] in "FDH" and op[1:].rstrip("2") in ARITHMETIC


def innermost_loop(address, all_loops):
    """The shortest of all_loops (as loops() returns them) around address, or None."""
    around = [loop for loop in all_loops if loop[0] <= address <= loop[1]]
    return min(around, key=lambda loop: loop[1] - loop[0], default=None)


def spills(instructions, max_length):
    """[(address, instruction text, innermost loop or None)] for each spill instruction, the
    loop among those of at most max_length instructions (loops() with that bound), so that a
    spill in an outer loop of thousands of instructions (once per step) reads as outside."""
    all_loops = loops(instructions, max_length)
    return [(address, text, innermost_loop(address, all_loops))
            for address, text in instructions if opcode(text) in SPILL_OPCODES]


def is_element_loop(loop):
    """Whether a loop (as loops() gives it; None: no loop) has floating-point arithmetic. A
    loop's mix includes the loops nested in it, so a row loop around an element loop counts as
    one too: for spills, this errs on the side of reporting."""
    return loop is not None and any(is_arithmetic(op) for op, _ in loop[2])


def report_spills(name, instructions, max_length):
    """Prints a kernel's spill instructions, each with where it is; nothing if it has none."""
    found = spills(instructions, max_length)
    if not found:
        return
    hot = sum(is_element_loop(loop) for _, _, loop in found)
    print(f"{name}: {len(found)} spill instructions, {hot} in element loops")
    for address, text, loop in found:
        if loop is None:
            where = f"outside every loop of up to {max_length} instructions"
        else:
            n = sum(c for _, c in loop[2])
            kind = "element loop" if is_element_loop(loop) else "loop"
            where = f"in the {kind} {loop[0]:#07x}-{loop[1]:#07x} ({n} instructions)"
        print(f"  {address:#07x} {text:<36} {where}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("object", help="an object file or fatbinary with sm_XX code")
    parser.add_argument("--kernel", default=".", help="regex on the mangled kernel name")
    parser.add_argument("--dtype", choices=["float", "double", "any"], default="any",
                        help="only the kernels of this value type (the template's first argument)")
    parser.add_argument("--max-length", type=int, default=200,
                        help="the longest loop body shown, in instructions (default 200)")
    parser.add_argument("--arithmetic", action="store_true",
                        help="only loops with floating-point arithmetic (FFMA, FMUL, FADD, DFMA...)")
    parser.add_argument("--spills", action="store_true",
                        help="where the spills are instead of the loops: each STL/LDL with the "
                             "innermost loop of at most --max-length instructions around it")
    args = parser.parse_args()
    tool = find_cuobjdump()
    if not tool:
        sys.exit("sass_loops: cuobjdump not found on PATH, in the CUDA toolkit or in triton "
                 "(pip install nvidia-cuda-cuobjdump, then add its nvidia/cu13/bin to PATH)")
    sass = disassemble(tool, args.object)
    dtype_tag = {"float": "If", "double": "Id", "any": ""}[args.dtype]
    for name, instructions in kernels(sass).items():
        if not re.search(args.kernel, name) or dtype_tag not in name:
            continue
        if args.spills:
            report_spills(name, instructions, args.max_length)
            continue
        print(f"{name}: {len(instructions)} instructions")
        for start, end, mix in loops(instructions, args.max_length):
            if args.arithmetic and not any(is_arithmetic(op) for op, _ in mix):
                continue
            n = sum(c for _, c in mix)
            print(f"  loop {start:#07x}-{end:#07x}: {n:4d} instructions: " +
                  ", ".join(f"{op} {c}" for op, c in mix))


if __name__ == "__main__":
    main()
