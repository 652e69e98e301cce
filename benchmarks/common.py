"""Shared pieces of the benchmarks: the workload and the measurements."""

import os
import platform
import resource
import sys
import time

import torch

import torchplastic as tp


def cpu_model():
    """The CPU's model name as Linux reports it (/proc/cpuinfo), else the platform's word for it:
    benchmark figures are only comparable on the same kind of machine."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def recurrent_hebb_inputs(T, B, N, dtype=torch.float32, device="cpu", requires_grad=True, seed=0):
    """The benchmark workload of the issues: a recurrent hebb layer, α per connection, scalar η."""
    g = torch.Generator().manual_seed(seed)
    def t(*shape, scale=1.0, offset=0.0):
        x = (offset + scale * torch.randn(shape, generator=g)).to(device=device, dtype=dtype)
        return x.requires_grad_(requires_grad)
    return dict(z=t(T, B, N), alpha=t(N, N, scale=0.01), eta=t(1, 1, scale=0.0, offset=0.05),
                trace=None, weight=t(N, N, scale=N ** -0.5))


def run(fn, kw):
    kw = dict(kw)
    z, alpha, eta, trace = kw.pop("z"), kw.pop("alpha"), kw.pop("eta"), kw.pop("trace")
    return fn(z, alpha, eta, trace, **kw)


def forward_backward(fn, kw):
    y, state = run(fn, kw)
    (y.sum() + state.trace.sum()).backward()


def keep_freed_memory():
    """--keep-freed-memory: asks glibc to keep freed memory for the next allocation, as the
    examples do (examples/_common.py; README, "CPU training loops and glibc"). Returns whether
    it took effect."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    try:
        from _common import keep_freed_memory as keep
    finally:
        sys.path.pop(0)
    return keep()


KEEP_FREED_MEMORY_HELP = ("ask glibc to keep freed memory instead of returning it to the OS, as the "
                          "examples do (README, \"CPU training loops and glibc\"); by default an "
                          "eager loop's large temporaries can be faulted in afresh on every call")


def add_cpu_arguments(ap):
    """A benchmark's CPU settings, --threads and --keep-freed-memory, which apply_cpu_arguments
    puts into effect once parsed."""
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--keep-freed-memory", action="store_true", help=KEEP_FREED_MEMORY_HELP)


def apply_cpu_arguments(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        keep_freed_memory()


class CountingSystemTime:
    """Wraps a benchmarked callable and adds up, over its calls, the process's page faults and
    the time its threads spent in the kernel (getrusage), beside the wall time.

    An eager loop of large temporaries can spend a large part of its time there: glibc returns
    freed blocks above its mmap and trim thresholds to the OS, and the next allocation faults
    them in again, zeroed, page by page. How much it does swings with the machine's memory
    state, and the reference's time with it.

    The first call, the warm-up that fills torch's and the library's caches, is not counted."""

    def __init__(self, fn):
        self.fn = fn
        self.warmed_up = False
        self.calls = 0
        self.page_faults = 0
        self.system_s = 0.0
        self.wall_s = 0.0

    def __call__(self):
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        out = self.fn()
        wall_s = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        if not self.warmed_up:
            self.warmed_up = True
            return out
        self.calls += 1
        self.page_faults += (after.ru_minflt - before.ru_minflt) + (after.ru_majflt - before.ru_majflt)
        self.system_s += after.ru_stime - before.ru_stime
        self.wall_s += wall_s
        return out

    def per_call(self):
        """Mean page faults, system seconds (all threads) and wall seconds per call."""
        n = max(self.calls, 1)
        return self.page_faults / n, self.system_s / n, self.wall_s / n


def paired_timeit(fused, reference, rounds, fused_calls=3):
    """Times fused and reference alternately, `rounds` times, and returns the medians of the
    fused time (best of `fused_calls` per round), of the reference time, and of the per-round
    ratio reference / fused, all in seconds or as a plain ratio.

    On a shared VM the speed of the machine drifts by tens of per cent within seconds; timing
    the two side by side, round after round, lets each ratio see the same machine."""
    fused()
    reference()
    fused_times, reference_times, ratios = [], [], []
    for _ in range(rounds):
        best = float("inf")
        for _ in range(fused_calls):
            start = time.perf_counter()
            fused()
            best = min(best, time.perf_counter() - start)
        start = time.perf_counter()
        reference()
        ref = time.perf_counter() - start
        fused_times.append(best)
        reference_times.append(ref)
        ratios.append(ref / best)
    median = lambda xs: sorted(xs)[len(xs) // 2]
    return median(fused_times), median(reference_times), median(ratios)


def paired_best_of(a, b, rounds, calls=3):
    """Medians over `rounds` of the best of `calls` timings of a and of b, taken alternately so
    that both see the same drift of a shared machine; and the median of the ratios b / a.
    Unlike paired_timeit, both sides get the same number of calls per round."""
    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    a(), b()
    ta, tb, ratios = [], [], []
    for _ in range(rounds):
        round_a = min(timed(a) for _ in range(calls))
        round_b = min(timed(b) for _ in range(calls))
        ta.append(round_a)
        tb.append(round_b)
        ratios.append(round_b / round_a)
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return median(ta), median(tb), median(ratios)


def bytes_saved_for_backward(fn, kw):
    """Bytes of the distinct tensors autograd keeps for the backward of one forward.

    The pack hook holds every saved tensor until the count is done: were they dropped, freed
    memory could be handed to a later tensor at the same address, and the count by address
    would merge the two (it did: the reference's figure moved between 4.0 and 5.9 GB)."""
    seen, held = {}, []

    def pack(t):
        held.append(t)
        seen[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))] = (
            t.numel() * t.element_size())
        return None

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda _: None):
        run(fn, kw)
    total = sum(seen.values())
    held.clear()
    return total
