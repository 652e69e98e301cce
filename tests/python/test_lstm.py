"""The plastic LSTM (SPEC §2b): tp.functional.plastic_lstm_scan against the reference, in values
and gradients, for every rule, modulation source and option; its registration, checks and the
memory contract. The modules are tested in test_lstm_modules.py."""

import pytest
import torch

import torchplastic as tp
from torchplastic import functional

from helpers import (RULES, Config, call_lstm, gradcheck_call, loss_of, loss_weights, make_lstm_inputs,
                     tensor_inputs)


def lstm_configs():
    out = []
    for rule in RULES:
        info = tp.rules.rule_info(rule)
        for source in (("external", "external_per_neuron", "internal", "fanout")
                       if info.modulated else (None,)):
            out.append(Config(rule=rule, source=source, clip=info.default_clip))
    return out


OPTIONS = [
    Config(rule="hebb", alpha="neuron", eta="connection"),
    Config(rule="oja", alpha="scalar", eta="neuron", clip=0.5),
    Config(rule="hebb", scaling=0.8, checkpoint_every=2),
    Config(rule="retroactive", source="fanout", threshold=0.2, target_activity=0.1, clip=1.0),
    Config(rule="modulated", source="internal", scaling=1.0, clip=0.3),
    Config(rule="abcd", abcd="neuron", clip=1.0, threshold=0.1),
    Config(rule="abcd", abcd="scalar", eta="connection", clip=None),
    Config(rule="hebb", initial_state=False),
]


def assert_matches_reference(cfg, atol=1e-10):
    kw = make_lstm_inputs(cfg)
    h, state = call_lstm(tp.functional.plastic_lstm_scan, kw)
    h_ref, state_ref = call_lstm(tp.reference.plastic_lstm_scan, kw)
    torch.testing.assert_close(h, h_ref, atol=atol, rtol=0)
    for name, a, b in zip(state._fields, state, state_ref):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, atol=atol, rtol=0, msg=name)
    leaves = list(tensor_inputs(kw).values())
    g = torch.autograd.grad(loss_of(h, state), leaves, allow_unused=True)
    g_ref = torch.autograd.grad(loss_of(h_ref, state_ref), leaves, allow_unused=True)
    for name, a, b in zip(tensor_inputs(kw), g, g_ref):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-9, msg=f"d/d{name}")


@pytest.mark.parametrize("cfg", lstm_configs(), ids=Config.id)
def test_every_rule_and_modulation_matches_reference(cfg):
    assert_matches_reference(cfg)


@pytest.mark.parametrize("cfg", OPTIONS, ids=Config.id)
def test_options_match_reference(cfg):
    assert_matches_reference(cfg)


@pytest.mark.parametrize("rule", RULES)
def test_gradcheck(rule):
    info = tp.rules.rule_info(rule)
    cfg = Config(rule=rule, T=3, B=2, O=3, clip=info.default_clip, source="fanout" if info.modulated else None,
                 threshold=0.1)
    assert gradcheck_call(call_lstm, tp.functional.plastic_lstm_scan, make_lstm_inputs(cfg))


@pytest.mark.parametrize("T", [1, 5, 9])
def test_checkpoint_interval_gives_identical_results(T):
    outs = []
    for K in (1, 2, 3, None, 50):
        kw = make_lstm_inputs(Config(rule="retroactive", source="internal", clip=1.0, T=T, checkpoint_every=K))
        h, state = call_lstm(tp.functional.plastic_lstm_scan, kw)
        g = torch.autograd.grad(loss_of(h, state), list(tensor_inputs(kw).values()))
        outs.append((h, state, g))
    for h, state, g in outs[1:]:
        assert torch.equal(h, outs[0][0])
        assert torch.equal(state.trace, outs[0][1].trace)
        for a, b in zip(g, outs[0][2]):
            assert torch.equal(a, b)


