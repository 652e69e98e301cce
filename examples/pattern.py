#!/usr/bin/env python3
"""Pattern memorization (Miconi, Clune & Stanley, ICML 2018): a plastic RNN against a
non-plastic RNN of the same size.

Each episode shows 5 random binary (±1) patterns of 100 bits (--patterns, --bits; the paper's
headline uses 1000 bits), each with exactly half its bits +1, each for 6 steps with 4 zero
steps between; the whole sequence twice (in a new order); then one of the 5 with half its bits
set to zero, for 6 steps. The input (×20) is added to the pre-activation of the recurrent
neurons, one per bit; the loss is the squared error between their state at the last step and
the full pattern; the metric is the fraction of bits of the wrong sign (about 0.25 for a
network that only repeats the visible half of the cue).

The plastic network stores the patterns in its Hebbian trace within the episode; the
non-plastic one has only its hidden state, and cannot. Batched: B episodes per step.

Writes to --out: errors.png (both learning curves), trace.png (the Hebbian trace at the end of
one episode: the stored patterns' outer products), recording.png (that episode's trace over
time, recorded by tp.inspect), checkpoint.pt (resume with --resume).
"""

import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torchplastic as tp  # noqa: E402
from _common import add_common_args, load_checkpoint, progress, save_checkpoint, setup  # noqa: E402

SHOW, GAP, REPEATS, INPUT_SCALE = 6, 4, 2, 20.0


