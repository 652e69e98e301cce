"""plastic_scan on the CPU against torchplastic.reference, in values and gradients."""

import dataclasses
import math

import pytest
import torch

import torchplastic as tp
from helpers import (RULES, Config, all_rule_mode_sources, call, call_lstm, gradcheck_call, loss_of,
                     make_inputs, make_lstm_inputs, tensor_inputs)
from torchplastic.functional import SCAN_ARGUMENTS

VALUE_TOL = dict(rtol=1e-10, atol=1e-12)
GRAD_TOL = dict(rtol=1e-9, atol=1e-11)


def assert_matches_reference(cfg: Config, seed: int = 0, grad_tol=GRAD_TOL,
                             dtype=torch.float64, value_tol=VALUE_TOL):
    kw = make_inputs(cfg, dtype=dtype, seed=seed)
    leaves = tensor_inputs(kw)
    y, state = call(tp.functional.plastic_scan, kw)
    y_ref, state_ref = call(tp.reference.plastic_scan, kw)
    torch.testing.assert_close(y, y_ref, **value_tol)
    for name in state._fields:
        got, want = getattr(state, name), getattr(state_ref, name)
        assert (got is None) == (want is None), name
        if want is not None:
            torch.testing.assert_close(got, want, **value_tol, msg=lambda m: f"{name}: {m}")
    names = list(leaves)
    grads = torch.autograd.grad(loss_of(y, state), list(leaves.values()), allow_unused=True)
    grads_ref = torch.autograd.grad(loss_of(y_ref, state_ref), list(leaves.values()), allow_unused=True)
    for name, g, g_ref in zip(names, grads, grads_ref):
        if g_ref is None:
            assert g is None or torch.count_nonzero(g) == 0, f"{name}: gradient where none flows"
            continue
        assert g is not None, f"{name}: no gradient"
        torch.testing.assert_close(g, g_ref, **grad_tol, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("cfg", all_rule_mode_sources(), ids=Config.id)
def test_rule_mode_modulation_matches_reference(cfg):
    assert_matches_reference(cfg)


OPTION_CASES = [
    Config(rule="hebb", clip=0.2),
    Config(rule="oja", recurrent=False, clip=0.3),
    Config(rule="hebb", scaling=0.5),
    Config(rule="retroactive", source="internal", clip=0.5, scaling=0.4),
    Config(rule="modulated", recurrent=False, source="fanout", scaling=0.3),
    Config(rule="hebb", threshold=0.3, target_activity=0.1),
    Config(rule="retroactive", source="external", threshold=0.2, clip=1.0),
    *[Config(rule="hebb", activation=a) for a in ("tanh", "relu", "sigmoid", "identity")],
    *[Config(rule="modulated", source="internal", activation=a, clip=1.0) for a in ("relu", "sigmoid", "identity")],
    *[Config(rule=r, alpha=ga, eta=ge) for r in ("hebb", "oja") for ga in ("connection", "neuron", "scalar")
      for ge in ("connection", "neuron", "scalar")],
    Config(rule="retroactive", source="internal", alpha="neuron", eta="connection", clip=1.0),
    Config(rule="hebb", initial_state=False),
    Config(rule="retroactive", recurrent=False, source="fanout", initial_state=False, threshold=0.1),
    Config(rule="hebb", B=1, O=1, I=1, T=3),
    # Rule abcd: every coefficient granularity in both modes, clipped and not; with η per
    # connection and per neuron; with synaptic scaling and the adaptive threshold.
    *[Config(rule="abcd", recurrent=r, abcd=g, clip=c) for r in (False, True)
      for g in ("connection", "neuron", "scalar") for c in (None, 0.3)],
    Config(rule="abcd", eta="connection", alpha="neuron", clip=1.0),
    Config(rule="abcd", recurrent=False, eta="neuron", abcd="neuron", clip=0.5),
    Config(rule="abcd", abcd="scalar", scaling=0.5),
    Config(rule="abcd", recurrent=False, clip=0.4, scaling=0.6, threshold=0.2, target_activity=0.1),
    Config(rule="abcd", initial_state=False, threshold=0.1),
]


@pytest.mark.parametrize("cfg", OPTION_CASES, ids=Config.id)
def test_options_match_reference(cfg):
    assert_matches_reference(cfg)


# Rows of every length the CPU row loops split their last elements by (for_lanes,
# csrc/cpu/simd.h: under AVX-512, half and a quarter of a vector, then one by one), in both
# dtypes: 16 floats a vector, 29 = 16 + 8 + 4 + 1 and 15 = 8 + 4 + 3; 8 doubles, 29 = 24 + 4 + 1
# and 15 = 8 + 4 + 2 + 1. The rest of the suite compares float64 at shorter rows.
REMAINDER_CASES = [
    Config(rule="hebb", O=29, T=4, B=2),
    Config(rule="retroactive", source="fanout", clip=1.0, O=15, T=4, B=2),
    Config(rule="oja", recurrent=False, O=5, I=29, T=3, B=2),
    Config(rule="hebb", O=15, T=1, B=3),  # a batch of single steps: its own backward
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("cfg", REMAINDER_CASES, ids=Config.id)
def test_every_row_remainder_matches_reference(cfg, dtype):
    if dtype == torch.float64:
        assert_matches_reference(cfg)
    else:
        assert_matches_reference(cfg, dtype=dtype, value_tol=dict(rtol=2e-5, atol=2e-6),
                                 grad_tol=dict(rtol=1e-4, atol=2e-5))


# Rows longer than 128: with 16 vector registers (AVX2, generic) the fused backward takes them
# one at a time, shorter ones in pairs (fused_pairs, csrc/cpu/backward.h). An odd row count,
# and T past K so that rows are replayed from anchors. Gradients summed over rows this long
# differ from the reference's order of additions by up to ~1e-10 (the same with pairs).
@pytest.mark.parametrize("rule", ["hebb", "retroactive", "abcd"])
def test_long_rows_matches_reference(rule):
    source = "internal" if tp.rules.rule_info(rule).modulated else None
    cfg = Config(rule=rule, source=source, clip=0.5, T=9, B=2, O=133, I=133)
    assert_matches_reference(cfg, grad_tol=dict(rtol=1e-9, atol=1e-9))


# A single step (T = 1, a cell's step) whose modulation is row-local has a backward of its own
# on the CPU (csrc/cpu/backward_sequence.h, single_step_rows): every rule and option it
# takes, in both modes; and, beside them, the single steps that take the general path.
SINGLE_STEP_CASES = [
    *[Config(rule=r, recurrent=rec, T=1, source="external" if tp.rules.rule_info(r).modulated else None,
             clip=0.5 if r != "hebb" else None)
      for r in RULES for rec in (False, True)],
    Config(rule="hebb", T=1, threshold=0.3, target_activity=0.1, eta="connection", alpha="neuron"),
    Config(rule="oja", T=1, recurrent=False, eta="neuron", activation="sigmoid"),
    Config(rule="retroactive", T=1, source="external", threshold=0.2, eta="connection", clip=1.0),
    Config(rule="abcd", T=1, abcd="neuron", eta="connection", threshold=0.1, clip=0.3),
    Config(rule="hebb", T=1, initial_state=False),
    # the general path: internal modulation, synaptic scaling
    Config(rule="modulated", T=1, source="fanout", clip=1.0),
    Config(rule="hebb", T=1, scaling=0.5),
]


@pytest.mark.parametrize("cfg", SINGLE_STEP_CASES, ids=Config.id)
def test_single_step_matches_reference(cfg):
    assert_matches_reference(cfg)


def test_single_step_gradcheck():
    cfg = Config(rule="retroactive", source="external", T=1, B=2, O=3, I=3, clip=2.0,
                 threshold=0.2, eta="connection")
    assert gradcheck_call(call, tp.functional.plastic_scan, make_inputs(cfg), atol=1e-8, rtol=1e-6)


# A batch of single steps sums dL/dα (dL/dη, dL/dA–D) over its sequences inside the CPU
# kernels, in blocks of at least 32 rows (csrc/cpu/plastic_scan.cpp, batch_single_step): with
# 130 rows, four blocks of 33, 33, 33 and 31 rows, each summing every sequence's share of
# dL/dp over its rows. (test_stability.py checks that the thread count changes nothing.)
BLOCKED_SINGLE_STEP_CASES = [
    Config(rule="hebb", T=1, B=5, O=130),
    Config(rule="retroactive", source="external_per_neuron", recurrent=False, T=1, B=4, O=130,
           I=70, eta="connection", threshold=0.2, clip=0.5),
    Config(rule="abcd", T=1, B=3, O=130, abcd="connection", clip=0.3),
    Config(rule="modulated", source="external", T=1, B=3, O=64, alpha="neuron", eta="neuron"),
]


@pytest.mark.parametrize("cfg", BLOCKED_SINGLE_STEP_CASES, ids=Config.id)
def test_single_steps_in_row_blocks_match_reference(cfg):
    assert_matches_reference(cfg, grad_tol=dict(rtol=1e-9, atol=1e-9))


def test_single_steps_in_row_blocks_gradcheck():
    cfg = Config(rule="abcd", recurrent=False, T=1, B=2, O=66, I=3, abcd="neuron", eta="neuron",
                 clip=2.0, threshold=0.2)
    assert gradcheck_call(call, tp.functional.plastic_scan, make_inputs(cfg), atol=1e-8,
                          rtol=1e-6, fast_mode=True)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("recurrent", [False, True])
def test_gradcheck(rule, recurrent):
    cfg = Config(rule=rule, recurrent=recurrent, source="fanout" if rule == "retroactive" else None,
                 T=3, B=2, O=3, I=2, clip=None if tp.rules.rule_info(rule).default_clip is None else 2.0,
                 threshold=0.2 if rule in ("hebb", "abcd") else None,
                 scaling=1.5 if rule in ("oja", "abcd") else None, checkpoint_every=2)
    assert gradcheck_call(call, tp.functional.plastic_scan, make_inputs(cfg), atol=1e-8, rtol=1e-6)


# The CPU backward steps traces forward from anchors (every 4th step of a segment, every step
# under synaptic scaling), so K changes which trace each replay starts from: the values must
# not change, bit for bit.
K_INVARIANCE_CASES = [
    (dict(rule="retroactive", source="internal", clip=1.0), torch.float64),
    (dict(rule="hebb"), torch.float32),
    (dict(rule="oja", eta="connection", clip=0.5), torch.float32),
    (dict(rule="modulated", source="fanout", scaling=1.0), torch.float64),
    (dict(rule="abcd", eta="connection", abcd="neuron", clip=0.5), torch.float32),
]


@pytest.mark.parametrize("case", range(len(K_INVARIANCE_CASES)))
@pytest.mark.parametrize("T", [1, 7, 12, 19])
def test_checkpoint_interval_gives_identical_results(T, case):
    options, dtype = K_INVARIANCE_CASES[case]
    results = []
    for K in sorted({1, 2, 5, 8, T, T + 3}):
        cfg = Config(**options, T=T, checkpoint_every=K)
        kw = make_inputs(cfg, dtype=dtype)
        y, state = call(tp.functional.plastic_scan, kw)
        grads = torch.autograd.grad(loss_of(y, state), list(tensor_inputs(kw).values()))
        results.append((K, y, grads))
    _, y0, g0 = results[0]
    for K, y, grads in results[1:]:
        assert torch.equal(y, y0), f"K={K}"
        for a, b in zip(grads, g0):
            assert torch.equal(a, b), f"K={K}"


# A sequence of several steps runs the forward that folds each step's trace update into the
# next step's pass (csrc/cpu/forward.h, forward_group_deferred); a single step runs the one that
# updates each row right after its pre-activation. Same arithmetic, element by element: stepping
# a sequence one call at a time must give its outputs and final state bit for bit.
STEPWISE_CASES = [
    (dict(rule="hebb", O=20), torch.float32, False),
    (dict(rule="hebb", recurrent=False, O=9, I=13, activation="relu", alpha="neuron"), torch.float32, False),
    (dict(rule="oja", eta="connection", clip=0.5, threshold=0.2, O=11), torch.float64, False),
    (dict(rule="modulated", source="internal", clip=1.0, O=18), torch.float32, False),
    (dict(rule="modulated", source="external_per_neuron", O=7, recurrent=False, I=5), torch.float32, False),
    (dict(rule="retroactive", source="fanout", clip=1.0, eta="neuron", O=13), torch.float32, False),
    (dict(rule="retroactive", source="external", O=6), torch.float64, False),
    (dict(rule="abcd", eta="connection", abcd="neuron", clip=0.5, O=10), torch.float32, False),
    (dict(rule="hebb", O=12), torch.float32, True),
    (dict(rule="retroactive", source="fanout", clip=1.0, O=9, threshold=0.1), torch.float32, True),
]


def _stepwise_id(k):
    options, _, lstm = STEPWISE_CASES[k]
    return ("lstm-" if lstm else "") + Config(**options).id()


@pytest.mark.parametrize("case", range(len(STEPWISE_CASES)), ids=_stepwise_id)
def test_sequence_equals_its_steps_one_call_at_a_time(case):
    options, dtype, lstm = STEPWISE_CASES[case]
    cfg = Config(**options, T=9, B=6)
    inputs = make_lstm_inputs(cfg, dtype=dtype) if lstm else make_inputs(cfg, dtype=dtype)
    kw = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    caller, fn = ((call_lstm, tp.functional.plastic_lstm_scan) if lstm
                  else (call, tp.functional.plastic_scan))
    carried = ("trace", "eligibility", "threshold", "hidden", "cell")
    with torch.no_grad():
        y, state = caller(fn, kw)
        step_state = {name: kw.get(name) for name in carried}
        for t in range(cfg.T):
            step_kw = dict(kw, z=kw["z"][t:t + 1],
                           **{k: v for k, v in step_state.items() if v is not None})
            for name in ("x", "modulation"):
                if name in kw:
                    step_kw[name] = kw[name][t:t + 1]
            y_t, s = caller(fn, step_kw)
            assert torch.equal(y_t[0], y[t]), f"step {t}"
            step_state = {name: getattr(s, name) for name in carried}
        for name in carried:
            if getattr(state, name) is not None:
                assert torch.equal(step_state[name], getattr(state, name)), name


def test_zero_steps_returns_state_unchanged():
    cfg = Config(rule="retroactive", source="internal", threshold=0.1, T=0)
    kw = make_inputs(cfg)
    y, state = call(tp.functional.plastic_scan, kw)
    assert y.shape == (0, cfg.B, cfg.O)
    torch.testing.assert_close(state.trace, kw["trace"], rtol=0, atol=0)
    torch.testing.assert_close(state.eligibility, kw["eligibility"], rtol=0, atol=0)
    torch.testing.assert_close(state.threshold, kw["threshold"], rtol=0, atol=0)
    torch.testing.assert_close(state.hidden, kw["hidden"], rtol=0, atol=0)
    assert state.trace.data_ptr() != kw["trace"].data_ptr(), "outputs must not alias inputs"
    loss = loss_of(y, state)
    grads = torch.autograd.grad(loss, [kw["trace"], kw["hidden"], kw["weight"]])
    assert grads[0].shape == kw["trace"].shape
    # No step read W: its gradient is zero (an empty sum over steps, not a product with h_0).
    assert torch.equal(grads[2], torch.zeros_like(kw["weight"]))


def test_float32_matches_float64_reference():
    cfg = Config(rule="hebb", T=20, B=4, O=16)
    kw64 = make_inputs(cfg, requires_grad=False)
    kw32 = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in kw64.items()}
    y32, _ = call(tp.functional.plastic_scan, kw32)
    y64, _ = call(tp.reference.plastic_scan, kw64)
    torch.testing.assert_close(y32.double(), y64, rtol=1e-5, atol=1e-5)


def test_state_unused_fields_are_none():
    kw = make_inputs(Config(rule="hebb", recurrent=False))
    _, state = call(tp.functional.plastic_scan, kw)
    assert state.hidden is None and state.eligibility is None and state.threshold is None
    assert state.detach().trace.requires_grad is False


# ---------------------------------------------------------------- memory contract (SPEC §3)

def saved_bytes(fn):
    """Bytes of every distinct tensor autograd saves for the backward while fn() runs."""
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))] = (
            t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


@pytest.mark.parametrize("K", [None, 4, 16])
def test_memory_saved_for_backward_is_checkpoints_not_every_trace(K):
    T, B, O = 64, 4, 16
    cfg = Config(rule="retroactive", source="internal", clip=1.0, T=T, B=B, O=O, checkpoint_every=K)
    kw = make_inputs(cfg)
    fused, _ = saved_bytes(lambda: call(tp.functional.plastic_scan, kw))
    reference, _ = saved_bytes(lambda: call(tp.reference.plastic_scan, kw))
    Kv = K or math.ceil(math.sqrt(T))
    trace_bytes = B * O * O * 8
    step_vectors = 16 * T * B * O * 8  # y, z, x, modulation: per-step vectors, not traces
    inputs = sum(t.numel() * t.element_size() for t in tensor_inputs(kw).values())
    # Checkpoints of H and E (retroactive) plus the inputs, never T traces.
    bound = 2 * math.ceil(T / Kv) * trace_bytes + inputs + step_vectors
    assert fused <= bound, (fused, bound)
    assert fused < 2 * T * trace_bytes / 3
    assert reference > T * trace_bytes  # the reference keeps every trace


@pytest.mark.parametrize("rule", ["hebb", "retroactive"])
def test_single_segment_keeps_no_copy_of_the_initial_trace(rule):
    # A call with T <= K (a cell's single step) has one checkpoint, the initial state, which is
    # an input and kept anyway: the node must not keep a copy of it too.
    cfg = Config(rule=rule, T=1, B=4, O=16, source="internal", clip=1.0 if rule != "hebb" else None)
    kw = make_inputs(cfg)
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, state = call(tp.functional.plastic_scan, kw)
    trace_sized = [s for s in shapes if math.prod(s) == cfg.B * cfg.O * cfg.O]
    assert len(trace_sized) == (2 if rule == "retroactive" else 1), shapes
    # and the gradients are those of the reference
    grads = torch.autograd.grad(loss_of(y, state), list(tensor_inputs(kw).values()))
    y_ref, state_ref = call(tp.reference.plastic_scan, kw)
    grads_ref = torch.autograd.grad(loss_of(y_ref, state_ref), list(tensor_inputs(kw).values()))
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, **GRAD_TOL)


