"""Randomized differential testing: seeded random configurations over every option, random
sizes (including 1), T up to 50, non-contiguous, expanded and transposed inputs, against the
reference in values and gradients (float64).

Six families: plastic_scan at small sizes (up to 9, T up to 50); plastic_scan and the plastic
LSTM at wide sizes (up to 70 rows and columns, batches up to 40, variable lengths), which reach
the kernels' vector loops with their rests, rows in pairs, sequences in groups and a batch of
single steps in blocks of rows, paths the small sizes never take; both at wide sizes in
float32, whose kernels have vectors of their own width, against the reference in float64;
second-order gradients (double backward) at small sizes; and torch.library.opcheck of the raw
ops (schema, autograd registration, fake kernels, AOT dispatch) on cases of either size.

A case that differs beyond the tolerances is compared again with them widened by the
reference's own spread under a change of z (and, in float32, of the clip and scaling bounds)
within the dtype's rounding (reference_spread): chaotic recurrences and values at a kink,
where two correct implementations part, are compared as closely as they allow.

Each family is bounded: TORCHPLASTIC_RANDOM_CASES (default 1500) configurations, stopping early
after TORCHPLASTIC_RANDOM_SECONDS (default 60; the wide families a third of it each, second
order and opcheck a sixth). A failure prints its seed; rerun exactly that case with
TORCHPLASTIC_RANDOM_SEED=<seed>.
"""

import os
import random
import time

import pytest
import torch

import torchplastic as tp
from torchplastic import functional
from helpers import call, loss_of, tensor_inputs

RULES = tuple(tp.rules.RULES)
SOURCES = ("external", "external_per_neuron", "internal", "fanout")
GRAN = {"connection": lambda O, I: (O, I), "neuron": lambda O, I: (O, 1), "scalar": lambda O, I: (1, 1)}


