"""tp.inspect: the records of the fused kernels against the module's own outputs and state,
and the API around them."""

import os

import pytest
import torch

import torchplastic as tp


class Net(torch.nn.Module):
    def __init__(self, rule="retroactive", modulation="fanout"):
        super().__init__()
        self.rnn = tp.PlasticRNN(3, 5, rule=rule, modulation=modulation)
        self.readout = tp.PlasticLinear(5, 2)

    def forward(self, u, lengths=None):
        h, _ = self.rnn(u, lengths=lengths)
        return self.readout(h)


def expected_modulation(rnn, u):
    """m_t of the internal (fan-out) modulation head, from the module's outputs h_t."""
    h, _ = rnn(u)
    s = torch.tanh(h @ rnn.mod_weight + rnn.mod_bias)
    return s.unsqueeze(-1) * rnn.mod_fanout_weight + rnn.mod_fanout_bias


@pytest.mark.parametrize("every", [1, 3])
def test_records_match_the_module(every):
    torch.manual_seed(0)
    net = Net().double()
    u = torch.randn(7, 2, 3, dtype=torch.float64)
    with tp.inspect.record(net, every=every) as rec:
        net(u)
    assert set(rec.keys()) == {"rnn", "readout"}
    r = rec["rnn"][0]
    assert r.trace.shape == (7 // every, 2, 5, 5) and r.trace_norm.shape == (7, 2)
    assert not r.trace.requires_grad and not r.trace_norm.requires_grad
    for t in range(7):
        _, state = net.rnn(u[:t + 1])
        torch.testing.assert_close(r.trace_norm[t], state.trace.flatten(1).norm(dim=1))
        if (t + 1) % every == 0:
            torch.testing.assert_close(r.trace[(t + 1) // every - 1], state.trace)
    torch.testing.assert_close(r.modulation, expected_modulation(net.rnn, u))
    assert rec["readout"][0].modulation is None  # rule hebb


def test_external_modulation_and_lengths():
    torch.manual_seed(0)
    m = tp.PlasticLinear(3, 4, rule="modulated", modulation="external", dtype=torch.float64)
    x, mod = torch.randn(6, 2, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    with tp.inspect.record(m, every=2) as rec:
        m(x, None, mod, lengths=[6, 3])
    r = rec[""][0]  # the model itself
    torch.testing.assert_close(r.modulation[:, 0], mod[:, 0, None].expand(6, 4))
    torch.testing.assert_close(r.modulation[:3, 1], mod[:3, 1, None].expand(3, 4))
    assert torch.all(r.modulation[3:, 1] == 0)
    _, state = m(x[:3, 1:], None, mod[:3, 1:])
    for t in range(3, 6):  # held past the length
        torch.testing.assert_close(r.trace_norm[t, 1], state.trace[0].norm())
    torch.testing.assert_close(r.trace[2, 1], state.trace[0])


def test_recording_changes_nothing_and_stops():
    torch.manual_seed(0)
    net = Net().double()
    u = torch.randn(5, 2, 3, dtype=torch.float64)
    params = list(net.parameters())
    y = net(u)[0]
    g = torch.autograd.grad(y.square().sum(), params)
    with tp.inspect.record(net) as rec:
        y_rec = net(u)[0]
        g_rec = torch.autograd.grad(y_rec.square().sum(), params)
    torch.testing.assert_close(y_rec, y)
    for a, b in zip(g_rec, g):
        torch.testing.assert_close(a, b)
    net(u)  # after the block: not recorded
    assert len(rec["rnn"]) == 1 and tp.functional._recording_sink is None


def test_plot_writes_a_figure(tmp_path):
    net = Net()
    with tp.inspect.record(net, every=2) as rec:
        net(torch.randn(8, 2, 3))
    for name in ("rnn", "readout"):
        path = tmp_path / f"{name}.png"
        tp.inspect.plot(rec[name][0], str(path), sequence=1)
        assert os.path.getsize(path) > 1000


def test_the_records_are_a_mapping_of_every_plastic_module_lstm_and_cells_included():
    net = torch.nn.ModuleDict({"lstm": tp.PlasticLSTM(3, 4), "cell": tp.PlasticLSTMCell(3, 4),
                               "rnn_cell": tp.PlasticRNNCell(3, 4), "plain": torch.nn.Linear(3, 3)})
    with tp.inspect.record(net, every=2) as rec:
        net["lstm"](torch.randn(5, 2, 3))
        net["cell"](torch.randn(2, 3))
        net["rnn_cell"](torch.randn(2, 3))
        net["rnn_cell"](torch.randn(2, 3))
    assert list(rec) == ["lstm", "cell", "rnn_cell"] and len(rec) == 3
    assert "lstm" in rec and "plain" not in rec and rec.get("plain") is None
    assert {name: len(calls) for name, calls in rec.items()} == {"lstm": 1, "cell": 1, "rnn_cell": 2}
    assert rec["lstm"][0].trace.shape == (2, 2, 4, 4)
    assert rec["cell"][0].trace.shape == (0, 2, 4, 4)  # one step, recorded every 2nd


def test_bad_arguments_are_refused():
    net = Net()
    with pytest.raises(ValueError, match=r"record: every: expected an int >= 1 .*, got 0"):
        tp.inspect.record(net, every=0)
    with pytest.raises(ValueError, match=r"record: every: expected an int >= 1 \(that fits 64 bits\), got 18446744073709551616"):
        tp.inspect.record(net, every=2**64)
    with pytest.raises(ValueError, match="record: model: expected a module with plastic layers"):
        tp.inspect.record(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"got PlasticRNN with none \(the modules of torchplastic.cpp run in C\+\+"):
        tp.inspect.record(tp.cpp.PlasticRNN(2, 2))
    with tp.inspect.record(net) as rec:
        net(torch.randn(4, 1, 3))
    with pytest.raises(KeyError, match="no plastic module named 'rn'"):
        rec["rn"]
    with pytest.raises(ValueError, match=r"plot: sequence: expected an index in \[0, 1\), got 3"):
        tp.inspect.plot(rec["rnn"][0], "x.png", sequence=3)
    args = dict.fromkeys(tp.functional.SCAN_ARGUMENTS)
    args.update(z=torch.randn(3, 1, 2), alpha=torch.ones(1, 1), eta=torch.ones(1, 1), weight=torch.eye(2),
                rule="hebb", activation="tanh", target_activity=0.0)
    with pytest.raises(ValueError, match="plastic_scan_record: every: expected an integer >= 1, got 0"):
        torch.ops.torchplastic.plastic_scan_record(**args, every=0)


def test_opcheck_record_op():
    args = dict.fromkeys(tp.functional.SCAN_ARGUMENTS)
    args.update(z=torch.randn(5, 2, 3), alpha=torch.rand(3, 3), eta=torch.full((1, 1), 0.1),
                weight=torch.randn(3, 3), rule="modulated", activation="tanh", target_activity=0.0,
                modulation=torch.randn(5, 2))
    torch.library.opcheck(torch.ops.torchplastic.plastic_scan_record.default, (), dict(args, every=2))
