"""What every example shares: the command line (--seed, --device, --out, --resume), progress
bars, and checkpoints."""

import ctypes
import os
import random
import sys

import torch


def add_common_args(parser, default_out):
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=["cpu", "cuda"], help="where to train (default: cuda if available)")
    parser.add_argument("--out", default=default_out, help="folder for plots and the checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in OUT")
    parser.add_argument("--save-every", type=int, default=1, metavar="N",
                        help="write the checkpoint every N steps and at the end (default: 1, after every "
                             "step, so that --resume after a kill loses no completed step)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def keep_freed_memory() -> bool:
    """Asks glibc to keep freed memory for the next allocation instead of returning it to the
    OS: by default, blocks above its mmap threshold (a few MB, such as a convolution's
    activations) are unmapped when freed and page-faulted in again, zeroed, at the next step,
    which on a CPU training loop can cost more system time than the computation. The same as
    MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set before the process starts. Returns
    whether it took effect (glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mmap_ok = libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    # -1: never trim (mallopt(3)). A finite threshold is exceeded by a step that frees more at
    # once, as an eager loop's backward frees what it kept (gigabytes: docs/training-fast.md),
    # and all of that would go back to the OS.
    trim_ok = libc.mallopt(M_TRIM_THRESHOLD, -1)
    return bool(mmap_ok and trim_ok)


def setup(args):
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.save_every < 1:
        raise SystemExit(f"--save-every: expected a positive number of steps, got {args.save_every}")
    keep_freed_memory()
    os.makedirs(args.out, exist_ok=True)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    progress.disable = args.no_progress
    return torch.device(args.device)


def progress(iterable, **kwargs):
    from tqdm import tqdm
    return tqdm(iterable, disable=getattr(progress, "disable", False), dynamic_ncols=True, **kwargs)


def save_checkpoint(path, models, optimizers, generators=None, **extra):
    """Writes the run's whole state: models, optimizers, the random generators (torch's, Python's,
    and those named in `generators`) and `extra`. The file is written beside `path` and renamed
    over it, so that a run killed at any moment, even by SIGKILL, leaves the previous checkpoint
    or this one, never a torn file. The examples call it after every step (--save-every): --resume
    then loses no completed step, and continues as the uninterrupted run would have."""
    state = {"models": {k: m.state_dict() for k, m in models.items()},
             "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
             "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None},
             "generators": {k: g.get_state() for k, g in (generators or {}).items()}, **extra}
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, models, optimizers, generators=None):
    """Restores what save_checkpoint wrote into `models`, `optimizers` and `generators`, and the
    global random generators; returns the whole state, `extra` included."""
    if not os.path.exists(path):
        raise SystemExit(f"--resume: no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    for k, m in models.items():
        m.load_state_dict(state["models"][k])
    for k, o in optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    for k, g in (generators or {}).items():
        g.set_state(state["generators"][k])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state
