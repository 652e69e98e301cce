#!/usr/bin/env python3
"""Runs the fused op on CUDA at growing sizes up to the benchmark's, forward and backward,
printing each step, so a failure on a GPU machine says where it happened."""

import argparse
import sys
import os

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import torchplastic as tp  # noqa: E402
from common import recurrent_hebb_inputs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", "-T", type=int, default=256)
    args = ap.parse_args()
    for B, N in [(2, 64), (32, 64), (2, 256), (32, 256)]:
        kw = recurrent_hebb_inputs(args.steps, B, N, device="cuda")
        for grad in (False, True):
            print(f"B={B} N={N} T={args.steps} grad={grad}", flush=True)
            with torch.set_grad_enabled(grad):
                y, state = tp.functional.plastic_scan(kw["z"], kw["alpha"], kw["eta"], None, weight=kw["weight"])
                if grad:
                    (y.sum() + state.trace.sum()).backward()
            torch.cuda.synchronize()
            ref, _ = tp.functional.plastic_scan(*(t.detach().cpu() if t is not None else None for t in
                                                  (kw["z"], kw["alpha"], kw["eta"], None)),
                                                weight=kw["weight"].detach().cpu())
            print(f"  max |cuda - cpu| = {(y.detach().cpu() - ref).abs().max().item():.2e}", flush=True)


if __name__ == "__main__":
    main()
