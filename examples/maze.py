#!/usr/bin/env python3
"""The Backpropamine maze (Miconi et al., ICLR 2019), trained with A2C, batched.

A grid maze with walls around and pillars inside; an invisible reward location, new in each
episode; finding it gives +10 and teleports the agent to a random free cell, so the agent
profits from remembering where the reward was. Hitting a wall costs 0.1. The agent sees its
3×3 neighbourhood, a bias, the time, its previous reward and its previous action.

Compares four networks of the same hidden size: simple neuromodulation (rule ``modulated``),
retroactive neuromodulation (rule ``retroactive``), non-modulated plasticity (rule ``hebb``),
and a plain RNN with its hidden size raised to match their parameter count. Plots the mean
reward per episode (mean and spread over seeds) to --out/rewards.png, and prints each network's
mean reward per episode over the last tenth of training, averaged over seeds, with the lowest
and highest seed's in brackets. Completed runs go to
--out/curves.json; a run in progress is saved to --out/checkpoint_VARIANT_SEED.pt after every
episode, so that --resume continues it with no completed episode lost; --resume with a larger
--episodes extends finished runs the same way, as if they had been run that long from the
start. Runs go --jobs at a time, each in a process of its own.
"""

import argparse
import json
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torchplastic as tp  # noqa: E402
from _common import (add_common_args, keep_freed_memory, load_checkpoint, progress,  # noqa: E402
                     save_checkpoint, setup)

ACTIONS = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])  # up, down, left, right
INPUTS = 9 + 1 + 1 + 1 + len(ACTIONS)  # neighbourhood, bias, time, previous reward, previous action
REWARD, WALL_PENALTY = 10.0, 0.1
VARIANTS = ("modulated", "retroactive", "hebb", "rnn")


class Maze:
    """B mazes stepped together, on torch tensors. A cell is a flat index row * size + col,
    so that a move, a view and a wall test are each one indexing op."""

    def __init__(self, size, batch, generator, device):
        lab = torch.ones(size, size, dtype=torch.bool)
        lab[1:-1, 1:-1] = False
        for r in range(2, size - 1, 2):
            for c in range(2, size - 1, 2):
                lab[r, c] = True  # pillars
        centre = size // 2
        lab[centre, centre] = False
        self.batch, self.gen, self.device = batch, generator, device
        self.walls = lab.flatten().to(device)                     # [size * size]
        self.free = (~self.walls).nonzero().squeeze(1)             # [F] free cells
        self.centre = centre * size + centre
        rows, cols = torch.meshgrid(torch.arange(-1, 2), torch.arange(-1, 2), indexing="ij")
        self.neighbourhood = (rows * size + cols).flatten().to(device)  # [9], row by row
        self.moves = (ACTIONS[:, 0] * size + ACTIONS[:, 1]).to(device)

    def random_free(self, n):
        return self.free[torch.randint(len(self.free), (n,), generator=self.gen).to(self.device)]

    def reset(self):
        self.pos = torch.full((self.batch,), self.centre, device=self.device)
        self.goal = self.random_free(self.batch)
        same = self.goal == self.pos  # the reward is never at the start
        while same.any():
            self.goal[same] = self.random_free(int(same.sum()))
            same = self.goal == self.pos

    def view(self):
        """[B, 9] booleans: the walls of the 3×3 neighbourhood."""
        return self.walls[self.pos[:, None] + self.neighbourhood]

    def step(self, action):
        target = self.pos + self.moves[action]
        wall = self.walls[target]
        self.pos = torch.where(wall, self.pos, target)
        found = self.pos == self.goal
        reward = found * REWARD - wall * WALL_PENALTY
        if found.any():
            self.pos[found] = self.random_free(int(found.sum()))
        return reward


class Agent(nn.Module):
    """A recurrent core (plastic or plain) with policy and value heads, over sequences
    ``u [T, B, INPUTS]``: T = 1 to act, step by step; the whole episode at once to learn."""

    def __init__(self, variant, hidden, modulation="fanout"):
        super().__init__()
        if variant == "rnn":
            self.core = nn.RNN(INPUTS, hidden)
        else:
            kw = dict(rule=variant)
            if variant in ("modulated", "retroactive"):
                kw["modulation"] = modulation
            self.core = tp.PlasticRNN(INPUTS, hidden, **kw)
        self.policy = nn.Linear(hidden, len(ACTIONS))
        self.value = nn.Linear(hidden, 1)

    def forward(self, u, state=None):
        h, state = self.core(u, state)
        return self.policy(h), self.value(h).squeeze(-1), state


