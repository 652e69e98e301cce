"""Variable-length batches (SPEC §2): sequence b runs its first lengths[b] steps, then holds its
state and outputs zeros. The fused kernels against the reference, in values and gradients;
the modules with lengths= and with PackedSequence inputs, as torch.nn.RNN takes them."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import torchplastic as tp
from helpers import Config, call, loss_of, make_inputs, tensor_inputs

CONFIGS = [
    Config(rule="hebb"),
    Config(rule="oja", recurrent=False, T=9, checkpoint_every=3),
    Config(rule="modulated", source="internal", clip=1.0, checkpoint_every=2, T=7),
    Config(rule="modulated", source="external", clip=1.0),
    Config(rule="retroactive", recurrent=False, source="fanout", clip=1.0, threshold=0.1),
    Config(rule="abcd", scaling=1.0, clip=1.0),
]


def with_lengths(cfg, lengths):
    kw = make_inputs(cfg)
    kw["lengths"] = torch.tensor(lengths)
    return kw


def outputs_and_gradients(fn, kw):
    leaves = list(tensor_inputs(kw).values())
    leaves = [t for t in leaves if t.is_floating_point()]
    y, state = call(fn, kw)
    return y, state, torch.autograd.grad(loss_of(y, state), leaves, allow_unused=True)


@pytest.mark.parametrize("cfg", CONFIGS, ids=Config.id)
def test_matches_reference_in_values_and_gradients(cfg):
    kw = with_lengths(cfg, [cfg.T, 0, cfg.T // 2])  # full, empty and half sequences
    y, state, grads = outputs_and_gradients(tp.functional.plastic_scan, kw)
    y_ref, state_ref, grads_ref = outputs_and_gradients(tp.reference.plastic_scan, kw)
    torch.testing.assert_close(y, y_ref)
    assert y[:, 1].abs().max() == 0 and y[cfg.T // 2:, 2].abs().max() == 0
    for a, b in zip(state, state_ref):
        if b is not None:
            torch.testing.assert_close(a, b)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


def test_a_sequence_of_length_zero_returns_its_initial_state():
    cfg = Config(rule="retroactive", source="internal", clip=1.0, threshold=0.1)
    kw = with_lengths(cfg, [0, 5, 0])
    _, state = call(tp.functional.plastic_scan, kw)
    torch.testing.assert_close(state.trace[0], kw["trace"][0])
    torch.testing.assert_close(state.eligibility[2], kw["eligibility"][2])
    torch.testing.assert_close(state.hidden[0], kw["hidden"][0])
    torch.testing.assert_close(state.threshold[2], kw["threshold"][2])


def test_equals_running_each_sequence_alone():
    cfg = Config(rule="modulated", source="fanout", clip=1.0, T=8)
    kw = with_lengths(cfg, [8, 3, 5])
    y, state = call(tp.functional.plastic_scan, kw)
    for b, L in enumerate([8, 3, 5]):
        alone = {k: v for k, v in kw.items() if k != "lengths"}
        for name in ("z", "modulation"):
            if alone.get(name) is not None:
                alone[name] = alone[name][:L, b:b + 1]
        for name in ("trace", "hidden", "eligibility", "threshold"):
            if alone.get(name) is not None:
                alone[name] = alone[name][b:b + 1]
        y_b, state_b = call(tp.functional.plastic_scan, alone)
        torch.testing.assert_close(y[:L, b:b + 1], y_b)
        torch.testing.assert_close(state.trace[b:b + 1], state_b.trace)
        torch.testing.assert_close(state.hidden[b:b + 1], state_b.hidden)


@pytest.mark.parametrize("rule", ["hebb", "retroactive"])
def test_gradcheck(rule):
    cfg = Config(rule=rule, source="internal" if rule == "retroactive" else None, T=4, B=3, O=3,
                 clip=1.0 if rule == "retroactive" else None, checkpoint_every=2)
    kw = with_lengths(cfg, [4, 1, 2])
    names = [n for n, t in tensor_inputs(kw).items() if t.is_floating_point()]

    def fn(*tensors):
        y, state = call(tp.functional.plastic_scan, dict(kw, **dict(zip(names, tensors))))
        return (y, *[t for t in state if t is not None])

    assert torch.autograd.gradcheck(fn, tuple(kw[n] for n in names), atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("lengths, message", [
    (torch.tensor([5, 6, 1]), r"lengths: expected values in \[0, 5\] \(T, from z\), got values from 1 to 6"),
    (torch.tensor([5, -1, 1]), r"lengths: expected values in \[0, 5\]"),
    (torch.tensor([5, 5]), r"lengths: expected shape \[3\]"),
    (torch.tensor([5.0, 5.0, 5.0]), r"lengths: expected an integer tensor \(int64 or int32\), got Float"),
    (torch.tensor([5, 5, 5], device="meta"), r"lengths: expected a tensor on cpu"),
])
def test_bad_lengths_are_refused(lengths, message):
    kw = make_inputs(Config(rule="hebb"), requires_grad=False)
    kw["lengths"] = lengths
    with pytest.raises(ValueError, match=message):
        call(tp.functional.plastic_scan, kw)


# ---------------------------------------------------------------- modules

MODULES = [tp.PlasticRNN, tp.PlasticLinear, tp.cpp.PlasticRNN, tp.cpp.PlasticLinear]
MODULE_IDS = ["PlasticRNN", "PlasticLinear", "cpp.PlasticRNN", "cpp.PlasticLinear"]


@pytest.mark.parametrize("cls", MODULES, ids=MODULE_IDS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_module_lengths_equal_running_each_sequence_alone(cls, batch_first):
    torch.manual_seed(0)
    m = cls(3, 4, rule="retroactive", batch_first=batch_first).double()
    lengths = [6, 2, 4]
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    y, state = m(x.transpose(0, 1) if batch_first else x, lengths=lengths)
    if batch_first:
        y = y.transpose(0, 1)
    for b, L in enumerate(lengths):
        y_b, state_b = m(x[:L, b])  # unbatched, its own length
        torch.testing.assert_close(y[:L, b], y_b)
        assert torch.all(y[L:, b] == 0)
        torch.testing.assert_close(state.trace[b], state_b.trace)


@pytest.mark.parametrize("cls", MODULES, ids=MODULE_IDS)
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_sequence_in_packed_sequence_out(cls, enforce_sorted):
    torch.manual_seed(0)
    m = cls(3, 4, rule="modulated", modulation="fanout", batch_first=True).double()
    lengths = torch.tensor([5, 3, 2]) if enforce_sorted else torch.tensor([2, 5, 3])
    x = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    out, state = m(packed)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    assert torch.equal(out.batch_sizes, packed.batch_sizes) and out.data.shape == (10, 4)
    if not enforce_sorted:
        assert torch.equal(out.sorted_indices, packed.sorted_indices)
    y_pad, out_lengths = pad_packed_sequence(out)
    assert torch.equal(out_lengths, lengths)
    y_ref, state_ref = m(x.transpose(0, 1), lengths=lengths)  # batch_first for a tensor input
    torch.testing.assert_close(y_pad, y_ref.transpose(0, 1))
    torch.testing.assert_close(state.trace, state_ref.trace)
    g, = torch.autograd.grad(out.data.square().sum(), x)
    g_ref, = torch.autograd.grad(y_ref.square().sum(), x)
    torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("cls", [tp.PlasticRNN, tp.cpp.PlasticRNN], ids=["python", "cpp"])
def test_module_refuses_bad_lengths(cls):
    m = cls(3, 4)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"PlasticRNN: lengths: expected shape \[2\] \(the batch size"):
        m(x, lengths=[5, 5, 5])
    with pytest.raises(ValueError, match=r"^PlasticRNN: lengths: expected values in \[0, 5\] \(T, the input's "
                                         r"steps\), got values from 5 to 6$"):
        m(x, lengths=[5, 6])
    with pytest.raises(ValueError, match="lengths: expected None with a PackedSequence"):
        m(pack_padded_sequence(x, torch.tensor([5, 3])), lengths=[5, 3])
    with pytest.raises(ValueError, match=r"input: expected last dimension 3"):
        m(pack_padded_sequence(torch.randn(5, 2, 7), torch.tensor([5, 3])))


def test_lengths_under_torch_compile():
    torch._dynamo.reset()
    m = tp.PlasticRNN(3, 4, rule="retroactive").double()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    x, lengths = torch.randn(9, 3, 3, dtype=torch.float64), torch.tensor([9, 2, 5])
    (y, state), (y_ref, state_ref) = compiled(x, lengths=lengths), m(x, lengths=lengths)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(state.trace, state_ref.trace)
    for a, b in zip(torch.autograd.grad(y.sum(), list(m.parameters())),
                    torch.autograd.grad(y_ref.sum(), list(m.parameters()))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cls", [tp.PlasticRNNCell, tp.cpp.PlasticRNNCell], ids=["python", "cpp"])
def test_cell_lengths_skip_the_step_of_finished_sequences(cls):
    torch.manual_seed(0)
    cell = cls(3, 4, rule="retroactive").double()
    u = torch.randn(3, 3, dtype=torch.float64)
    _, state = cell(torch.randn(3, 3, dtype=torch.float64))  # a state to carry
    h, new = cell(u, state, lengths=torch.tensor([1, 0, 1]))
    h_all, new_all = cell(u, state)
    for b in (0, 2):
        torch.testing.assert_close(h[b], h_all[b])
        torch.testing.assert_close(new.trace[b], new_all.trace[b])
    assert torch.all(h[1] == 0)
    for name in ("hidden", "trace", "eligibility"):
        torch.testing.assert_close(getattr(new, name)[1], getattr(state, name)[1])
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 1\]"):
        cell(u, state, lengths=torch.tensor([1, 2, 1]))