@pytest.mark.parametrize("T", [1, 5], ids=["single-step", "sequence"])
def test_broadcast_state_gradients_equal_materialised_ones(T):
    # A gradient of the final trace (eligibility trace) that is the same for every sequence,
    # as a loss summing the trace gives (an expanded tensor), is read as one [O, I] by the
    # kernels (csrc/ops/scan.cpp, state_grad); and one that does not flow, as zeros. Both
    # must give the gradients of the same values materialised, bit for bit.
    cfg = Config(rule="retroactive", source="internal", clip=1.0, T=T, B=3, O=4, I=4)
    kw = make_inputs(cfg)
    leaves = list(tensor_inputs(kw).values())
    y, state = call(tp.functional.plastic_scan, kw)
    gy = torch.randn_like(y)
    per_row = torch.randn(1, cfg.O, cfg.I, dtype=y.dtype)
    cases = {
        "scalar": (torch.tensor(0.7, dtype=y.dtype).expand_as(state.trace),
                   torch.tensor(-0.3, dtype=y.dtype).expand_as(state.eligibility)),
        "batch": (per_row.expand_as(state.trace), (2 * per_row).expand_as(state.eligibility)),
    }
    for name, (gH, gE) in cases.items():
        assert gH.stride(0) == 0 and gE.stride(0) == 0
        outputs = (y, state.trace, state.eligibility)
        broadcast = torch.autograd.grad(outputs, leaves, (gy, gH, gE), retain_graph=True)
        materialised = torch.autograd.grad(outputs, leaves, (gy, gH.contiguous(), gE.contiguous()),
                                           retain_graph=True)
        for a, b in zip(broadcast, materialised):
            assert torch.equal(a, b), name
    not_flowing = torch.autograd.grad(y, leaves, gy, retain_graph=True)
    zeros = torch.autograd.grad((y, state.trace, state.eligibility), leaves,
                                (gy, torch.zeros_like(state.trace), torch.zeros_like(state.eligibility)))
    for a, b in zip(not_flowing, zeros):
        assert torch.equal(a, b)


