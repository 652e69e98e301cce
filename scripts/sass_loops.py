#!/usr/bin/env python3
"""The inner loops of the CUDA kernels, as the GPU will run them, read off the compiled SASS:
for each kernel, each loop (a backward branch) of up to --max-length instructions, with its
instruction count and mix. No GPU is needed, only cuobjdump (not in every CUDA toolkit install;
PyPI's nvidia-cuda-cuobjdump has it), so a change to the kernels' per-element cost can be
checked where it is made: fewer instructions per element, LDS/STS (shared memory) where the data
is on chip rather than generic LD/ST.

    python3 scripts/sass_loops.py build/CMakeFiles/torchplastic.dir/cuda/forward.cu.o \\
        --kernel 'forward.*Hebb.*Lb0ELb0E' --dtype float
"""

import argparse
import collections
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
    args = parser.parse_args()
    tool = shutil.which("cuobjdump")
    if not tool:
        sys.exit("sass_loops: cuobjdump not found on PATH (pip install nvidia-cuda-cuobjdump, "
                 "then add its nvidia/cu13/bin to PATH)")
    sass = subprocess.run([tool, "-sass", args.object], capture_output=True, text=True,
                          check=True).stdout
    dtype_tag = {"float": "If", "double": "Id", "any": ""}[args.dtype]
    for name, instructions in kernels(sass).items():
        if not re.search(args.kernel, name) or dtype_tag not in name:
            continue
        print(f"{name}: {len(instructions)} instructions")
        for start, end, mix in loops(instructions, args.max_length):
            if args.arithmetic and not any(op[0] in "FDH" and op[1:] in ("FMA", "MUL", "ADD")
                                           for op, _ in mix):
                continue
            n = sum(c for _, c in mix)
            print(f"  loop {start:#07x}-{end:#07x}: {n:4d} instructions: " +
                  ", ".join(f"{op} {c}" for op, c in mix))


if __name__ == "__main__":
    main()
