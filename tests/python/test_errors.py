"""Every class of bad input fails with a clear error naming the argument, the expected and the
received value (SPEC §6) — through the functional API, the raw op, and the modules."""

import math
import random
import re

import pytest
import torch

import torchplastic as tp
from helpers import Config, call, make_inputs


def base(rule="hebb", recurrent=True, **cfg):
    return make_inputs(Config(rule=rule, recurrent=recurrent, **cfg), requires_grad=False)


def with_(kw, **changes):
    out = dict(kw)
    out.update(changes)
    return out


D = torch.float64
# The raw ops' arguments, in their schemas' order.
_SCAN_ARGS = [a.name for a in torch.ops.torchplastic.plastic_scan.default._schema.arguments]
# (id, keyword arguments, the argument the message must name, a fragment of the message)
BAD = [
    ("z_not_3d", lambda: with_(base(), z=torch.zeros(5, 3, dtype=D)), "z", "3-D"),
    ("z_integer", lambda: with_(base(), z=torch.zeros(5, 3, 4, dtype=torch.long)), "z", "dtype"),
    ("alpha_shape", lambda: with_(base(), alpha=torch.zeros(3, 4, dtype=D)), "alpha", "[4, 4]"),
    ("alpha_dtype", lambda: with_(base(), alpha=torch.zeros(4, 4, dtype=torch.float32)), "alpha", "dtype"),
    ("eta_shape", lambda: with_(base(), eta=torch.zeros(2, 2, dtype=D)), "eta", "expected shape"),
    ("eta_missing", lambda: with_(base(), eta=None), "eta", "got None"),
    ("trace_batch", lambda: with_(base(), trace=torch.zeros(2, 4, 4, dtype=D)), "trace", "[3, 4, 4]"),
    ("hidden_batch", lambda: with_(base(), hidden=torch.zeros(5, 4, dtype=D)), "hidden", "[3, 4]"),
    ("weight_missing", lambda: with_(base(), weight=None), "weight", "recurrent mode"),
    ("weight_shape", lambda: with_(base(), weight=torch.zeros(4, 5, dtype=D)), "weight", "[4, 4]"),
    ("x_steps", lambda: with_(base(recurrent=False), x=torch.zeros(2, 3, 6, dtype=D)), "x", "T = 5"),
    ("weight_in_feedforward", lambda: with_(base(recurrent=False), weight=torch.zeros(4, 4, dtype=D)), "weight", "feedforward"),
    ("rule", lambda: with_(base(), rule="hebbian"), "rule", "'hebbian'"),
    ("activation", lambda: with_(base(), activation="gelu"), "activation", "'gelu'"),
    ("clip_negative", lambda: with_(base(), clip=-1.0), "clip", "> 0"),
    ("clip_nan", lambda: with_(base(), clip=math.nan), "clip", "> 0"),
    ("scaling_zero", lambda: with_(base(), synaptic_scaling=0.0), "synaptic_scaling", "> 0"),
    ("threshold_rate_inf", lambda: with_(base(), adaptive_threshold=math.inf), "adaptive_threshold", "> 0"),
    ("checkpoint_zero", lambda: with_(base(), checkpoint_every=0), "checkpoint_every", ">= 1"),
    ("modulation_missing", lambda: with_(base("modulated", source="internal"), mod_weight=None, mod_bias=None), "modulation", "needs neuromodulation"),
    ("modulation_for_hebb", lambda: with_(base(), modulation=torch.zeros(5, 3, dtype=D)), "modulation", "takes no neuromodulation"),
    ("modulation_shape", lambda: with_(base("modulated", source="external"), modulation=torch.zeros(5, 2, dtype=D)), "modulation", "[5, 3]"),
    ("modulation_both", lambda: with_(base("modulated", source="external"), mod_weight=torch.zeros(4, dtype=D), mod_bias=torch.zeros(1, dtype=D)), "modulation", "got both"),
    ("fanout_half", lambda: with_(base("modulated", source="fanout"), mod_fanout_bias=None), "mod_fanout_weight", "both"),
    ("eligibility_for_hebb", lambda: with_(base(), eligibility=torch.zeros(3, 4, 4, dtype=D)), "eligibility", "retroactive"),
    ("threshold_without_rate", lambda: with_(base(), threshold=torch.zeros(3, 4, dtype=D)), "threshold", "adaptive_threshold"),
    ("device", lambda: with_(base(), alpha=torch.zeros(4, 4, dtype=D, device="meta")), "alpha", "device"),
    ("abcd_missing", lambda: with_(base("abcd"), abcd=None), "abcd", "got None"),
    ("abcd_for_hebb", lambda: with_(base(), abcd=torch.zeros(4, 4, 4, dtype=D)), "abcd", "'abcd'"),
    ("abcd_three", lambda: with_(base("abcd"), abcd=torch.zeros(3, 4, 4, dtype=D)), "abcd", "[4, 4, 4]"),
    ("abcd_2d", lambda: with_(base("abcd"), abcd=torch.zeros(4, 4, dtype=D)), "abcd", "[4, 1, 1]"),
    ("abcd_columns", lambda: with_(base("abcd", recurrent=False), abcd=torch.zeros(4, 4, 4, dtype=D)), "abcd", "[4, 4, 6]"),
    ("abcd_dtype", lambda: with_(base("abcd"), abcd=torch.zeros(4, 4, 4, dtype=torch.float32)), "abcd", "dtype"),
    ("abcd_device", lambda: with_(base("abcd"), abcd=torch.zeros(4, 4, 4, dtype=D, device="meta")), "abcd", "device"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_functional_rejects_bad_input(case):
    _, make, argument, fragment = case
    with pytest.raises((ValueError, RuntimeError)) as err:
        call(tp.functional.plastic_scan, make())
    msg = str(err.value)
    assert argument in msg and fragment in msg, msg
    assert "expected" in msg and "got" in msg, msg


@pytest.mark.parametrize("fn", ["plastic_scan", "plastic_lstm_scan"])
@pytest.mark.parametrize("argument,value,expected", [
    ("checkpoint_every", 1.5, "an int"), ("checkpoint_every", "3", "an int"),
    ("checkpoint_every", True, "an int"), ("clip", "2", "a real number"),
    ("clip", True, "a real number"), ("synaptic_scaling", [1.0], "a real number"),
    ("target_activity", None, "a real number"), ("adaptive_threshold", 1j, "a real number")])
def test_number_options_of_another_type_are_refused(fn, argument, value, expected):
    # float() and int() would take "2", True or 1.5 (cut to 1): the functional API refuses them,
    # as torch.nn.RNN refuses a float hidden_size.
    kw = base()
    if fn == "plastic_lstm_scan":
        z, alpha, eta = torch.randn(5, 3, 16, dtype=D), kw["alpha"], kw["eta"]
        call_it = lambda **o: tp.functional.plastic_lstm_scan(z, torch.zeros(16, 4, dtype=D), alpha, eta,
                                                              None, **o)
    else:
        call_it = lambda **o: call(tp.functional.plastic_scan, with_(kw, **o))
    with pytest.raises(TypeError, match=rf"{fn}: {argument}: expected {expected}, got {type(value).__name__}"):
        call_it(**{argument: value})


def test_number_options_take_numpy_scalars_and_ints():
    np = pytest.importorskip("numpy")
    kw = base()
    y, _ = call(tp.functional.plastic_scan, with_(kw, clip=np.float32(2), checkpoint_every=np.int64(2),
                                                   target_activity=0))
    y_ref, _ = call(tp.reference.plastic_scan, with_(kw, clip=2.0, checkpoint_every=2))
    torch.testing.assert_close(y, y_ref)


def test_raw_op_checks_too():
    kw = base()
    with pytest.raises(ValueError, match=r"alpha: expected shape \[4, 4\].*got \[3, 3\]"):
        torch.ops.torchplastic.plastic_scan(kw["z"], torch.zeros(3, 3, dtype=D), kw["eta"], None, None,
                                            kw["weight"], None, None, None, None, None, None, None, None,
                                            "hebb", "tanh", None, None, None, 0.0, None)
    with pytest.raises(ValueError, match=r"checkpoint_every"):
        torch.ops.torchplastic.plastic_scan_forward(kw["z"], kw["alpha"], kw["eta"], None, None,
                                                    kw["weight"], None, None, None, None, None, None, None,
                                                    None, "hebb", "tanh", None, None, None, 0.0, -2)



def _backward_op_inputs(lstm, device="cpu"):
    """A valid call's arguments and its backward op's own inputs (output gradients, then what
    the forward kept), both in the op's order."""
    ops = torch.ops.torchplastic
    T, B, O = 3, 2, 4
    args = dict.fromkeys(_SCAN_ARGS)
    args.update(z=torch.randn(T, B, 4 * O if lstm else O, device=device),
                alpha=0.1 * torch.randn(O, O, device=device), eta=0.1 * torch.rand(O, O, device=device),
                weight=torch.randn(4 * O if lstm else O, O, device=device), rule="hebb",
                activation="tanh", target_activity=0.0)
    forward = ops.plastic_lstm_scan_forward if lstm else ops.plastic_scan_forward
    return list(args.values()), _backward_inputs_of(forward(*args.values()), lstm)


def _backward_inputs_of(out, lstm):
    """The backward op's own inputs from its forward's outputs `out`: random gradients of the
    outputs that exist, then what the forward kept (y or h, the checkpoints, the LSTM's
    activations)."""
    n = 6 if lstm else 5
    inputs = [torch.randn_like(v) if v.numel() else v for v in out[:n]]
    return inputs + [out[0], out[n], out[n + 1]] + ([out[-1]] if lstm else [])


@pytest.mark.parametrize("lstm", [False, True], ids=["rnn", "lstm"])
@pytest.mark.parametrize("name,bad", [
    ("grad_output", lambda t: t.to(torch.complex64)),   # grad_y in the RNN's op
    ("grad_output", lambda t: t.bool()),
    ("grad_trace", lambda t: t.int()),
    ("grad_output", lambda t: t[:-1]),
    ("output", lambda t: t.long()),                      # y in the RNN's op
    ("trace_checkpoints", lambda t: t.long()),
])
def test_backward_op_checks_its_own_inputs(lstm, name, bad):
    """The backward op's gradients and kept tensors, which autograd hands it, are checked too
    when it is called directly: an integer or complex gradient was converted silently."""
    op = torch.ops.torchplastic.plastic_lstm_scan_backward if lstm else torch.ops.torchplastic.plastic_scan_backward
    if not lstm:
        name = {"grad_output": "grad_y", "output": "y"}.get(name, name)
    args, inputs = _backward_op_inputs(lstm)
    position = [a.name for a in op.default._schema.arguments].index(name)
    inputs[position] = bad(inputs[position])
    with pytest.raises(ValueError, match=rf"_backward: {name}: expected"):
        op(*inputs, *args)


@pytest.mark.parametrize("lstm", [False, True], ids=["rnn", "lstm"])
@pytest.mark.parametrize("which", ["scan", "forward", "record", "backward"])
def test_meta_tensor_among_cpu_ones_is_refused_by_the_fake_kernels(lstm, which):
    """A meta tensor among CPU ones sends a call to the ops' fake kernels (Python), which refuse
    the mix as the C++ kernels do, z missing included (they had read z's device first and raised
    AttributeError), and the backward's own inputs too (they had returned meta gradients)."""
    ops = torch.ops.torchplastic
    family = "plastic_lstm_scan" if lstm else "plastic_scan"
    args, inputs = _backward_op_inputs(lstm)
    names = [a.name for a in getattr(ops, family).default._schema.arguments]
    alpha = args[names.index("alpha")]
    args[names.index("alpha")] = alpha.to("meta")
    if which == "backward":
        op = getattr(ops, family + "_backward")
        with pytest.raises(ValueError, match=rf"^{family}: alpha: expected a tensor on cpu"):
            op(*inputs, *args)
        args[names.index("alpha")] = alpha
        inputs[2] = inputs[2].to("meta")  # grad_trace
        with pytest.raises(ValueError, match=rf"^{family}_backward: grad_trace: expected a tensor on cpu"):
            op(*inputs, *args)
        return
    if which == "record":
        op = getattr(ops, family + "_record")
        args = args + [1]  # every
    else:
        op = getattr(ops, family if which == "scan" else family + "_forward")
    with pytest.raises(ValueError, match=rf"^{family}: alpha: expected a tensor on cpu"):
        op(*args)
    args[names.index("z")] = None
    with pytest.raises(ValueError, match=rf"^{family}: z: expected a tensor \[T, B, (4H|O)\], got None"):
        op(*args)


@pytest.mark.parametrize("kind", ["rnn", "feedforward", "lstm"])
def test_empty_traces_are_refused_and_empty_batches_and_sequences_run(kind):
    """O = 0 or I = 0 (a trace with no elements) is refused by name, as torch.nn.RNN refuses a
    size of 0 (the feedforward kernels had crashed at I = 0, and an ATen error had come out of
    the backward at O = 0); T = 0 and B = 0 run forward and backward."""
    def call(T, B, O, I):
        def t(*shape):
            return torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        if kind == "lstm":
            return tp.functional.plastic_lstm_scan(t(T, B, 4 * O), t(4 * O, O), t(O, O), t(O, O), None)
        if kind == "rnn":
            return tp.functional.plastic_scan(t(T, B, O), t(O, O), t(O, O), None, weight=t(O, O))
        return tp.functional.plastic_scan(t(T, B, O), t(O, I), t(O, I), None, x=t(T, B, I))

    op = "plastic_lstm_scan" if kind == "lstm" else "plastic_scan"
    with pytest.raises(ValueError, match=rf"^{op}: z: expected .* with {'H' if kind == 'lstm' else 'O'} >= 1"):
        call(3, 2, 0, 0 if kind != "feedforward" else 3)
    if kind == "feedforward":
        with pytest.raises(ValueError, match=r"^plastic_scan: x: expected .* with I >= 1"):
            call(3, 2, 3, 0)
    for T, B in [(0, 2), (3, 0), (0, 0)]:
        y, state = call(T, B, 3, 3)
        (y.sum() + state.trace.sum()).backward()
        assert y.shape[:2] == (T, B) and state.trace.shape == (B, 3, 3)


def test_nan_and_inf_propagate_without_crash():
    kw = base(T=6)
    z = kw["z"].clone()
    z[2, 1, 0] = math.nan
    z[3, 0, 1] = math.inf
    y, state = call(tp.functional.plastic_scan, with_(kw, z=z))
    assert torch.isnan(y[2:, 1]).any() and not torch.isnan(y[:2]).any()
    assert torch.isnan(state.trace[1]).any()
    assert torch.isfinite(y[:, 2]).all(), "other sequences are untouched"


@pytest.mark.parametrize("module", [tp.PlasticLinear, tp.PlasticRNN, tp.cpp.PlasticLinear, tp.cpp.PlasticRNN])
def test_modules_reject_bad_input(module):
    m = module(5, 4)
    with pytest.raises(ValueError, match="expected last dimension 5"):
        m(torch.randn(3, 2, 7))
    with pytest.raises(ValueError, match=r"expected a 3-D tensor"):
        m(torch.randn(3))
    _, state = m(torch.randn(3, 2, 5))
    with pytest.raises(ValueError, match="state: expected .* for batch size 6"):
        m(torch.randn(3, 6, 5), state)
    with pytest.raises(ValueError, match="modulation"):
        m(torch.randn(3, 2, 5), None, torch.randn(3, 2))


ALL_MODULES = [getattr(namespace, name) for namespace in (tp, tp.cpp)
               for name in ("PlasticLinear", "PlasticRNN", "PlasticRNNCell", "PlasticLSTM", "PlasticLSTMCell")]


@pytest.mark.parametrize("module", ALL_MODULES, ids=lambda m: f"{m.__module__}.{m.__name__}")
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_modules_name_arguments_of_another_type(module, unbatched):
    """The Python and the C++ modules alike (pybind11 refused the latter's with its signature,
    and a Python cell or an unbatched call failed on a number as modulation with an
    AttributeError)."""
    m = module(5, 4, rule="modulated", modulation="external")
    cell = "Cell" in module.__name__
    x = torch.randn(*([] if unbatched else [2]) + ([] if cell else [3]) + [5])
    if not cell and not unbatched:
        x = x.transpose(0, 1)  # [T, B, I]
    name = module.__name__
    argument = "x" if name == "PlasticLinear" else "input"  # as the Python modules name it
    with pytest.raises(TypeError, match=rf"{name}: {argument}: expected a Tensor"):
        m(x.tolist())
    with pytest.raises(TypeError, match=rf"{name}: modulation: expected a Tensor or None, got float"):
        m(x, None, 0.5)
    with pytest.raises(TypeError, match=rf"{name}: lengths: expected a \[B\] integer tensor, got str"):
        m(x, None, None, "all")
    # A list of lengths must hold ints (the tp.cpp modules cut 1.5 to 1 before they shared the
    # Python modules' check).
    with pytest.raises(ValueError, match=rf"{name}: lengths: expected a \[B\] tensor or list of ints"):
        m(x, None, None, [1.5])


@pytest.mark.parametrize("module", ALL_MODULES, ids=lambda m: f"{m.__module__}.{m.__name__}")
def test_modules_check_modulation_and_lengths_as_the_caller_passed_them(module):
    """In the caller's layout, under the module's name: the op, which sees them after the module
    has moved the batch and time dimensions (batch_first, unbatched, a cell's one step), had
    named neither the module nor the shapes the caller passed (with batch_first=True, a
    time-major [T, B] was refused as "expected shape [T, B] ..., got [B, T]")."""
    name = module.__name__
    cell = "Cell" in name
    size = "O" if name == "PlasticLinear" else "H"
    bf = r"batch_first=true" if module.__module__ == "torchplastic.cpp" else r"batch_first=True"
    m = module(5, 4, rule="modulated", modulation="external")
    if cell:
        x, cases = torch.randn(2, 5), [
            (torch.randn(3), rf"expected shape \[2\] or \[2, 4\] \(\[B\] or \[B, H\]\), got \[3\]"),
            (torch.randn(1, 2), r"expected shape \[2\] or \[2, 4\] .*got \[1, 2\]")]
        unbatched = (torch.randn(5), torch.randn(2),
                     r"expected shape \[\] or \[4\] \(\[\] or \[H\], unbatched\), got \[2\]")
        steps = r"expected values in \[0, 1\] \(0 skips the step, 1 takes it\), got values from 0 to 2"
    else:
        x, cases = torch.randn(3, 2, 5), [
            (torch.randn(3, 3), rf"expected shape \[3, 2\] or \[3, 2, 4\] \(\[T, B\] or \[T, B, {size}\]\), "
                                r"got \[3, 3\]"),
            (torch.randn(3, 2, 5), r"expected shape .*got \[3, 2, 5\]")]
        unbatched = (torch.randn(3, 5), torch.randn(3, 1),
                     rf"expected shape \[3\] or \[3, 4\] \(\[T\] or \[T, {size}\], unbatched\), got \[3, 1\]")
        steps = r"expected values in \[0, 3\] \(T, the input's steps\), got values from 0 to 4"
    for modulation, message in cases:
        with pytest.raises(ValueError, match=rf"^{name}: modulation: {message}$"):
            m(x, None, modulation)
    u, modulation, message = unbatched
    with pytest.raises(ValueError, match=rf"^{name}: modulation: {message}$"):
        m(u, None, modulation)
    with pytest.raises(ValueError, match=rf"^{name}: modulation: expected a tensor .*got (None|undefined)$"):
        m(x)
    with pytest.raises(ValueError, match=rf"^{name}: lengths: {steps}$"):
        m(x, None, torch.ones(2), torch.tensor([0, 2 if cell else 4]))
    with pytest.raises(ValueError, match=rf"^{name}: lengths: expected an integer tensor"):
        m(x, None, torch.ones(2), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match=rf"^{name}: modulation: expected dtype (torch.float32|Float) \(the "
                                         r"module's parameters\), got (torch.float64|Double)$"):
        m(x, None, torch.ones(x.shape[:-1], dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # which casts it itself
        m(x, None, torch.ones(x.shape[:-1], dtype=torch.bfloat16))
    if not cell:
        # The batch-first module, given a time-major modulation: refused in the caller's layout.
        m = module(5, 4, rule="modulated", modulation="external", batch_first=True)
        with pytest.raises(ValueError, match=rf"^{name}: modulation: expected shape \[2, 3\] or \[2, 3, 4\] "
                                             rf"\(\[B, T\] or \[B, T, {size}\], {bf}\), got \[3, 2\]$"):
            m(x.transpose(0, 1), None, torch.zeros(3, 2))
        m(x.transpose(0, 1), None, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=rf"^{name}: modulation: expected (None|undefined) \(rule.*hebb.* takes "
                                         r"no neuromodulation\), got a tensor$"):
        module(5, 4)(x, None, torch.ones(2))
    with pytest.raises(ValueError, match=rf"^{name}: modulation: expected (None|undefined) \(modulation.*fanout.*: "
                                         r"the module computes its own\), got a tensor$"):
        module(5, 4, rule="retroactive", modulation="fanout")(x, None, torch.ones(2))


@pytest.mark.parametrize("module", ALL_MODULES, ids=lambda m: f"{m.__module__}.{m.__name__}")
def test_modules_check_the_state_s_shapes_and_dtypes(module):
    """Every field of the state in full, under the module's name (the op had named the trace's
    other sizes, and dtypes "matching z"), and without the batch dimension for an unbatched
    input, as the caller passed them."""
    name = module.__name__
    cell = "Cell" in name
    m = module(3, 4, rule="retroactive", adaptive_threshold=0.1)
    x = torch.randn(2, 3) if cell else torch.randn(5, 2, 3)
    I = 3 if name == "PlasticLinear" else 4
    _, state = m(x)
    for field, shape in (("trace", [2, 4, I + 1]), ("eligibility", [2, 5, I]), ("threshold", [2, 3])):
        bad = state._replace(**{field: torch.zeros(shape)})
        with pytest.raises(ValueError, match=rf"^{name}: state: expected {field} of shape "
                                             rf"\[2, 4(, {I})?\] for batch size 2 \(from the input\), "
                                             rf"got shape \[{', '.join(map(str, shape))}\]$"):
            m(x, bad)
    _, state = m(x[0])
    with pytest.raises(ValueError, match=rf"^{name}: state: expected trace of shape \[4, {I}\] \(unbatched "
                                         rf"input\), got shape \[4, {I + 1}\]$"):
        m(x[0], state._replace(trace=torch.zeros(4, I + 1)))
    _, state = m(x)
    for field in ("hidden", "trace", "threshold"):
        if getattr(state, field) is None:  # PlasticLinear's hidden
            continue
        with pytest.raises(ValueError, match=rf"^{name}: state: expected {field} of dtype (torch.float32|Float) "
                                             r"\(the module's parameters\), got (torch.float64|Double)$"):
            m(x, state._replace(**{field: getattr(state, field).double()}))


@pytest.mark.parametrize("module", [tp.PlasticLinear, tp.PlasticRNN, tp.PlasticLSTM, tp.PlasticRNNCell,
                                    tp.PlasticLSTMCell, tp.cpp.PlasticLinear, tp.cpp.PlasticRNN,
                                    tp.cpp.PlasticLSTM, tp.cpp.PlasticRNNCell, tp.cpp.PlasticLSTMCell])
def test_modules_refuse_state_fields_they_do_not_use(module):
    """A field the module's configuration has no use for was dropped without a word (a
    feedforward layer's hidden, a cell outside the LSTM) or refused by the op under its own name
    (eligibility, threshold); batched or unbatched, it is refused under the module's, saying why."""
    name = module.__name__
    cell = "Cell" in name
    m = module(3, 4)  # rule hebb, no adaptive threshold
    x = torch.randn(2, 3) if cell else torch.randn(5, 2, 3)
    I = 3 if name == "PlasticLinear" else 4
    fields = {"eligibility": ([2, 4, I], "rule='hebb' has no eligibility trace"),
              "threshold": ([2, 4], "the module has no adaptive threshold")}
    if name == "PlasticLinear":
        fields["hidden"] = ([2, 4], "a feedforward layer has no hidden state")
    if "LSTM" not in name:
        fields["cell"] = ([2, 4], "only the plastic LSTM has a cell state")
    for field, (shape, why) in fields.items():
        message = rf"^{name}: state: expected {field} None \({re.escape(why)}\), got a tensor$"
        with pytest.raises(ValueError, match=message):
            m(x, tp.PlasticState(**{field: torch.zeros(shape)}))
        with pytest.raises(ValueError, match=message):
            m(x[0], tp.PlasticState(**{field: torch.zeros(shape[1:])}))
    # Where the configuration uses them, they are taken.
    m = module(3, 4, rule="retroactive", adaptive_threshold=0.1)
    _, state = m(x)
    assert state.eligibility is not None and state.threshold is not None
    assert (state.cell is not None) == ("LSTM" in name)
    assert m(x, state)[0].shape == m(x)[0].shape


@pytest.mark.parametrize("module", [tp.PlasticRNN, tp.PlasticLSTMCell, tp.cpp.PlasticRNN, tp.cpp.PlasticLSTMCell])
def test_modules_take_a_state_or_a_tuple_of_its_fields_and_refuse_the_rest(module):
    m = module(5, 4)
    x = torch.randn(2, 5) if "Cell" in module.__name__ else torch.randn(3, 2, 5)
    out, state = m(x)
    torch.testing.assert_close(m(x, tuple(state))[0], m(x, state)[0])
    name = module.__name__
    with pytest.raises(TypeError, match=f"{name}: state: expected a PlasticState or None, got list"):
        m(x, list(state))
    with pytest.raises(TypeError, match=f"{name}: state: expected a PlasticState or None, got tuple"):
        m(x, (state.hidden,))
    with pytest.raises(TypeError, match=f"{name}: state: expected trace to be a tensor or None, got str"):
        m(x, state._replace(trace="zeros"))
    # Unbatched too, where the state gains its batch dimension before anything reads its sizes.
    with pytest.raises(TypeError, match=f"{name}: state: expected hidden to be a tensor or None, got list"):
        m(x[0], tp.PlasticState(hidden=[0.0] * 4))


@pytest.mark.parametrize("module", [tp.PlasticLinear, tp.PlasticRNN, tp.PlasticLSTM, tp.PlasticRNNCell,
                                    tp.PlasticLSTMCell, tp.cpp.PlasticLinear, tp.cpp.PlasticRNN,
                                    tp.cpp.PlasticLSTM, tp.cpp.PlasticRNNCell, tp.cpp.PlasticLSTMCell])
def test_modules_refuse_an_input_of_another_dtype_but_under_autocast(module):
    # As torch.nn.RNN: named in the module's own check, not deep in a matrix product.
    m = module(5, 4)
    x = torch.randn(2, 5) if "Cell" in module.__name__ else torch.randn(3, 2, 5)
    name = "x" if "Linear" in module.__name__ else "input"
    for dtype in (torch.float64, torch.long):
        with pytest.raises(ValueError, match=rf"{module.__name__}: {name}: expected dtype .*(float32|Float)"):
            m(x.to(dtype))
    if not module.__module__.endswith("cpp"):
        # The module's conversion is suggested only to a dtype the op computes in on its device.
        with pytest.raises(ValueError, match=r"with \.to\(torch\.float32\) or the module with \.to\(torch\.float64\)$"):
            m(x.double())
        for dtype in (torch.long, torch.float16):
            with pytest.raises(ValueError, match=r"convert the input with \.to\(torch\.float32\)$"):
                m(x.to(dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x.bfloat16())[0]
    assert torch.isfinite(out).all()
    assert m.double()(x.double())[0].dtype == torch.float64


@pytest.mark.parametrize("kwargs,argument", [
    (dict(rule="stdp"), "rule"), (dict(alpha="row"), "alpha"), (dict(eta="column"), "eta"),
    (dict(rule="abcd", abcd="row"), "abcd"), (dict(rule="abcd", abcd_init=(1.0, 0.0)), "abcd_init"),
    (dict(activation="elu"), "activation"), (dict(modulation="dopamine"), "modulation"),
    (dict(clip=0.0), "clip"), (dict(synaptic_scaling=-1.0), "synaptic_scaling"),
    (dict(adaptive_threshold=0.0), "adaptive_threshold"), (dict(checkpoint_every=0), "checkpoint_every")])
@pytest.mark.parametrize("module", [tp.PlasticRNN, tp.cpp.PlasticRNN])
def test_module_options_are_checked(module, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        module(5, 4, **kwargs)


# Mutation fuzzing of the raw ops. A valid call of each op (random rule, sizes, options and
# modulation) has one or two of its arguments replaced by something else: another shape, rank or
# dtype, a transposed, strided, expanded or truncated view, NaN or infinity, an empty tensor,
# None, an out-of-range number, a misspelt name, a tensor on another device; the backward ops
# also get a valid forward's outputs with one of them so replaced. Each call must either return
# or raise a ValueError or TypeError whose message starts with the op's name and one of its
# arguments (a crash, an internal assertion or an error from inside ATen fails the test).
FUZZ_CASES = 600


def _op_arguments(op):
    return {a.name for a in op.default._schema.arguments}


def _fuzz_base(r, device):
    """A valid call: (lstm, the op's keyword arguments in schema order)."""
    lstm = r.random() < 0.3
    rule = r.choice(sorted(tp.rules.RULES))
    # Sizes from 0: an empty sequence or batch is valid, an empty trace (O or I = 0) refused.
    T, B = r.randint(0, 4), r.randint(0, 3)
    O = 0 if r.random() < 0.05 else r.randint(1, 5)
    recurrent = lstm or r.random() < 0.5
    I = O if recurrent else 0 if r.random() < 0.05 else r.randint(1, 5)
    dtype = r.choice([torch.float32, torch.float64])

    def t(*shape, scale=1.0):
        return scale * torch.randn(shape, dtype=dtype, device=device)

    a = dict.fromkeys(_SCAN_ARGS)
    a.update(z=t(T, B, 4 * O if lstm else O), alpha=t(O, I, scale=0.1),
             eta=t(O, I, scale=0.1).abs(), trace=t(B, O, I), rule=rule, activation="tanh",
             clip=r.choice([None, 1.0]), synaptic_scaling=r.choice([None, 2.0]),
             adaptive_threshold=r.choice([None, 0.1]), target_activity=0.0,
             checkpoint_every=r.choice([None, 1, 2, 3]))
    if recurrent:
        a.update(weight=t(4 * O if lstm else O, O), hidden=t(B, O))
    else:
        a["x"] = t(T, B, I)
    if lstm:
        a["cell"] = t(B, O)
    if rule == "retroactive":
        a["eligibility"] = t(B, O, I)
    if rule == "abcd":
        a["abcd"] = t(4, O, I)
    if a["adaptive_threshold"] is not None:
        a["threshold"] = t(B, O)
    if rule in ("modulated", "retroactive"):
        source = r.choice(["internal", "fanout", "external"])
        if source == "external":
            a["modulation"] = t(T, B) if r.random() < 0.5 else t(T, B, O)
        else:
            a.update(mod_weight=t(O), mod_bias=t(1))
            if source == "fanout":
                a.update(mod_fanout_weight=t(O), mod_fanout_bias=t(O))
    if rule == "modulated" and r.random() < 0.5:
        a["eta"] = None
    if r.random() < 0.3:
        a["lengths"] = torch.tensor([r.randint(0, T) for _ in range(B)], device=device)
    return lstm, a


def _fuzz_tensor(r, v):
    """Something in place of tensor argument v (which may be None)."""
    float_dtype = v.dtype if v is not None and v.is_floating_point() else torch.float32
    device = v.device if v is not None else "cpu"
    kinds = ["none", "random shape", "empty", "integers", "out of range"]
    if v is not None:
        kinds += ["dtype", "half", "other float", "unsqueezed", "nan", "inf", "strided",
                  "stride 0", "other device"]
        if v.dim() >= 2:
            kinds.append("transposed")
        if v.dim() >= 1 and v.size(-1) > 0:
            kinds += ["truncated", "expanded"]
    kind = r.choice(kinds)
    if kind == "none":
        return None
    if kind == "random shape":
        shape = [r.randint(0, 6) for _ in range(r.randint(0, 5))]
        return torch.randn(shape, dtype=float_dtype, device=device)
    if kind == "empty":
        return torch.empty(0, dtype=float_dtype, device=device)
    if kind == "integers":
        return torch.randint(-3, 3, v.shape if v is not None else (3,), device=device)
    if kind == "out of range":
        return torch.tensor([-1, 10**9, 2**40][: r.randint(0, 3)], device=device)
    if kind == "dtype":
        return v.to(r.choice([torch.int32, torch.bool, torch.complex64]))
    if kind == "half":
        return v.to(r.choice([torch.float16, torch.bfloat16]))
    if kind == "other float":
        return v.to(torch.float64 if v.dtype == torch.float32 else torch.float32)
    if kind == "unsqueezed":
        return v.unsqueeze(0)
    if kind in ("nan", "inf"):
        return v.clone().fill_(math.nan if kind == "nan" else math.inf) if v.is_floating_point() else v
    if kind == "strided":
        return v.flatten()[:: max(1, v.numel() // 2)]
    if kind == "stride 0":
        return v.as_strided(v.shape, [0] * v.dim())
    if kind == "other device":
        return v.to("cpu" if v.is_cuda else "meta")
    if kind == "transposed":
        return v.transpose(0, 1)
    if kind == "truncated":
        return v.narrow(-1, 0, v.size(-1) - 1)
    return v[..., :1].expand(*v.shape)  # expanded


def _fuzz_argument(r, a):
    """a with one argument replaced; returns its name too."""
    a = dict(a)
    name = r.choice(_SCAN_ARGS)
    if name in ("rule", "activation"):
        a[name] = r.choice(["", "hebb ", "HEBB", "relu", "sigmoid", "identity", "x" * 300, "tanh",
                            "abcd"])
    elif name in ("clip", "synaptic_scaling", "adaptive_threshold"):
        a[name] = r.choice([None, 0.0, -1.0, math.nan, math.inf, 1e300, -0.0])
    elif name == "target_activity":
        a[name] = r.choice([0.0, math.nan, -math.inf, 1e300])
    elif name == "checkpoint_every":
        a[name] = r.choice([None, 0, -1, -2**62, 2**62, 1, 10**6])
    else:
        a[name] = _fuzz_tensor(r, a[name])
    return name, a


def _fuzz_call(r, lstm, a):
    """One call of a random op of the family (the LSTM's or the RNN's)."""
    ops = torch.ops.torchplastic
    scan, forward, backward = ((ops.plastic_lstm_scan, ops.plastic_lstm_scan_forward,
                                ops.plastic_lstm_scan_backward) if lstm else
                               (ops.plastic_scan, ops.plastic_scan_forward, ops.plastic_scan_backward))
    args = list(a.values())
    which = r.choice(["scan", "forward", "backward"])
    if which != "backward":
        (scan if which == "scan" else forward)(*args)
        return
    inputs = _backward_inputs_of(forward(*args), lstm)
    j = r.randrange(len(inputs))
    replaced = _fuzz_tensor(r, inputs[j])
    inputs[j] = replaced if replaced is not None else torch.empty(0)
    backward(*inputs, *args)


def _assert_fuzzed_calls_fail_cleanly(device, cases, seed):
    for case in range(cases):
        r = random.Random(seed * 1_000_003 + case)
        lstm, a = _fuzz_base(r, device)
        changed = []
        for _ in range(r.randint(0, 2)):
            name, a = _fuzz_argument(r, a)
            changed.append(name)
        where = f"case {case} (lstm={lstm}, rule={a['rule']!r}, changed {changed})"
        try:
            _fuzz_call(r, lstm, a)
        except (ValueError, TypeError) as e:
            message = str(e)
            head = re.match(r"(plastic_(?:lstm_)?scan(?:_backward)?): ([\w/]+):", message)
            assert head, f"{where}: the error names no argument: {message[:300]}"
            family = head.group(1).replace("_backward", "")
            arguments = (_op_arguments(getattr(torch.ops.torchplastic, head.group(1)))
                         | _op_arguments(getattr(torch.ops.torchplastic, family)))
            assert set(head.group(2).split("/")) <= arguments, \
                f"{where}: {head.group(2)!r} is not an argument of {head.group(1)}: {message[:300]}"
            assert "INTERNAL ASSERT" not in message, f"{where}: {message[:300]}"


def test_raw_ops_fail_cleanly_on_mutated_arguments():
    _assert_fuzzed_calls_fail_cleanly("cpu", FUZZ_CASES, seed=1)


@pytest.mark.skipif(not (torch.cuda.is_available() and tp.build_info()["with_cuda"]),
                    reason="needs a CUDA device and a build with CUDA")
def test_raw_ops_fail_cleanly_on_mutated_arguments_cuda():
    _assert_fuzzed_calls_fail_cleanly("cuda", FUZZ_CASES, seed=2)


@pytest.mark.skipif(not (torch.cuda.is_available() and tp.build_info()["with_cuda"]),
                    reason="needs a CUDA device and a build with CUDA")
@pytest.mark.parametrize("lstm", [False, True], ids=["rnn", "lstm"])
@pytest.mark.parametrize("name", ["grad_output", "grad_trace", "trace_checkpoints"])
def test_backward_op_refuses_inputs_on_another_device_cuda(lstm, name):
    """Where the kernels would have read a host pointer on the device."""
    op = torch.ops.torchplastic.plastic_lstm_scan_backward if lstm else torch.ops.torchplastic.plastic_scan_backward
    if not lstm and name == "grad_output":
        name = "grad_y"
    args, inputs = _backward_op_inputs(lstm, device="cuda")
    position = [a.name for a in op.default._schema.arguments].index(name)
    inputs[position] = inputs[position].cpu()
    with pytest.raises(ValueError, match=rf"_backward: {name}: expected a tensor on cuda"):
        op(*inputs, *args)


# The same for the modules, Python and C++ (tp.cpp): a valid call (random rule, modulation
# source, threshold, scaling, batch_first, sizes from 0) with its input, state, modulation or
# lengths replaced, or a PackedSequence input; a call that returns is also backpropagated. Each
# must return or raise a ValueError or TypeError whose message starts with the module's name
# and the argument (until 2026-12-05 what only the op checked, such as a state's or a
# modulation's dtype or a length beyond T, came under the op's name).
_MODULE_ARGUMENTS = {"input", "x", "state", "modulation", "lengths"} | set(_SCAN_ARGS)


def _fuzz_module_call(r):
    """(the module's name, what the call was, a function that makes it)."""
    module = r.choice(ALL_MODULES)
    cell = "Cell" in module.__name__
    rule = r.choice(sorted(tp.rules.RULES))
    I, H = r.randint(1, 5), r.randint(1, 5)
    source = r.choice(["internal", "fanout", "external"])
    options = {"rule": rule}
    if tp.rules.rule_info(rule).modulated:
        options["modulation"] = source
    external = options.get("modulation") == "external"
    batch_first = not cell and r.random() < 0.3
    if not cell:
        options["batch_first"] = batch_first
    if r.random() < 0.3:
        options["adaptive_threshold"] = 0.1
    if r.random() < 0.2:
        options["synaptic_scaling"] = 2.0
    m = module(I, H, **options)
    T, B = r.randint(0, 4), r.randint(0, 3)
    shape = [B, I] if cell else ([B, T, I] if batch_first else [T, B, I])
    x = torch.randn(shape)
    kwargs = {}
    if external:
        m_shape = shape[:-1] + [H]
        kwargs["modulation"] = torch.randn(m_shape if r.random() < 0.5 else m_shape[:-1])
    change = r.choice(["none", "rank", "features", "dtype", "layout", "unbatched", "lengths",
                       "state", "modulation", "packed", "nan"])
    if change == "rank":
        x = torch.randn([r.randint(0, 3) for _ in range(r.choice([0, 1, 4]))])
    elif change == "features":
        x = torch.randn(shape[:-1] + [I + 1])
    elif change == "dtype":
        x = x.to(r.choice([torch.int64, torch.float64, torch.float16, torch.bool]))
    elif change == "layout" and x.dim() >= 2:
        x = x.transpose(0, 1).contiguous().transpose(0, 1)
    elif change == "unbatched" and x.size(0) > 0:
        x = x[0]
    elif change == "lengths" and not cell:
        kwargs["lengths"] = r.choice([torch.tensor([r.randint(-2, T + 2) for _ in range(B)]),
                                      torch.tensor([1.5] * B), torch.tensor([1] * (B + 1)),
                                      [1] * B, torch.tensor(T), "all"])
    elif change == "state":
        kwargs["state"] = r.choice([3, [torch.zeros(1)], (torch.zeros(B, H),) * r.randint(0, 6),
                                    tp.PlasticState(hidden=torch.zeros(B + 1, H)),
                                    tp.PlasticState(hidden=torch.zeros(B, H, dtype=torch.float64)),
                                    tp.PlasticState(trace=torch.zeros(B, H, H + 1)),
                                    # Fields of the right shape that the module may not use.
                                    tp.PlasticState(hidden=torch.zeros(B, H)),
                                    tp.PlasticState(eligibility=torch.zeros(B, H, I)),
                                    tp.PlasticState(threshold=torch.zeros(B, H)),
                                    tp.PlasticState(cell=torch.zeros(B, H))])
    elif change == "modulation":
        kwargs["modulation"] = r.choice([torch.randn(2, 2, 2, 2), torch.randn(1), 3.0, "m",
                                         torch.zeros(shape[:-1], dtype=torch.float64)])
    elif change == "packed" and not cell and B > 0 and T > 0:
        lengths = sorted((r.randint(1, T) for _ in range(B)), reverse=True)
        x = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first)
    elif change == "nan":
        x = torch.full_like(x, math.nan)

    def call():
        out = m(x, **kwargs)
        y = out[0].data if isinstance(out[0], torch.nn.utils.rnn.PackedSequence) else out[0]
        if y.requires_grad and y.numel():
            y.sum().backward()

    where = f"{module.__module__}.{module.__name__}({I}, {H}, {options}), {change}, T={T}, B={B}"
    return module.__name__, where, call


def test_modules_fail_cleanly_on_mutated_calls():
    for case in range(400):
        name, where, call = _fuzz_module_call(random.Random(case))
        try:
            call()
        except (ValueError, TypeError) as e:
            message = str(e)
            head = re.match(r"(\w+): ([\w/]+):", message)
            assert head and head.group(1) == name, f"case {case}, {where}: {message[:300]}"
            assert set(head.group(2).split("/")) <= _MODULE_ARGUMENTS, \
                f"case {case}, {where}: names no argument: {message[:300]}"
