#!/usr/bin/env python3
"""CUDA compiler launcher that makes ptxas's resource report part of every build.

CMake runs it as ``ptxas_report.py REPORT_DIR [ccache] nvcc ARGS...``. It compiles with
``-Xptxas=-v`` added, keeps nvcc's other messages as they were, and turns ptxas's per-kernel
lines (registers, stack frame, spill stores and loads) into

- REPORT_DIR/<object>.txt, a table of this object's kernels, and REPORT_DIR/../ptxas_report.txt,
  all objects' tables together;
- one summary line per compiled source on the build's output, e.g.
  ``ptxas: backward.cu sm_90: 24 kernels, 72-128 registers, 4 spill (max 76 B stored, 100 B
  loaded): see build/ptxas_report.txt``, so a change that adds spills or registers shows in the
  build log. ccache replays the same output on a cache hit.
"""

import os
import re
import shutil
import subprocess
import sys

ENTRY = re.compile(r"ptxas info\s*: Compiling entry function '([^']+)' for '(\w+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"ptxas info\s*: Used (\d+) registers")
PTXAS_INFO = re.compile(r"^ptxas info\s*:|^\s+\d+ bytes stack frame")


def demangle(names):
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not tool or not names:
        return names
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout
    lines = out.splitlines()
    return lines if len(lines) == len(names) else names


def short(name):
    """`void torchplastic::cuda::kernel<float, torchplastic::kernels::rules::Hebb>(...)` →
    `kernel<float, Hebb>`: the kernel and its template arguments, namespaces dropped."""
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"\([^()]*(\([^()]*\)[^()]*)*\)$", "", name)  # the parameter list
    return re.sub(r"[A-Za-z_]\w*::", "", name)


def parse(stderr):
    """ptxas's lines → [(kernel, arch, registers, stack, spill_stores, spill_loads)]."""
    kernels, current = [], None
    for line in stderr.splitlines():
        if m := ENTRY.search(line):
            current = {"name": m.group(1), "arch": m.group(2), "regs": 0, "stack": 0,
                       "stores": 0, "loads": 0}
            kernels.append(current)
        elif current and (m := FRAME.search(line)):
            current["stack"], current["stores"], current["loads"] = map(int, m.groups())
        elif current and (m := USED.search(line)):
            current["regs"] = int(m.group(1))
    for k, name in zip(kernels, demangle([k["name"] for k in kernels])):
        k["name"] = short(name)
    return kernels


def table(source, kernels):
    rows = [f"# {source}", f"{'registers':>9} {'stack':>6} {'spill st':>8} {'spill ld':>8}  arch   kernel"]
    for k in sorted(kernels, key=lambda k: (k["arch"], k["name"])):
        rows.append(f"{k['regs']:9d} {k['stack']:6d} {k['stores']:8d} {k['loads']:8d}  "
                    f"{k['arch']:6s} {k['name']}")
    return "\n".join(rows) + "\n"


def write_atomically(path, text):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    report_dir, command = sys.argv[1], sys.argv[2:]
    command = command + ["-Xptxas=-v"]
    source = next((a for a in reversed(command) if a.endswith(".cu")), None)
    obj = command[command.index("-o") + 1] if "-o" in command else None
    result = subprocess.run(command, capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    # nvcc's own messages (warnings, errors) pass through; ptxas's info lines go to the report.
    sys.stderr.write("".join(l + "\n" for l in result.stderr.splitlines() if not PTXAS_INFO.search(l)))
    kernels = parse(result.stderr)
    if result.returncode != 0 or not kernels or not source or not obj:
        return result.returncode

    os.makedirs(report_dir, exist_ok=True)
    write_atomically(os.path.join(report_dir, os.path.basename(obj) + ".txt"),
                     table(os.path.basename(source), kernels))
    parts = sorted(f for f in os.listdir(report_dir) if f.endswith(".txt"))
    combined = "".join(open(os.path.join(report_dir, f)).read() + "\n" for f in parts)
    report = os.path.join(os.path.dirname(os.path.abspath(report_dir)), "ptxas_report.txt")
    write_atomically(report, combined)

    for arch in sorted({k["arch"] for k in kernels}):
        ks = [k for k in kernels if k["arch"] == arch]
        regs = sorted(k["regs"] for k in ks)
        spilling = [k for k in ks if k["stores"] or k["loads"]]
        spills = (f"{len(spilling)} spill (max {max(k['stores'] for k in spilling)} B stored, "
                  f"{max(k['loads'] for k in spilling)} B loaded)" if spilling else "no spills")
        print(f"ptxas: {os.path.basename(source)} {arch}: {len(ks)} kernels, "
              f"{regs[0]}-{regs[-1]} registers, {spills}: see {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
