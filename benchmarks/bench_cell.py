#!/usr/bin/env python3
"""Memory of stepping a PlasticRNNCell one time step at a time, the reinforcement-learning
pattern of examples/maze.py: the bytes autograd keeps for the backward after S steps, and per
step, against the size of one trace [B, H, H].

Each step keeps its input state (hidden, trace, eligibility) for the backward; a cell step has
one checkpoint segment, whose checkpoint is that input state, so nothing else of trace size
should be kept.
"""

import argparse

import torch

import torchplastic as tp


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", "-B", type=int, default=32)
    ap.add_argument("--hidden", "-H", type=int, default=128)
    ap.add_argument("--steps", "-S", type=int, default=200)
    ap.add_argument("--rule", default="retroactive", help="plasticity rule (default: retroactive)")
    args = ap.parse_args()

    torch.manual_seed(0)
    B, H, S = args.batch, args.hidden, args.steps
    cell = tp.PlasticRNNCell(8, H, rule=args.rule)
    seen, held = {}, []

    def pack(t):
        held.append(t)
        seen[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))] = t.numel() * t.element_size()
        return None

    state, outputs = None, []
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda _: None):
        for _ in range(S):
            h, state = cell(torch.randn(B, 8), state)
            outputs.append(h)
    total = sum(seen.values())
    trace_bytes = B * H * H * 4
    print(f"PlasticRNNCell(8, {H}, rule={args.rule!r}), B={B}, {S} steps of one time step")
    print(f"kept for the backward: {total / 2**20:.1f} MiB, {total / S / 2**20:.2f} MiB per step "
          f"= {total / S / trace_bytes:.2f} traces [B, H, H] per step")


if __name__ == "__main__":
    main()
