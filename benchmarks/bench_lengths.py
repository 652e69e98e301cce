#!/usr/bin/env python3
"""Variable-length batches: forward+backward time of the fused op with `lengths` against the
same batch padded to T with no lengths, timed alternately in one process (medians of paired
rounds, each call the best of 3).

Past its length a sequence costs nothing, so at half the steps (Σ L_b = B·T/2) the call should
take about half the time of the padded one. Two ways to have half the steps: every sequence
T/2 long, and lengths spread evenly over 1 … T (the usual padded batch).
"""

import argparse

import torch

from common import forward_backward, paired_best_of, recurrent_hebb_inputs

import torchplastic as tp


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", "-B", type=int, default=32)
    ap.add_argument("--hidden", "-N", type=int, default=256)
    ap.add_argument("--steps", "-T", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7, help="paired rounds (default: 7)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    B, N, T = args.batch, args.hidden, args.steps

    kw = recurrent_hebb_inputs(T, B, N, device=args.device)
    padded = lambda: forward_backward(tp.functional.plastic_scan, kw)  # noqa: E731
    cases = {
        "every sequence T/2": torch.full((B,), T // 2, dtype=torch.long),
        "spread over 1..T": torch.linspace(1, T, B).round().long(),
    }
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    print(f"recurrent hebb, float32, B={B}, N={N}, T={T}, {args.device}, "
          f"{torch.get_num_threads()} threads; forward+backward, medians of {args.rounds} paired rounds")
    print(f"{'lengths':<22} {'Σ L / (B·T)':>12} {'ms (lengths)':>13} {'ms (padded)':>12} {'padded / lengths':>17}")
    for name, lengths in cases.items():
        with_lengths = dict(kw, lengths=lengths)

        def fused():
            forward_backward(tp.functional.plastic_scan, with_lengths)
            sync()

        def baseline():
            padded()
            sync()

        t_len, t_pad, ratio = paired_best_of(fused, baseline, args.rounds)
        share = lengths.sum().item() / (B * T)
        print(f"{name:<22} {share:>12.2f} {1e3 * t_len:>13.1f} {1e3 * t_pad:>12.1f} {ratio:>16.2f}×")


if __name__ == "__main__":
    main()
