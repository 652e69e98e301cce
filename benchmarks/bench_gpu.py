#!/usr/bin/env python3
"""GPU benchmark: the fused CUDA plastic_scan against the reference, eager and compiled.

Workload (issue #4): recurrent hebb, float32, B=32, N=256, T=256. Times are medians of CUDA
event timings after warm-up, in µs per time step; memory is the peak allocated during one
forward+backward beyond the inputs. The compiled reference is the reference's own step
function under torch.compile (fullgraph), driven by a Python loop over T, since compiling
the T-step loop unrolled would take minutes.

--dtypes, --layouts and --grid time the fused op alone: with bfloat16 and float16 inputs (traces
in float32), under each cluster layout the planner can be forced into (TORCHPLASTIC_CUDA_CLUSTER,
TORCHPLASTIC_CUDA_OFF_CHIP), with the kernels' plain loops (TORCHPLASTIC_CUDA_PLAIN_LOOPS), on
chip and off, with the backward's prefetches into L2 or further ahead
(TORCHPLASTIC_CUDA_PREFETCH_L2, TORCHPLASTIC_CUDA_PREFETCH_AHEAD), and with the forward's trace
in shared memory instead of registers (TORCHPLASTIC_CUDA_NO_REGISTERS), and over
B ∈ {1, 32, 256} × N ∈ {64, 256, 1024}.
--checkpoints times forward+backward and its peak memory over the backward's segment length K
(checkpoint_every).
"""

import argparse
import contextlib
import functools
import json
import os

import torch

import torchplastic as tp
from common import recurrent_hebb_inputs


def scan_with_step(step_fn, kw):
    """The reference scan, recurrent hebb, with the given step function."""
    z, alpha, eta, W = kw["z"], kw["alpha"], kw["eta"], kw["weight"]
    T, B, N = z.shape
    h = z.new_zeros(B, N)
    H = z.new_zeros(B, N, N)
    ys = []
    for t in range(T):
        y, h, H, _, _ = step_fn(z[t], None, h, H, None, None, alpha, eta, W, None, None, None, None, None,
                                rule="hebb", activation="tanh", clip=None, synaptic_scaling=None,
                                adaptive_threshold=None, target_activity=0.0)
        ys.append(y)
    return torch.stack(ys), H


def fused(kw, checkpoint_every=None):
    y, state = tp.functional.plastic_scan(kw["z"], kw["alpha"], kw["eta"], None, weight=kw["weight"],
                                          checkpoint_every=checkpoint_every)
    return y, state.trace


def fwd_bwd(f):
    """f's forward, then a backward from the sum of its output and final trace (in float32
    whatever the input dtype)."""
    def run():
        y, H = f()
        (y.float().sum() + H.float().sum()).backward()
    return run