def test_checkpoint_buffers_are_reused_only_once_freed():
    # Checkpoints of at least 4 MiB come from a cache of freed buffers (csrc/cpu/memory.cpp):
    # a live one is never handed out again, a freed one is, and reuse changes no value.
    cfg = Config(rule="retroactive", source="internal", clip=1.0, T=20, B=4, O=256, I=256,
                 checkpoint_every=4)
    args = opcheck_args(cfg)
    args = tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args)
    forward = torch.ops.torchplastic.plastic_scan_forward
    first = forward(*args)
    assert first[5].nbytes >= 4 << 20 and first[6].nbytes >= 4 << 20
    second = forward(*args)
    live = {first[5].data_ptr(), first[6].data_ptr()}
    assert second[5].data_ptr() not in live and second[6].data_ptr() not in live
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    freed = second[5].data_ptr()
    del second
    third = forward(*args)
    assert freed in {third[5].data_ptr(), third[6].data_ptr()}
    for a, b in zip(first, third):
        assert torch.equal(a, b)

    kw = make_inputs(cfg, dtype=torch.float32)
    leaves = list(tensor_inputs(kw).values())

    def gradients():
        y, state = call(tp.functional.plastic_scan, kw)
        return torch.autograd.grad(loss_of(y, state), leaves)

    g0, g1 = gradients(), gradients()  # the second forward runs on the first's checkpoints
    for a, b in zip(g0, g1):
        assert torch.equal(a, b)


