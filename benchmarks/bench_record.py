#!/usr/bin/env python3
"""What tp.inspect.record costs: the forward of a PlasticRNN with no recording on, and
recording every R steps (the trace every R steps, its norm and the modulation every step).
Paired rounds in one process, best of 3 calls per round, medians.

With no recording on, a call runs exactly as before (one test of a module-level None); while
recording, each call runs the fused forward a second time, by the kernels that record.
"""

import argparse

import torch

from common import paired_best_of

import torchplastic as tp


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", "-B", type=int, default=32)
    ap.add_argument("--hidden", "-N", type=int, default=256)
    ap.add_argument("--steps", "-T", type=int, default=64)
    ap.add_argument("--every", "-R", type=int, default=8, help="record the trace every R steps")
    ap.add_argument("--rule", default="retroactive")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = tp.PlasticRNN(args.hidden, args.hidden, rule=args.rule)
    u = torch.randn(args.steps, args.batch, args.hidden)

    def plain():
        with torch.no_grad():
            model(u)

    def recording():
        with torch.no_grad(), tp.inspect.record(model, every=args.every):
            model(u)

    off, on, ratio = paired_best_of(plain, recording, args.rounds)
    print(f"PlasticRNN({args.hidden}, {args.hidden}, rule={args.rule!r}), B={args.batch}, "
          f"T={args.steps}, float32, {torch.get_num_threads()} threads, forward (no grad)")
    print(f"  not recording      {1e3 * off / args.steps:.3f} ms/step")
    print(f"  recording, R={args.every:<4}  {1e3 * on / args.steps:.3f} ms/step ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