def cuda_time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3)  # µs
    times.sort()
    return times[len(times) // 2]


@contextlib.contextmanager
def environment(**values):
    """The planner's test hooks (read at every call) set for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fused_only(T, B, N, repeats, dtype=torch.float32, **env):
    """Forward and forward+backward µs/step of the fused op alone at one size and input dtype,
    with the planner hooks in env."""
    kw = recurrent_hebb_inputs(T, B, N, dtype=dtype, device="cuda")
    with environment(**env):
        with torch.no_grad():
            fwd = cuda_time(lambda: fused(kw), repeats)
        fb = cuda_time(fwd_bwd(lambda: fused(kw)), repeats)
    return dict(forward_us_per_step=fwd / T, fwd_bwd_us_per_step=fb / T)


def fused_table(title, rows):
    """Runs each of rows' measurements (name: a function returning fused_only's dict), printing
    the table row by row as they come, so that a run cut short (make gpu-check bounds this
    script's time) still shows the rows it measured; returns {name: figures}."""
    print(title, flush=True)
    print(f"{'':34}{'fwd µs/step':>13}{'fwd+bwd µs/step':>17}", flush=True)
    out = {}
    for name, measure in rows.items():
        r = out[name] = measure()
        print(f"{name:34}{r['forward_us_per_step']:13.2f}{r['fwd_bwd_us_per_step']:17.2f}", flush=True)
    return out


def peak_bytes(fn):
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", "-B", type=int, default=32)
    ap.add_argument("--hidden", "-N", type=int, default=256)
    ap.add_argument("--steps", "-T", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20, help="timed repeats of the fused op")
    ap.add_argument("--reference-repeats", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile reference")
    ap.add_argument("--dtypes", action="store_true", help="also the fused op with bfloat16 and float16 inputs")
    ap.add_argument("--layouts", action="store_true", help="also the fused op under each forced cluster layout")
    ap.add_argument("--grid", action="store_true",
                    help="also the fused op over B in {1, 32, 256} and N in {64, 256, 1024}")
    ap.add_argument("--checkpoints", action="store_true",
                    help="also forward+backward and peak memory over checkpoint_every K in {4, 8, 16, 32, 64}")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    assert torch.cuda.is_available(), "bench_gpu.py needs a CUDA device"

    T, B, N = args.steps, args.batch, args.hidden
    kw = recurrent_hebb_inputs(T, B, N, device="cuda")
    compiled_step = torch.compile(tp.reference.step, fullgraph=True, dynamic=False)
    variants = {
        "fused": lambda: fused(kw),
        "reference eager": lambda: scan_with_step(tp.reference.step, kw),
    }
    if not args.no_compile:
        variants["reference compiled"] = lambda: scan_with_step(compiled_step, kw)

    res = dict(device=torch.cuda.get_device_name(), B=B, N=N, T=T, torch=torch.__version__)
    for name, f in variants.items():
        reps = args.repeats if name == "fused" else args.reference_repeats
        with torch.no_grad():
            fwd = cuda_time(f, reps)
        fb = cuda_time(fwd_bwd(f), reps)
        mem = peak_bytes(fwd_bwd(f))
        res[name] = dict(forward_us_per_step=fwd / T, fwd_bwd_us_per_step=fb / T, peak_mb=mem / 2**20)

    print(f"plastic_scan GPU benchmark on {res['device']}: recurrent hebb, float32, B={B}, N={N}, T={T}")
    print(f"{'':22}{'fwd µs/step':>13}{'fwd+bwd µs/step':>17}{'peak MB':>10}{'fwd+bwd speed-up':>18}{'memory':>9}")
    ref = res["fused"]
    for name in variants:
        r = res[name]
        speed = r["fwd_bwd_us_per_step"] / ref["fwd_bwd_us_per_step"]
        memr = r["peak_mb"] / max(ref["peak_mb"], 1e-9)
        print(f"{name:22}{r['forward_us_per_step']:13.2f}{r['fwd_bwd_us_per_step']:17.2f}{r['peak_mb']:10.1f}"
              f"{speed:17.1f}x{memr:8.1f}x")
    save(res, args.json)
    if args.dtypes:
        res["dtypes"] = fused_table(
            f"\nfused, input dtypes (traces in float32), B={B}, N={N}, T={T}",
            {str(d).removeprefix("torch."): functools.partial(fused_only, T, B, N, args.repeats, dtype=d)
             for d in (torch.float32, torch.bfloat16, torch.float16)})
        save(res, args.json)
    if args.layouts:
        layouts = {f"cluster {c}": dict(TORCHPLASTIC_CUDA_CLUSTER=c) for c in (1, 2, 3, 4, 8)}
        layouts["off chip, cluster 2"] = dict(TORCHPLASTIC_CUDA_CLUSTER=2, TORCHPLASTIC_CUDA_OFF_CHIP=1)
        # The kernels' loops as before the forward's shared-memory copies and row pairs and the
        # row loops' chunked loads and the backward's prefetches (2026-12-05, Plan::plain_loops):
        # what those are worth, measured in the same run, on chip and off, beside the same
        # layouts with them.
        layouts["planner's"] = {}
        layouts["planner's, plain loops"] = dict(TORCHPLASTIC_CUDA_PLAIN_LOOPS=1)
        # The backward's prefetches into L2 instead of L1, and two rows ahead instead of one
        # (2026-12-07, Plan::prefetch_to_l2, prefetch_ahead): at this size shared memory leaves
        # L1 less than the rows the 16 warps ask for ahead.
        layouts["planner's, prefetch to L2"] = dict(TORCHPLASTIC_CUDA_PREFETCH_L2=1)
        layouts["planner's, prefetch 2 ahead"] = dict(TORCHPLASTIC_CUDA_PREFETCH_AHEAD=2)
        layouts["planner's, prefetch to L2, 2 ahead"] = dict(TORCHPLASTIC_CUDA_PREFETCH_L2=1,
                                                             TORCHPLASTIC_CUDA_PREFETCH_AHEAD=2)
        # The forward with H in shared memory where the planner takes the register forward
        # (2026-12-07, cuda/forward_registers.cu), in clusters of 3 and 4 (86 and 64 rows per
        # block at N=256).
        layouts["planner's, no registers"] = dict(TORCHPLASTIC_CUDA_NO_REGISTERS=1)
        layouts["cluster 3, no registers"] = dict(TORCHPLASTIC_CUDA_CLUSTER=3,
                                                  TORCHPLASTIC_CUDA_NO_REGISTERS=1)
        layouts["cluster 4, no registers"] = dict(TORCHPLASTIC_CUDA_CLUSTER=4,
                                                  TORCHPLASTIC_CUDA_NO_REGISTERS=1)
        layouts["off chip, cluster 2, plain loops"] = dict(
            TORCHPLASTIC_CUDA_CLUSTER=2, TORCHPLASTIC_CUDA_OFF_CHIP=1, TORCHPLASTIC_CUDA_PLAIN_LOOPS=1)
        res["layouts"] = fused_table(
            f"\nfused, forced layouts (the planner picks by itself above), B={B}, N={N}, T={T}",
            {name: functools.partial(fused_only, T, B, N, args.repeats, **env)
             for name, env in layouts.items()})
        print_ratios(res["layouts"], [("planner's, no registers", "planner's"),
                                      ("cluster 3, no registers", "cluster 3"),
                                      ("cluster 4, no registers", "cluster 4"),
                                      ("planner's, plain loops", "planner's"),
                                      ("planner's, prefetch to L2", "planner's"),
                                      ("planner's, prefetch 2 ahead", "planner's"),
                                      ("planner's, prefetch to L2, 2 ahead", "planner's"),
                                      ("off chip, cluster 2, plain loops", "off chip, cluster 2"),
                                      ("cluster 4", "cluster 3"),
                                      # the planner's choice before 2026-12-06 at this size
                                      ("cluster 4", "planner's")])
        save(res, args.json)
    if args.checkpoints:
        res["checkpoints"] = checkpoint_table(kw, args.repeats)
        save(res, args.json)
    if args.grid:
        res["grid"] = fused_table(
            f"\nfused over sizes, float32, T={T}",
            {f"B={b} N={n}": functools.partial(fused_only, T, b, n, max(3, args.repeats // 4))
             for b in (1, 32, 256) for n in (64, 256, 1024)})
        save(res, args.json)


def checkpoint_table(kw, repeats):
    """Forward+backward µs/step and peak memory of the fused op over the backward's segment
    length K. The backward recomputes each segment's K traces into global scratch ([B, K, N, N]),
    which fits in the GPU's L2 only where K is small, while the checkpoints it recomputes from
    (T/K traces) grow as K shrinks; K = ceil(√T), the default, keeps their sum smallest. Whether
    the scratch's trip through memory is what the backward waits on shows here."""
    T, B, N = kw["z"].shape
    print(f"\nfused, checkpoint_every K, B={B}, N={N}, T={T}", flush=True)
    print(f"{'':34}{'fwd+bwd µs/step':>17}{'peak MB':>10}", flush=True)
    out = {}
    for K in (4, 8, 16, 32, 64):
        if K > T:
            continue
        run = fwd_bwd(lambda: fused(kw, checkpoint_every=K))
        r = out[f"K={K}"] = dict(fwd_bwd_us_per_step=cuda_time(run, repeats) / T,
                                 peak_mb=peak_bytes(run) / 2**20)
        print(f"{f'K={K}':34}{r['fwd_bwd_us_per_step']:17.2f}{r['peak_mb']:10.1f}", flush=True)
    return out


def print_ratios(rows, pairs):
    """For each (a, b) of pairs: how many times a's time per step b's is, forward and
    forward+backward (above 1: b faster), the comparisons the layouts table is there for."""
    for a, b in pairs:
        if a in rows and b in rows:
            fwd = rows[a]["forward_us_per_step"] / rows[b]["forward_us_per_step"]
            fb = rows[a]["fwd_bwd_us_per_step"] / rows[b]["fwd_bwd_us_per_step"]
            print(f"{a} / {b}: forward {fwd:.2f}x, forward+backward {fb:.2f}x", flush=True)


def save(res, path):
    """The figures so far into the JSON file, if one was asked for: after each table, so that a
    run cut short keeps the tables it finished."""
    if path:
        with open(path, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
