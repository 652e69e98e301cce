#!/usr/bin/env python3
"""Continual learning without replay on Split digits: five tasks of two classes each ({0, 1},
{2, 3}, ..., {8, 9}; scikit-learn's bundled 8×8 digits) learned one after another, a plain
network against one whose output layer is plastic, in the style of Thangarasa, Miconi & Taylor
2020 ("Enabling continual learning with differentiable Hebbian plasticity").

Both networks are an MLP (64 → --hidden, ReLU) and a 10-way sigmoid output layer trained with
one-vs-rest binary cross-entropy; each task is trained for --epochs and never seen again. The
plastic network's output layer is a tp.PlasticLinear whose Hebbian trace is a slow memory
carried through all of training: each mini-batch is one sequence of its samples, and after a
sample's output is computed the trace of its label's row grows by that output times the hidden
activity (rule "modulated" with external neuromodulation m = the one-hot label; clipped at
±1). The logits read (W + α ⊙ H) h, with W, b and α learned by backpropagation. At test time
the modulation is zero: the trace is read, not written. Where Thangarasa et al. decay the trace
towards the label's outer product with a learned rate η, this trace accumulates without decay
and is bounded by clipping (rule "modulated" has no η).

Scenarios (--scenario): "task" (task-incremental: the task is known at test time and the
prediction is the better of its two classes) or "class" (class-incremental: all ten classes
compete), the harder one.

Prints `continual: plastic average accuracy X (forgetting F), plain Y (forgetting G) after 5
tasks (scenario, N seeds)`: the accuracy on every task's test set after the last task, averaged
over tasks and seeds, and the forgetting, the mean over the first four tasks of the best
accuracy a task had during training minus its final one. Writes to --out: accuracy.png (each
task's test accuracy over training, both networks) and checkpoint.pt, written after every epoch
of every run: --resume continues from there, even after SIGKILL, with no completed epoch lost.
"""

import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torchplastic as tp  # noqa: E402
from _common import add_common_args, load_checkpoint, progress, save_checkpoint, setup  # noqa: E402

TASKS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


