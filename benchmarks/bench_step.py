#!/usr/bin/env python3
"""Single steps, as reinforcement learning takes them when it learns through the steps it acted
with (A2C): a PlasticRNNCell stepped S times with its state carried, then one backward through
all S steps. (examples/maze.py instead acts under no_grad and learns from one sequence call.)
Prints the time per step of a rollout (the steps under no_grad, as an agent acts), of the
forward (building the graph) and of forward+backward, for the fused cell and for the
reference's eager step (tp.reference.step, the same equations in plain PyTorch) with the same
parameters, timed alternately in paired rounds; and the ratio of the two.

Beside each time, the page faults per step of the fused and the reference episodes (see
bench_cpu.py). Also the least memory traffic a step can have here: the forward writes a new
trace [B, H, H] (autograd keeps every step's), and the backward reads it back and writes dL/dH
of the step before: three traces per step (six with rule retroactive's eligibility trace),
against this machine's copy bandwidth measured in the same run. And torch.nn.RNNCell of the same
size, stepped and backpropagated the same way: the cost of a cell's step here before any
plasticity, which with the memory floor bounds what a plastic step can cost.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torchplastic as tp  # noqa: E402
from common import (CountingSystemTime, add_cpu_arguments, apply_cpu_arguments,  # noqa: E402
                    paired_best_of)


MODULATION_HEAD = ("mod_weight", "mod_bias", "mod_fanout_weight", "mod_fanout_bias")


def reference_cell(cell):
    """The eager reference of `cell`: z = W_ih u + b, then tp.reference.step."""
    def step(u, state):
        h, H, E = state if state is not None else (None, None, None)
        B = u.shape[0]
        if h is None:
            h = u.new_zeros(B, cell.hidden_size)
            H = u.new_zeros(B, cell.hidden_size, cell.hidden_size)
            E = H.clone() if tp.rules.rule_info(cell.rule).eligibility else None
        z = torch.nn.functional.linear(u, cell.weight_ih, cell.bias)
        y, h, H, E, _ = tp.reference.step(
            z, None, h, H, E, None, cell.alpha, cell.eta, cell.weight_hh, None,
            *(getattr(cell, name, None) for name in MODULATION_HEAD), rule=cell.rule,
            activation="tanh", clip=cell.clip, synaptic_scaling=None, adaptive_threshold=None,
            target_activity=0.0)
        return y, (h, H, E)
    return step


def _steps(step, inputs):
    """(h, state) after each step of one episode."""
    state = None
    for u in inputs:
        h, state = step(u, state)
        yield h, state


def episode(step, inputs, backward, grad=True):
    with torch.set_grad_enabled(grad):
        outputs = [h for h, _ in _steps(step, inputs)]
    if backward:
        torch.stack(outputs).square().mean().backward()


def copy_bandwidth(nbytes):
    """Bytes per second (read + write counted) of copying nbytes from one buffer into another:
    the size of the traces an episode keeps, which no cache holds."""
    src = torch.empty(nbytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", "-B", type=int, default=32)
    ap.add_argument("--hidden", "-H", type=int, default=100)
    ap.add_argument("--input", "-I", type=int, default=17, help="input size (the maze's: 17)")
    ap.add_argument("--steps", "-S", type=int, default=100, help="steps per episode")
    ap.add_argument("--rule", default="hebb", help="plasticity rule (default: hebb)")
    ap.add_argument("--modulation", default="internal", help="modulation source for modulated rules")
    ap.add_argument("--rounds", type=int, default=5, help="paired rounds; medians over them")
    add_cpu_arguments(ap)
    args = ap.parse_args()
    apply_cpu_arguments(args)

    torch.manual_seed(0)
    kw = {"modulation": args.modulation} if args.rule in ("modulated", "retroactive") else {}
    cell = tp.PlasticRNNCell(args.input, args.hidden, rule=args.rule, **kw)
    inputs = torch.randn(args.steps, args.batch, args.input).unbind(0)
    reference = reference_cell(cell)
    S = args.steps

    # Both compute the same thing: one episode's outputs agree.
    with torch.no_grad():
        fused_h = torch.stack([h for h, _ in _steps(cell, inputs)])
        reference_h = torch.stack([h for h, _ in _steps(reference, inputs)])
    difference = (fused_h - reference_h).abs().max().item()
    if difference > 1e-4:
        raise SystemExit(f"bench_step: fused and reference outputs differ by {difference:.2e}")

    print(f"PlasticRNNCell({args.input}, {args.hidden}, rule={args.rule!r}), B={args.batch}, "
          f"{S} steps then one backward, {torch.get_num_threads()} threads"
          + (", glibc keeping freed memory" if args.keep_freed_memory else ""))
    for name, backward, grad in (("rollout", False, False), ("forward", False, True),
                                 ("forward+backward", True, True)):
        fused = CountingSystemTime(lambda: episode(cell, inputs, backward, grad))
        ref = CountingSystemTime(lambda: episode(reference, inputs, backward, grad))
        fused_s, ref_s, ratio = paired_best_of(fused, ref, args.rounds)
        faults = [meter.per_call()[0] / S for meter in (fused, ref)]
        print(f"  {name:17s} fused {fused_s / S * 1e3:6.3f} ms/step   reference "
              f"{ref_s / S * 1e3:6.3f} ms/step   {ratio:5.1f}x   page faults per step "
              f"{faults[0]:.0f} and {faults[1]:.0f}", flush=True)
    # The same loop through torch's own cell of the same size, without plasticity: what a step
    # costs here before any trace is read or written (the call, autograd, the two GEMMs).
    plain = torch.nn.RNNCell(args.input, args.hidden)

    def plain_step(u, h):
        h = plain(u, h)
        return h, h
    fused_s, plain_s, _ = paired_best_of(lambda: episode(cell, inputs, True),
                                         lambda: episode(plain_step, inputs, True), args.rounds)
    print(f"  torch.nn.RNNCell({args.input}, {args.hidden}), no plasticity, forward+backward "
          f"{plain_s / S * 1e3:.3f} ms/step (the fused cell {fused_s / plain_s:.1f}x that)")
    # The eligibility trace of rule retroactive doubles it.
    traces = 3 * (2 if tp.rules.rule_info(args.rule).eligibility else 1)
    trace_bytes = args.batch * args.hidden * args.hidden * 4
    rate = copy_bandwidth(S * trace_bytes)
    floor_s = traces * trace_bytes / rate
    print(f"  memory floor: {traces} traces of {trace_bytes / 2**20:.2f} MiB per step at the copy "
          f"rate of {rate / 1e9:.1f} GB/s = {floor_s * 1e3:.3f} ms/step; with torch.nn.RNNCell's "
          f"step {(floor_s + plain_s / S) * 1e3:.3f} ms/step before any plastic arithmetic")
    print(f"  fused and reference outputs agree to {difference:.1e}")


if __name__ == "__main__":
    main()
