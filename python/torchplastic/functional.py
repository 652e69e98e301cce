"""Functional API: ``plastic_scan`` over the fused op, and the op's fake implementations.

The math lives in C++ (``torch.ops.torchplastic``); this module maps the SPEC §4 signature to
the op's schema and registers the shape functions ``torch.compile`` traces with.
"""

import math
from typing import Optional, Tuple

import torch

from .state import PlasticState

__all__ = ["plastic_scan"]


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
) -> Tuple[torch.Tensor, PlasticState]:
    """Run T steps of a plastic layer (SPEC §2) with the fused kernel.

    Args:
        z: ``[T, B, O]`` drive computed outside the recurrence (``x Wᵀ + b`` or ``u W_ihᵀ + b``).
        alpha: plasticity coefficients, ``[O, I]``, ``[O, 1]`` or ``[1, 1]``.
        eta: trace rate, same granularities (``None`` allowed for rule ``"modulated"``).
        trace: initial Hebbian trace ``[B, O, I]``, or ``None`` for zeros.
        x: ``[T, B, I]`` presynaptic input: feedforward mode. ``None``: recurrent mode.
        weight: ``[O, O]`` fixed recurrent weight (recurrent mode, required).
        hidden: ``[B, O]`` initial hidden state (recurrent mode), or ``None`` for zeros.
        rule: ``"hebb"``, ``"oja"``, ``"modulated"`` or ``"retroactive"``.
        activation: ``"tanh"``, ``"relu"``, ``"sigmoid"`` or ``"identity"``.
        clip: bound ``c > 0`` of the trace, or ``None``.
        modulation: external neuromodulation ``[T, B]`` or ``[T, B, O]``.
        mod_weight, mod_bias: internal modulation head ``v [O]``, ``c [1]``.
        mod_fanout_weight, mod_fanout_bias: its fan-out ``f [O]``, ``g [O]``.
        eligibility: initial eligibility trace ``[B, O, I]`` (rule ``"retroactive"``).
        synaptic_scaling: row-norm bound ``κ > 0``, or ``None``.
        adaptive_threshold: threshold rate ``ρ > 0``, or ``None``.
        target_activity: target ``y*`` of the adaptive threshold.
        threshold: initial threshold ``[B, O]``.
        checkpoint_every: the backward recomputes from traces saved every K steps
            (default ``ceil(sqrt(T))``); memory for the backward is O((T/K + K)·B·O·I).

    Returns:
        ``y [T, B, O]`` and the final :class:`PlasticState`; fields the configuration does not
        use are ``None``. On CUDA with float16/bfloat16 inputs the traces are float32.
    """
    if not isinstance(rule, str):
        raise TypeError(f"plastic_scan: rule: expected a str, got {type(rule).__name__}")
    if not isinstance(activation, str):
        raise TypeError(f"plastic_scan: activation: expected a str, got {type(activation).__name__}")
    y, h, H, E, theta = torch.ops.torchplastic.plastic_scan(
        z, alpha, eta, trace, x, weight, hidden, eligibility, threshold, modulation,
        mod_weight, mod_bias, mod_fanout_weight, mod_fanout_bias, rule, activation,
        None if clip is None else float(clip),
        None if synaptic_scaling is None else float(synaptic_scaling),
        None if adaptive_threshold is None else float(adaptive_threshold),
        float(target_activity),
        None if checkpoint_every is None else int(checkpoint_every),
    )
    return y, PlasticState(
        hidden=h if x is None else None,
        trace=H,
        eligibility=E if rule == "retroactive" else None,
        threshold=theta if adaptive_threshold is not None else None,
    )


def default_checkpoint_every(T: int) -> int:
    """K of SPEC §3 when none is given: about √T, at least 1 (mirrors the C++ default)."""
    return max(1, math.ceil(math.sqrt(T)))


# ---------------------------------------------------------------- fake implementations
# They mirror csrc/ops/scan_common.cpp: shapes, dtypes (traces in float32 for half inputs) and
# the empty [0] tensors that stand for states a configuration does not use.