# The CPU backward takes the plastic LSTM's sequences up to four at a time in lockstep, sharing
# one read of W_ifo per step (csrc/cpu/backward_sequence.h, backward_lstm_group); with one
# thread and seven sequences the groups are of four and three. Each sequence's arithmetic is the
# same as alone: its outputs and the gradients of its own inputs must equal, bit for bit, those
# of the sequence run alone (which takes no group), and the summed gradients the reference's.
@pytest.mark.parametrize("cfg", [
    Config(rule="hebb", O=10, T=6, B=7),
    Config(rule="retroactive", source="internal", clip=1.0, threshold=0.1, O=9, T=7, B=7, checkpoint_every=3),
    Config(rule="abcd", eta="connection", O=17, T=5, B=7),
], ids=Config.id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_in_groups_equals_each_sequence_alone(cfg, dtype):
    time_major = ("z", "modulation")

    def sequence(v, b, is_time_major):
        return v[:, b:b + 1] if is_time_major else v[b:b + 1]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kw = make_lstm_inputs(cfg, dtype=dtype)
        h, state = call_lstm(tp.functional.plastic_lstm_scan, kw)
        batch_major = ("trace", "eligibility", "hidden", "cell", "threshold")
        per_sequence = [name for name in time_major + batch_major if kw.get(name) is not None]
        leaves = list(tensor_inputs(kw).values())
        grads = dict(zip(tensor_inputs(kw), torch.autograd.grad(loss_of(h, state), leaves)))
        weights = loss_weights((h, *state))
        for b in range(cfg.B):
            alone = dict(kw)
            for name in per_sequence:
                alone[name] = sequence(kw[name].detach(), b, name in time_major).requires_grad_(True)
            h_b, state_b = call_lstm(tp.functional.plastic_lstm_scan, alone)
            assert torch.equal(h_b[:, 0], h[:, b]), f"sequence {b}"
            # The same loss restricted to sequence b: its slices of loss_of's weights (h is
            # time-major, the state batch-major).
            loss_b = sum((part * sequence(w, b, k == 0)).sum()
                         for k, (part, w) in enumerate(zip((h_b, *state_b), weights)) if w is not None)
            g_b = torch.autograd.grad(loss_b, [alone[name] for name in per_sequence])
            for name, g in zip(per_sequence, g_b):
                assert torch.equal(g, sequence(grads[name], b, name in time_major)), f"dL/d{name}, sequence {b}"
        h_ref, state_ref = call_lstm(tp.reference.plastic_lstm_scan, kw)
        g_ref = torch.autograd.grad(loss_of(h_ref, state_ref), leaves)
        tolerance = {} if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
        for name, g in zip(tensor_inputs(kw), g_ref):
            torch.testing.assert_close(grads[name], g, **tolerance, msg=lambda m: f"dL/d{name}: {m}")
    finally:
        torch.set_num_threads(threads)


def test_zero_steps_returns_state_unchanged():
    kw = make_lstm_inputs(Config(rule="retroactive", source="internal", clip=1.0, T=0))
    h, state = call_lstm(tp.functional.plastic_lstm_scan, kw)
    assert h.shape == (0, 3, 4)
    for name in ("hidden", "cell", "trace", "eligibility"):
        torch.testing.assert_close(getattr(state, name), kw[name])


def test_alpha_zero_is_torch_lstm():
    # With α = 0 a plastic LSTM is the LSTM, whatever the trace.
    torch.manual_seed(0)
    T, B, I, H = 6, 4, 5, 7
    lstm = torch.nn.LSTM(I, H).double()
    u = torch.randn(T, B, I, dtype=torch.float64)
    h0, c0 = torch.randn(1, B, H, dtype=torch.float64), torch.randn(1, B, H, dtype=torch.float64)
    z = u @ lstm.weight_ih_l0.t() + lstm.bias_ih_l0 + lstm.bias_hh_l0
    out, state = tp.functional.plastic_lstm_scan(
        z, lstm.weight_hh_l0, torch.zeros(H, H, dtype=torch.float64),
        torch.full((1, 1), 0.3, dtype=torch.float64), None, hidden=h0[0], cell=c0[0])
    out_ref, (h_ref, c_ref) = lstm(u, (h0, c0))
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(state.hidden, h_ref[0])
    torch.testing.assert_close(state.cell, c_ref[0])


@pytest.mark.parametrize("dtype, H", [(torch.float64, 43), (torch.float32, 83)])
def test_hidden_sizes_off_the_vector_width_match_reference(dtype, H):
    # The backward's W_ifoᵀ product runs in chunks of 256 bytes (at most eight vectors), then
    # of one vector, then the last columns together (csrc/cpu/backward.h): these sizes need all
    # three in every build (generic, AVX2, AVX-512).
    cfg = Config(rule="hebb", T=4, B=2, O=H)
    kw64 = make_lstm_inputs(cfg)
    kw = {k: (v.detach().to(dtype).requires_grad_() if isinstance(v, torch.Tensor) else v)
          for k, v in kw64.items()}
    h, state = call_lstm(tp.functional.plastic_lstm_scan, kw)
    h_ref, state_ref = call_lstm(tp.reference.plastic_lstm_scan, kw64)
    tol = dict(atol=1e-10, rtol=1e-9) if dtype == torch.float64 else dict(atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(h.double(), h_ref, **tol)
    g = torch.autograd.grad(loss_of(h, state), list(tensor_inputs(kw).values()))
    g_ref = torch.autograd.grad(loss_of(h_ref, state_ref), list(tensor_inputs(kw64).values()))
    for name, a, b in zip(tensor_inputs(kw), g, g_ref):
        torch.testing.assert_close(a.double(), b, **tol, msg=f"d/d{name}")


def test_float32_matches_float64_reference():
    cfg = Config(rule="retroactive", source="internal", clip=1.0, T=12, O=16)
    kw64 = make_lstm_inputs(cfg, requires_grad=False)
    kw32 = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in kw64.items()}
    h, state = call_lstm(tp.functional.plastic_lstm_scan, kw32)
    h_ref, state_ref = call_lstm(tp.reference.plastic_lstm_scan, kw64)
    assert h.dtype == torch.float32
    torch.testing.assert_close(h.double(), h_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state.trace.double(), state_ref.trace, atol=1e-5, rtol=1e-5)


def test_lengths_match_reference():
    cfg = Config(rule="retroactive", source="fanout", clip=1.0, threshold=0.1, T=6)
    kw = make_lstm_inputs(cfg)
    kw["lengths"] = torch.tensor([6, 0, 3])
    h, state = call_lstm(tp.functional.plastic_lstm_scan, kw)
    h_ref, state_ref = call_lstm(tp.reference.plastic_lstm_scan, kw)
    torch.testing.assert_close(h, h_ref)
    for a, b in zip(state, state_ref):
        if a is not None:
            torch.testing.assert_close(a, b)
    leaves = list(tensor_inputs({k: v for k, v in kw.items() if k != "lengths"}).values())
    g = torch.autograd.grad(loss_of(h, state), leaves)
    g_ref = torch.autograd.grad(loss_of(h_ref, state_ref), leaves)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)


