"""The C++ modules, reached from Python through pybind11, against the Python modules."""

import pytest
import torch

import torchplastic as tp

CASES = [
    ("PlasticLinear", dict(rule="hebb")),
    ("PlasticLinear", dict(rule="retroactive", modulation="fanout", alpha="neuron", eta="connection")),
    ("PlasticRNN", dict(rule="oja", clip=0.5, synaptic_scaling=1.5)),
    ("PlasticRNN", dict(rule="modulated", modulation="internal", adaptive_threshold=0.1)),
    ("PlasticRNN", dict(rule="retroactive", modulation="external", batch_first=True)),
    ("PlasticRNNCell", dict(rule="retroactive", modulation="fanout")),
    ("PlasticLinear", dict(rule="abcd")),
    ("PlasticRNN", dict(rule="abcd", abcd="neuron", abcd_init=(0.5, 0.1, -0.2, 0.05), eta="neuron")),
]


def pair(name, kw, seed=0):
    torch.manual_seed(seed)
    py = getattr(tp, name)(5, 4, **kw)
    torch.manual_seed(seed)
    cpp = getattr(tp.cpp, name)(5, 4, **kw)
    return py, cpp


@pytest.mark.parametrize("name,kw", CASES, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
def test_cpp_module_equals_python_module(name, kw):
    py, cpp = pair(name, kw)
    py_params, cpp_params = dict(py.named_parameters()), dict(cpp.named_parameters())
    assert list(py_params) == list(cpp_params)
    for k in py_params:  # same names, shapes and, from the same seed, the same initial values
        torch.testing.assert_close(cpp_params[k], py_params[k], msg=lambda m: f"{k}: {m}")
    with torch.no_grad():
        for k, p in py_params.items():
            p.uniform_(-0.5, 0.5) if k != "eta" else p.uniform_(0.1, 0.3)
            cpp_params[k].copy_(p)
    cell = name == "PlasticRNNCell"
    x = torch.randn(3, 5) if cell else torch.randn(6, 3, 5)
    mod = torch.randn(6, 3) if kw.get("modulation") == "external" else None
    if kw.get("batch_first"):
        x = x.transpose(0, 1).contiguous()
    y_py, s_py = py(x, modulation=mod)
    y_cpp, s_cpp = cpp(x, None, mod)
    assert isinstance(s_cpp, tp.PlasticState)
    torch.testing.assert_close(y_cpp, y_py)
    for a, b in zip(s_cpp, s_py):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    # state carried on, and gradients through both
    y2_py, _ = py(x, s_py, mod)
    y2_cpp, _ = cpp(x, s_cpp, mod)
    torch.testing.assert_close(y2_cpp, y2_py)
    g_py = torch.autograd.grad(y2_py.square().sum(), list(py_params.values()))
    g_cpp = torch.autograd.grad(y2_cpp.square().sum(), list(cpp_params.values()))
    for k, a, b in zip(py_params, g_cpp, g_py):
        torch.testing.assert_close(a, b, msg=lambda m: f"grad {k}: {m}")


def test_cpp_module_errors_name_the_argument():
    with pytest.raises(ValueError, match="rule"):
        tp.cpp.PlasticRNN(5, 4, rule="hebbian")
    with pytest.raises(TypeError, match="unexpected keyword argument 'ruel'"):
        tp.cpp.PlasticRNN(5, 4, ruel="hebb")
    with pytest.raises(ValueError, match="input: expected last dimension 5"):
        tp.cpp.PlasticRNN(5, 4)(torch.randn(3, 2, 7))
