"""The Python modules: against the reference, parameters, state, layouts, compile."""

import io
import itertools

import pytest
import torch

import torchplastic as tp

KW_CASES = [
    dict(rule="hebb"),
    dict(rule="oja", alpha="neuron", eta="connection"),
    dict(rule="modulated", modulation="internal"),
    dict(rule="retroactive", modulation="fanout", synaptic_scaling=2.0),
    dict(rule="retroactive", modulation="external", adaptive_threshold=0.1, target_activity=0.1),
    dict(rule="hebb", activation="relu", alpha="scalar", clip=0.5),
    dict(rule="abcd", abcd="neuron", eta="neuron"),
    dict(rule="abcd", abcd="scalar", clip=None, synaptic_scaling=1.0),
]
MODULES = [tp.PlasticLinear, tp.PlasticRNN, tp.PlasticLSTM]


def make(cls, kw, I=5, O=4, seed=0):
    torch.manual_seed(seed)
    m = cls(I, O, dtype=torch.float64, **kw)
    with torch.no_grad():  # larger α and η than the defaults, so plasticity matters in the check
        m.alpha.uniform_(-0.5, 0.5)
        if m.eta is not None:
            m.eta.uniform_(0.1, 0.4)
    return m


def reference_of(m, x, state, modulation):
    recurrent = isinstance(m, tp.PlasticRNN)
    w = m.weight_ih if recurrent else m.weight
    z = torch.nn.functional.linear(x, w, m.bias)
    state = state or tp.PlasticState()
    if isinstance(m, tp.PlasticLSTM):
        return tp.reference.plastic_lstm_scan(
            z, m.weight_hh, m.alpha, m.eta, state.trace, hidden=state.hidden, cell=state.cell,
            rule=m.rule, clip=m.clip, modulation=modulation,
            mod_weight=getattr(m, "mod_weight", None), mod_bias=getattr(m, "mod_bias", None),
            mod_fanout_weight=getattr(m, "mod_fanout_weight", None),
            mod_fanout_bias=getattr(m, "mod_fanout_bias", None), eligibility=state.eligibility,
            synaptic_scaling=m.synaptic_scaling, adaptive_threshold=m.adaptive_threshold,
            target_activity=m.target_activity, threshold=state.threshold, abcd=m.abcd)
    return tp.reference.plastic_scan(
        z, m.alpha, m.eta, state.trace, x=None if recurrent else x,
        weight=m.weight_hh if recurrent else None, hidden=state.hidden, rule=m.rule,
        activation=m.activation, clip=m.clip, modulation=modulation,
        mod_weight=getattr(m, "mod_weight", None), mod_bias=getattr(m, "mod_bias", None),
        mod_fanout_weight=getattr(m, "mod_fanout_weight", None),
        mod_fanout_bias=getattr(m, "mod_fanout_bias", None), eligibility=state.eligibility,
        synaptic_scaling=m.synaptic_scaling, adaptive_threshold=m.adaptive_threshold,
        target_activity=m.target_activity, threshold=state.threshold, abcd=m.abcd)


def inputs(m, T=6, B=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, m.in_features, generator=g, dtype=torch.float64)
    mod = torch.randn(T, B, generator=g, dtype=torch.float64) if m.modulation == "external" else None
    return x, mod


def total(y, state):
    return y.square().sum() + sum(t.sum() for t in state if t is not None)


# The LSTM's cell candidate is tanh: the cases with another activation are not its.
@pytest.mark.parametrize("cls,kw", [(cls, kw) for cls, kw in itertools.product(MODULES, KW_CASES)
                                    if not (cls is tp.PlasticLSTM and "activation" in kw)],
                         ids=lambda v: v.__name__ if isinstance(v, type) else "-".join(f"{k}={w}" for k, w in v.items()))
def test_module_matches_reference(cls, kw):
    m = make(cls, kw)
    x, mod = inputs(m)
    y, state = m(x, modulation=mod)
    y_ref, state_ref = reference_of(m, x, None, mod)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    params = list(m.parameters())
    g = torch.autograd.grad(total(y, state), params)
    g_ref = torch.autograd.grad(total(y_ref, state_ref), params)
    for (name, _), a, b in zip(m.named_parameters(), g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=lambda s: f"{name}: {s}")


