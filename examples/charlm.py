#!/usr/bin/env python3
"""Character-level language model on tiny Shakespeare (Backpropamine's plastic LSTM, Miconi et
al. 2019): a plastic LSTM against a torch.nn.LSTM with the same number of parameters, each
trained for the same wall-clock time.

Both models are an embedding, one recurrent layer and a linear decoder. The plastic one is a
tp.PlasticLSTM with the retroactive rule (neuromodulated eligibility traces) and fan-out
neuromodulation, its trace clipped at 1; the baseline's hidden size is chosen so that it has as
many parameters. The text (../shared/data/tinyshakespeare/input.txt) is split as usual: the
first 90% for training, the last 10% for validation, the figure bits per character (the mean
cross-entropy in base 2) on the validation part.

Training is truncated backpropagation through time: the training text is cut into --batch
streams, each step reads the next --bptt characters of every stream, and the state (the plastic
traces included) is carried from one step to the next, cut from the graph. The two models take
turns, the one that has used less time training going next, until each has had half of
--minutes. Validation is the same streaming over the validation text.

Prints `charlm: plastic X bpc, lstm Y bpc (validation, N1 and N2 steps, S s)` and 300 sampled
characters from each model. Writes to --out: bpc.png (both validation curves against training
time), and checkpoint_plastic.pt and checkpoint_lstm.pt, each model's whole state (weights,
optimizer, the carried recurrent state, its time and steps) after every step: --resume continues
where a run was stopped, even by SIGKILL, with no completed step lost.
"""

import argparse
import math
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torchplastic as tp  # noqa: E402
from _common import add_common_args, load_checkpoint, progress, save_checkpoint, setup  # noqa: E402

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                            "tinyshakespeare", "input.txt")


class PlasticCharLM(nn.Module):
    """Embedding → PlasticLSTM (retroactive, fan-out neuromodulation) → decoder."""

    def __init__(self, vocab, embed, hidden):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = tp.PlasticLSTM(embed, hidden, rule="retroactive", modulation="fanout",
                                  alpha_init=0.01, eta_init=0.1)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, chars, state=None):
        out, state = self.rnn(self.embed(chars), state)
        return self.decoder(out), state


class LSTMCharLM(nn.Module):
    """Embedding → torch.nn.LSTM → decoder."""

    def __init__(self, vocab, embed, hidden):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, chars, state=None):
        out, state = self.rnn(self.embed(chars), state)
        return self.decoder(out), state


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def matching_lstm(vocab, embed, target):
    """The LSTMCharLM with the hidden size whose parameter count is nearest `target`."""
    best = min(range(8, 4096), key=lambda h: abs(parameter_count_of_lstm(vocab, embed, h) - target))
    return LSTMCharLM(vocab, embed, best)


def parameter_count_of_lstm(vocab, embed, hidden):
    # embedding, two LSTM weight matrices and two biases, decoder
    return vocab * embed + 4 * hidden * (embed + hidden + 2) + hidden * vocab + vocab


def detach(state):
    if state is None:
        return None
    if isinstance(state, tp.PlasticState):
        return state.detach()
    return tuple(s.detach() for s in state)


def to_device(state, device):
    """A carried state (a PlasticState, an LSTM's (h, c), or None) on `device`."""
    if state is None:
        return None
    moved = [None if t is None else t.to(device) for t in state]
    return tp.PlasticState(*moved) if isinstance(state, tp.PlasticState) else tuple(moved)


def streams(data, batch):
    """The text as `batch` contiguous streams, [L, batch]."""
    length = len(data) // batch
    return data[:length * batch].view(batch, length).t().contiguous()


@torch.no_grad()
def bits_per_char(model, data, batch, bptt, device):
    """Mean cross-entropy in bits over `data`, read as `batch` streams with the state carried."""
    model.eval()
    text = streams(data, batch).to(device)
    state, total, count = None, 0.0, 0
    for start in range(0, text.shape[0] - 1, bptt):
        inp = text[start:start + bptt]
        target = text[start + 1:start + 1 + bptt]
        inp = inp[:target.shape[0]]
        logits, state = model(inp, state)
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                             reduction="sum").item()
        count += target.numel()
    model.train()
    return total / count / math.log(2)


@torch.no_grad()
def sample(model, prime, length, itos, stoi, device, temperature, generator):
    model.eval()
    chars = torch.tensor([stoi[c] for c in prime], device=device).view(-1, 1)
    logits, state = model(chars)
    out = []
    for _ in range(length):
        probs = torch.softmax(logits[-1, 0].float() / temperature, dim=-1).cpu()
        nxt = torch.multinomial(probs, 1, generator=generator).item()
        out.append(itos[nxt])
        logits, state = model(torch.tensor([[nxt]], device=device), state)
    model.train()
    return prime + "".join(out)


