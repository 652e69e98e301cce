#!/usr/bin/env python3
"""Omniglot N-way 1-shot classification with a plastic output layer (Miconi et al. 2018).

Each episode shows N images of N new classes, one each, with their labels, then a query image
of one of them without its label. A small convolutional embedding feeds a plastic layer whose
output neurons receive the label on the support steps: the Hebbian trace binds each class's
embedding to its label neuron within the episode, and the query's output names the class.
The embedding, the layer's weights, α and η are learned across episodes.

Data: ../shared/data/omniglot (the two background subsets; override with --data; nothing is
downloaded). Characters are split into training and held-out characters; each rotation by 90°
is a class of its own. Reports N-way 1-shot accuracy on held-out characters.
"""

import argparse
import io
import math
import os
import sys
import time
import zipfile

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torchplastic as tp  # noqa: E402
from _common import add_common_args, load_checkpoint, progress, save_checkpoint, setup  # noqa: E402

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "omniglot")
SIDE = 28


def load_characters(data_dir, cache):
    """[characters, 20, SIDE, SIDE] float images (1 = ink), read from the zips once, cached."""
    if os.path.exists(cache):
        return torch.load(cache)
    from PIL import Image
    zips = sorted(f for f in os.listdir(data_dir) if f.endswith(".zip"))
    if not zips:
        raise SystemExit(f"--data: no Omniglot zip files in {data_dir}")
    chars = {}
    for name in zips:
        with zipfile.ZipFile(os.path.join(data_dir, name)) as z:
            for entry in sorted(z.namelist()):
                parts = entry.split("/")
                if not entry.endswith(".png") or len(parts) < 4:
                    continue
                key = (parts[-3], parts[-2])  # (alphabet, character): subsets share some
                img = Image.open(io.BytesIO(z.read(entry))).convert("L").resize((SIDE, SIDE), Image.BILINEAR)
                pixels = torch.from_numpy(np.asarray(img, dtype=np.float32).copy())
                chars.setdefault(key, {})[parts[-1]] = 1.0 - pixels / 255.0
    images = torch.stack([torch.stack([d[k] for k in sorted(d)][:20]) for _, d in sorted(chars.items()) if len(d) >= 20])
    torch.save(images, cache)
    return images


def with_rotations(chars):
    """[C, 20, S, S] → [4C, 20, S, S]: each rotation by 90° is a new class."""
    return torch.cat([torch.rot90(chars, k, dims=(2, 3)) for k in range(4)])


def episodes(classes, ways, batch, generator):
    """images [ways + 1, B, 1, S, S], support labels [ways + 1, B, ways], query targets [B]."""
    C = classes.shape[0]
    picked = torch.stack([torch.randperm(C, generator=generator)[:ways] for _ in range(batch)])        # [B, ways]
    drawings = torch.stack([torch.randperm(20, generator=generator)[:2] for _ in range(batch * ways)]).view(batch, ways, 2)
    order = torch.stack([torch.randperm(ways, generator=generator) for _ in range(batch)])             # label of each class
    target = torch.randint(ways, (batch,), generator=generator)                                        # which class is queried
    support = classes[picked, drawings[..., 0]]                                                        # [B, ways, S, S]
    query = classes[picked[torch.arange(batch), target], drawings[torch.arange(batch), target, 1]]     # [B, S, S]
    images = torch.cat([support.transpose(0, 1), query[None]])[:, :, None]
    labels = torch.zeros(ways + 1, batch, ways)
    labels[torch.arange(ways)[:, None], torch.arange(batch)[None], order.t()] = 1.0
    return images, labels, order[torch.arange(batch), target]


class OneShot(nn.Module):
    def __init__(self, ways, channels=64, label_scale=10.0, eta_init=0.1):
        super().__init__()
        layers, c = [], 1
        for _ in range(4):
            layers += [nn.Conv2d(c, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2)]
            c = channels
        self.embed = nn.Sequential(*layers, nn.Flatten())       # 28 → 14 → 7 → 3 → 1: [*, channels]
        self.plastic = tp.PlasticLinear(channels, ways, rule="hebb", activation="identity",
                                        alpha="connection", eta="scalar", alpha_init=0.1, eta_init=eta_init)
        self.label_scale = label_scale

    def forward(self, images, labels):
        T, B = images.shape[:2]
        x = self.embed(images.flatten(0, 1)).view(T, B, -1)
        # The label enters the pre-activation of the output neurons on the support steps.
        z = nn.functional.linear(x, self.plastic.weight, self.plastic.bias) + self.label_scale * labels
        y, _ = tp.functional.plastic_scan(z, self.plastic.alpha, self.plastic.eta, None, x=x,
                                          rule="hebb", activation="identity")
        return y[-1]  # the query's output: one logit per label


