"""Long runs stay finite and bounded; float32 tracks float64; threads do not change results."""

import threading

import pytest
import torch

import torchplastic as tp
from helpers import Config, call, loss_of, make_inputs, tensor_inputs

# Documented tolerance of float32 against float64 after T = 1000 steps of a contracting
# network (recurrent weights and α scaled to 0.2 of the tests' default): absolute 1e-4.
FLOAT32_TOL_T1000 = 1e-4


@pytest.mark.parametrize("cfg", [
    Config(rule="hebb", clip=1.0, T=10_000, B=2, O=8, eta="connection"),
    Config(rule="oja", scaling=1.5, T=10_000, B=2, O=8, activation="identity"),
    Config(rule="retroactive", source="external", clip=1.0, T=10_000, B=2, O=8),
    Config(rule="modulated", source="fanout", scaling=2.0, clip=5.0, T=10_000, B=2, O=8, recurrent=False),
], ids=Config.id)
def test_ten_thousand_steps_stay_finite_and_bounded(cfg):
    kw = make_inputs(cfg)
    if cfg.activation == "identity":
        kw["weight"] = (0.1 * kw["weight"]).detach().requires_grad_(True)
    y, state = call(tp.functional.plastic_scan, kw)
    assert torch.isfinite(y).all() and torch.isfinite(state.trace).all()
    if cfg.clip is not None:
        assert state.trace.abs().max() <= cfg.clip
    if cfg.scaling is not None:
        assert torch.linalg.vector_norm(state.trace, dim=-1).max() <= cfg.scaling * (1 + 1e-9)
    grads = torch.autograd.grad(loss_of(y[-100:], state), list(tensor_inputs(kw).values()), allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_float32_within_documented_tolerance_of_float64_over_1000_steps():
    cfg = Config(rule="retroactive", source="fanout", clip=1.0, T=1000, B=4, O=32, I=32, threshold=0.05)
    kw = make_inputs(cfg, requires_grad=False)
    kw["weight"], kw["alpha"] = 0.2 * kw["weight"], 0.2 * kw["alpha"]
    y64, s64 = call(tp.functional.plastic_scan, kw)
    kw32 = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    y32, s32 = call(tp.functional.plastic_scan, kw32)
    assert (y32.double() - y64).abs().max() < FLOAT32_TOL_T1000
    assert (s32.trace.double() - s64.trace).abs().max() < FLOAT32_TOL_T1000


def run_once(kw):
    y, state = call(tp.functional.plastic_scan, kw)
    grads = torch.autograd.grad(loss_of(y, state), list(tensor_inputs(kw).values()))
    return [y.detach(), state.trace.detach(), *grads]


# A sequence per unit of work, and a batch of single steps, whose backward sums dL/dα over the
# batch in blocks of rows (csrc/cpu/plastic_scan.cpp, batch_single_step; 130 rows: four blocks).
THREAD_CASES = [
    Config(rule="retroactive", source="internal", clip=1.0, T=20, B=8, O=16, I=16),
    Config(rule="hebb", T=1, B=5, O=130),
    Config(rule="retroactive", source="external_per_neuron", recurrent=False, T=1, B=4, O=130,
           I=70, eta="connection", threshold=0.2, clip=0.5),
]


@pytest.mark.parametrize("cfg", THREAD_CASES, ids=Config.id)
def test_threads_and_thread_counts_give_identical_results(cfg):
    kw = make_inputs(cfg)
    reference = run_once(kw)
    old = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            for a, b in zip(run_once(kw), reference):
                assert torch.equal(a, b), f"{n} threads"
    finally:
        torch.set_num_threads(old)

    results, errors = [None] * 4, []

    def worker(i):
        try:
            results[i] = run_once(kw)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for r in results:
        for a, b in zip(r, reference):
            assert torch.equal(a, b)


def test_concurrent_calls_of_different_sizes_share_the_buffer_cache_safely():
    """Python threads calling the op at once, each with its own configuration and sizes (traces,
    checkpoints and gradient slabs of 256 KiB and more come from one cache of freed buffers,
    csrc/cpu/memory.cpp): every result equals, bit for bit, the same call made alone. A buffer
    handed to two calls, or back to the cache while a tensor still used it, would show here."""
    cases = [
        Config(rule="hebb", T=6, B=6, O=120),                                # traces of 675 KiB
        Config(rule="retroactive", source="fanout", clip=1.0, T=5, B=4, O=100),
        Config(rule="hebb", T=1, B=8, O=96),                                 # a batch of single steps
        Config(rule="abcd", T=9, B=3, O=64, recurrent=False, I=200),
        Config(rule="modulated", source="external", T=4, B=5, O=110, scaling=2.0),
    ]
    inputs = [make_inputs(cfg, seed=k) for k, cfg in enumerate(cases)]
    inputs.append({k: v.float().detach().requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor)
                   else v for k, v in inputs[0].items()})                   # float32, other sizes
    alone = [run_once(kw) for kw in inputs]
    errors = []

    def worker(i):
        try:
            for round_ in range(6):
                k = (i + round_) % len(inputs)
                for a, b in zip(run_once(inputs[k]), alone[k]):
                    assert torch.equal(a, b), f"thread {i}, round {round_}: case {k} differs"
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
