"""The C++ modules, reached from Python through pybind11, against the Python modules."""

import copy
import io
import pickle

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
    ("PlasticLSTM", dict(rule="retroactive", modulation="fanout", adaptive_threshold=0.1)),
    ("PlasticLSTM", dict(rule="modulated", modulation="external", batch_first=True)),
    ("PlasticLSTMCell", dict(rule="hebb", alpha="neuron")),
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
    cell = name.endswith("Cell")
    x = torch.randn(3, 5) if cell else torch.randn(6, 3, 5)
    mod = torch.randn(6, 3) if kw.get("modulation") == "external" else None
    if kw.get("batch_first"):  # inputs and external modulation [B, T, ...]
        x = x.transpose(0, 1).contiguous()
        mod = None if mod is None else mod.transpose(0, 1).contiguous()
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


def test_cpp_modules_behave_as_nn_modules():
    from torchplastic.cpp import PlasticRNN  # a real module, not only an attribute of _C

    assert PlasticRNN.__module__ == "torchplastic.cpp" and PlasticRNN.__doc__
    torch.manual_seed(0)
    m = PlasticRNN(5, 4, rule="abcd", bias=False)
    assert isinstance(m, torch.nn.Module)
    assert "PlasticRNN(5, 4, bias=false, rule=abcd" in repr(m)
    assert m.double() is m and m.weight_ih.dtype == torch.float64
    assert m.to(torch.float32) is m and m.weight_hh.dtype == torch.float32
    assert m.to("cpu") is m and m.float() is m and m.cpu() is m
    assert m.train() is m and m.training and m.eval() is m and not m.training
    u = torch.randn(6, 3, 5)
    y, _ = m(u)
    # The C++ forward computes with this module's parameters, whatever their dtype now.
    y64, _ = m.double()(u.double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64.float(), y, rtol=1e-5, atol=1e-6)
    m.float()

    # deepcopy, pickle and torch.save give an equal module that computes the same.
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert clone is not m and clone.weight_ih is not m.weight_ih
        torch.testing.assert_close(clone(u)[0], y)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf, weights_only=False)(u)[0], y)
    torch.manual_seed(1)
    other = PlasticRNN(5, 4, rule="abcd", bias=False)
    other.load_state_dict(m.state_dict())
    torch.testing.assert_close(other(u)[0], y)

    # functional_call swaps the parameters the C++ forward sees.
    zeros = {name: torch.zeros_like(p) for name, p in m.named_parameters()}
    y0, _ = torch.func.functional_call(m, zeros, (u,))
    assert torch.count_nonzero(y0) == 0
    torch.testing.assert_close(m(u)[0], y)  # and back

    # Gradients reach this module's parameters.
    m(u)[0].square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_cpp_module_under_torch_compile():
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = tp.cpp.PlasticLinear(5, 4)
    x = torch.randn(6, 3, 5)
    compiled = torch.compile(m)  # the C++ call is a graph break, the rest compiles
    torch.testing.assert_close(compiled(x)[0], m(x)[0])
    torch._dynamo.reset()
    with pytest.raises(Exception, match="outside the compiled graph"):
        torch.compile(m, fullgraph=True)(x)


@pytest.mark.parametrize("python", [True, False], ids=["python", "cpp"])
@pytest.mark.parametrize("cls, sizes, name", [
    ("PlasticRNN", (4, 0), "hidden_size"), ("PlasticRNN", (0, 4), "input_size"),
    ("PlasticRNNCell", (4, -1), "hidden_size"), ("PlasticLinear", (3, 0), "out_features"),
    ("PlasticLinear", (0, 3), "in_features")])
def test_size_errors_name_the_modules_own_argument(python, cls, sizes, name):
    module = getattr(tp if python else tp.cpp, cls)
    with pytest.raises(ValueError, match=rf"{cls}: {name}: expected a positive int, got {min(sizes)}"):
        module(*sizes)