def test_double_backward_and_forward_mode_match_reference():
    cfg = Config(rule="retroactive", source="internal", clip=1.0, T=4, B=2, O=3)
    kw = make_lstm_inputs(cfg)

    def loss(fn, alpha, z):
        h, state = call_lstm(fn, dict(kw, alpha=alpha, z=z))
        return loss_of(h, state)

    ga, = torch.autograd.grad(loss(tp.functional.plastic_lstm_scan, kw["alpha"], kw["z"]), kw["alpha"],
                              create_graph=True)
    ga_ref, = torch.autograd.grad(loss(tp.reference.plastic_lstm_scan, kw["alpha"], kw["z"]), kw["alpha"],
                                  create_graph=True)
    torch.testing.assert_close(ga, ga_ref)
    gz, = torch.autograd.grad(ga.square().sum(), kw["z"])
    gz_ref, = torch.autograd.grad(ga_ref.square().sum(), kw["z"])
    torch.testing.assert_close(gz, gz_ref)

    tangent = torch.randn_like(kw["z"])
    _, jvp = torch.func.jvp(lambda z: loss(tp.functional.plastic_lstm_scan, kw["alpha"].detach(), z),
                            (kw["z"].detach(),), (tangent,))
    _, jvp_ref = torch.func.jvp(lambda z: loss(tp.reference.plastic_lstm_scan, kw["alpha"].detach(), z),
                                (kw["z"].detach(),), (tangent,))
    torch.testing.assert_close(jvp, jvp_ref)