def plot(path, history, eval_chars):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, label in (("plastic", "plastic LSTM (retroactive, fan-out)"), ("lstm", "torch.nn.LSTM")):
        # From the second validation on: the first, after one step, is near log2(65) and would
        # flatten the rest of the curve.
        points = history[name][1:] or history[name]
        if points:
            ax.plot([p[0] / 60 for p in points], [p[2] for p in points], marker=".", label=label)
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel(f"validation bits per character\n(first {eval_chars:,} characters)")
    ax.set_title("tiny Shakespeare, same parameters and time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, default_out="runs/charlm")
    ap.add_argument("--data", default=DEFAULT_DATA, help="the text (tiny Shakespeare's input.txt)")
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="training time of both models together, half each (default: 10)")
    ap.add_argument("--max-steps", type=int, default=None, help="stop each model after this many steps")
    ap.add_argument("--hidden", type=int, default=None,
                    help="hidden size of the plastic LSTM (default: 128 on the CPU, 512 on CUDA)")
    ap.add_argument("--embed", type=int, default=64, help="embedding size (default: 64)")
    ap.add_argument("--batch", type=int, default=None, help="streams per step (default: 32 on the CPU, 64 on CUDA)")
    ap.add_argument("--bptt", type=int, default=64, help="characters per step and stream (default: 64)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-every", type=float, default=30.0,
                    help="seconds of training between validations of a model (default: 30)")
    ap.add_argument("--eval-chars", type=int, default=30000,
                    help="validation characters used during training; the final figure uses all (default: 30000)")
    ap.add_argument("--sample", type=int, default=300, help="characters to sample from each model")
    ap.add_argument("--temperature", type=float, default=0.8)
    args = ap.parse_args()
    device = setup(args)
    cuda = device.type == "cuda"
    hidden = args.hidden or (512 if cuda else 128)
    batch = args.batch or (64 if cuda else 32)

    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    itos = sorted(set(text))
    stoi = {c: i for i, c in enumerate(itos)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    split = int(0.9 * len(data))
    train, valid = data[:split], data[split:]
    train_streams = streams(train, batch).to(device)

    models = {"plastic": PlasticCharLM(len(itos), args.embed, hidden).to(device)}
    models["lstm"] = matching_lstm(len(itos), args.embed, parameter_count(models["plastic"])).to(device)
    optimizers = {k: torch.optim.Adam(m.parameters(), lr=args.lr) for k, m in models.items()}
    spent = {k: 0.0 for k in models}          # training seconds
    steps = {k: 0 for k in models}
    history = {k: [] for k in models}         # (seconds, steps, validation bpc)
    states = {k: None for k in models}        # the recurrent state carried from step to step
    checkpoints = {k: os.path.join(args.out, f"checkpoint_{k}.pt") for k in models}

    def save(k):  # one file per model: a step saves only the model that took it
        save_checkpoint(checkpoints[k], {k: models[k]}, {k: optimizers[k]}, spent=spent[k],
                        steps=steps[k], history=history[k], state=states[k], args=vars(args))

    if args.resume:
        for k in models:
            if os.path.exists(checkpoints[k]):  # a model that had not stepped yet starts afresh
                saved = load_checkpoint(checkpoints[k], {k: models[k]}, {k: optimizers[k]})
                spent[k], steps[k], history[k] = saved["spent"], saved["steps"], saved["history"]
                states[k] = to_device(saved["state"], device)
    print(f"charlm: {len(text):,} characters ({len(itos)} distinct), {len(train):,} train / "
          f"{len(valid):,} validation; plastic LSTM H={hidden} ({parameter_count(models['plastic']):,} "
          f"parameters), torch.nn.LSTM H={models['lstm'].rnn.hidden_size} "
          f"({parameter_count(models['lstm']):,}); B={batch}, BPTT={args.bptt}, {device}")

    budget = 60.0 * args.minutes / 2
    positions = {k: steps[k] * args.bptt % max(train_streams.shape[0] - 1, 1) for k in models}
    last_eval = {k: (history[k][-1][0] if history[k] else -math.inf) for k in models}
    bar = progress(None, total=int(2 * budget), unit="s", desc="training (both models)",
                   bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s {postfix}")
    bar.update(int(sum(spent.values())))

    def done(k):
        return spent[k] >= budget or (args.max_steps is not None and steps[k] >= args.max_steps)

    while not all(done(k) for k in models):
        k = min((k for k in models if not done(k)), key=lambda k: spent[k])
        model, opt = models[k], optimizers[k]
        start = positions[k]
        if start + args.bptt + 1 > train_streams.shape[0]:
            start, states[k] = 0, None  # wrap around: a fresh state
        inp = train_streams[start:start + args.bptt]
        target = train_streams[start + 1:start + 1 + args.bptt]
        began = time.perf_counter()
        logits, state = model(inp, states[k])
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - began
        spent[k] += elapsed
        bar.update(elapsed)
        steps[k] += 1
        states[k] = detach(state)
        positions[k] = start + args.bptt
        if spent[k] - last_eval[k] >= args.eval_every or done(k):
            bpc = bits_per_char(model, valid[:args.eval_chars], batch, args.bptt, device)
            history[k].append((spent[k], steps[k], bpc))
            last_eval[k] = spent[k]
            bar.set_postfix({n: f"{h[-1][2]:.3f} bpc" for n, h in history.items() if h})
        if steps[k] % args.save_every == 0:
            save(k)
    bar.close()
    for k in models:
        if steps[k] % args.save_every:  # its last steps, when the loop did not save them
            save(k)
    plot(os.path.join(args.out, "bpc.png"), history, args.eval_chars)

    final = {k: bits_per_char(m, valid, batch, args.bptt, device) for k, m in models.items()}
    generator = torch.Generator().manual_seed(args.seed)
    for k, m in models.items():
        print(f"--- {k} sample ---")
        print(sample(m, "ROMEO:\n", args.sample, itos, stoi, device, args.temperature, generator))
    print(f"charlm: plastic {final['plastic']:.3f} bpc, lstm {final['lstm']:.3f} bpc (validation, "
          f"{steps['plastic']} and {steps['lstm']} steps, {sum(spent.values()):.0f} s)")


if __name__ == "__main__":
    main()