def load_split_digits(seed, device):
    """Train and test sets of the 8×8 digits (pixels scaled to [0, 1]), 70/30 per class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        cut = int(0.7 * len(idx))
        train.append(idx[:cut])
        test.append(idx[cut:])
    train, test = torch.cat(train), torch.cat(test)
    return (x[train].to(device), y[train].to(device)), (x[test].to(device), y[test].to(device))


class Network(nn.Module):
    """MLP → 10 sigmoid outputs; the output layer plastic or not."""

    def __init__(self, hidden, plastic, alpha_init=1.0, scaling=1.0):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU())
        self.plastic = plastic
        if plastic:
            self.head = tp.PlasticLinear(hidden, 10, rule="modulated", modulation="external",
                                         activation="sigmoid", clip=None,
                                         synaptic_scaling=scaling, alpha_init=alpha_init)
        else:
            self.head = nn.Linear(hidden, 10)
        self.trace = None  # the plastic head's state, carried through training

    def forward(self, x, labels=None):
        """Outputs [N, 10] in (0, 1). With labels, the plastic trace learns from the batch."""
        h = self.body(x)
        if not self.plastic:
            return torch.sigmoid(self.head(h))
        # The batch as one sequence of N steps (B = 1): each sample reads the trace as the
        # samples before it left it.
        m = torch.zeros(h.shape[0], 1, 10, device=x.device)
        if labels is not None:
            m[:, 0] = nn.functional.one_hot(labels, 10).float()
        y, state = self.head(h.unsqueeze(1), self.trace, modulation=m)
        if labels is not None:
            self.trace = state.detach()
        return y.squeeze(1)


@torch.no_grad()
def accuracies(model, test, scenario):
    """Test accuracy on each task."""
    x, y = test
    out = model(x)  # no labels: the trace is only read
    result = []
    for task in TASKS:
        mask = (y == task[0]) | (y == task[1])
        scores = out[mask]
        if scenario == "task":
            pred = torch.tensor(task, device=x.device)[scores[:, list(task)].argmax(1)]
        else:
            pred = scores.argmax(1)
        result.append((pred == y[mask]).float().mean().item())
    return result


def train_sequence(model, opt, train, test, args, generator, run, save):
    """Trains on the tasks in order, args.epochs each, from where `run` (the run's progress:
    epochs done, optimizer steps, the history of (step, accuracies) after every epoch) says;
    appends to run["history"] and calls save() every --save-every epochs."""
    x, y = train
    for epoch in range(run["epochs"], len(TASKS) * args.epochs):
        task = TASKS[epoch // args.epochs]
        idx = torch.nonzero((y == task[0]) | (y == task[1])).flatten()
        order = idx[torch.randperm(len(idx), generator=generator).to(idx.device)]
        for start in range(0, len(order), args.batch):
            b = order[start:start + args.batch]
            out = model(x[b], y[b])
            # The loss reads the current task's two outputs only: the others are not pushed
            # towards zero by samples they never see (the usual "labels trick").
            target = nn.functional.one_hot(y[b], 10).float()
            loss = nn.functional.binary_cross_entropy(out[:, list(task)], target[:, list(task)])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run["step"] += 1
        run["history"].append((run["step"], accuracies(model, test, args.scenario)))
        run["epochs"] = epoch + 1
        if run["epochs"] % args.save_every == 0:
            save()


def summary(final, best):
    """Average final accuracy over tasks, and the forgetting of the first four tasks."""
    average = sum(final) / len(final)
    forgetting = sum(b - f for b, f in zip(best[:-1], final[:-1])) / (len(final) - 1)
    return average, forgetting


def plot(path, curves, scenario):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, name, title in ((axes[0], "plain", "plain MLP"), (axes[1], "plastic", "plastic output layer")):
        steps = [s for s, _ in curves[name]]
        for k, task in enumerate(TASKS):
            ax.plot(steps, [acc[k] for _, acc in curves[name]], label=f"task {task[0]}/{task[1]}")
        ax.set_title(f"{title} ({scenario}-incremental, seed 0)")
        ax.set_xlabel("training step (tasks in order)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[1].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, default_out="runs/continual")
    ap.add_argument("--scenario", default="class", choices=["task", "class"],
                    help="task- or class-incremental evaluation (default: class)")
    ap.add_argument("--seeds", type=int, default=5, help="runs per network, seeds seed .. seed+N-1")
    ap.add_argument("--epochs", type=int, default=10, help="epochs per task (default: 10)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--alpha-init", type=float, default=1.0,
                    help="the plastic layer's α starts at alpha_init · U(0, 1) (default: 1)")
    ap.add_argument("--scaling", type=float, default=1.0,
                    help="bound on each class's trace row norm, synaptic scaling (default: 1)")
    args = ap.parse_args()
    device = setup(args)

    checkpoint = os.path.join(args.out, "checkpoint.pt")
    results = {"plain": [], "plastic": []}  # per seed: (final accuracies, best accuracies)
    curves = {"plain": [], "plastic": []}   # seed 0's (step, accuracies) after every epoch
    saved = None
    if args.resume:
        saved = load_checkpoint(checkpoint, {}, {})
        results, curves = saved["results"], saved["curves"]
    runs = [(s, name) for s in range(args.seeds) for name in ("plain", "plastic")]
    for s, name in progress(runs, desc="runs"):
        if len(results[name]) > s:
            continue  # done before --resume
        seed = args.seed + s
        torch.manual_seed(seed)
        train, test = load_split_digits(seed, device)
        model = Network(args.hidden, plastic=name == "plastic", alpha_init=args.alpha_init,
                        scaling=args.scaling).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        generator = torch.Generator().manual_seed(seed)
        run = {"seed": seed, "name": name, "epochs": 0, "step": 0, "history": []}
        interrupted = saved.get("run") if saved is not None else None
        if interrupted is not None and (interrupted["seed"], interrupted["name"]) == (seed, name):
            # this run was stopped: continue it where its last saved epoch left it
            load_checkpoint(checkpoint, {"model": model}, {"model": opt}, {"epochs": generator})
            run = interrupted
            if run["trace"] is not None:
                model.trace = tp.PlasticState(*(None if t is None else t.to(device) for t in run["trace"]))

        def save():
            run["trace"] = model.trace
            save_checkpoint(checkpoint, {"model": model}, {"model": opt}, {"epochs": generator},
                            results=results, curves=curves, run=run, args=vars(args))

        train_sequence(model, opt, train, test, args, generator, run, save)
        final = run["history"][-1][1]
        best = [max(acc[k] for _, acc in run["history"]) for k in range(len(TASKS))]
        results[name].append((final, best))
        if s == 0:
            curves[name] = run["history"]
        save_checkpoint(checkpoint, {}, {}, results=results, curves=curves, run=None, args=vars(args))
    plot(os.path.join(args.out, "accuracy.png"), curves, args.scenario)

    line = {}
    for name in ("plastic", "plain"):
        pairs = [summary(final, best) for final, best in results[name]]
        n = len(pairs)
        mean = [sum(p[i] for p in pairs) / n for i in range(2)]
        spread = [(max(p[i] for p in pairs) - min(p[i] for p in pairs)) / 2 for i in range(2)]
        line[name] = f"{mean[0]:.3f} ± {spread[0]:.3f} (forgetting {mean[1]:.3f} ± {spread[1]:.3f})"
    print(f"continual: plastic average accuracy {line['plastic']}, plain {line['plain']} after "
          f"{len(TASKS)} tasks ({args.scenario}-incremental, {args.seeds} seeds; ± half the range)")


if __name__ == "__main__":
    main()
