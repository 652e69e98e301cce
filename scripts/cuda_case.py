#!/usr/bin/env python3
"""One forward+backward of the fused CUDA kernels per case, for tools that watch a process:
compute-sanitizer (`--cases small`: every kernel path at small sizes; `--cases on-chip`: the
same without the off-chip path, for racecheck) and Nsight Compute (`--cases bench --profile`:
the benchmark's size, recurrent hebb, float32, B=32, N=256, T=256, with only the measured call
between cudaProfilerStart and cudaProfilerStop, so that `ncu --profile-from-start off` sees the
kernels of that one call and not the warm-up's)."""

import argparse

import torch

import torchplastic as tp

# (name, module, size, B, T, options): small enough for memcheck and racecheck, and between them
# every launch shape: the cluster path (N ≤ 256), the off-chip path (N = 1024), checkpoint
# segments (T > K), the LSTM, modulation with clipping, and a variable-length batch.
ON_CHIP = [
    ("rnn hebb N=64", "rnn", 64, 2, 8, dict(rule="hebb")),
    ("rnn retroactive fan-out N=256 K=3", "rnn", 256, 2, 8,
     dict(rule="retroactive", modulation="fanout", checkpoint_every=3)),
    ("lstm modulated N=64", "lstm", 64, 2, 8, dict(rule="modulated", modulation="fanout")),
    ("rnn abcd N=64 lengths", "rnn", 64, 3, 6, dict(rule="abcd", lengths=True)),
]
OFF_CHIP = [("rnn oja N=1024 (off-chip)", "rnn", 1024, 1, 3, dict(rule="oja"))]
CASES = {
    "small": ON_CHIP + OFF_CHIP,
    # racecheck watches shared memory alone, and under it the off-chip case, which streams its
    # matrices through global memory, takes minutes.
    "on-chip": ON_CHIP,
    "bench": [("rnn hebb N=256 (the benchmark's)", "rnn", 256, 32, 256, dict(rule="hebb"))],
}


def run_case(kind, n, batch, steps, options, dtype, device):
    options = dict(options)
    lengths = options.pop("lengths", False)
    cls = tp.PlasticRNN if kind == "rnn" else tp.PlasticLSTM
    model = cls(n, n, **options).to(device=device, dtype=dtype)
    x = torch.randn(steps, batch, n, device=device, dtype=dtype, requires_grad=True)
    kw = {}
    if lengths:
        kw["lengths"] = torch.arange(steps, steps - batch, -1, device=device).clamp(min=0)
    y, state = model(x, **kw)
    (y.float().square().mean() + state.trace.float().square().mean()).backward()
    if device == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", choices=tuple(CASES), default="small",
                    help="small: every launch shape at small sizes; on-chip: those without the "
                         "off-chip path (for racecheck); bench: the benchmark's size")
    ap.add_argument("--dtype", choices=("float32", "float64", "bfloat16", "float16"), default="float32")
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu to try the cases here")
    ap.add_argument("--profile", action="store_true",
                    help="warm up, then run each case once between cudaProfilerStart and Stop")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    profile = args.profile and args.device == "cuda"
    for name, kind, n, batch, steps, options in CASES[args.cases]:
        if profile:
            run_case(kind, n, batch, steps, options, dtype, args.device)
            torch.cuda.profiler.start()
        run_case(kind, n, batch, steps, options, dtype, args.device)
        if profile:
            torch.cuda.profiler.stop()
        print(f"ok: {name} ({args.dtype})", flush=True)


if __name__ == "__main__":
    main()