def odd_layout(t: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """The same values in a non-contiguous, transposed or expanded layout."""
    choice = rng.randrange(4)
    if choice == 1 and t.dim() >= 2:  # transposed storage
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if choice == 2:  # a strided view into a larger buffer
        big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        big[..., ::2] = t
        return big[..., ::2]
    if choice == 3 and t.dim() >= 1 and t.shape[0] > 1 and torch.equal(t, t[:1].expand_as(t)):
        return t[:1].expand_as(t)  # expanded (stride 0)
    return t


def random_size(rng: random.Random, wide: bool) -> int:
    """A row or column count: up to 9, or for wide cases whole vectors of floats and doubles
    (16, 32, 48, 64), one past them, and anything up to 70."""
    if not wide:
        return rng.choice([1, rng.randint(2, 9)])
    return rng.choice([1, rng.randint(2, 15), 16, 32, 33, 48, 64, rng.randint(17, 70)])


def random_lengths(rng: random.Random, T: int, B: int):
    """Per-sequence lengths in [0, T] (None, a full batch, in some cases)."""
    if T == 0 or rng.random() < 0.6:
        return None
    return torch.tensor([rng.randint(0, T) for _ in range(B)])


def random_case(seed: int, wide: bool = False, lstm: bool = False):
    """Keyword arguments of plastic_scan (plastic_lstm_scan with lstm) for seed."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    D = torch.float64
    rule = rng.choice(RULES)
    info = tp.rules.rule_info(rule)
    recurrent = lstm or rng.random() < 0.5
    if wide:
        T, B = rng.choice([0, 1, 2, rng.randint(3, 20)]), rng.choice([1, rng.randint(2, 5), rng.randint(30, 40)])
    else:
        T, B = rng.choice([0, 1, 2, rng.randint(3, 50)]), rng.choice([1, rng.randint(2, 5)])
    O = random_size(rng, wide)
    I = O if recurrent else random_size(rng, wide)
    # At wide sizes the weights shrink with the fan-in (recurrent weights' spectral radius about
    # 0.6), so that the recurrence contracts: a chaotic one would amplify both sides' different
    # rounding past the tolerances within a few dozen steps.
    fan = min(1.0, (4.0 / max(O, I)) ** 0.5) if wide else 1.0

    def randn(*shape, scale=1.0):
        return scale * torch.randn(shape, generator=g, dtype=D)

    kw = dict(rule=rule)
    if not lstm:  # the LSTM's activations are its own
        kw["activation"] = rng.choice(["tanh", "relu", "sigmoid", "identity"])
    kw["checkpoint_every"] = rng.choice([None, 1, rng.randint(1, 60)])
    # Keep long, unclipped, identity-activation runs from overflowing. At wide sizes a clip is
    # not enough: it bounds each element of the trace, so (α ⊙ H) y can still grow with the
    # row's length; synaptic scaling bounds the row's norm.
    bounded = kw.get("activation", "tanh") in ("tanh", "sigmoid")
    kw["clip"] = rng.choice([None, 0.5, 2.0]) if info.default_clip is None else rng.choice([0.5, 1.0])
    kw["synaptic_scaling"] = rng.choice([None, None, 0.7, 3.0])
    if not bounded and (wide or kw["clip"] is None) and kw["synaptic_scaling"] is None:
        kw["synaptic_scaling"] = 1.0
    kw["adaptive_threshold"] = rng.choice([None, 0.05])
    kw["target_activity"] = rng.choice([0.0, 0.2])
    kw["z"] = randn(T, B, 4 * O if lstm else O)
    ga, ge = rng.choice(list(GRAN)), rng.choice(list(GRAN))
    kw["alpha"] = randn(*GRAN[ga](O, I), scale=0.3 * fan)
    kw["eta"] = 0.05 + 0.3 * torch.rand(GRAN[ge](O, I), generator=g, dtype=D) if info.uses_eta else None
    if info.coefficients:
        kw["abcd"] = randn(4, *GRAN[rng.choice(list(GRAN))](O, I), scale=0.5)
    kw["trace"] = rng.choice([None, randn(B, O, I, scale=0.2 * fan)])
    scale = (0.3 if bounded else 0.1) * fan
    if lstm:
        kw["weight_hh"] = randn(4 * O, O, scale=scale)
        kw["hidden"] = rng.choice([None, randn(B, O, scale=0.3)])
        kw["cell"] = rng.choice([None, randn(B, O, scale=0.3)])
    elif recurrent:
        kw["weight"] = randn(O, O, scale=scale)
        kw["hidden"] = rng.choice([None, randn(B, O, scale=0.3)])
    else:
        kw["x"] = randn(T, B, I, scale=0.5)
    if info.modulated:
        source = rng.choice(SOURCES)
        if source == "external":
            kw["modulation"] = randn(T, B, scale=0.5)
        elif source == "external_per_neuron":
            kw["modulation"] = randn(T, B, O, scale=0.5)
        else:
            kw["mod_weight"], kw["mod_bias"] = randn(O, scale=fan), randn(1)
            if source == "fanout":
                kw["mod_fanout_weight"], kw["mod_fanout_bias"] = randn(O), randn(O)
    if info.eligibility:
        kw["eligibility"] = rng.choice([None, randn(B, O, I, scale=0.2 * fan)])
    if kw["adaptive_threshold"] is not None:
        kw["threshold"] = rng.choice([None, randn(B, O, scale=0.1)])
    for k, v in list(kw.items()):
        if isinstance(v, torch.Tensor):
            kw[k] = odd_layout(v, rng).requires_grad_(True)
    if wide:
        kw["lengths"] = random_lengths(rng, T, B)
    return kw


def split_lstm(kw):
    """plastic_lstm_scan's positional arguments and keywords from random_case's dict."""
    kw = dict(kw)
    return [kw.pop(name) for name in ("z", "weight_hh", "alpha", "eta", "trace")], kw


def run_scan(module, kw, lstm: bool):
    """module.plastic_scan (module.plastic_lstm_scan with lstm) on random_case's dict; module is
    tp.functional or tp.reference."""
    if lstm:
        args, rest = split_lstm(kw)
        return module.plastic_lstm_scan(*args, **rest)
    return call(module.plastic_scan, kw)


def differentiable_inputs(kw):
    return {k: v for k, v in tensor_inputs(kw).items() if v.requires_grad}  # not lengths


def assert_same_results(kw, kw_expected, run, run_expected, tol=(1e-9, 1e-10), grad_tol=(1e-7, 1e-9),
                        grad_atol_of_largest=False, grad_outliers=0):
    """run(kw) against run_expected(kw_expected), the same inputs (perhaps on another device or in
    another dtype): the outputs and final state within tol (rtol, atol), and the gradients of
    loss_of in every input that requires one within grad_tol (with grad_atol_of_largest, its atol
    times the largest expected element, at least 1), but for at most grad_outliers elements of
    each; results are compared on the CPU in the expected dtype."""
    y, state = run(kw)
    y_ref, state_ref = run_expected(kw_expected)
    def here(t):
        return t.to(device="cpu", dtype=y_ref.dtype)
    torch.testing.assert_close(here(y), y_ref, rtol=tol[0], atol=tol[1])
    for name in state._fields:
        a, b = getattr(state, name), getattr(state_ref, name)
        assert (a is None) == (b is None), name
        if b is not None:
            torch.testing.assert_close(here(a), b, rtol=tol[0], atol=tol[1], msg=lambda m: f"{name}: {m}")
    loss, loss_ref = loss_of(y, state), loss_of(y_ref, state_ref)
    leaves, leaves_ref = differentiable_inputs(kw), differentiable_inputs(kw_expected)

    def grads(loss, leaves):
        if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
            return [None] * len(leaves)  # T = 0 without an initial state: nothing depends on them
        return torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)

    g, g_ref = grads(loss, leaves), grads(loss_ref, leaves_ref)
    for name, a, b in zip(leaves_ref, g, g_ref):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0, name
            continue
        a = torch.zeros_like(b) if a is None else here(a)
        atol = grad_tol[1] * (max(1.0, b.abs().max().item()) if grad_atol_of_largest and b.numel() else 1.0)
        outside = ((a - b).abs() > atol + grad_tol[0] * b.abs()).sum().item()
        if outside > grad_outliers:
            torch.testing.assert_close(a, b, rtol=grad_tol[0], atol=atol, msg=lambda m: f"grad {name}: {m}")


def scaled(kw, name, factor):
    """kw with its input `name` (a tensor or a number) multiplied by factor."""
    v = kw[name]
    if isinstance(v, torch.Tensor):
        v = (v.detach() * factor).requires_grad_(v.requires_grad)
    else:
        v = v * factor
    return dict(kw, **{name: v})


def reference_spread(kw, lstm: bool, changes):
    """How far the reference's own results move under each of `changes` (functions of kw): the
    largest change of an output or state element, and of a gradient element of loss_of, over
    them. Two correct implementations can differ by as much where the case is ill-conditioned:
    in a chaotic recurrence, where a rounding's difference grows with every step (seed 706740:
    identity activation, internal modulation and an adaptive threshold; 1e-15 in z became 1e-5 in
    y within 38 steps), or where a value lies within a rounding of a kink (a trace at its clip
    bound, a row's norm at the synaptic scaling bound), on whose two sides the gradient differs
    (seed 733186 in float32: 0.41 in dL/dz for 25 elements of one sequence, the reference's own
    jump when its synaptic scaling moves by −1e-6, relative)."""
    leaves = differentiable_inputs(kw)

    def results(k):
        y, state = run_scan(tp.reference, k, lstm)
        loss = loss_of(y, state)
        wrt = [k[name] for name in leaves]
        grads = (torch.autograd.grad(loss, wrt, allow_unused=True)
                 if isinstance(loss, torch.Tensor) and loss.requires_grad else [None] * len(wrt))
        return [y, *state], grads

    def spread(a, b):
        pairs = [(x, w) for x, w in zip(a, b) if x is not None and w is not None and x.numel()]
        return max([(x - w).abs().max().item() for x, w in pairs], default=0.0)

    out, grads = results(kw)
    out_spread = grad_spread = 0.0
    for change in changes:
        out_moved, grads_moved = results(change(kw))
        out_spread = max(out_spread, spread(out, out_moved))
        grad_spread = max(grad_spread, spread(grads, grads_moved))
    return out_spread, grad_spread


def assert_same_within_conditioning(kw, kw_expected, lstm: bool, changes, factor: float, what: str,
                                   tol, grad_tol, **options):
    """assert_same_results of the fused op on kw against the reference on kw_expected. Where they
    differ beyond tol and grad_tol, they are compared again with each atol raised to factor times
    reference_spread(kw_expected, lstm, changes) where that is larger: a case that amplifies
    roundings into the tolerances is compared as closely as its conditioning allows (a wrong
    element still differs by its own size), and a well-conditioned one, whose spread is far below
    them, fails as before. `what` names the changes in the message."""
    fused, reference = (lambda k: run_scan(tp.functional, k, lstm),
                        lambda k: run_scan(tp.reference, k, lstm))
    try:
        assert_same_results(kw, kw_expected, fused, reference, tol=tol, grad_tol=grad_tol, **options)
    except AssertionError as failure:
        out_spread, grad_spread = reference_spread(kw_expected, lstm, changes)
        try:
            assert_same_results(kw, kw_expected, fused, reference,
                                tol=(tol[0], max(tol[1], factor * out_spread)),
                                grad_tol=(grad_tol[0], max(grad_tol[1], factor * grad_spread)),
                                **options)
        except AssertionError as again:
            raise AssertionError(f"{again} (the reference's own spread under {what}: outputs "
                                 f"{out_spread:.1e}, gradients {grad_spread:.1e})") from failure


def check_case(seed: int, wide: bool = False, lstm: bool = False):
    """The fused op against the reference, both on the CPU, on random_case(seed, wide, lstm); a
    case that differs beyond the tolerances again within a hundred times the reference's spread
    under a 1e-13 change of z (a few hundred float64 roundings; assert_same_within_conditioning)."""
    kw = random_case(seed, wide, lstm)
    assert_same_within_conditioning(kw, kw, lstm, [lambda k: scaled(k, "z", 1 + 1e-13)], 100,
                                    "a 1e-13 change of z", tol=(1e-9, 1e-10), grad_tol=(1e-7, 1e-9))


def as_float32(kw):
    """kw with its floating-point tensors in float32, leaves as they were."""
    return {k: v.detach().float().requires_grad_(v.requires_grad)
            if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in kw.items()}


def check_float32_case(seed: int):
    """The fused op in float32 against the reference in float64 on random_case(seed, wide=True),
    the plastic LSTM's for every third seed. The tolerances are float32's after up to 20 steps of
    a contracting recurrence: over 3000 such cases on the AVX-512 kernels, outputs and states came
    within 0.3% (relative, past an absolute 1e-4) and gradients within 3.4% (relative, past 1e-3
    of the largest element), so a wrong element of a float32 loop, off by its own size, stands
    out. One element of a gradient may differ beyond them: where a value lies within float32's
    rounding of a kink (a ReLU's pre-activation at 0, a trace at its clip bound) the two sides take
    different branches, and the gradient through it is passed on one and cut on the other (two
    of 15000 cases, seeds 13038 and 15404, one element each). Where a row's norm lies that close
    to the synaptic scaling bound, a whole row's gradient and every earlier step's differ; so a
    case that differs beyond the tolerances is compared again with tolerances widened by ten
    times reference_spread within float32's rounding of z, the clip and the scaling bound, and
    of the reference itself run in float32: a rounding's difference grows over the steps, so
    after some of them float32 lies further from float64 than a relative 1e-6 of the inputs
    reaches (seed 915861, the plastic LSTM with `retroactive` clipped: 25 elements of one
    sequence's dL/dz 0.007–0.075 from float64, by as much in the fused op as in the reference
    in float32, which agreed with each other to 3e-6, while the 1e-6 changes moved the
    reference's gradients by 8.5e-5 at most)."""
    lstm = seed % 3 == 0
    kw = random_case(seed, wide=True, lstm=lstm)
    kw32 = as_float32(kw)
    # Within float32's rounding (a relative 1e-6, some eight of its roundings) of z, of the clip
    # bound and of the synaptic scaling bound: chaos and the kinks (reference_spread); and the
    # reference's own float32 arithmetic.
    changes = [lambda k: scaled(k, "z", 1 + 1e-6), as_float32]
    for name in ("clip", "synaptic_scaling"):
        if kw.get(name) is not None:
            changes += [lambda k, n=name: scaled(k, n, 1 + 1e-6),
                        lambda k, n=name: scaled(k, n, 1 - 1e-6)]
    assert_same_within_conditioning(kw32, kw, lstm, changes, 10,
                                    "a relative 1e-6 of z, the clip and the scaling bound, and "
                                    "float32",
                                    tol=(1e-2, 1e-4), grad_tol=(0.1, 1e-3),
                                    grad_atol_of_largest=True, grad_outliers=1)


def check_second_order_case(seed: int):
    """Double backward (the op's ATen steps, csrc/autograd/aten_scan.cpp) against the reference's
    on random_case(seed), the plastic LSTM's for every fourth seed, at up to 12 steps: the
    gradient of a random weighting of the first gradients, finite and equal on both sides."""
    lstm = seed % 4 == 0
    kw = random_case(seed, lstm=lstm)
    if kw["z"].shape[0] > 12:
        return
    leaves = differentiable_inputs(kw)
    second = []
    for module in (tp.functional, tp.reference):
        loss = loss_of(*run_scan(module, kw, lstm))
        if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
            return  # T = 0 without an initial state
        first = torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)
        gen = torch.Generator().manual_seed(seed)
        weighted = [(g * torch.randn(g.shape, generator=gen, dtype=g.dtype)).sum()
                    for g in first if g is not None and g.requires_grad]
        if not weighted:
            return
        second.append(torch.autograd.grad(sum(weighted), list(leaves.values()), allow_unused=True))
    for name, a, b in zip(leaves, *second):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0, name
            continue
        assert torch.isfinite(b).all(), f"reference's second-order d/d{name} not finite"
        a = torch.zeros_like(b) if a is None else a
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, msg=lambda m: f"second-order d/d{name}: {m}")


def check_opcheck_case(seed: int):
    """torch.library.opcheck of the raw op (plastic_lstm_scan's for every third seed) on
    random_case(seed), wide for even seeds: its schema, autograd registration, fake kernel
    (the shapes torch.compile traces with, lengths and every option among them) and AOT
    dispatch against the real kernel."""
    lstm = seed % 3 == 0
    kw = random_case(seed, wide=seed % 2 == 0, lstm=lstm)
    if lstm:
        kw["weight"] = kw.pop("weight_hh")
        kw["activation"] = "tanh"
    arguments = functional._as_op_arguments(
        "opcheck", **{name: kw.get(name) for name in functional.SCAN_ARGUMENTS if name != "target_activity"},
        target_activity=kw["target_activity"])
    op = torch.ops.torchplastic.plastic_lstm_scan if lstm else torch.ops.torchplastic.plastic_scan
    torch.library.opcheck(op.default, tuple(arguments.values()))


def run_cases(base: int, seconds: float, check=check_case, **family):
    """check(seed, **family) over the seeds from base (or TORCHPLASTIC_RANDOM_SEED alone) until
    the cases or the seconds run out."""
    if "TORCHPLASTIC_RANDOM_SEED" in os.environ:
        seeds = [int(os.environ["TORCHPLASTIC_RANDOM_SEED"])]
    else:
        base = int(os.environ.get("TORCHPLASTIC_RANDOM_BASE", str(base)))
        seeds = range(base, base + int(os.environ.get("TORCHPLASTIC_RANDOM_CASES", "1500")))
    deadline = time.time() + seconds
    ran = 0
    for seed in seeds:
        if time.time() > deadline:
            break
        try:
            check(seed, **family)
        except Exception as e:
            pytest.fail(f"seed {seed} failed (rerun with TORCHPLASTIC_RANDOM_SEED={seed}): {e}")
        ran += 1
    assert ran >= 1


SECONDS = float(os.environ.get("TORCHPLASTIC_RANDOM_SECONDS", "60"))


def test_random_configurations_match_reference():
    run_cases(1000, SECONDS)


def test_random_wide_configurations_match_reference():
    run_cases(1000, SECONDS / 3, wide=True)


def test_random_wide_lstm_configurations_match_reference():
    run_cases(1000, SECONDS / 3, wide=True, lstm=True)


def test_random_wide_float32_configurations_match_float64_reference():
    run_cases(1000, SECONDS / 3, check=check_float32_case)


def test_random_second_order_gradients_match_reference():
    run_cases(1000, SECONDS / 6, check=check_second_order_case)


def test_random_configurations_pass_opcheck():
    run_cases(1000, SECONDS / 6, check=check_opcheck_case)