def _state_dtype(z: torch.Tensor) -> torch.dtype:
    return torch.float32 if z.dtype in (torch.float16, torch.bfloat16) else z.dtype


def _check_devices(z, *tensors):
    # Under the dispatcher a meta tensor among CPU ones selects these fake kernels, which must
    # refuse the mix as the real kernels do.
    names = ("alpha", "eta", "trace", "x", "weight", "hidden", "eligibility", "threshold",
             "modulation", "mod_weight", "mod_bias", "mod_fanout_weight", "mod_fanout_bias")
    for name, t in zip(names, tensors):
        if t is not None and t.device != z.device:
            raise ValueError(f"plastic_scan: {name}: expected a tensor on {z.device} (the device "
                             f"of z), got {t.device}")


def _fake_states(z, alpha, x, rule, adaptive_threshold):
    T, B, O = z.shape
    I = O if x is None else x.shape[-1]
    sd = _state_dtype(z)
    y = z.new_empty(T, B, O)
    hidden = z.new_empty(B, O) if x is None else z.new_empty(0)
    trace = z.new_empty(B, O, I, dtype=sd)
    elig = z.new_empty(B, O, I, dtype=sd) if rule == "retroactive" else z.new_empty(0, dtype=sd)
    theta = z.new_empty(B, O, dtype=sd) if adaptive_threshold is not None else z.new_empty(0, dtype=sd)
    return y, hidden, trace, elig, theta


@torch.library.register_fake("torchplastic::plastic_scan")
def _plastic_scan_fake(z, alpha, eta, trace, x, weight, hidden, eligibility, threshold,
                       modulation, mod_weight, mod_bias, mod_fanout_weight, mod_fanout_bias,
                       rule, activation, clip, synaptic_scaling, adaptive_threshold,
                       target_activity, checkpoint_every):
    _check_devices(z, alpha, eta, trace, x, weight, hidden, eligibility, threshold, modulation,
                   mod_weight, mod_bias, mod_fanout_weight, mod_fanout_bias)
    return _fake_states(z, alpha, x, rule, adaptive_threshold)


@torch.library.register_fake("torchplastic::plastic_scan_forward")
def _plastic_scan_forward_fake(z, alpha, eta, trace, x, weight, hidden, eligibility, threshold,
                               modulation, mod_weight, mod_bias, mod_fanout_weight,
                               mod_fanout_bias, rule, activation, clip, synaptic_scaling,
                               adaptive_threshold, target_activity, checkpoint_every):
    _check_devices(z, alpha, eta, trace, x, weight, hidden, eligibility, threshold, modulation,
                   mod_weight, mod_bias, mod_fanout_weight, mod_fanout_bias)
    y, h, H, E, theta = _fake_states(z, alpha, x, rule, adaptive_threshold)
    T, B, O = z.shape
    I = H.shape[-1]
    if checkpoint_every is None:
        K = default_checkpoint_every(int(T))
    else:
        K = min(checkpoint_every, max(int(T), 1))
    S = (T + K - 1) // K
    sd = _state_dtype(z)
    trace_ckpt = z.new_empty(S, B, O, I, dtype=sd)
    elig_ckpt = z.new_empty(S, B, O, I, dtype=sd) if rule == "retroactive" else z.new_empty(0, dtype=sd)
    return y, h, H, E, theta, trace_ckpt, elig_ckpt


@torch.library.register_fake("torchplastic::plastic_scan_backward")
def _plastic_scan_backward_fake(grad_y, grad_hidden, grad_trace, grad_eligibility,
                                grad_threshold, y, trace_checkpoints, eligibility_checkpoints,
                                z, alpha, eta, trace, x, weight, hidden, eligibility, threshold,
                                modulation, mod_weight, mod_bias, mod_fanout_weight,
                                mod_fanout_bias, rule, activation, clip, synaptic_scaling,
                                adaptive_threshold, target_activity, checkpoint_every):
    inputs = (z, alpha, eta, trace, x, weight, hidden, eligibility, threshold, modulation,
              mod_weight, mod_bias, mod_fanout_weight, mod_fanout_bias)
    none = z.new_empty(0)
    return [none if t is None else t.new_empty(t.shape) for t in inputs]
