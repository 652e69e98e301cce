"""Sequence lengths under torch.compile and torch.export: one graph for every length T >= 7
with gradients on (README, "Dynamic sequence lengths").

The op's fake kernel sizes the trace checkpoints with an expression in T (K = ceil(sqrt(T))
included), so nothing specialises T. The checkpoint count, ceil(T/K) - 1, is 0 for T = 2 and 1
for T = 3..6; torch specialises sizes 0 and 1, so those lengths get graphs of their own.
"""

import io
import math

import pytest
import torch
import torch._dynamo.testing

import torchplastic as tp
from torchplastic.functional import SCAN_ARGUMENTS

LONG_LENGTHS = (9, 17, 33, 7, 64, 40, 100, 12)  # T >= 7: two checkpoints or more


def gradients(model, x):
    y, state = model(x)
    loss = y.square().sum() + state.trace.sum() + state.eligibility.sum()
    return torch.autograd.grad(loss, list(model.parameters()))


def model(checkpoint_every=None):
    torch.manual_seed(0)
    return tp.PlasticRNN(5, 6, rule="retroactive", modulation="internal", clip=1.0,
                         checkpoint_every=checkpoint_every, dtype=torch.float64)


def assert_gradients_match(compiled, eager, x):
    for a, b in zip(gradients(compiled, x), gradients(eager, x)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("checkpoint_every", [None, 3])
def test_one_graph_for_every_training_length(checkpoint_every):
    # With K given, the lengths with two checkpoints or more are T > 2K.
    torch._dynamo.reset()
    m = model(checkpoint_every)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(m, backend=counter, fullgraph=True)
    for k, T in enumerate(LONG_LENGTHS):
        x = torch.randn(T, 3, 5, dtype=torch.float64)
        if k == 0:
            torch._dynamo.mark_dynamic(x, 0)
        assert_gradients_match(compiled, m, x)
    assert counter.frame_count == 1


def test_automatic_dynamic_compiles_twice_then_never_again():
    # torch's default: the first length is compiled as a constant, the second as a symbol.
    torch._dynamo.reset()
    m = model()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(m, backend=counter)
    for T in LONG_LENGTHS:
        assert_gradients_match(compiled, m, torch.randn(T, 3, 5, dtype=torch.float64))
    assert counter.frame_count == 2
    # Short lengths where the checkpoint count is 1 (T = 3..6), then 0 (T = 2): one graph each.
    for T in (3, 5, 6, 4, 2):
        assert_gradients_match(compiled, m, torch.randn(T, 3, 5, dtype=torch.float64))
    assert counter.frame_count == 4


def test_inductor_sizes_the_checkpoints_as_the_kernel_does():
    # Inductor checks every output of the op against the fake kernel's sizes as it runs.
    torch._dynamo.reset()
    m = model()
    compiled = torch.compile(m, dynamic=True, fullgraph=True)
    for T in (7, 10, 17, 26, 50):
        assert_gradients_match(compiled, m, torch.randn(T, 3, 5, dtype=torch.float64))


def test_export_with_dynamic_length_and_gradients():
    m = model()

    class Outputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = m

        def forward(self, x):
            y, state = self.rnn(x)
            return y, state.trace, state.eligibility

    T = torch.export.Dim("T", min=2, max=4096)
    program = torch.export.export(Outputs(), (torch.randn(10, 3, 5, dtype=torch.float64),),
                                  dynamic_shapes=({0: T},))
    exported = program.module()
    for length in (2, 3, 7, 10, 50):
        x = torch.randn(length, 3, 5, dtype=torch.float64)
        y, trace, elig = exported(x)
        y_ref, state = m(x)
        torch.testing.assert_close(y, y_ref)
        loss = y.square().sum() + trace.sum() + elig.sum()
        g = torch.autograd.grad(loss, list(exported.parameters()))
        for a, b in zip(g, gradients(m, x)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("T, K", [(1, None), (2, None), (3, None), (7, None), (100, None),
                                  (10, 4), (12, 4), (3, 8), (0, None)])
def test_checkpoint_count(T, K):
    # The traces before steps K, 2K, ... < T; the one before step 0 is the initial trace.
    B, O, I = 2, 3, 3
    args = dict.fromkeys(SCAN_ARGUMENTS)
    args.update(z=torch.randn(T, B, O), alpha=torch.full((1, 1), 0.1), eta=torch.full((1, 1), 0.1),
                weight=torch.randn(O, O), rule="retroactive", activation="tanh",
                modulation=torch.randn(T, B), target_activity=0.0, checkpoint_every=K)
    out = torch.ops.torchplastic.plastic_scan_forward(**args)
    every = K if K is not None else max(1, math.ceil(math.sqrt(T)))
    expected = len(range(every, T, every))
    assert out[5].shape == (expected, B, O, I)
    assert out[6].shape == (expected, B, O, I)


def test_exported_program_saves_and_loads():
    # PlasticState is a registered pytree node, so torch.export.save can write its outputs' spec.
    m = model()
    T = torch.export.Dim("T", min=2, max=4096)
    program = torch.export.export(m, (torch.randn(10, 3, 5, dtype=torch.float64),),
                                  dynamic_shapes=({0: T},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    x = torch.randn(23, 3, 5, dtype=torch.float64)
    y, state = loaded(x)
    y_ref, state_ref = m(x)
    assert isinstance(state, tp.PlasticState)
    torch.testing.assert_close(y, y_ref)
    for a, b in zip(state, state_ref):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