def test_parameter_names_and_shapes():
    lin = tp.PlasticLinear(5, 4)
    assert {k: tuple(v.shape) for k, v in lin.named_parameters()} == {
        "alpha": (4, 5), "eta": (1, 1), "weight": (4, 5), "bias": (4,)}
    rnn = tp.PlasticRNN(5, 4, rule="retroactive", modulation="fanout", alpha="neuron", eta="connection")
    assert {k: tuple(v.shape) for k, v in rnn.named_parameters()} == {
        "alpha": (4, 1), "eta": (4, 4), "mod_weight": (4,), "mod_bias": (1,),
        "mod_fanout_weight": (4,), "mod_fanout_bias": (4,), "weight_ih": (4, 5),
        "weight_hh": (4, 4), "bias": (4,)}
    mod = tp.PlasticRNN(5, 4, rule="modulated", modulation="external", bias=False)
    assert set(dict(mod.named_parameters())) == {"alpha", "weight_ih", "weight_hh"}
    assert mod.clip == 1.0 and tp.PlasticRNN(5, 4).clip is None  # clip="auto"
    assert torch.all(rnn.eta == 0.01) and 0 <= rnn.alpha.min() and rnn.alpha.max() <= 0.01
    assert "rule='retroactive'" in repr(rnn) and "modulation='fanout'" in repr(rnn)
    abcd = tp.PlasticLinear(5, 4, rule="abcd", abcd="neuron", abcd_init=(0.5, 0.1, -0.2, 0.0))
    assert {k: tuple(v.shape) for k, v in abcd.named_parameters()} == {
        "alpha": (4, 5), "eta": (1, 1), "abcd": (4, 4, 1), "weight": (4, 5), "bias": (4,)}
    assert abcd.clip == 1.0 and "abcd='neuron'" in repr(abcd)
    torch.testing.assert_close(abcd.abcd[:, 0, 0], torch.tensor([0.5, 0.1, -0.2, 0.0]))


@pytest.mark.parametrize("cls", MODULES)
def test_state_carried_across_two_halves_equals_one_pass(cls):
    m = make(cls, dict(rule="retroactive", modulation="internal", adaptive_threshold=0.1))
    x, _ = inputs(m, T=8)
    y, state = m(x)
    y1, s1 = m(x[:4])
    y2, s2 = m(x[4:], s1)
    torch.testing.assert_close(torch.cat([y1, y2]), y, rtol=1e-12, atol=1e-12)
    for a, b in zip(s2, state):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    detached = s1.detach()
    assert all(t is None or not t.requires_grad for t in detached)


@pytest.mark.parametrize("cls", MODULES)
def test_batch_first_and_unbatched(cls):
    m = make(cls, dict(rule="hebb"))
    x, _ = inputs(m)
    y, state = m(x)
    m.batch_first = True
    y_bf, state_bf = m(x.transpose(0, 1))
    torch.testing.assert_close(y_bf, y.transpose(0, 1))
    torch.testing.assert_close(state_bf.trace, state.trace)
    y_u, state_u = m(x[:, 1])  # unbatched [T, I]: batch_first does not apply
    torch.testing.assert_close(y_u, y[:, 1])
    torch.testing.assert_close(state_u.trace, state.trace[1])


@pytest.mark.parametrize("sequence_cls, cell_cls, kw", [
    (tp.PlasticRNN, tp.PlasticRNNCell, dict(rule="modulated", modulation="fanout")),
    (tp.PlasticLSTM, tp.PlasticLSTMCell, dict(rule="retroactive", modulation="fanout")),
], ids=["rnn", "lstm"])
def test_cell_equals_one_step_of_the_sequence_module(sequence_cls, cell_cls, kw):
    module = make(sequence_cls, kw)
    cell = cell_cls(5, 4, dtype=torch.float64, **kw)
    cell.load_state_dict(module.state_dict())
    x, _ = inputs(module, T=5)
    y, state = module(x)
    s = None
    for t in range(5):
        h, s = cell(x[t], s)
        torch.testing.assert_close(h, y[t])
    torch.testing.assert_close(s.trace, state.trace)
    for a, b in zip(s, state):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    h_u, s_u = cell(x[0, 0])  # unbatched
    assert h_u.shape == (4,) and s_u.trace.shape == (4, 4)
    if cell_cls is tp.PlasticLSTMCell:
        assert s_u.cell.shape == (4,)


