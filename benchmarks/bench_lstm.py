#!/usr/bin/env python3
"""The plastic LSTM: forward+backward time per step of tp.PlasticLSTM (the fused
plastic_lstm_scan) against the eager reference (tp.reference.plastic_lstm_scan, one step at a
time in plain PyTorch) and against torch.nn.LSTM of the same size, all three timed alternately
in one process (medians of paired rounds). Each model maps u [T, B, I] to h [T, B, H], the input
projection included; the loss is the sum of the outputs and of the final state.

Beside each time, the page faults and the kernel (system) time per step of the timed calls
(all threads): an eager loop's large temporaries can be faulted in afresh on every call (see
bench_cpu.py). Also the memory autograd keeps for the backward (the distinct saved tensors) at
T = --memory-steps.
"""

import argparse

import torch

from common import CountingSystemTime, add_cpu_arguments, apply_cpu_arguments, paired_timeit

import torchplastic as tp


def plastic_model(args, device):
    return tp.PlasticLSTM(args.input, args.hidden, rule=args.rule,
                          modulation="fanout", alpha_init=0.01, eta_init=0.05).to(device)


def reference_call(lstm, u):
    z = torch.nn.functional.linear(u, lstm.weight_ih, lstm.bias)
    return tp.reference.plastic_lstm_scan(
        z, lstm.weight_hh, lstm.alpha, lstm.eta, None, rule=lstm.rule, clip=lstm.clip,
        mod_weight=getattr(lstm, "mod_weight", None), mod_bias=getattr(lstm, "mod_bias", None),
        mod_fanout_weight=getattr(lstm, "mod_fanout_weight", None),
        mod_fanout_bias=getattr(lstm, "mod_fanout_bias", None), abcd=lstm.abcd)


def saved_bytes(fn):
    seen, held = {}, []

    def pack(t):
        held.append(t)
        seen[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))] = t.numel() * t.element_size()
        return None

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda _: None):
        fn()
    held.clear()
    return sum(seen.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", "-B", type=int, default=32)
    ap.add_argument("--hidden", "-H", type=int, default=256)
    ap.add_argument("--input", "-I", type=int, default=256, help="input size (default: 256)")
    ap.add_argument("--steps", "-T", type=int, default=64)
    ap.add_argument("--rule", default="retroactive", choices=list(tp.rules.RULES))
    ap.add_argument("--rounds", type=int, default=5, help="paired rounds (default: 5)")
    ap.add_argument("--memory-steps", type=int, default=256, help="T of the memory figure (default: 256; 0: no memory figure)")
    ap.add_argument("--no-reference", action="store_true", help="skip the eager reference (slow on a GPU)")
    add_cpu_arguments(ap)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    apply_cpu_arguments(args)
    torch.manual_seed(0)
    device = torch.device(args.device)
    B, H, T = args.batch, args.hidden, args.steps
    plastic = plastic_model(args, device)
    lstm = torch.nn.LSTM(args.input, H).to(device)
    u = torch.randn(T, B, args.input, device=device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def fused_fwd_bwd():
        out, state = plastic(u)
        (out.sum() + state.cell.sum() + state.trace.sum()).backward()
        sync()

    def reference_fwd_bwd():
        out, state = reference_call(plastic, u)
        (out.sum() + state.cell.sum() + state.trace.sum()).backward()
        sync()

    def torch_lstm_fwd_bwd():
        out, (h, c) = lstm(u)
        (out.sum() + c.sum()).backward()
        sync()

    fused = CountingSystemTime(fused_fwd_bwd)
    reference = CountingSystemTime(reference_fwd_bwd)
    torch_lstm = CountingSystemTime(torch_lstm_fwd_bwd)

    def usage(meter):
        if args.device != "cpu":
            return ""
        faults, system_s, _ = meter.per_call()
        return f"   ({faults / T:.0f} page faults, {1e3 * system_s / T:.3f} ms system time per step)"

    modulation = ", fan-out modulation" if tp.rules.rule_info(args.rule).modulated else ""
    print(f"plastic LSTM ({args.rule}{modulation}), float32, B={B}, H={H}, I={args.input}, T={T}, "
          f"{args.device}, {torch.get_num_threads()} threads; forward+backward per step, medians of "
          f"{args.rounds} paired rounds" + (", glibc keeping freed memory" if args.keep_freed_memory else ""))
    t_fused, t_lstm, vs_lstm = paired_timeit(fused, torch_lstm, args.rounds)
    print(f"  tp.PlasticLSTM       {1e3 * t_fused / T:8.3f} ms/step" + usage(fused))
    print(f"  torch.nn.LSTM        {1e3 * t_lstm / T:8.3f} ms/step   plastic / LSTM = {1 / vs_lstm:.2f}×"
          + usage(torch_lstm))
    if not args.no_reference:
        t_fused2, t_ref, speedup = paired_timeit(fused, reference, args.rounds)
        print(f"  eager reference      {1e3 * t_ref / T:8.3f} ms/step   reference / plastic = {speedup:.1f}×"
              + usage(reference))

    Tm = args.memory_steps
    if Tm <= 0:
        return
    um = torch.randn(Tm, B, args.input, device=device)
    fused_mem = saved_bytes(lambda: plastic(um))
    lstm_mem = saved_bytes(lambda: lstm(um))
    line = (f"saved for backward at T={Tm}: plastic {fused_mem / 2**20:.1f} MB, "
            f"torch.nn.LSTM {lstm_mem / 2**20:.1f} MB")
    if not args.no_reference:
        ref_mem = saved_bytes(lambda: reference_call(plastic, um))
        line += f", reference {ref_mem / 2**20:.1f} MB ({ref_mem / fused_mem:.0f}× the plastic's)"
    print(line)


if __name__ == "__main__":
    main()
