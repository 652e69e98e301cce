"""Derivatives the op supports, and those it refuses (never a silently wrong one): what the
README's table of transforms says."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import torchplastic as tp


def layer_and_input(seed=0):
    torch.manual_seed(seed)
    m = tp.PlasticLinear(3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    return m, x


def reference_output(m, x):
    z = torch.nn.functional.linear(x, m.weight, m.bias)
    y, _ = tp.reference.plastic_scan(z, m.alpha, m.eta, None, x=x)
    return y


def test_first_order_gradients_match_the_reference():
    m, x = layer_and_input()
    g, = torch.autograd.grad(m(x)[0].pow(2).sum(), x)
    g_ref, = torch.autograd.grad(reference_output(m, x).pow(2).sum(), x)
    torch.testing.assert_close(g, g_ref)


def test_double_backward_is_refused_where_it_is_asked_for():
    m, x = layer_and_input()
    with pytest.raises(RuntimeError, match="double backward.*create_graph=True"):
        torch.autograd.grad(m(x)[0].pow(2).sum(), x, create_graph=True)
    # The reference computes it (what a user can fall back to).
    g, = torch.autograd.grad(reference_output(m, x).pow(2).sum(), x, create_graph=True)
    gg, = torch.autograd.grad(g.pow(2).sum(), x)
    assert gg.abs().max() > 0


def test_forward_mode_ad_is_refused():
    m, x = layer_and_input()
    v = torch.randn_like(x)
    with pytest.raises(RuntimeError, match="forward-mode AD"):
        torch.func.jvp(lambda x: m(x)[0], (x.detach(),), (v,))
    with pytest.raises(RuntimeError, match="forward-mode AD"):
        with fwAD.dual_level():
            m(fwAD.make_dual(x.detach(), v))


@pytest.mark.parametrize("transform", ["grad", "jacrev", "vmap_grad"])
def test_functorch_transforms_are_refused(transform):
    m, x = layer_and_input()
    f = lambda x: m(x)[0].pow(2).sum()  # noqa: E731
    with pytest.raises(RuntimeError, match="functorch transforms"):
        if transform == "grad":
            torch.func.grad(f)(x.detach())
        elif transform == "jacrev":
            torch.func.jacrev(lambda x: m(x)[0])(x.detach())
        else:
            torch.func.vmap(torch.func.grad(f))(x.detach().unsqueeze(0))
