#!/usr/bin/env python3
"""Roofline of the CPU op: each pass's bytes and FLOPs per step against this machine's measured
ceilings, and how far each pass runs from its bound.

Workload: `make bench`'s (recurrent hebb, float32, α per connection, scalar η, B=32, N=256,
T=64, default checkpoints). The ceilings come from benchmarks/machine_rates.cpp, built here
with g++ and run on as many threads as torch uses: the float32 FMA rate, and at the working
set per thread that each pass has the bandwidth of a streaming update (read and write each
byte once, as a trace update does) and of the forward's three-array and the backward's
five-array patterns (below).

The passes and what they move per step (counted from the loops in csrc/cpu/forward.h,
backward.h and kernels/rules/hebb.h; E = B·N² trace elements, one per connection and
sequence; an "op" is one vector multiply or fused multiply-add, counted as 2 FLOPs):

* forward: a thread takes the sequences g at a time through all T steps (in lockstep), so its
  working set is the group's g traces, α and W ((g + 2)·N²·4 bytes), not all its sequences'
  traces; g is the largest of 4, 2 and 1 whose set fits in L2, else 1 (forward_group in
  csrc/cpu/plastic_scan.cpp; 2 at N=256 on a 1 MB L2). Per element, H read and written once (each
  step updates a row and uses it from the register for the next pre-activation), α and W read
  from L2 once per group, all three walked together (the three-array pattern);
  the checkpoints, one trace per K steps, written with non-temporal stores to where all of them
  live (working set: every checkpoint of the thread's sequences); 4 ops: (α·H + W)·p and the
  update (1 − η)·H + ηy·p.
* backward, anchors: per segment of K steps, each trace is stepped from its checkpoint to the
  anchor before step 4 (advance_row; every 4th step): at K = 8, half a step-update (1 op) and
  an eighth of a read (checkpoint, from where the checkpoints live) and of a write (anchor, L2)
  per element and step.
  Not timed apart: it runs inside each sequence's loop between row passes (the figure at
  K = 4, where the checkpoints are the anchors, is no substitute: its row passes then read
  every anchor from beyond L2). Its bound is shown; its time is in the backward loop's.
* backward, row passes (finish(t+1) and trace(t) fused): per element, dL/dH and the
  sequence's dL/dα slab read and written, α, W and the anchor read: 28 bytes from L2 (one
  sequence's working set, dL/dH, its slab, α, W and two anchors, is 6·N²·4 bytes); 14 ops: the
  replay of 0–3 steps from the anchor (1.5 on average, 2 ops each), the step's candidate (2),
  finish (5: dL/dα, dL/dH, and dL/dp through α·H + W) and the rule's backward (4).
  Timed with the anchors, as the backward loop: the backward's time less the two below.
* after the loop, dL/dW: one GEMM over all steps (2·B·N² FLOPs per step), and the sum of the
  B per-sequence dL/dα slabs (E·4 bytes once per call), each timed as the torch call it is.

Each pass's bound: the larger of its FLOPs at the measured FMA rate and its bytes at the
measured bandwidth of its access pattern at the working set they come from (the smallest
measured working set at least as large); "× bound" is the measured time over that bound. The
row passes' pattern is five arrays walked together (three read, two updated in place), which
the machine serves more slowly than one array updated in place: on the Intel VM about 60% of
it at 1.5 MB per thread; the forward's, one array updated in place and two read with it, about
as slowly (on a Zen 4 VM 45–50% of the single array's rate from 256 KB up; machine_rates.cpp
measures all three).
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

import torchplastic as tp
from common import recurrent_hebb_inputs

HERE = os.path.dirname(os.path.abspath(__file__))


def machine_rates(threads):
    """Builds and runs machine_rates.cpp; its JSON."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise SystemExit("roofline: no C++ compiler (set CXX) to build benchmarks/machine_rates.cpp")
    with tempfile.TemporaryDirectory() as tmp:
        binary = os.path.join(tmp, "machine_rates")
        subprocess.run([compiler, "-O3", "-march=native", "-fopenmp", os.path.join(HERE, "machine_rates.cpp"),
                        "-o", binary], check=True)
        out = subprocess.run([binary], check=True, capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_PROC_BIND": "spread"})
    return json.loads(out.stdout)


def best_time(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bandwidth_for(rates, bytes_per_thread, pattern="update"):
    """The measured bandwidth (GB/s) of an access pattern ("update": one array updated in place;
    "three_stream": one updated and two read together; "five_stream": three arrays read and two
    updated together) at the smallest measured working set at least this large (the largest
    measured one beyond them all)."""
    fitting = [r for r in rates["bandwidth"] if r["bytes_per_thread"] >= bytes_per_thread]
    return (fitting[0] if fitting else rates["bandwidth"][-1])[pattern + "_gbs"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", "-B", type=int, default=32)
    ap.add_argument("--hidden", "-N", type=int, default=256)
    ap.add_argument("--steps", "-T", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=15, help="timings per measurement; the best is kept")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    T, B, N = args.steps, args.batch, args.hidden
    rates = machine_rates(threads)

    kw = recurrent_hebb_inputs(T, B, N, requires_grad=False)
    ops = torch.ops.torchplastic
    K = tp._C.checkpoint_interval(T)  # the op's default checkpoint interval
    op_args = dict.fromkeys(tp.functional.SCAN_ARGUMENTS)  # the op's arguments, None where unused
    op_args.update(z=kw["z"], alpha=kw["alpha"], eta=kw["eta"], weight=kw["weight"], rule="hebb",
                 activation="tanh", target_activity=0.0, checkpoint_every=K)
    forward = lambda: ops.plastic_scan_forward(**op_args)
    y, hidden, trace, elig, theta, ckpt_H, ckpt_E = forward()
    grads = (torch.ones_like(y), torch.zeros_like(hidden), torch.ones_like(trace), elig, theta)
    backward = lambda: ops.plastic_scan_backward(*grads, y, ckpt_H, ckpt_E, **op_args)
    t_forward = best_time(forward, args.repeats) / T
    t_backward = best_time(backward, args.repeats) / T
    ga, p = torch.randn(N, T * B), torch.randn(T * B, N)
    t_gemm = best_time(lambda: torch.mm(ga, p), args.repeats) / T
    slabs = torch.randn(B, N, N)
    t_slabs = best_time(lambda: slabs.sum(0), args.repeats) / T
    t_loop = t_backward - t_gemm - t_slabs

    E, f32 = B * N * N, 4
    traces_per_thread = -(-B // threads) * N * N * f32
    checkpoints_per_thread = (math.ceil(T / K) - 1) * traces_per_thread
    l2_set = 6 * N * N * f32  # a sequence's backward
    # The forward's group, as forward_group chooses it for this workload (hebb, recurrent, η one
    # value): g traces beside α and W in one core's L2.
    l2 = os.sysconf("SC_LEVEL2_CACHE_SIZE") if "SC_LEVEL2_CACHE_SIZE" in os.sysconf_names else 0
    group = 4 if l2 <= 0 else next((g for g in (4, 2) if (g + 2) * N * N * f32 <= l2), 1)
    forward_set = (group + 2) * N * N * f32
    advanced = (K - 1) // 4 * 4 / K  # step-updates per step for the anchors
    # Per pass: seconds per step, ops per step, and (bytes per step, working set they come from[,
    # access pattern: bandwidth_for's, "update" if not given]). The backward loop's two parts run
    # interleaved and are timed together: "both" is their sum.
    anchors = (2 * advanced * E, [(f32 * E / K, checkpoints_per_thread), (f32 * E / K, l2_set)])
    row_passes = (14 * E, [(28 * E, l2_set, "five_stream")])
    passes = {
        "forward": (t_forward, 4 * E, [(2 * f32 * E + 2 * f32 * E / group, forward_set, "three_stream"),
                                       (f32 * E / K, checkpoints_per_thread)]),
        "backward loop: anchors": (None, *anchors),
        "backward loop: row passes": (None, *row_passes),
        "backward loop, both": (t_loop, anchors[0] + row_passes[0], anchors[1] + row_passes[1]),
        "backward: dL/dW GEMM": (t_gemm, B * N * N, [(2 * B * N * f32, 2 * T * B * N * f32 // threads)]),
        "backward: dL/dα slab sum": (t_slabs, E / T / 2, [(f32 * E / T, traces_per_thread)]),
    }
    fma_ops = rates["fma_gflops"] / 2 * 1e9  # vector ops per second
    rows = []
    for name, (seconds, ops_per_step, traffic) in passes.items():
        moved = sum(b for b, *_ in traffic)
        t_mem = sum(b / (bandwidth_for(rates, *where) * 1e9) for b, *where in traffic)
        t_fma = ops_per_step / fma_ops
        bound = max(t_mem, t_fma)
        timed = seconds is not None
        rows.append(dict(pass_name=name, us=seconds * 1e6 if timed else None, mb=moved / 1e6,
                         mflop=2 * ops_per_step / 1e6, gbs=moved / seconds / 1e9 if timed else None,
                         gflops=2 * ops_per_step / seconds / 1e9 if timed else None,
                         bound="memory" if t_mem >= t_fma else "FMA", bound_us=bound * 1e6,
                         of_bound=seconds / bound if timed else None))

    print(f"machine: {threads} threads; float32 FMA {rates['fma_gflops']:.0f} GFLOP/s; update (three-stream, "
          "five-stream) bandwidth in GB/s per working set per thread: "
          + ", ".join(f"{r['bytes_per_thread'] >> 10} KB {r['update_gbs']:.0f} ({r['three_stream_gbs']:.0f}, "
                      f"{r['five_stream_gbs']:.0f})" for r in rates["bandwidth"]))
    print(f"op: recurrent hebb float32, B={B}, N={N}, T={T}, K={K}: forward {t_forward * 1e6:.0f} µs/step, "
          f"backward {t_backward * 1e6:.0f} µs/step")
    print()
    print("| pass | µs/step | MB/step | MFLOP/step | GB/s | GFLOP/s | bound by | bound µs | × bound |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    fmt = lambda v, spec: "–" if v is None else format(v, spec)
    for r in rows:
        print(f"| {r['pass_name']} | {fmt(r['us'], '.0f')} | {r['mb']:.2f} | {r['mflop']:.1f} | "
              f"{fmt(r['gbs'], '.0f')} | {fmt(r['gflops'], '.0f')} | {r['bound']} | {r['bound_us']:.0f} | "
              f"{fmt(r['of_bound'], '.1f')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=rates, B=B, N=N, T=T, threads=threads, forward_us=t_forward * 1e6,
                           backward_us=t_backward * 1e6, passes=rows), f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
