"""Every derivative and transform of the op, against tp.reference: what the README's table of
transforms says.

First-order reverse mode runs the fused kernels; double backward, forward-mode AD and
functorch's transforms run the same steps as ATen operations (csrc/autograd/aten_scan.cpp).
"""

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import torchplastic as tp
from helpers import Config, call, call_lstm, loss_of, make_inputs, make_lstm_inputs, tensor_inputs

CONFIGS = [
    Config(rule="hebb"),
    Config(rule="oja", recurrent=False, threshold=0.1, alpha="neuron", eta="connection"),
    Config(rule="modulated", source="external", clip=1.0),
    Config(rule="retroactive", recurrent=False, source="fanout", clip=1.0, threshold=0.1),
    Config(rule="retroactive", source="internal", scaling=0.5, checkpoint_every=2, T=6),
    Config(rule="abcd", abcd="neuron", clip=1.0, scaling=1.0, activation="sigmoid"),
]


def function_of(fn, kw):
    """fn (the fused op or the reference) as a function of kw's tensors, in their order."""
    names = list(tensor_inputs(kw))

    def f(*tensors):
        y, state = call(fn, dict(kw, **dict(zip(names, tensors))))
        return (y, *[t for t in state if t is not None])

    return f


def scalar_of(outputs, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in outputs)


def assert_close_or_zero(a, b):
    a = torch.zeros_like(b) if a is None and b is not None else a
    b = torch.zeros_like(a) if b is None and a is not None else b
    if a is not None:
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- reverse mode, first order

@pytest.mark.parametrize("cfg", CONFIGS, ids=Config.id)
def test_first_order_gradients_match_the_reference(cfg):
    kw = make_inputs(cfg)
    leaves = list(tensor_inputs(kw).values())
    grads = [torch.autograd.grad(loss_of(*call(fn, kw)), leaves, allow_unused=True)
             for fn in (tp.functional.plastic_scan, tp.reference.plastic_scan)]
    for a, b in zip(*grads):
        assert_close_or_zero(a, b)


# ---------------------------------------------------------------- double backward

def gradient_penalty_gradients(fn, kw, caller=call):
    """d/dθ of Σ w·(dL/dθ): a gradient of first gradients, as a gradient penalty takes; fn is
    called through caller (call, or call_lstm for the plastic LSTM)."""
    leaves = list(tensor_inputs(kw).values())
    first = torch.autograd.grad(loss_of(*caller(fn, kw)), leaves, create_graph=True, allow_unused=True)
    penalty = scalar_of([g for g in first if g is not None], seed=2)
    return torch.autograd.grad(penalty, leaves, allow_unused=True)


@pytest.mark.parametrize("cfg", CONFIGS, ids=Config.id)
def test_double_backward_matches_the_reference(cfg):
    kw = make_inputs(cfg)
    fused = gradient_penalty_gradients(tp.functional.plastic_scan, kw)
    reference = gradient_penalty_gradients(tp.reference.plastic_scan, kw)
    assert any(g is not None and g.abs().max() > 0 for g in reference)
    for a, b in zip(fused, reference):
        assert_close_or_zero(a, b)


@pytest.mark.parametrize("lstm", [False, True], ids=["rnn", "lstm"])
def test_second_order_gradients_are_finite_from_a_zero_state_under_synaptic_scaling(lstm):
    # A zero initial state leaves the first step's trace rows at zero (p = h_0 = 0), where the
    # row norm's second derivative is 0/0: both the reference and the op's ATen steps took the
    # norm there, and second-order gradients came out NaN (a random fuzz found it).
    cfg = Config(rule="hebb", scaling=0.7, initial_state=False, T=3, B=2, O=3)
    kw = make_lstm_inputs(cfg) if lstm else make_inputs(cfg)
    caller, fns = ((call_lstm, (tp.functional.plastic_lstm_scan, tp.reference.plastic_lstm_scan)) if lstm
                   else (call, (tp.functional.plastic_scan, tp.reference.plastic_scan)))
    fused, reference = (gradient_penalty_gradients(fn, kw, caller) for fn in fns)
    for a, b in zip(fused, reference):
        assert a is None or torch.isfinite(a).all()
        assert b is None or torch.isfinite(b).all()
        assert_close_or_zero(a, b)


@pytest.mark.parametrize("cfg", [Config(rule="retroactive", source="fanout", clip=2.0, threshold=0.2),
                                 Config(rule="abcd", recurrent=False, scaling=1.5)], ids=Config.id)