def accuracy(model, classes, ways, batches, batch, generator, device):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for _ in range(batches):
            images, labels, target = episodes(classes, ways, batch, generator)
            logits = model(images.to(device), labels.to(device))
            correct += (logits.argmax(-1).cpu() == target).sum().item()
            total += batch
    model.train()
    return correct / total


def plot(path, history):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    steps, train, held = zip(*history)
    ax.plot(steps, train, label="training characters")
    ax.plot(steps, held, label="held-out characters")
    ax.set_xlabel("training step (batch of episodes)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Omniglot 1-shot with a plastic output layer")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, default_out="out/omniglot")
    ap.add_argument("--data", default=DEFAULT_DATA, help="folder with the Omniglot zip files")
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8000, help="training steps (stops earlier after --minutes)")
    ap.add_argument("--minutes", type=float, default=18.0, help="stop training after this long")
    ap.add_argument("--batch", type=int, default=32, help="episodes per step")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam's initial learning rate, decayed to 0 "
                    "along a cosine over the run (whichever of --steps and --minutes ends it first)")
    ap.add_argument("--eta-init", type=float, default=None,
                    help="the trace's initial rate η (default: 0.5 / ways: the first label's binding "
                         "still has (1 − η)^ways ≈ 60%% of its strength at the query)")
    ap.add_argument("--held-out", type=float, default=0.2, help="fraction of characters held out")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-batches", type=int, default=100,
                    help="batches of held-out episodes for the final figure (default: 100, 3200 episodes)")
    args = ap.parse_args()
    device = setup(args)

    chars = load_characters(args.data, os.path.join(args.out, "omniglot_28.pt"))
    perm = torch.randperm(len(chars), generator=torch.Generator().manual_seed(1234))  # fixed split
    n_held = int(round(args.held_out * len(chars)))
    held, train = with_rotations(chars[perm[:n_held]]), with_rotations(chars[perm[n_held:]])

    model = OneShot(args.ways, eta_init=args.eta_init or 0.5 / args.ways).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    history, start, elapsed = [], 0, 0.0
    gen = torch.Generator().manual_seed(args.seed)
    ckpt = os.path.join(args.out, "checkpoint.pt")
    if args.resume:
        state = load_checkpoint(ckpt, {"model": model}, {"model": opt}, {"episodes": gen})
        history, start, elapsed = state["history"], state["step"], state["elapsed"]
    t0 = time.time() - elapsed

    def save():
        save_checkpoint(ckpt, {"model": model}, {"model": opt}, {"episodes": gen}, history=history,
                        step=steps_done, elapsed=time.time() - t0, args=vars(args))

    bar = progress(range(start, args.steps), initial=start, total=args.steps, desc="omniglot")
    steps_done = start
    for step in bar:
        if time.time() - t0 > 60 * args.minutes:
            break
        # The run's progress is how far it is through its steps or its minutes, whichever is
        # further, so that the learning rate reaches 0 however the run ends.
        done = max(step / args.steps, (time.time() - t0) / (60 * args.minutes))
        for group in opt.param_groups:
            group["lr"] = 0.5 * args.lr * (1 + math.cos(math.pi * min(done, 1.0)))
        images, labels, target = episodes(train, args.ways, args.batch, gen)
        logits = model(images.to(device), labels.to(device))
        loss = nn.functional.cross_entropy(logits, target.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps_done = step + 1
        if steps_done % args.eval_every == 0 or steps_done == args.steps:
            eval_gen = torch.Generator().manual_seed(7)
            history.append((steps_done, accuracy(model, train, args.ways, 5, args.batch, eval_gen, device),
                            accuracy(model, held, args.ways, 5, args.batch, eval_gen, device)))
            bar.set_postfix(held_out=f"{history[-1][2]:.3f}")
        if steps_done % args.save_every == 0:
            save()
    bar.close()
    if steps_done % args.save_every:  # the last steps, when the loop did not save them
        save()
    seconds = time.time() - t0
    final = accuracy(model, held, args.ways, args.eval_batches, args.batch, torch.Generator().manual_seed(99), device)
    if history:
        plot(os.path.join(args.out, "accuracy.png"), history)
    print(f"omniglot: {args.ways}-way 1-shot accuracy on held-out characters {final:.3f} "
          f"({steps_done} steps of {args.batch} episodes, {seconds:.0f} s)")


if __name__ == "__main__":
    main()