def matched_rnn_hidden(hidden, modulation="fanout"):
    """Hidden size of a plain RNN with about as many parameters as the plastic agents."""
    target = sum(p.numel() for p in Agent("modulated", hidden, modulation).parameters())
    h = hidden
    while sum(p.numel() for p in Agent("rnn", h + 1).parameters()) <= target:
        h += 1
    return h


def run_episode(agent, maze, steps, gamma, value_coef, entropy_coef, device):
    """One episode of B mazes, then its A2C loss. The agent acts step by step without autograd
    (the next input depends on the action sampled), and the episode's inputs, recorded, are then
    run through the agent again as one sequence: one fused plastic_scan forward and backward
    instead of a graph of `steps` single steps. The core's outputs are the same both ways, bit
    for bit; the heads', linear layers over other shapes, to rounding."""
    maze.reset()
    B = maze.batch
    u = torch.zeros(steps, B, INPUTS, device=device)  # the inputs, filled in as the agent acts
    u[:, :, 9] = 1.0                                                           # bias
    u[:, :, 10] = (torch.arange(steps, device=device) / steps)[:, None]        # time
    batch = torch.arange(B, device=device)
    state = None
    actions, rewards = [], []
    with torch.no_grad():
        for t in range(steps):
            u[t, :, :9] = maze.view()
            h, state = agent.core(u[t:t + 1], state)
            logits = agent.policy(h[0])
            # A sample of softmax(logits), by the Gumbel-max trick: −log of an Exp(1) draw is Gumbel.
            action = (logits - torch.empty_like(logits).exponential_().log_()).argmax(-1)
            reward = maze.step(action)
            actions.append(action)
            rewards.append(reward)
            if t + 1 < steps:  # what the agent sees next of its own step
                u[t + 1, :, 11] = reward
                u[t + 1, batch, 12 + action] = 1.0
    logits, values, _ = agent(u)  # [T, B, actions], [T, B]
    log_probs = logits.log_softmax(-1)
    chosen = log_probs.gather(-1, torch.stack(actions)[..., None]).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    returns, R = [], torch.zeros(B, device=device)
    for r in reversed(rewards):
        R = r + gamma * R
        returns.append(R)
    returns = torch.stack(returns[::-1])
    advantage = returns - values
    loss = (-(chosen * advantage.detach()).mean() + value_coef * advantage.square().mean()
            - entropy_coef * entropy.mean())
    return loss, torch.stack(rewards).sum(0).mean().item()


