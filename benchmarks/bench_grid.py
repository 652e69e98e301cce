#!/usr/bin/env python3
"""Forward+backward of the fused op over a grid of sizes and rules, this build against another.

A change to the kernels must not make any configuration slower (issue #17): this times
N ∈ {64, 100, 256, 1024} × T ∈ {1, 16, 256} × rules hebb, retroactive and modulated (recurrent,
float32, B=32; N=100, not a multiple of the vector width, so that the row loops' last elements
are timed too; the modulated rules with internal modulation and their default clip of 1, so that
both kinds of clipped backward are timed: with an eligibility trace and without) with the
torchplastic importable here and with the one under --against (the `python/` folder of another
checkout's build), each in a process of its own, alternately, round after round, so that both
see the same drift of a shared machine. Each round takes the best of several calls per side
(enough to fill --min-round-seconds), the side that goes first alternating. It prints each
side's median time per step and the median of the per-round ratios against / this: above 1,
this build is faster.

    git worktree add /tmp/base <commit>            # the build to compare against
    cmake -S /tmp/base -B /tmp/base/build -G Ninja -DWITH_CUDA=OFF -DBUILD_TESTING=OFF ...
    cmake --build /tmp/base/build
    .venv/bin/python benchmarks/bench_grid.py --against /tmp/base/python

Without --against it times this build alone.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def worker():
    """Reads one configuration per line (JSON) from stdin; answers the best of `calls` times of
    one forward+backward, in seconds."""
    import torch
    import torchplastic as tp

    sys.path.insert(0, HERE)
    from common import recurrent_hebb_inputs

    if os.environ.get("BENCH_GRID_THREADS"):
        torch.set_num_threads(int(os.environ["BENCH_GRID_THREADS"]))
    cache = {}
    print(json.dumps({"torchplastic": tp.__file__}), flush=True)
    for line in sys.stdin:
        cfg = json.loads(line)
        key = (cfg["rule"], cfg["N"], cfg["T"], cfg["B"])
        if key not in cache:
            cache.clear()  # the N = 1024 inputs are large: one configuration's at a time
            kw = recurrent_hebb_inputs(cfg["T"], cfg["B"], cfg["N"])
            if cfg["rule"] in ("retroactive", "modulated"):
                g = torch.Generator().manual_seed(1)
                kw["mod_weight"] = (torch.randn(cfg["N"], generator=g) / cfg["N"] ** 0.5).requires_grad_()
                kw["mod_bias"] = torch.zeros(1).requires_grad_()
                kw["clip"] = 1.0
            cache[key] = kw
        kw = dict(cache[key])
        z, alpha, eta, trace = kw.pop("z"), kw.pop("alpha"), kw.pop("eta"), kw.pop("trace")

        def forward_backward():
            y, state = tp.functional.plastic_scan(z, alpha, eta, trace, rule=cfg["rule"], **kw)
            y.square().mean().backward()  # the loss of training: no gradient into the trace

        best = float("inf")
        for _ in range(cfg["calls"]):
            start = time.perf_counter()
            forward_backward()
            best = min(best, time.perf_counter() - start)
        print(json.dumps({"seconds": best}), flush=True)


class Side:
    """One build, timed in a worker process of its own."""

    def __init__(self, name, python_path):
        env = dict(os.environ)
        if python_path:
            env["PYTHONPATH"] = os.path.abspath(python_path) + os.pathsep + env.get("PYTHONPATH", "")
        self.name = name
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.module = json.loads(self.proc.stdout.readline())["torchplastic"]

    def time(self, cfg):
        self.proc.stdin.write(json.dumps(cfg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"bench_grid: the {self.name} worker ended (out of memory?)")
        return json.loads(line)["seconds"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", metavar="PYTHON_DIR", default=None,
                    help="the python/ folder of the build to compare against (default: none)")
    ap.add_argument("--hidden", "-N", type=int, nargs="+", default=[64, 100, 256, 1024])
    ap.add_argument("--steps", "-T", type=int, nargs="+", default=[1, 16, 256])
    rules = ["hebb", "retroactive", "modulated"]
    ap.add_argument("--rules", nargs="+", default=rules, choices=rules)
    ap.add_argument("--batch", "-B", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="rounds per configuration (default 5)")
    ap.add_argument("--calls", type=int, default=2,
                    help="calls per side and round, at least; the best counts (default 2)")
    ap.add_argument("--min-round-seconds", type=float, default=0.3,
                    help="more calls per round for configurations faster than this (default 0.3)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the workers")
    ap.add_argument("--json", default=None, help="also write the table to this JSON file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker()
    if args.threads:
        os.environ["BENCH_GRID_THREADS"] = str(args.threads)

    sides = [Side("this", None)]
    if args.against:
        sides.append(Side("against", args.against))
        if sides[1].module == sides[0].module:
            raise SystemExit(f"bench_grid: --against {args.against} imports the same torchplastic "
                             f"as this one ({sides[0].module})")
    for side in sides:
        print(f"{side.name}: {side.module}")
    header = f"{'rule':12}{'N':>6}{'T':>6}{'this ms/step':>14}"
    if args.against:
        header += f"{'against':>10}{'ratio':>8}"
    print(header)
    rows = []
    configs = [(rule, N, T) for rule in args.rules for N in args.hidden for T in args.steps]
    for i, (rule, N, T) in enumerate(configs):
        cfg = dict(rule=rule, N=N, T=T, B=args.batch, calls=1)
        # Warm up (the inputs, the caches, the first touches); then enough calls per round
        # that a round of a small configuration is not one call's noise.
        warm = max(side.time(cfg) for side in sides)
        cfg["calls"] = max(args.calls, min(50, math.ceil(args.min_round_seconds / warm)))
        times = [[] for _ in sides]
        for r in range(args.rounds):
            order = list(zip(sides, times))
            for side, ts in order if r % 2 == 0 else order[::-1]:  # neither side always first
                ts.append(side.time(cfg) / max(T, 1))
        row = dict(rule=rule, N=N, T=T, B=args.batch, this_ms_per_step=1e3 * statistics.median(times[0]))
        line = f"{rule:12}{N:6d}{T:6d}{row['this_ms_per_step']:14.4f}"
        if args.against:
            row["against_ms_per_step"] = 1e3 * statistics.median(times[1])
            row["ratio"] = statistics.median(b / a for a, b in zip(times[0], times[1]))
            line += f"{row['against_ms_per_step']:10.4f}{row['ratio']:8.2f}"
        print(line, f"  [{i + 1}/{len(configs)}]", flush=True)
        rows.append(row)
    for side in sides:
        side.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
