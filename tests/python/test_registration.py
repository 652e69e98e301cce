"""The op's arguments are declared once (csrc/ops/scan_args.h): the schemas, the Python
functional and the fake implementations all follow that table."""

import inspect

import pytest

import torch

import torchplastic as tp
from torchplastic import functional


def schema_arguments(op):
    return [a.name for a in getattr(torch.ops.torchplastic, op).default._schema.arguments]


def test_the_ops_share_one_argument_list():
    scan = schema_arguments("plastic_scan")
    for family in ("plastic_scan", "plastic_lstm_scan"):
        assert schema_arguments(family) == scan
        assert schema_arguments(family + "_forward") == scan
        assert schema_arguments(family + "_record")[:-1] == scan
        backward = schema_arguments(family + "_backward")
        assert backward[-len(scan):] == scan
    assert tuple(scan) == functional.SCAN_ARGUMENTS


def test_functional_signature_names_every_op_argument():
    params = inspect.signature(tp.functional.plastic_scan).parameters
    # cell is the plastic LSTM's.
    assert set(params) == set(functional.SCAN_ARGUMENTS) - {"cell"}
    # The reference, the executable spec, takes the same arguments.
    assert list(inspect.signature(tp.reference.plastic_scan).parameters) == list(params)


def test_lstm_signature_names_every_op_argument():
    params = inspect.signature(tp.functional.plastic_lstm_scan).parameters
    # The LSTM is recurrent with a tanh cell candidate; W_hh is its weight.
    assert set(params) == set(functional.SCAN_ARGUMENTS) - {"x", "activation", "weight"} | {"weight_hh"}
    assert list(inspect.signature(tp.reference.plastic_lstm_scan).parameters) == list(params)


def test_backward_returns_one_gradient_per_tensor_argument():
    tensors = functional.SCAN_TENSOR_ARGUMENTS
    assert tensors[:4] == ("z", "alpha", "eta", "trace")
    z = torch.randn(3, 2, 4, dtype=torch.float64)
    args = dict(z=z, alpha=torch.rand(4, 4, dtype=torch.float64), eta=torch.full((1, 1), 0.1, dtype=torch.float64),
                trace=None, x=None, weight=torch.randn(4, 4, dtype=torch.float64))
    op_args = functional._as_op_arguments(**{name: args.get(name) for name in functional.SCAN_ARGUMENTS
                                             if name not in ("rule", "activation", "target_activity")},
                                          rule="hebb", activation="tanh", target_activity=0.0)
    out = torch.ops.torchplastic.plastic_scan_forward(**op_args)
    y, h, H, E, theta, trace_ckpt, elig_ckpt = out
    grads = torch.ops.torchplastic.plastic_scan_backward(
        torch.ones_like(y), torch.zeros_like(h), torch.zeros_like(H), E, theta, y, trace_ckpt,
        elig_ckpt, **op_args)
    assert len(grads) == len(tensors)
    for name, g in zip(tensors, grads):
        given = op_args[name]
        assert g.shape == (given.shape if given is not None else (0,)), name


def test_raw_op_takes_keywords_in_any_order():
    z = torch.randn(3, 2, 4, dtype=torch.float64)
    kw = dict(z=z, alpha=torch.rand(4, 4, dtype=torch.float64), eta=torch.full((1, 1), 0.1, dtype=torch.float64),
              weight=torch.randn(4, 4, dtype=torch.float64))
    y, *_ = torch.ops.torchplastic.plastic_scan(**functional._as_op_arguments(
        **{name: kw.get(name) for name in reversed(functional.SCAN_ARGUMENTS)
           if name not in ("rule", "activation", "target_activity")},
        rule="hebb", activation="tanh", target_activity=0))
    y_ref, _ = tp.reference.plastic_scan(z, kw["alpha"], kw["eta"], None, weight=kw["weight"])
    torch.testing.assert_close(y, y_ref)


def test_numbers_reach_the_op_as_the_schema_types():
    # The functional API converts what the schema declares float or int (a Python int for clip,
    # NumPy scalars), as the op's own parser would refuse some of them.
    np = pytest.importorskip("numpy")
    args = functional._as_op_arguments(
        **{**dict.fromkeys(functional.SCAN_ARGUMENTS), "z": torch.zeros(1, 1, 1),
           "alpha": torch.zeros(1, 1), "rule": "hebb", "activation": "tanh",
           "target_activity": 0.0})
    assert list(args) == list(functional.SCAN_ARGUMENTS)
    converted = functional._as_op_arguments(
        **{**args, "clip": 1, "synaptic_scaling": np.float32(2.5), "adaptive_threshold": None,
           "target_activity": np.int64(0), "checkpoint_every": np.int64(3)})
    assert type(converted["clip"]) is float and converted["clip"] == 1.0
    assert type(converted["synaptic_scaling"]) is float and converted["synaptic_scaling"] == 2.5
    assert converted["adaptive_threshold"] is None
    assert type(converted["target_activity"]) is float
    assert type(converted["checkpoint_every"]) is int and converted["checkpoint_every"] == 3
    # Tensors are checked to be tensors, and ints to fit the op's 64 bits, by name, where the
    # dispatcher's RuntimeError named them amid the op's whole declaration.
    with pytest.raises(TypeError, match=r"^plastic_scan: alpha: expected a Tensor, got float$"):
        functional._as_op_arguments(**{**args, "alpha": 0.5})
    with pytest.raises(TypeError, match=r"^plastic_scan: lengths: expected a Tensor or None, got list$"):
        functional._as_op_arguments(**{**args, "lengths": [3, 2]})
    with pytest.raises(ValueError, match=r"^plastic_scan: checkpoint_every: expected a 64-bit integer"):
        functional._as_op_arguments(**{**args, "checkpoint_every": 2**64})
    assert type(functional._as_op_arguments(**{**args, "alpha": torch.nn.Parameter(args["alpha"])})["alpha"]) \
        is torch.nn.Parameter
    z = torch.randn(6, 2, 4, dtype=torch.float64)
    alpha, eta = torch.rand(4, 4, dtype=torch.float64), torch.full((1, 1), 0.1, dtype=torch.float64)
    weight = torch.randn(4, 4, dtype=torch.float64)
    y, _ = tp.functional.plastic_scan(z, alpha, eta, None, weight=weight, clip=1,
                                      checkpoint_every=np.int64(3), target_activity=np.int64(0))
    y_ref, _ = tp.reference.plastic_scan(z, alpha, eta, None, weight=weight, clip=1.0)
    torch.testing.assert_close(y, y_ref)


def test_checkpoint_interval_is_one_function():
    # The default K is computed in C++ only; Python asks for it.
    assert [tp._C.checkpoint_interval(T) for T in (0, 1, 4, 5, 64, 65)] == [1, 1, 2, 3, 8, 9]
    assert tp._C.checkpoint_interval(10, 50) == 10
    assert tp._C.checkpoint_interval(10, 3) == 3


def test_python_rule_table_matches_the_cpp_one():
    cpp = tp._C.rules()
    assert list(cpp) == list(tp.rules.RULES)
    for name, info in tp.rules.RULES.items():
        assert cpp[name] == dict(uses_eta=info.uses_eta, modulated=info.modulated,
                                 eligibility=info.eligibility, coefficients=info.coefficients,
                                 default_clip=info.default_clip), name
