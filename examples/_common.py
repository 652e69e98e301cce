"""What every example shares: the command line (--seed, --device, --out, --resume), progress
bars, and checkpoints."""

import os
import random

import torch


def add_common_args(parser, default_out):
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=["cpu", "cuda"], help="where to train (default: cuda if available)")
    parser.add_argument("--out", default=default_out, help="folder for plots and the checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def setup(args):
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    os.makedirs(args.out, exist_ok=True)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    progress.disable = args.no_progress
    return torch.device(args.device)


def progress(iterable, **kwargs):
    from tqdm import tqdm
    return tqdm(iterable, disable=getattr(progress, "disable", False), dynamic_ncols=True, **kwargs)


def save_checkpoint(path, models, optimizers, **extra):
    state = {"models": {k: m.state_dict() for k, m in models.items()},
             "optimizers": {k: o.state_dict() for k, o in optimizers.items()}, **extra}
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, models, optimizers):
    if not os.path.exists(path):
        raise SystemExit(f"--resume: no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    for k, m in models.items():
        m.load_state_dict(state["models"][k])
    for k, o in optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    return state
