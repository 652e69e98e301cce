#!/usr/bin/env python3
"""CPU benchmark: the fused plastic_scan against torchplastic.reference, measured in one run.

Workload (issue #2): recurrent hebb, float32, B=32, N=256, T=64 for time, T=256 for memory.
Times the fused op and the reference alternately, round after round (the machine's speed
drifts on a shared VM), and prints the median times of forward and forward+backward, the
median of the per-round ratios, and the bytes each keeps for the backward.

Beside forward+backward it prints each side's page faults and kernel (system) time per step:
the reference allocates a trace-sized temporary per operation, and glibc returns such blocks to
the OS when they are freed, so the next allocation faults them in again. How often it does that
swings with the machine's memory state, and the reference's time swings with it. To time the
reference without those faults, pass --keep-freed-memory: glibc then keeps freed memory for
the next allocation, as the examples ask it to.
"""

import argparse
import json
import os

import torch

import torchplastic as tp
from common import (CountingSystemTime, add_cpu_arguments, apply_cpu_arguments, bytes_saved_for_backward,
                    cpu_model, forward_backward, paired_timeit, recurrent_hebb_inputs, run)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", "-B", type=int, default=32)
    ap.add_argument("--hidden", "-N", type=int, default=256)
    ap.add_argument("--steps", "-T", type=int, default=64, help="sequence length for the timings")
    ap.add_argument("--memory-steps", type=int, default=256, help="sequence length for the memory figures")
    ap.add_argument("--rounds", type=int, default=7,
                    help="rounds of (fused x3, reference x1); medians over the rounds")
    add_cpu_arguments(ap)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    apply_cpu_arguments(args)

    T, B, N = args.steps, args.batch, args.hidden
    kw = recurrent_hebb_inputs(T, B, N)
    with torch.no_grad():
        fused_fwd, ref_fwd, fwd_ratio = paired_timeit(
            lambda: run(tp.functional.plastic_scan, kw), lambda: run(tp.reference.plastic_scan, kw),
            args.rounds)
    fused_usage = CountingSystemTime(lambda: forward_backward(tp.functional.plastic_scan, kw))
    ref_usage = CountingSystemTime(lambda: forward_backward(tp.reference.plastic_scan, kw))
    fused_fb, ref_fb, fb_ratio = paired_timeit(fused_usage, ref_usage, args.rounds)
    fused_faults, fused_sys, _ = fused_usage.per_call()
    ref_faults, ref_sys, _ = ref_usage.per_call()

    kw_mem = recurrent_hebb_inputs(args.memory_steps, B, N)
    fused_mem = bytes_saved_for_backward(tp.functional.plastic_scan, kw_mem)
    ref_mem = bytes_saved_for_backward(tp.reference.plastic_scan, kw_mem)

    res = dict(machine=cpu_model(), cpu_kernels=tp.build_info()["cpu_kernels"], cpus=os.cpu_count(),
               threads=torch.get_num_threads(), keep_freed_memory=args.keep_freed_memory,
               B=B, N=N, T=T, memory_T=args.memory_steps,
               fused_forward_ms_per_step=1e3 * fused_fwd / T, reference_forward_ms_per_step=1e3 * ref_fwd / T,
               fused_fwd_bwd_ms_per_step=1e3 * fused_fb / T, reference_fwd_bwd_ms_per_step=1e3 * ref_fb / T,
               forward_speedup=fwd_ratio, fwd_bwd_speedup=fb_ratio,
               fused_fwd_bwd_page_faults_per_step=fused_faults / T,
               reference_fwd_bwd_page_faults_per_step=ref_faults / T,
               fused_fwd_bwd_system_ms_per_step=1e3 * fused_sys / T,
               reference_fwd_bwd_system_ms_per_step=1e3 * ref_sys / T,
               fused_saved_mb=fused_mem / 2**20, reference_saved_mb=ref_mem / 2**20,
               memory_ratio=ref_mem / fused_mem)
    print(f"plastic_scan CPU benchmark: recurrent hebb, float32, B={B}, N={N}, T={T}, "
          f"{res['threads']} threads, {res['cpus']} CPUs"
          + (", glibc keeping freed memory" if args.keep_freed_memory else ""))
    print(f"machine: {res['machine']}, {res['cpu_kernels']} kernels")
    print(f"medians over {args.rounds} rounds; speed-up: median of the per-round ratios")
    print(f"{'':24}{'fused':>12}{'reference':>12}{'speed-up':>10}")
    print(f"{'forward ms/step':24}{res['fused_forward_ms_per_step']:12.3f}{res['reference_forward_ms_per_step']:12.3f}"
          f"{res['forward_speedup']:9.1f}x")
    print(f"{'fwd+bwd ms/step':24}{res['fused_fwd_bwd_ms_per_step']:12.3f}{res['reference_fwd_bwd_ms_per_step']:12.3f}"
          f"{res['fwd_bwd_speedup']:9.1f}x")
    print(f"{'  page faults per step':24}{res['fused_fwd_bwd_page_faults_per_step']:12.0f}"
          f"{res['reference_fwd_bwd_page_faults_per_step']:12.0f}")
    print(f"{'  system time ms/step':24}{res['fused_fwd_bwd_system_ms_per_step']:12.3f}"
          f"{res['reference_fwd_bwd_system_ms_per_step']:12.3f}   (all threads; mean of the timed calls)")
    print(f"{f'saved for bwd, T={args.memory_steps} (MB)':24}{res['fused_saved_mb']:12.1f}{res['reference_saved_mb']:12.1f}"
          f"{res['memory_ratio']:9.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