def test_state_dict_round_trip():
    a = tp.PlasticRNN(5, 4, rule="retroactive", modulation="fanout")
    b = tp.PlasticRNN(5, 4, rule="retroactive", modulation="fanout")
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 2, 5)
    torch.testing.assert_close(a(x)[0], b(x)[0])


def test_external_modulation_is_required_and_checked():
    m = tp.PlasticRNN(5, 4, rule="modulated", modulation="external")
    with pytest.raises(ValueError, match="modulation"):
        m(torch.randn(3, 2, 5))
    with pytest.raises(ValueError, match="modulation"):
        tp.PlasticRNN(5, 4)(torch.randn(3, 2, 5), modulation=torch.randn(3, 2))


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"input: expected last dimension 5"):
        tp.PlasticRNN(5, 4)(torch.randn(3, 2, 7))
    with pytest.raises(ValueError, match="rule"):
        tp.PlasticRNN(5, 4, rule="hebbian")
    with pytest.raises(ValueError, match="clip"):
        tp.PlasticLinear(5, 4, clip=-1.0)
    rnn = tp.PlasticRNN(5, 4)
    _, state = rnn(torch.randn(3, 2, 5))
    with pytest.raises(ValueError, match=r"state: expected hidden of shape \[5, 4\] for batch size 5"):
        rnn(torch.randn(3, 5, 5), state)  # state from another batch size


def test_torch_compile_module_fullgraph():
    torch._dynamo.reset()
    model = tp.PlasticRNN(5, 8, rule="retroactive", modulation="fanout")
    x = torch.randn(6, 3, 5)
    compiled = torch.compile(model, fullgraph=True)
    y_c, s_c = compiled(x)
    y_e, s_e = model(x)
    torch.testing.assert_close(y_c, y_e)
    g_c = torch.autograd.grad(total(y_c, s_c), list(model.parameters()))
    g_e = torch.autograd.grad(total(y_e, s_e), list(model.parameters()))
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b)


def test_state_loads_with_weights_only():
    m = tp.PlasticRNN(5, 4, rule="retroactive", adaptive_threshold=0.1)
    _, state = m(torch.randn(3, 2, 5))
    buf = io.BytesIO()
    torch.save(state.detach(), buf)
    buf.seek(0)
    loaded = torch.load(buf)  # weights_only=True, torch's default
    assert isinstance(loaded, tp.PlasticState)
    for a, b in zip(loaded, state):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("module", [tp.PlasticLinear, tp.PlasticRNN, tp.cpp.PlasticLinear, tp.cpp.PlasticRNN])
def test_external_modulation_follows_batch_first(module):
    torch.manual_seed(0)
    m = module(5, 4, rule="modulated", modulation="external")
    torch.manual_seed(0)
    m_bf = module(5, 4, rule="modulated", modulation="external", batch_first=True)
    x, mod = torch.randn(6, 3, 5), torch.randn(6, 3, 4)
    y, _ = m(x, None, mod)
    y_bf, _ = m_bf(x.transpose(0, 1), None, mod.transpose(0, 1))
    torch.testing.assert_close(y_bf, y.transpose(0, 1))
    y_bf2, _ = m_bf(x.transpose(0, 1), None, mod[..., 0].transpose(0, 1))  # [B, T]
    y2, _ = m(x, None, mod[..., 0])
    torch.testing.assert_close(y_bf2, y2.transpose(0, 1))


def test_repr_and_docstrings():
    assert "bias=False" in repr(tp.PlasticRNN(5, 4, bias=False))
    assert "bias" not in repr(tp.PlasticRNN(5, 4))
    for cls in (tp.PlasticLinear, tp.PlasticRNN, tp.PlasticRNNCell):
        assert cls.forward.__doc__ and "state" in cls.forward.__doc__


