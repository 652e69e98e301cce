"""Every class of bad input fails with a clear error naming the argument, the expected and the
received value (SPEC §6) — through the functional API, the raw op, and the modules."""

import math

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