def train(variant, seed, args, device, checkpoint, bar_position=0):
    """One run: trains a fresh agent for args.episodes episodes, saving it to `checkpoint` (this
    variant and seed's) after every episode; with --resume, continues from there."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    hidden = args.hidden if variant != "rnn" else matched_rnn_hidden(args.hidden, args.modulation)
    agent = Agent(variant, hidden, args.modulation).to(device)
    opt = torch.optim.Adam(agent.parameters(), lr=args.lr)
    curve = []
    if args.resume and os.path.exists(checkpoint):  # interrupted, or --episodes raised: continue
        curve = load_checkpoint(checkpoint, {"agent": agent}, {"agent": opt}, {"maze": gen})["curve"]
    maze = Maze(args.size, args.batch, gen, device)
    for _ in progress(range(len(curve), args.episodes), initial=len(curve), total=args.episodes,
                      desc=f"{variant} seed {seed}", leave=False, position=bar_position):
        loss, reward = run_episode(agent, maze, args.steps, args.gamma, args.value_coef, args.entropy, device)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(agent.parameters(), 4.0)
        opt.step()
        curve.append(reward)
        if len(curve) % args.save_every == 0 or len(curve) == args.episodes:
            save_checkpoint(checkpoint, {"agent": agent}, {"agent": opt}, {"maze": gen}, curve=curve,
                            args=vars(args))
    return curve


def plot(path, curves, episodes):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    labels = {"modulated": "simple neuromodulation", "retroactive": "retroactive neuromodulation",
              "hebb": "non-modulated plasticity", "rnn": "plain RNN (matched parameters)"}
    for variant, runs in curves.items():
        r = torch.tensor(runs)  # [seeds, episodes]
        k = max(1, episodes // 25)
        smooth = torch.nn.functional.avg_pool1d(r[:, None], k, stride=1, padding=0).squeeze(1)
        x = torch.arange(smooth.shape[1]) + k
        mean = smooth.mean(0)
        ax.plot(x, mean, label=labels[variant])
        if r.shape[0] > 1:
            ax.fill_between(x, smooth.min(0).values, smooth.max(0).values, alpha=0.2)
    ax.set_xlabel("episode (batch of mazes)")
    ax.set_ylabel("reward per episode")
    ax.set_title("Backpropamine maze, A2C")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, default_out="out/maze")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--seeds", type=int, default=3, help="runs per variant (seed, seed+1, ...; default: 3)")
    ap.add_argument("--episodes", type=int, default=650,
                    help="training episodes per run (default: 650, about 17 min on 2 cores; "
                         "the paper's ordering, seeds apart, shows from about 1600)")
    ap.add_argument("--steps", type=int, default=200, help="time steps per episode")
    ap.add_argument("--batch", type=int, default=32, help="mazes per episode")
    ap.add_argument("--size", type=int, default=11, help="maze side, walls included")
    ap.add_argument("--hidden", type=int, default=100, help="hidden neurons of the plastic agents")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--gamma", type=float, default=0.9)
    ap.add_argument("--value-coef", type=float, default=0.1)
    ap.add_argument("--entropy", type=float, default=0.03)
    ap.add_argument("--modulation", default="fanout", choices=["fanout", "internal"],
                    help="the modulated networks' neuromodulation: one signal per network spread "
                         "over the neurons by learned weights (fanout, default), or the one signal "
                         "for all (internal, as Backpropamine's maze code)")
    ap.add_argument("--jobs", type=int, default=None,
                    help="runs trained at once, each in its own process (default: one per CPU core, 1 on CUDA)")
    args = ap.parse_args()
    device = setup(args)

    results_path = os.path.join(args.out, "curves.json")
    curves = {}  # variant → seed (a string, as JSON keys are) → reward per episode
    if args.resume and os.path.exists(results_path):
        with open(results_path) as f:
            curves = json.load(f)
    # A run stored with fewer episodes than asked for continues from its checkpoint (--episodes
    # raised on --resume); one with as many or more is done (its first --episodes are reported).
    seeds = [str(args.seed + s) for s in range(args.seeds)]  # as curves.json keys them
    jobs = [(v, int(k)) for v in args.variants for k in seeds
            if len(curves.get(v, {}).get(k, ())) < args.episodes]
    t0 = time.time()

    def done(variant, seed, curve):
        curves.setdefault(variant, {})[str(seed)] = curve
        with open(results_path, "w") as f:  # the runs done so far; --resume skips them
            json.dump(curves, f)

    workers = min(args.jobs or (1 if device.type == "cuda" else os.cpu_count() or 1), max(len(jobs), 1))
    if workers <= 1:
        for variant, seed in jobs:
            done(variant, seed, train(variant, seed, args, device, checkpoint_path(args, variant, seed)))
    else:
        # Each run in a process of its own, the cores shared out: a step of these small
        # networks is too short to keep two threads busy, two runs at once are not.
        import multiprocessing
        threads = max(1, (os.cpu_count() or 1) // workers)
        with multiprocessing.get_context("spawn").Pool(workers, initializer=init_worker,
                                                       initargs=(threads, args.no_progress)) as pool:
            for variant, seed, curve in pool.imap_unordered(run_job, [(v, s, args) for v, s in jobs]):
                done(variant, seed, curve)
            pool.close()  # let the workers exit on their own, not be terminated
            pool.join()

    runs = {v: [curves[v][k][:args.episodes] for k in seeds] for v in args.variants}
    plot(os.path.join(args.out, "rewards.png"), runs, args.episodes)
    tail = max(1, args.episodes // 10)
    finals = {v: [sum(r[-tail:]) / tail for r in rs] for v, rs in runs.items()}
    print("maze: mean reward over the last {} episodes: {} ({} runs of {} episodes, {:.0f} s)".format(
        tail, ", ".join(f"{v} {sum(f) / len(f):.1f} [{min(f):.1f}, {max(f):.1f}]" for v, f in finals.items()),
        sum(len(rs) for rs in runs.values()), args.episodes, time.time() - t0))


def checkpoint_path(args, variant, seed):
    return os.path.join(args.out, f"checkpoint_{variant}_{seed}.pt")


def init_worker(threads, no_progress):
    torch.set_num_threads(threads)
    keep_freed_memory()
    progress.disable = no_progress


def run_job(job):
    variant, seed, args = job
    import multiprocessing
    slot = multiprocessing.current_process()._identity[0] - 1  # the worker's line for its bar
    device = torch.device(args.device)
    return variant, seed, train(variant, seed, args, device, checkpoint_path(args, variant, seed), slot)


if __name__ == "__main__":
    main()