def test_compiled_cell_step_with_dynamic_batch():
    # One time step is one segment, whose starting trace is the initial one: no checkpoint, with
    # symbolic sizes under torch.compile too.
    torch._dynamo.reset()
    torch.manual_seed(0)
    cell = tp.PlasticRNNCell(5, 4, dtype=torch.float64)

    def loss(u):
        h, state = cell(u)
        return h.square().sum() + state.trace.sum()

    compiled = torch.compile(loss, dynamic=True, fullgraph=True)
    for B in (3, 6):
        u = torch.randn(B, 5, dtype=torch.float64)
        g = torch.autograd.grad(compiled(u), list(cell.parameters()))
        g_ref = torch.autograd.grad(loss(u), list(cell.parameters()))
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cls", MODULES)
def test_trains_under_cpu_autocast(cls):
    # Under torch.autocast the drive comes out of `linear` in bfloat16; the op runs in float32.
    torch.manual_seed(0)
    m = cls(5, 8, rule="retroactive", modulation="fanout")
    head = torch.nn.Linear(8, 2)
    opt = torch.optim.SGD([*m.parameters(), *head.parameters()], lr=0.1)
    x = torch.randn(6, 3, 5)
    with torch.no_grad():
        y_fp32, _ = m(x)
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, state = m(x)
            loss = head(y).float().square().mean()
        assert y.dtype == torch.float32 and state.trace.dtype == torch.float32
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
        opt.step()
    torch.manual_seed(0)
    fresh = cls(5, 8, rule="retroactive", modulation="fanout")
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        y_bf16, _ = fresh(x)
    # Only the drive's bfloat16 rounding differs from float32.
    torch.testing.assert_close(y_bf16, y_fp32, rtol=0.05, atol=0.05)


# ---------------------------------------------------------------- the plastic LSTM

def test_lstm_parameter_names_and_shapes():
    lstm = tp.PlasticLSTM(5, 4, rule="retroactive", modulation="fanout", alpha="neuron")
    assert {k: tuple(v.shape) for k, v in lstm.named_parameters()} == {
        "alpha": (4, 1), "eta": (1, 1), "mod_weight": (4,), "mod_bias": (1,),
        "mod_fanout_weight": (4,), "mod_fanout_bias": (4,), "weight_ih": (16, 5),
        "weight_hh": (16, 4), "bias": (16,)}
    bound = 1 / 4 ** 0.5
    assert lstm.weight_hh.abs().max() <= bound and lstm.bias.abs().max() <= bound
    with pytest.raises(ValueError, match=r"PlasticLSTM: activation: expected 'tanh'.*got 'relu'"):
        tp.PlasticLSTM(5, 4, activation="relu")


def test_lstm_from_torch_lstm_with_alpha_zero_is_torch_lstm():
    torch.manual_seed(0)
    ref = torch.nn.LSTM(5, 6, batch_first=True).double()
    lstm = tp.PlasticLSTM.from_lstm(ref, alpha_init=0.0, rule="retroactive", modulation="internal")
    assert lstm.batch_first and lstm.weight_hh.dtype == torch.float64
    u = torch.randn(3, 7, 5, dtype=torch.float64)
    out, state = lstm(u)
    out_ref, (h, c) = ref(u)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(state.hidden, h[0])
    torch.testing.assert_close(state.cell, c[0])


def test_lstm_lengths_and_packed_sequence_equal_each_sequence_alone():
    lstm = make(tp.PlasticLSTM, dict(rule="modulated", modulation="internal"))
    x, _ = inputs(lstm, T=6, B=3)
    lengths = torch.tensor([6, 2, 4])
    out, state = lstm(x, lengths=lengths)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_packed, state_packed = lstm(packed)
    torch.testing.assert_close(torch.nn.utils.rnn.pad_packed_sequence(out_packed)[0], out)
    for b, L in enumerate(lengths.tolist()):
        alone, s = lstm(x[:L, b:b + 1])
        torch.testing.assert_close(out[:L, b:b + 1], alone)
        assert torch.all(out[L:, b] == 0)
        for name in ("hidden", "cell", "trace"):
            torch.testing.assert_close(getattr(state, name)[b], getattr(s, name)[0])
            torch.testing.assert_close(getattr(state_packed, name)[b], getattr(s, name)[0])


def test_lstm_module_compiles_fullgraph():
    torch._dynamo.reset()
    lstm = make(tp.PlasticLSTM, dict(rule="retroactive", modulation="fanout"))
    x, _ = inputs(lstm)

    def loss(u):
        out, state = lstm(u)
        return total(out, state)

    eager = loss(x)
    compiled = torch.compile(loss, fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager)
    g = torch.autograd.grad(compiled, list(lstm.parameters()))
    g_ref = torch.autograd.grad(eager, list(lstm.parameters()))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)
