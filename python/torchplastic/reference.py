"""The specification of ``plastic_scan`` in plain PyTorch, one time step at a time.

This is the executable form of SPEC §2: every fused kernel in the library is
tested against it, in values and in gradients. It is written to be read, not to
be fast: autograd keeps every intermediate trace, so memory grows as T·B·O·I.

One step, in this exact order (p is the presynaptic activity)::

    p_t = x_t                      (feedforward)   or h_{t-1} (recurrent)
    a_t = z_t + (α ⊙ H_{t-1}) p_t [+ W p_t] [− θ_{t-1}]
    y_t = φ(a_t)                   (recurrent: h_t = y_t)
    m_t = external | tanh(y_t·v + c) | tanh(y_t·v + c)·f + g
    H_t = rule(H_{t-1}, E_{t-1}, y_t, p_t, m_t, η, A–D)
    H_t = clamp(H_t, −c, c)                          (clipping)
    H_t = H_t · κ / ‖H_t[b, o, :]‖  where that norm > κ  (synaptic scaling)
    θ_t = θ_{t-1} + ρ (y_t − y*)                      (adaptive threshold)
"""

from typing import Optional, Tuple

import torch

from .rules import rule_info
from .state import PlasticState

ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")


def _activation(name: str, a: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        return torch.tanh(a)
    if name == "relu":
        return torch.relu(a)
    if name == "sigmoid":
        return torch.sigmoid(a)
    if name == "identity":
        return a
    raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {name!r}")


def step(z_t, x_t, h, H, E, theta, alpha, eta, weight, m_t, mod_weight, mod_bias,
         mod_fanout_weight, mod_fanout_bias, *, rule, activation, clip, synaptic_scaling,
         adaptive_threshold, target_activity, abcd=None):
    """One time step of SPEC §2. Returns (y_t, h_t, H_t, E_t, θ_t); h is None in feedforward
    mode (x_t given), E and θ are None when the configuration has none.

    Example:
        >>> import torch, torchplastic as tp
        >>> B, O, I = 2, 3, 4
        >>> y, h, H, E, theta = tp.reference.step(
        ...     torch.randn(B, O), torch.randn(B, I), None, torch.zeros(B, O, I), None, None,
        ...     torch.rand(O, I), torch.full((1, 1), 0.1), None, None, None, None, None, None,
        ...     rule="hebb", activation="tanh", clip=None, synaptic_scaling=None,
        ...     adaptive_threshold=None, target_activity=0.0)
        >>> y.shape, H.shape, h is None
        (torch.Size([2, 3]), torch.Size([2, 3, 4]), True)
    """
    recurrent = x_t is None
    p = h if recurrent else x_t                                           # [B, I]
    B, O = z_t.shape
    a = z_t + torch.einsum("boi,bi->bo", alpha * H, p)
    if recurrent:
        a = a + p @ weight.t()
    if theta is not None:
        a = a - theta
    y = _activation(activation, a)                                        # [B, O]

    m = None
    if rule_info(rule).modulated:
        if m_t is not None:
            m = m_t.unsqueeze(-1).expand(B, O) if m_t.dim() == 1 else m_t  # [B, O]
        else:
            s = torch.tanh(y @ mod_weight + mod_bias)                     # [B]
            if mod_fanout_weight is not None:
                m = s.unsqueeze(-1) * mod_fanout_weight + mod_fanout_bias
            else:
                m = s.unsqueeze(-1).expand(B, O)

    outer = y.unsqueeze(-1) * p.unsqueeze(-2)                             # [B, O, I]
    if rule == "hebb":
        H = (1 - eta) * H + eta * outer
    elif rule == "oja":
        H = H + eta * y.unsqueeze(-1) * (p.unsqueeze(-2) - y.unsqueeze(-1) * H)
    elif rule == "modulated":
        H = H + m.unsqueeze(-1) * outer
    elif rule == "retroactive":  # the trace takes the eligibility of the previous step
        H = H + m.unsqueeze(-1) * E
        E = (1 - eta) * E + eta * outer
    elif rule == "abcd":  # Najarro & Risi 2020: B weighs the presynaptic activity, C the postsynaptic
        A, B_, C, D = abcd  # (B_: B is the batch size here)
        H = H + eta * (A * outer + B_ * p.unsqueeze(-2) + C * y.unsqueeze(-1) + D)
    else:
        raise ValueError(f"rule: no reference for {rule!r}")

    if clip is not None:
        H = torch.clamp(H, -clip, clip)
    if synaptic_scaling is not None:
        norm = torch.linalg.vector_norm(H, dim=-1, keepdim=True)         # [B, O, 1]
        # Rows at or under κ are untouched, with no gradient through the scale.
        scaled_norm = torch.where(norm > synaptic_scaling, norm,
                                  torch.full_like(norm, synaptic_scaling))
        H = H * (synaptic_scaling / scaled_norm)
    if theta is not None:
        theta = theta + adaptive_threshold * (y - target_activity)
    return y, (y if recurrent else None), H, E, theta


def plastic_scan(
    z: torch.Tensor,
    alpha: torch.Tensor,
    eta: Optional[torch.Tensor],
    trace: Optional[torch.Tensor],
    *,
    x: Optional[torch.Tensor] = None,
    weight: Optional[torch.Tensor] = None,
    hidden: Optional[torch.Tensor] = None,
    rule: str = "hebb",
    activation: str = "tanh",
    clip: Optional[float] = None,
    modulation: Optional[torch.Tensor] = None,
    mod_weight: Optional[torch.Tensor] = None,
    mod_bias: Optional[torch.Tensor] = None,
    mod_fanout_weight: Optional[torch.Tensor] = None,
    mod_fanout_bias: Optional[torch.Tensor] = None,
    eligibility: Optional[torch.Tensor] = None,
    synaptic_scaling: Optional[float] = None,
    adaptive_threshold: Optional[float] = None,
    target_activity: float = 0.0,
    threshold: Optional[torch.Tensor] = None,
    checkpoint_every: Optional[int] = None,
    abcd: Optional[torch.Tensor] = None,
    lengths: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, PlasticState]:
    """Reference ``plastic_scan`` (SPEC §2, §4). ``checkpoint_every`` is accepted and ignored.

    Feedforward mode when ``x`` ([T, B, I]) is given, recurrent mode otherwise
    (``weight`` [O, O] required, ``hidden`` [B, O] optional). With ``lengths`` ([B]), sequence
    b runs its first ``lengths[b]`` steps; after them its state is held and its output is zero.
    Returns ``y`` [T, B, O] and the final :class:`PlasticState`.

    Example:
        >>> import torch, torchplastic as tp
        >>> z, x = torch.randn(6, 2, 3, dtype=torch.float64), torch.randn(6, 2, 5, dtype=torch.float64)
        >>> alpha, eta = torch.rand(3, 5, dtype=torch.float64), torch.full((1, 1), 0.1, dtype=torch.float64)
        >>> y, _ = tp.reference.plastic_scan(z, alpha, eta, None, x=x)
        >>> y_fused, _ = tp.functional.plastic_scan(z, alpha, eta, None, x=x)
        >>> torch.allclose(y, y_fused)
        True
    """
    info = rule_info(rule)
    T, B, O = z.shape
    recurrent = x is None
    I = O if recurrent else x.shape[-1]

    H = z.new_zeros(B, O, I) if trace is None else trace
    E = None
    if info.eligibility:
        E = z.new_zeros(B, O, I) if eligibility is None else eligibility
    theta = None
    if adaptive_threshold is not None:
        theta = z.new_zeros(B, O) if threshold is None else threshold
    h = None
    if recurrent:
        h = z.new_zeros(B, O) if hidden is None else hidden

    ys = []
    for t in range(T):
        m_t = None if modulation is None else modulation[t]
        new = step(
            z[t], None if recurrent else x[t], h, H, E, theta, alpha, eta, weight, m_t,
            mod_weight, mod_bias, mod_fanout_weight, mod_fanout_bias, rule=rule,
            activation=activation, clip=clip, synaptic_scaling=synaptic_scaling,
            adaptive_threshold=adaptive_threshold, target_activity=target_activity, abcd=abcd)
        if lengths is None:
            y, h, H, E, theta = new
        else:
            running = t < lengths.to(z.device)  # [B]

            def held(new_value, old_value):
                if new_value is None:
                    return None
                mask = running.view(-1, *([1] * (new_value.dim() - 1)))
                return torch.where(mask, new_value, old_value)

            y = held(new[0], torch.zeros_like(new[0]))
            h, H, E, theta = (held(n, o) for n, o in zip(new[1:], (h, H, E, theta)))
        ys.append(y)

    y_all = torch.stack(ys) if ys else z.new_zeros(0, B, O)
    return y_all, PlasticState(h, H, E, theta)