@pytest.mark.parametrize("rule", ["hebb", "retroactive"])
def test_absent_initial_state_and_gradients_read_as_zeros_every_call(rule):
    # An initial trace (eligibility) not given and the gradient of a trace output that did not
    # flow are, from 1 MiB, views of one read-only mapping that every call shares
    # (csrc/cpu/memory.cpp). They must read as zeros in every call, whatever callers do with the
    # outputs, and give what given zeros give.
    cfg = Config(rule=rule, source="internal", clip=1.0 if rule != "hebb" else None, T=3, B=4,
                 O=192, initial_state=False)
    assert cfg.B * cfg.O * cfg.O * 8 >= 1 << 20
    kw = make_inputs(cfg)
    assert kw["trace"] is None and kw.get("eligibility") is None
    kw_zeros = dict(kw, trace=torch.zeros(cfg.B, cfg.O, cfg.O, dtype=torch.float64))
    if rule == "retroactive":
        kw_zeros["eligibility"] = torch.zeros_like(kw_zeros["trace"])
    leaves = list(tensor_inputs(kw).values())
    w = torch.randn(cfg.T, cfg.B, cfg.O, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y_ref, state_ref = call(tp.reference.plastic_scan, kw_zeros)
    grads_ref = torch.autograd.grad((y_ref * w).sum(), leaves)
    for _ in range(3):
        y, state = call(tp.functional.plastic_scan, kw)
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(state.trace, state_ref.trace, rtol=1e-10, atol=1e-10)
        grads = torch.autograd.grad((y * w).sum(), leaves)  # no gradient flows into the trace
        for a, b in zip(grads, grads_ref):
            torch.testing.assert_close(a, b, **GRAD_TOL)
        with torch.no_grad():  # the outputs are the caller's to write
            for t in state:
                if t is not None:
                    t.add_(1.0)
    empty = call(tp.functional.plastic_scan, dict(kw, z=kw["z"][:0]))[1]
    empty.trace.add_(1.0)
    assert torch.equal(empty.trace, torch.ones_like(empty.trace))


@pytest.mark.parametrize("O", [520, 200], ids=["huge-pages", "small"])
def test_returned_traces_are_recycled_only_once_freed(O):
    # The traces a call returns are large buffers from the same cache (csrc/cpu/memory.cpp):
    # one the caller holds is never handed out again, whatever the caller writes into it;
    # once freed, the next call of the same size takes it. Both kinds of block: from 4 MiB up
    # (huge-page aligned) and from 256 KiB (a cell's trace stepped under no_grad).
    cfg = Config(rule="retroactive", source="internal", clip=1.0, T=3, B=4, O=O,  # a size of its own
                 checkpoint_every=8)  # and no checkpoints of that size
    kw = {k: (v.float().detach() if isinstance(v, torch.Tensor) else v) for k, v in make_inputs(cfg).items()}
    with torch.no_grad():
        _, first = call(tp.functional.plastic_scan, kw)
        assert (first.trace.nbytes >= 4 << 20) == (O == 520) and first.trace.nbytes >= 256 << 10
        expected = first.trace.clone(), first.eligibility.clone()
        first.trace.fill_(7.0)
        first.eligibility.fill_(7.0)
        _, second = call(tp.functional.plastic_scan, kw)
        live = {first.trace.data_ptr(), first.eligibility.data_ptr()}
        assert second.trace.data_ptr() not in live and second.eligibility.data_ptr() not in live
        assert torch.equal(second.trace, expected[0]) and torch.equal(second.eligibility, expected[1])
        freed = {second.trace.data_ptr(), second.eligibility.data_ptr()}
        del second
        _, third = call(tp.functional.plastic_scan, kw)
        assert {third.trace.data_ptr(), third.eligibility.data_ptr()} == freed
        assert torch.equal(third.trace, expected[0]) and torch.equal(third.eligibility, expected[1])


# ---------------------------------------------------------------- registration

def opcheck_args(cfg):
    """The op's arguments for cfg, positionally, in the schema's order."""
    kw = make_inputs(cfg)
    return tuple(kw.get(name) for name in SCAN_ARGUMENTS)


@pytest.mark.parametrize("cfg", [Config(rule="hebb"),
                                 Config(rule="retroactive", recurrent=False, source="fanout", clip=1.0,
                                        threshold=0.1),
                                 Config(rule="modulated", source="external", clip=1.0),
                                 Config(rule="abcd", abcd="neuron", clip=1.0, scaling=1.0)], ids=Config.id)
def test_opcheck(cfg):
    torch.library.opcheck(torch.ops.torchplastic.plastic_scan.default, opcheck_args(cfg))


def test_opcheck_forward_op():
    args = opcheck_args(Config(rule="retroactive", source="internal", clip=1.0, checkpoint_every=2))
    args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(torch.ops.torchplastic.plastic_scan_forward.default, args)


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    cfg = Config(rule="retroactive", source="fanout", clip=1.0, threshold=0.1, T=6)
    kw = make_inputs(cfg)
    u = torch.randn(cfg.T, cfg.B, 5, dtype=torch.float64, requires_grad=True)
    w_in = torch.randn(cfg.O, 5, dtype=torch.float64, requires_grad=True)

    def model(u, w_in):
        args = dict(kw, z=u @ w_in.t())
        y, state = call(tp.functional.plastic_scan, args)
        return y.square().sum() + state.trace.sum()

    compiled = torch.compile(model, fullgraph=True)
    eager_loss = model(u, w_in)
    compiled_loss = compiled(u, w_in)
    torch.testing.assert_close(compiled_loss, eager_loss)
    g_eager = torch.autograd.grad(eager_loss, (u, w_in, kw["alpha"], kw["eta"]))
    g_compiled = torch.autograd.grad(compiled_loss, (u, w_in, kw["alpha"], kw["eta"]))
    for a, b in zip(g_compiled, g_eager):
        torch.testing.assert_close(a, b)


def test_torch_compile_fullgraph_abcd():
    torch._dynamo.reset()
    cfg = Config(rule="abcd", recurrent=False, abcd="neuron", clip=1.0, T=5)
    kw = make_inputs(cfg)

    def model(z, abcd):
        y, state = call(tp.functional.plastic_scan, dict(kw, z=z, abcd=abcd))
        return y.square().sum() + state.trace.sum()

    compiled = torch.compile(model, fullgraph=True)
    eager_loss = model(kw["z"], kw["abcd"])
    compiled_loss = compiled(kw["z"], kw["abcd"])
    torch.testing.assert_close(compiled_loss, eager_loss)
    g_eager = torch.autograd.grad(eager_loss, (kw["z"], kw["abcd"], kw["eta"]))
    g_compiled = torch.autograd.grad(compiled_loss, (kw["z"], kw["abcd"], kw["eta"]))
    for a, b in zip(g_compiled, g_eager):
        torch.testing.assert_close(a, b)


def test_build_info():
    info = tp.build_info()
    assert info["torch_version"] == torch.__version__.split("+")[0]
    assert isinstance(info["with_cuda"], bool)
    assert info["cpu_kernels"] in ("avx512", "avx2", "generic")
    built = info["cpu_kernels_built"].split(",")
    assert built[0] == "generic" and info["cpu_kernels"] in built