def test_memory_saved_for_backward_is_checkpoints_not_every_trace():
    T, B, H, K = 16, 2, 8, 4
    kw = make_lstm_inputs(Config(rule="hebb", T=T, B=B, O=H, checkpoint_every=K))
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        h, state = call_lstm(tp.functional.plastic_lstm_scan, kw)
    trace_sized = [t for t in saved if t.dim() == 4 and t.shape[-2:] == (H, H)]
    assert [tuple(t.shape) for t in trace_sized] == [(T // K - 1, B, H, H)]


def opcheck_args(cfg):
    kw = make_lstm_inputs(cfg)
    kw["weight"] = kw.pop("weight_hh")
    kw.update(x=None, activation="tanh")
    return tuple(kw.get(name) for name in functional.SCAN_ARGUMENTS)


@pytest.mark.parametrize("cfg", [Config(rule="hebb"),
                                 Config(rule="retroactive", source="fanout", clip=1.0, threshold=0.1),
                                 Config(rule="abcd", abcd="neuron", clip=1.0, scaling=1.0)], ids=Config.id)
def test_opcheck(cfg):
    torch.library.opcheck(torch.ops.torchplastic.plastic_lstm_scan.default, opcheck_args(cfg))


def test_opcheck_forward_op():
    args = opcheck_args(Config(rule="retroactive", source="internal", clip=1.0, checkpoint_every=2))
    args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(torch.ops.torchplastic.plastic_lstm_scan_forward.default, args)


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    cfg = Config(rule="retroactive", source="fanout", clip=1.0, T=6)
    kw = make_lstm_inputs(cfg)
    u = torch.randn(cfg.T, cfg.B, 5, dtype=torch.float64, requires_grad=True)
    w_in = torch.randn(4 * cfg.O, 5, dtype=torch.float64, requires_grad=True)

    def model(u, w_in):
        h, state = call_lstm(tp.functional.plastic_lstm_scan, dict(kw, z=u @ w_in.t()))
        return h.square().sum() + state.cell.sum() + state.trace.sum()

    compiled = torch.compile(model, fullgraph=True)
    eager_loss, compiled_loss = model(u, w_in), compiled(u, w_in)
    torch.testing.assert_close(compiled_loss, eager_loss)
    leaves = (u, w_in, kw["alpha"], kw["weight_hh"])
    for a, b in zip(torch.autograd.grad(compiled_loss, leaves), torch.autograd.grad(eager_loss, leaves)):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- bad input

def lstm_kw(**overrides):
    kw = make_lstm_inputs(Config(rule="hebb"), requires_grad=False)
    kw.update(overrides)
    return kw


@pytest.mark.parametrize("overrides, message", [
    (dict(z=torch.randn(5, 3, 10, dtype=torch.float64)), r"z: expected a 3-D tensor \[T, B, 4H\].*not a multiple of 4"),
    (dict(weight_hh=torch.randn(4, 4, dtype=torch.float64)),
     r"weight: expected shape \[16, 4\] \[4H, H\] \(W_hh; H = 4 from z's gate size 16\), got \[4, 4\]"),
    # A gate size that is a multiple of 4 but not W_hh's 4H: both named.
    (dict(z=torch.randn(5, 3, 12, dtype=torch.float64)),
     r"weight: expected shape \[12, 3\] \[4H, H\] \(W_hh; H = 3 from z's gate size 12\), got \[16, 4\]"),
    (dict(cell=torch.randn(3, 5, dtype=torch.float64)), r"cell: expected shape \[3, 4\] \[B, H\], got \[3, 5\]"),
    (dict(hidden=torch.randn(2, 4, dtype=torch.float64)), r"hidden: expected shape \[3, 4\] \[B, H\]"),
    (dict(alpha=torch.randn(16, 4, dtype=torch.float64)), r"alpha: expected shape \[4, 4\]"),
    (dict(trace=torch.randn(3, 16, 4, dtype=torch.float64)), r"trace: expected shape \[3, 4, 4\]"),
])
def test_bad_inputs_are_refused(overrides, message):
    with pytest.raises(ValueError, match="plastic_lstm_scan: " + message):
        call_lstm(tp.functional.plastic_lstm_scan, lstm_kw(**overrides))


def test_cell_is_refused_by_plastic_scan():
    z = torch.randn(3, 2, 4)
    with pytest.raises(ValueError, match=r"plastic_scan: cell: expected None .*plastic_lstm_scan"):
        torch.ops.torchplastic.plastic_scan(z, torch.rand(4, 4), torch.full((1, 1), 0.1), None, None,
                                            torch.randn(4, 4), None, None, None, None, None, None, None,
                                            None, "hebb", "tanh", None, None, None, 0.0, None,
                                            cell=torch.zeros(2, 4))


def test_raw_op_refuses_x_and_other_activations():
    args = dict(zip(functional.SCAN_ARGUMENTS, opcheck_args(Config(rule="hebb"))))
    args = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    with pytest.raises(ValueError, match=r"plastic_lstm_scan: x: expected None"):
        torch.ops.torchplastic.plastic_lstm_scan(**dict(args, x=torch.randn(5, 3, 4, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"plastic_lstm_scan: activation: expected 'tanh'"):
        torch.ops.torchplastic.plastic_lstm_scan(**dict(args, activation="relu"))


def test_torch_export_with_dynamic_length():
    torch.manual_seed(0)
    lstm = tp.PlasticLSTM(3, 5, rule="retroactive", modulation="fanout").double()
    T = torch.export.Dim("T", min=2, max=64)
    program = torch.export.export(lstm, (torch.randn(9, 2, 3, dtype=torch.float64),),
                                  dynamic_shapes=({0: T},))
    for steps in (4, 17):
        u = torch.randn(steps, 2, 3, dtype=torch.float64)
        out, state = program.module()(u)
        out_ref, state_ref = lstm(u)
        torch.testing.assert_close(out, out_ref)
        torch.testing.assert_close(state.cell, state_ref.cell)
        torch.testing.assert_close(state.trace, state_ref.trace)