def make_episode(batch, generator, device, bits=100, patterns_per_episode=5):
    """inputs [T, B, bits] and target [B, bits] of a batch of episodes (module docstring)."""
    BITS, PATTERNS = bits, patterns_per_episode
    T = REPEATS * PATTERNS * (SHOW + GAP) + SHOW
    half = torch.cat([torch.ones(BITS // 2), -torch.ones(BITS - BITS // 2)])
    # [B, PATTERNS, BITS]: a random permutation of the half/half vector per pattern.
    order = torch.argsort(torch.rand(batch, PATTERNS, BITS, generator=generator), dim=-1)
    patterns = half[order]
    inputs = torch.zeros(T, batch, BITS)
    t = 0
    for _ in range(REPEATS):
        shown = torch.argsort(torch.rand(batch, PATTERNS, generator=generator), dim=-1)
        for k in range(PATTERNS):
            p = patterns[torch.arange(batch), shown[:, k]]
            inputs[t:t + SHOW] = p
            t += SHOW + GAP
    probe = torch.randint(PATTERNS, (batch,), generator=generator)
    target = patterns[torch.arange(batch), probe]
    hidden_bits = torch.argsort(torch.rand(batch, BITS, generator=generator), dim=-1)[:, :BITS // 2]
    cue = target.clone()
    cue.scatter_(1, hidden_bits, 0.0)
    inputs[t:t + SHOW] = cue
    return inputs.to(device), target.to(device)


class InputAsDrive(torch.nn.Module):
    """The input added to the pre-activation, ×20, as in the paper: a fixed W_ih = 20·I."""

    def freeze(self, weight):
        with torch.no_grad():
            weight.copy_(INPUT_SCALE * torch.eye(weight.shape[0]))
        weight.requires_grad_(False)


class PlasticNet(InputAsDrive):
    def __init__(self, bits=100):
        super().__init__()
        self.rnn = tp.PlasticRNN(bits, bits, bias=False, rule="hebb", alpha="connection", eta="scalar")
        self.freeze(self.rnn.weight_ih)

    def forward(self, inputs):
        out, state = self.rnn(inputs)
        return out[-1], state


class PlainNet(InputAsDrive):
    """A non-plastic RNN of the same size: the same neurons and W_hh, no trace."""

    def __init__(self, bits=100):
        super().__init__()
        self.rnn = torch.nn.RNN(bits, bits, bias=False, nonlinearity="tanh")
        self.freeze(self.rnn.weight_ih_l0)

    def forward(self, inputs):
        out, _ = self.rnn(inputs)
        return out[-1], None


def sign_error(out, target):
    return (out.sign() != target).float().mean().item()


def evaluate(model, batches, generator, batch, device, bits, patterns):
    model.eval()
    errors = []
    with torch.no_grad():
        for _ in range(batches):
            inputs, target = make_episode(batch, generator, device, bits, patterns)
            errors.append(sign_error(model(inputs)[0], target))
    model.train()
    return sum(errors) / len(errors)


def plot(out_dir, history, trace, first_pattern, bits, batch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, color in (("plastic", "tab:blue"), ("non-plastic", "tab:orange")):
        e = history[name]
        k = max(1, len(e) // 50)
        smooth = [sum(e[max(0, i - k):i + 1]) / len(e[max(0, i - k):i + 1]) for i in range(len(e))]
        ax.plot(range(1, len(e) + 1), smooth, label=name, color=color)
    ax.axhline(0.25, color="gray", ls=":", lw=1, label="repeats the cue (0.25)")
    ax.set_xlabel("episode batch")
    ax.set_ylabel(f"sign error ({bits} bits)")
    ax.set_ylim(0, 0.6)
    ax.set_title(f"Pattern memorization, batch of {batch} episodes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "errors.png"), dpi=110)
    plt.close(fig)

    # Neurons sorted by the first stored pattern: its outer product shows as four blocks.
    order = torch.argsort(first_pattern)
    shown = trace[order][:, order]
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    lim = shown.abs().max().item()
    im = ax.imshow(shown, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title("Hebbian trace after one episode,\nneurons sorted by the first stored pattern")
    ax.set_xlabel("presynaptic neuron")
    ax.set_ylabel("postsynaptic neuron")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "trace.png"), dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, default_out="out/pattern")
    ap.add_argument("--episodes", type=int, default=2000, help="training steps, each a batch of episodes")
    ap.add_argument("--batch", type=int, default=32, help="episodes per step")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    ap.add_argument("--eval-batches", type=int, default=10, help="fresh batches for the final figures")
    ap.add_argument("--bits", type=int, default=100,
                    help="bits per pattern, and so neurons (default: 100; the paper's headline: 1000)")
    ap.add_argument("--patterns", type=int, default=5, help="patterns per episode (default: 5)")
    ap.add_argument("--minutes", type=float, default=None, help="stop training after this long")
    args = ap.parse_args()
    device = setup(args)
    if args.bits < 2 or args.patterns < 1:
        raise SystemExit(f"--bits: expected at least 2, --patterns at least 1; got {args.bits}, {args.patterns}")
    episode_kw = dict(bits=args.bits, patterns_per_episode=args.patterns)

    nets = {"plastic": PlasticNet(args.bits).to(device), "non-plastic": PlainNet(args.bits).to(device)}
    opts = {k: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=args.lr)
            for k, m in nets.items()}
    history = {k: [] for k in nets}
    start_episode, elapsed = 0, 0.0
    gen = torch.Generator().manual_seed(args.seed)
    ckpt = os.path.join(args.out, "checkpoint.pt")
    if args.resume:
        state = load_checkpoint(ckpt, nets, opts, {"episodes": gen})
        history, start_episode, elapsed = state["history"], state["episode"], state["elapsed"]

    t0 = time.time() - elapsed

    def save():
        save_checkpoint(ckpt, nets, opts, {"episodes": gen}, history=history, episode=episodes_done,
                        elapsed=time.time() - t0, args=vars(args))

    bar = progress(range(start_episode, args.episodes), initial=start_episode, total=args.episodes,
                   desc="pattern")
    episodes_done = start_episode
    for episode in bar:
        if args.minutes is not None and time.time() - t0 > 60 * args.minutes:
            break
        inputs, target = make_episode(args.batch, gen, device, **episode_kw)
        for name, net in nets.items():
            out, _ = net(inputs)
            loss = (out - target).square().mean()
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
            history[name].append(sign_error(out.detach(), target))
        bar.set_postfix(plastic=f"{history['plastic'][-1]:.3f}", plain=f"{history['non-plastic'][-1]:.3f}")
        history.setdefault("seconds", []).append(time.time() - t0)
        episodes_done = episode + 1
        if episodes_done % args.save_every == 0:
            save()
    bar.close()
    if episodes_done % args.save_every:  # the last episodes, when the loop did not save them
        save()
    seconds = time.time() - t0

    eval_gen = torch.Generator().manual_seed(10_000 + args.seed)
    final = {k: evaluate(m, args.eval_batches, eval_gen, args.batch, device, args.bits, args.patterns)
             for k, m in nets.items()}
    # One episode looked into with tp.inspect: the trace every 2 steps (the last one is step
    # 106, the end), its norm every step.
    with torch.no_grad(), tp.inspect.record(nets["plastic"], every=2) as rec:
        inputs, _ = make_episode(1, torch.Generator().manual_seed(args.seed), device, **episode_kw)
        nets["plastic"](inputs)
    recording = rec["rnn"][0]
    tp.inspect.plot(recording, os.path.join(args.out, "recording.png"),
                    title="Hebbian trace over one episode (tp.inspect)")
    plot(args.out, history, recording.trace[-1, 0].cpu(), inputs[0, 0].cpu(), args.bits, args.batch)
    print(f"pattern memorization: plastic error {final['plastic']:.3f}, non-plastic error "
          f"{final['non-plastic']:.3f} ({episodes_done} episodes, {seconds:.0f} s)")


if __name__ == "__main__":
    main()