def test_gradgradcheck(cfg):
    cfg.T, cfg.B, cfg.O, cfg.I = 3, 2, 3, 2
    kw = make_inputs(cfg)
    assert torch.autograd.gradgradcheck(function_of(tp.functional.plastic_scan, kw),
                                        tuple(tensor_inputs(kw).values()), atol=1e-7, rtol=1e-5)


def test_the_issues_example_and_a_maml_step():
    torch.manual_seed(0)
    m = tp.PlasticLinear(3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)

    def reference(x, alpha):
        z = torch.nn.functional.linear(x, m.weight, m.bias)
        return tp.reference.plastic_scan(z, alpha, m.eta, None, x=x)[0]

    def fused(x, alpha):
        z = torch.nn.functional.linear(x, m.weight, m.bias)
        return tp.functional.plastic_scan(z, alpha, m.eta, None, x=x)[0]

    for f in (fused, reference):  # the gradient of an input-gradient penalty
        g, = torch.autograd.grad(f(x, m.alpha).pow(2).sum(), x, create_graph=True)
        gg, = torch.autograd.grad(g.pow(2).sum(), x)
        if f is fused:
            gg_fused = gg
    torch.testing.assert_close(gg_fused, gg)
    assert gg.abs().max() > 0.1

    # MAML: one inner SGD step on α, then the outer loss differentiated through it.
    def outer_gradient(f):
        inner, = torch.autograd.grad(f(x[:3], m.alpha).square().mean(), m.alpha, create_graph=True)
        adapted = m.alpha - 0.5 * inner
        return torch.autograd.grad(f(x[3:], adapted).square().mean(), m.alpha)[0]

    torch.testing.assert_close(outer_gradient(fused), outer_gradient(reference))


# ---------------------------------------------------------------- forward mode

def tangents(kw, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in tensor_inputs(kw).values())


@pytest.mark.parametrize("cfg", CONFIGS, ids=Config.id)
def test_jvp_matches_the_reference(cfg):
    kw = make_inputs(cfg, requires_grad=False)
    primals, v = tuple(tensor_inputs(kw).values()), tangents(kw)
    _, t_fused = torch.func.jvp(function_of(tp.functional.plastic_scan, kw), primals, v)
    _, t_ref = torch.func.jvp(function_of(tp.reference.plastic_scan, kw), primals, v)
    for a, b in zip(t_fused, t_ref):
        torch.testing.assert_close(a, b)


def test_forward_ad_dual_tensors_match_the_reference():
    cfg = Config(rule="retroactive", source="internal", clip=1.0)
    kw = make_inputs(cfg, requires_grad=False)
    v = tangents(kw)
    out = []
    for fn in (tp.functional.plastic_scan, tp.reference.plastic_scan):
        with fwAD.dual_level():
            duals = [fwAD.make_dual(p, t) for p, t in zip(tensor_inputs(kw).values(), v)]
            outputs = function_of(fn, kw)(*duals)
            out.append([fwAD.unpack_dual(o).tangent for o in outputs])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- functorch

@pytest.mark.parametrize("transform", ["grad", "vjp", "jacrev", "jacfwd", "hessian", "vmap_grad"])
def test_functorch_transforms_match_the_reference(transform):
    torch.manual_seed(0)
    m = tp.PlasticRNN(3, 4, rule="modulated", dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64)

    def fused(x):
        return m(x)[0]

    def reference(x):
        z = torch.nn.functional.linear(x, m.weight_ih, m.bias)
        return tp.reference.plastic_scan(z, m.alpha, None, None, weight=m.weight_hh, rule="modulated",
                                         clip=1.0, mod_weight=m.mod_weight, mod_bias=m.mod_bias)[0]

    def apply(f):
        loss = lambda x: f(x).pow(2).sum()  # noqa: E731
        if transform == "grad":
            return torch.func.grad(loss)(x)
        if transform == "vjp":
            return torch.func.vjp(f, x)[1](torch.ones(4, 2, 4, dtype=torch.float64))[0]
        if transform == "jacrev":
            return torch.func.jacrev(f)(x)
        if transform == "jacfwd":
            return torch.func.jacfwd(f)(x)
        if transform == "hessian":
            return torch.func.hessian(loss)(x)
        return torch.func.vmap(torch.func.grad(loss))(torch.stack([x, 2 * x]))

    torch.testing.assert_close(apply(fused), apply(reference))
