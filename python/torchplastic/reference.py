"""The specification of ``plastic_scan`` and ``plastic_lstm_scan`` in plain PyTorch, one time
step at a time.

This is the executable form of SPEC §2 and §2b: every fused kernel in the library is
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

The plastic LSTM (``lstm_step``) computes the gates of ``torch.nn.LSTM`` with the plastic
term on the cell candidate, then the same modulation (reading h_t) and trace update with
y_t := g_t and p_t = h_{t-1}.
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



def _modulation(rule, m_t, post, mod_weight, mod_bias, mod_fanout_weight, mod_fanout_bias):
    """m_t [B, O] of the modulated rules (None for the others): the external m_t, or the
    internal head reading `post` (y_t; h_t in the LSTM)."""
    if not rule_info(rule).modulated:
        return None
    B, O = post.shape
    if m_t is not None:
        return m_t.unsqueeze(-1).expand(B, O) if m_t.dim() == 1 else m_t
    s = torch.tanh(post @ mod_weight + mod_bias)                          # [B]
    if mod_fanout_weight is not None:
        return s.unsqueeze(-1) * mod_fanout_weight + mod_fanout_bias
    return s.unsqueeze(-1).expand(B, O)


def _trace_update(rule, H, E, y, p, m, eta, abcd, clip, synaptic_scaling):
    """Steps 5–7 of SPEC §2: the rule, clipping and synaptic scaling. Returns (H_t, E_t)."""
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
        sumsq = (H * H).sum(-1, keepdim=True)                              # [B, O, 1]
        # Rows at or under κ are untouched, with no gradient through the scale. The norm is
        # taken only where it is over κ: at a row of zeros (a zero initial state's first step)
        # its second derivative is 0/0, which made second-order gradients NaN.
        over = sumsq.sqrt() > synaptic_scaling
        norm = torch.where(over, sumsq, torch.full_like(sumsq, synaptic_scaling ** 2)).sqrt()
        H = H * (synaptic_scaling / norm)
    return H, E


def _held(running, new, old):
    """Variable-length batches: per sequence b, each value of `new` where running[b], else the
    one of `old` (None stays None)."""
    def one(new_value, old_value):
        if new_value is None:
            return None
        mask = running.view(-1, *([1] * (new_value.dim() - 1)))
        return torch.where(mask, new_value, old_value)
    return tuple(one(n, o) for n, o in zip(new, old))

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

    m = _modulation(rule, m_t, y, mod_weight, mod_bias, mod_fanout_weight, mod_fanout_bias)
    H, E = _trace_update(rule, H, E, y, p, m, eta, abcd, clip, synaptic_scaling)
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
            y, h, H, E, theta = _held(t < lengths.to(z.device), new,
                                      (torch.zeros_like(new[0]), h, H, E, theta))
        ys.append(y)

    y_all = torch.stack(ys) if ys else z.new_zeros(0, B, O)
    return y_all, PlasticState(h, H, E, theta)


def lstm_step(z_t, h, c, H, E, theta, alpha, eta, weight_hh, m_t, mod_weight, mod_bias,
              mod_fanout_weight, mod_fanout_bias, *, rule, clip, synaptic_scaling,
              adaptive_threshold, target_activity, abcd=None):
    """One time step of the plastic LSTM (SPEC §2b). Returns (h_t, c_t, H_t, E_t, θ_t).

    The gates are in ``torch.nn.LSTM``'s order (i, f, g, o); plasticity acts on the
    connections from h_{t-1} to the cell candidate g, whose value g_t is the postsynaptic
    activity of the rule. The internal neuromodulation head reads h_t.

    Example:
        >>> import torch, torchplastic as tp
        >>> B, H = 2, 3
        >>> h, c, trace, E, theta = tp.reference.lstm_step(
        ...     torch.randn(B, 4 * H), torch.zeros(B, H), torch.zeros(B, H), torch.zeros(B, H, H),
        ...     None, None, torch.rand(H, H), torch.full((1, 1), 0.1), torch.randn(4 * H, H),
        ...     None, None, None, None, None, rule="hebb", clip=None, synaptic_scaling=None,
        ...     adaptive_threshold=None, target_activity=0.0)
        >>> h.shape, c.shape, trace.shape
        (torch.Size([2, 3]), torch.Size([2, 3]), torch.Size([2, 3, 3]))
    """
    p = h                                                                 # [B, H]
    gates = z_t + p @ weight_hh.t()                                       # [B, 4H]
    gi, gf, gg, go = gates.chunk(4, dim=-1)
    gg = gg + torch.einsum("boi,bi->bo", alpha * H, p)
    if theta is not None:
        gg = gg - theta
    i, f, o = torch.sigmoid(gi), torch.sigmoid(gf), torch.sigmoid(go)
    g = torch.tanh(gg)
    c = f * c + i * g
    h = o * torch.tanh(c)

    m = _modulation(rule, m_t, h, mod_weight, mod_bias, mod_fanout_weight, mod_fanout_bias)
    H, E = _trace_update(rule, H, E, g, p, m, eta, abcd, clip, synaptic_scaling)
    if theta is not None:
        theta = theta + adaptive_threshold * (g - target_activity)
    return h, c, H, E, theta


def plastic_lstm_scan(
    z: torch.Tensor,
    weight_hh: torch.Tensor,
    alpha: torch.Tensor,
    eta: Optional[torch.Tensor],
    trace: Optional[torch.Tensor],
    *,
    hidden: Optional[torch.Tensor] = None,
    cell: Optional[torch.Tensor] = None,
    rule: str = "hebb",
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
    """Reference ``plastic_lstm_scan`` (SPEC §2b, §4). ``checkpoint_every`` is accepted and
    ignored.

    ``z`` [T, B, 4H] is ``u W_ihᵀ + b`` with the gate rows in ``torch.nn.LSTM``'s order,
    ``weight_hh`` [4H, H]; α, η and the trace act on the h → g connections ([H, H]).
    Returns the outputs ``h`` [T, B, H] and the final :class:`PlasticState`, whose ``cell``
    is c_T.

    Example:
        >>> import torch, torchplastic as tp
        >>> T, B, H = 5, 2, 3
        >>> lstm = torch.nn.LSTM(4, H)
        >>> u = torch.randn(T, B, 4)
        >>> z = u @ lstm.weight_ih_l0.t() + lstm.bias_ih_l0 + lstm.bias_hh_l0
        >>> out, state = tp.reference.plastic_lstm_scan(
        ...     z, lstm.weight_hh_l0, torch.zeros(H, H), torch.full((1, 1), 0.1), None)
        >>> torch.allclose(out, lstm(u)[0], atol=1e-6)   # α = 0: the plain LSTM
        True
    """
    info = rule_info(rule, "plastic_lstm_scan")
    T, B, G = z.shape
    Hn = G // 4
    H = z.new_zeros(B, Hn, Hn) if trace is None else trace
    E = (z.new_zeros(B, Hn, Hn) if eligibility is None else eligibility) if info.eligibility else None
    theta = None
    if adaptive_threshold is not None:
        theta = z.new_zeros(B, Hn) if threshold is None else threshold
    h = z.new_zeros(B, Hn) if hidden is None else hidden
    c = z.new_zeros(B, Hn) if cell is None else cell

    outs = []
    for t in range(T):
        m_t = None if modulation is None else modulation[t]
        new = lstm_step(
            z[t], h, c, H, E, theta, alpha, eta, weight_hh, m_t, mod_weight, mod_bias,
            mod_fanout_weight, mod_fanout_bias, rule=rule, clip=clip,
            synaptic_scaling=synaptic_scaling, adaptive_threshold=adaptive_threshold,
            target_activity=target_activity, abcd=abcd)
        if lengths is None:
            h, c, H, E, theta = new
            out = h
        else:
            running = t < lengths.to(z.device)
            out, = _held(running, new[:1], (torch.zeros_like(new[0]),))
            h, c, H, E, theta = _held(running, new, (h, c, H, E, theta))
        outs.append(out)

    out_all = torch.stack(outs) if outs else z.new_zeros(0, B, Hn)
    return out_all, PlasticState(h, H, E, theta, c)
