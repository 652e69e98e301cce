"""Functional API: ``plastic_scan`` over the fused op, and the op's fake implementations.

The math lives in C++ (``torch.ops.torchplastic``); this module maps the SPEC §4 signature to
the op's schema and registers the shape functions ``torch.compile`` traces with.
"""

import math
import numbers
from types import SimpleNamespace
from typing import Optional, Tuple

import torch

from . import _C
from .rules import RULES, rule_info
from .state import PlasticState

__all__ = ["plastic_scan", "plastic_lstm_scan"]


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
    """Run T steps of a plastic layer (SPEC §2) with the fused kernel.

    Args:
        z: ``[T, B, O]`` drive computed outside the recurrence (``x Wᵀ + b`` or ``u W_ihᵀ + b``).
        alpha: plasticity coefficients, ``[O, I]``, ``[O, 1]`` or ``[1, 1]``.
        eta: trace rate, same granularities (``None`` allowed for rule ``"modulated"``).
        trace: initial Hebbian trace ``[B, O, I]``, or ``None`` for zeros.
        x: ``[T, B, I]`` presynaptic input: feedforward mode. ``None``: recurrent mode.
        weight: ``[O, O]`` fixed recurrent weight (recurrent mode, required).
        hidden: ``[B, O]`` initial hidden state (recurrent mode), or ``None`` for zeros.
        rule: ``"hebb"``, ``"oja"``, ``"modulated"``, ``"retroactive"`` or ``"abcd"``
            (:data:`torchplastic.rules.RULES`).
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
        abcd: coefficients A, B, C, D of rule ``"abcd"``, stacked: ``[4, O, I]``, ``[4, O, 1]``
            or ``[4, 1, 1]``; ΔH = η (A y pᵀ + B p + C y + D).
        lengths: ``[B]`` integers in ``[0, T]``: sequence b runs its first ``lengths[b]`` steps,
            after which its state is held and its output is zero; the final state is the one
            after its last step. On the CPU (as ``torch.nn.utils.rnn`` keeps them) or z's
            device (on CUDA the range check then waits for the device). The fused kernels skip
            the steps past each length, so the cost follows the sum of the lengths.

    Returns:
        ``y [T, B, O]`` and the final :class:`PlasticState`; fields the configuration does not
        use are ``None``. On CUDA with float16/bfloat16 inputs the traces are float32.

    Example:
        >>> import torch, torchplastic as tp
        >>> z = torch.randn(100, 32, 64)                      # the drive [T, B, O]
        >>> alpha, eta = 0.01 * torch.rand(64, 64), torch.full((1, 1), 0.05)
        >>> y, state = tp.functional.plastic_scan(z, alpha, eta, None,
        ...                                       weight=0.1 * torch.randn(64, 64))
        >>> y.shape, state.trace.shape
        (torch.Size([100, 32, 64]), torch.Size([32, 64, 64]))
    """
    if not isinstance(rule, str):
        raise TypeError(f"plastic_scan: rule: expected a str, got {type(rule).__name__}")
    if not isinstance(activation, str):
        raise TypeError(f"plastic_scan: activation: expected a str, got {type(activation).__name__}")
    # By name: the op's arguments are declared once, in C++ (csrc/ops/scan_args.h), and
    # tests/python/test_registration.py checks that this signature names each of them.
    arguments = _op_positional(
        "plastic_scan",
        z=z, alpha=alpha, eta=eta, trace=trace, x=x, weight=weight, hidden=hidden,
        eligibility=eligibility, threshold=threshold, modulation=modulation,
        mod_weight=mod_weight, mod_bias=mod_bias, mod_fanout_weight=mod_fanout_weight,
        mod_fanout_bias=mod_fanout_bias, rule=rule, activation=activation, clip=clip,
        synaptic_scaling=synaptic_scaling, adaptive_threshold=adaptive_threshold,
        target_activity=target_activity, checkpoint_every=checkpoint_every, abcd=abcd,
        lengths=lengths, cell=None)
    return _run_scan(arguments, lstm=False)


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
    """Run T steps of the plastic LSTM (SPEC §2b) with the fused kernel.

    The LSTM of ``torch.nn.LSTM`` (gates i, f, g, o in its order), with plastic connections
    from ``h_{t-1}`` to the cell candidate g: ``g̃ = z_g + W_g h_{t-1} + (α ⊙ H) h_{t-1}``. The
    rule updates the trace with ``g_t`` as the postsynaptic and ``h_{t-1}`` as the presynaptic
    activity; the internal neuromodulation head reads ``h_t``.

    Args:
        z: ``[T, B, 4H]``: ``u W_ihᵀ + b``, the gate rows in ``torch.nn.LSTM``'s order.
        weight_hh: ``[4H, H]``, the same order.
        alpha, eta: ``[H, H]``, ``[H, 1]`` or ``[1, 1]`` (``eta`` may be ``None`` for rule
            ``"modulated"``).
        trace: initial trace ``[B, H, H]``, or ``None`` for zeros.
        hidden, cell: ``h_0`` and ``c_0``, ``[B, H]`` each, or ``None`` for zeros.
        rule, clip, modulation, ..., lengths: as :func:`plastic_scan`, with O = I = H; the
            adaptive threshold acts on g̃.

    Returns:
        ``h [T, B, H]`` and the final :class:`PlasticState`, whose ``cell`` is ``c_T``.

    Example:
        >>> import torch, torchplastic as tp
        >>> T, B, H = 50, 8, 32
        >>> z = torch.randn(T, B, 4 * H)                     # u W_ihᵀ + b
        >>> weight_hh = 0.1 * torch.randn(4 * H, H)
        >>> alpha, eta = 0.01 * torch.rand(H, H), torch.full((1, 1), 0.05)
        >>> h, state = tp.functional.plastic_lstm_scan(z, weight_hh, alpha, eta, None)
        >>> h.shape, state.cell.shape, state.trace.shape
        (torch.Size([50, 8, 32]), torch.Size([8, 32]), torch.Size([8, 32, 32]))
    """
    if not isinstance(rule, str):
        raise TypeError(f"plastic_lstm_scan: rule: expected a str, got {type(rule).__name__}")
    arguments = _op_positional(
        "plastic_lstm_scan",
        z=z, alpha=alpha, eta=eta, trace=trace, x=None, weight=weight_hh, hidden=hidden,
        eligibility=eligibility, threshold=threshold, modulation=modulation,
        mod_weight=mod_weight, mod_bias=mod_bias, mod_fanout_weight=mod_fanout_weight,
        mod_fanout_bias=mod_fanout_bias, rule=rule, activation="tanh", clip=clip,
        synaptic_scaling=synaptic_scaling, adaptive_threshold=adaptive_threshold,
        target_activity=target_activity, checkpoint_every=checkpoint_every, abcd=abcd,
        lengths=lengths, cell=cell)
    return _run_scan(arguments, lstm=True)


def _run_scan(arguments, lstm: bool) -> Tuple[torch.Tensor, PlasticState]:
    """plastic_scan (plastic_lstm_scan if `lstm`) on `arguments`, in the schema's order as
    _op_positional returns them, and its outputs as (y, PlasticState), the fields the call's
    configuration does not use None. The functional API and the modules both call the op here;
    a cell pays this path on every step, so it indexes the arguments rather than naming them
    again."""
    # Positionally: the dispatcher parses keywords at several µs a call.
    if lstm:
        y, h, H, E, theta, c = _LSTM_SCAN_OP(*arguments)
    else:
        y, h, H, E, theta = _SCAN_OP(*arguments)
        c = None
    if _recording_sink is not None:
        _record(_LSTM_RECORD_OP if lstm else _RECORD_OP, arguments)
    # The op has refused an unknown rule by now.
    return y, PlasticState(
        hidden=h if arguments[_X] is None else None,
        trace=H,
        eligibility=E if arguments[_RULE] in _ELIGIBILITY_RULES else None,
        threshold=theta if arguments[_ADAPTIVE_THRESHOLD] is not None else None,
        cell=c,
    )


def _record(record_op, arguments):
    """When tp.inspect.record is on: the same call (`arguments` in the schema's order) once
    more, by the kernels that record, its records detached."""
    sink, every = _recording_sink
    with torch.no_grad():
        sink(record_op(**{k: v.detach() if isinstance(v, torch.Tensor) else v
                          for k, v in zip(SCAN_ARGUMENTS, arguments)}, every=every))


# Set by tp.inspect.record around a module's call: (sink(records), every); None otherwise.
_recording_sink = None


# ---------------------------------------------------------------- the op's arguments
# Read back from the registered schema, which C++ expands from its argument table
# (csrc/ops/scan_args.h): each argument's name and how a Python value is converted for it.

def _converter(jit_type) -> Optional[type]:
    kind = str(jit_type)
    if kind in ("float", "Optional[float]"):
        return float
    if kind in ("int", "Optional[int]"):
        return int
    if kind in ("Tensor", "Optional[Tensor]"):
        return torch.Tensor
    return None


def _optional(jit_type) -> bool:
    return str(jit_type).startswith("Optional[")


_SCHEMA = torch.ops.torchplastic.plastic_scan.default._schema
SCAN_ARGUMENTS = tuple(a.name for a in _SCHEMA.arguments)
SCAN_TENSOR_ARGUMENTS = tuple(a.name for a in _SCHEMA.arguments
                              if str(a.type) in ("Tensor", "Optional[Tensor]"))
_CONVERTERS = tuple((a.name, _converter(a.type), _optional(a.type)) for a in _SCHEMA.arguments)
# What _run_scan reads of a call's arguments, by position.
_X, _RULE, _ADAPTIVE_THRESHOLD = (SCAN_ARGUMENTS.index(name) for name in ("x", "rule", "adaptive_threshold"))
_ELIGIBILITY_RULES = frozenset(name for name, info in RULES.items() if info.eligibility)
_SCAN_OP = torch.ops.torchplastic.plastic_scan.default
_LSTM_SCAN_OP = torch.ops.torchplastic.plastic_lstm_scan.default
_RECORD_OP = torch.ops.torchplastic.plastic_scan_record
_LSTM_RECORD_OP = torch.ops.torchplastic.plastic_lstm_scan_record


def _as_op_arguments(op: str = "plastic_scan", **values):
    """The op's arguments by name from `values` (one per schema argument), in the schema's order,
    numbers converted to the schema's types (a Python int for a float argument, a NumPy scalar,
    ...); `op` names the caller in errors."""
    return dict(zip(SCAN_ARGUMENTS, _op_positional(op, **values)))


def _float_argument(value, op: str, name: str) -> float:
    """value, a real number (a Python int, a NumPy scalar, ...), as a Python float. A string, a
    bool or anything else is refused: float() would read "2" or True as a number."""
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.SymFloat, torch.SymInt)):
        raise TypeError(f"{op}: {name}: expected a real number, got {type(value).__name__} {value!r}")
    return float(value)


def _int_argument(value, op: str, name: str) -> int:
    """value, an integer (a NumPy integer, ...), as a Python int. A float, a string or a bool is
    refused: int() would cut 1.5 to 1 and read "3" as a number."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, torch.SymInt)):
        raise TypeError(f"{op}: {name}: expected an int, got {type(value).__name__} {value!r}")
    if isinstance(value, numbers.Integral) and not -2**63 <= value < 2**63:
        raise ValueError(f"{op}: {name}: expected a 64-bit integer, got {value}")
    return int(value)


def _tensor_argument(value, op: str, name: str, optional: bool):
    """A tensor argument that is not a tensor (nor None where it may be), refused by name, where
    the dispatcher's RuntimeError would name it amid the op's whole declaration."""
    raise TypeError(f"{op}: {name}: expected a Tensor{' or None' if optional else ''}, got "
                    f"{type(value).__name__}")


def _positional_builder():
    """A function taking the op's name (for errors) and its arguments by keyword (every one),
    returning them as a tuple in the schema's order, numbers converted as _as_op_arguments says
    and tensors checked to be tensors. Generated once from the schema, as collections.namedtuple
    generates its classes: a cell pays this on every step, and a loop over the arguments into a
    dict took it more than twice as long."""
    def expression(name, convert, optional):
        if convert is None:
            return name
        if convert is torch.Tensor:  # a subclass too (a Parameter, a fake tensor)
            kept = (f"{name} is None or " if optional else "") + f"isinstance({name}, _Tensor)"
            return f"{name} if {kept} else _tensor({name}, _op, {name!r}, {optional})"
        # The usual case, a value of the schema's type (or None where it may be), inline; an int
        # the op's 64 bits cannot hold goes to _int, which refuses it.
        kept = f"type({name}) is {convert.__name__}"
        if convert is int:
            kept = f"({kept} and {-2**63} <= {name} < {2**63})"
        kept += f" or {name} is None" if optional else ""
        return f"{name} if {kept} else _{convert.__name__}({name}, _op, {name!r})"
    source = (f"def _op_positional(_op, *, {', '.join(SCAN_ARGUMENTS)}):\n"
              f"    return ({', '.join(expression(*c) for c in _CONVERTERS)},)\n")
    namespace = {"_float": _float_argument, "_int": _int_argument, "_tensor": _tensor_argument,
                 "_Tensor": torch.Tensor}
    exec(source, namespace)
    return namespace["_op_positional"]


_op_positional = _positional_builder()


def _bind(op_name: str, args, kwargs) -> SimpleNamespace:
    """The arguments of a call of torch.ops.torchplastic.<op_name> by name, as its fake
    implementation receives them (positionally, by keyword, or left at their defaults)."""
    schema = getattr(torch.ops.torchplastic, op_name).default._schema
    values = {}
    for k, a in enumerate(schema.arguments):
        if k < len(args):
            values[a.name] = args[k]
        elif a.name in kwargs:
            values[a.name] = kwargs[a.name]
        else:
            values[a.name] = a.default_value if a.has_default_value() else None
    return SimpleNamespace(**values)


# ---------------------------------------------------------------- fake implementations
# Shapes and dtypes of the outputs (traces in float32 for half inputs), and the empty [0]
# tensors that stand for states a configuration does not use, as csrc/ops/scan.cpp makes them.

def _state_dtype(z: torch.Tensor) -> torch.dtype:
    return torch.float32 if z.dtype in (torch.float16, torch.bfloat16) else z.dtype


def _backward_inputs(op_name: str) -> Tuple[str, ...]:
    """The tensors a backward op takes beside the scan's arguments: the output gradients and
    what the forward kept."""
    schema = getattr(torch.ops.torchplastic, op_name).default._schema
    return tuple(a.name for a in schema.arguments
                 if str(a.type) in ("Tensor", "Optional[Tensor]") and a.name not in SCAN_TENSOR_ARGUMENTS)


_SCAN_BACKWARD_INPUTS = _backward_inputs("plastic_scan_backward")
_LSTM_SCAN_BACKWARD_INPUTS = _backward_inputs("plastic_lstm_scan_backward")


def _check_devices(a: SimpleNamespace, lstm: bool, backward_inputs: Tuple[str, ...] = ()):
    # Under the dispatcher a meta tensor among CPU ones selects these fake kernels, which must
    # refuse the mix as the real kernels do (check_devices in csrc/ops/checks.cpp; the backward's
    # own inputs in csrc/ops/scan.cpp), z missing included, before anything reads z's device.
    op = "plastic_lstm_scan" if lstm else "plastic_scan"
    if a.z is None:
        raise ValueError(f"{op}: z: expected a tensor {'[T, B, 4H]' if lstm else '[T, B, O]'}, got None")
    for name in SCAN_TENSOR_ARGUMENTS:
        t = getattr(a, name)
        if name == "lengths" and t is not None and t.device.type == "cpu":
            continue  # lengths may stay on the CPU
        if t is not None and t.device != a.z.device:
            raise ValueError(f"{op}: {name}: expected a tensor on {a.z.device} (the device "
                             f"of z), got {t.device}")
    for name in backward_inputs:
        t = getattr(a, name)
        if t is not None and t.device != a.z.device:
            raise ValueError(f"{op}_backward: {name}: expected a tensor on {a.z.device} (the "
                             f"device of z), got {t.device}")


def _sizes(a: SimpleNamespace, lstm: bool):
    """T, B, O, I of a call (the LSTM's z holds four gates of H = O = I)."""
    T, B, O = a.z.shape
    if lstm:
        O = O // 4
    return T, B, O, O if a.x is None else a.x.shape[-1]


def _fake_states(a: SimpleNamespace, lstm: bool = False):
    z = a.z
    T, B, O, I = _sizes(a, lstm)
    sd = _state_dtype(z)
    y = z.new_empty(T, B, O)
    hidden = z.new_empty(B, O) if a.x is None else z.new_empty(0)
    trace = z.new_empty(B, O, I, dtype=sd)
    elig = z.new_empty(B, O, I, dtype=sd) if rule_info(a.rule).eligibility else z.new_empty(0, dtype=sd)
    theta = z.new_empty(B, O, dtype=sd) if a.adaptive_threshold is not None else z.new_empty(0, dtype=sd)
    if lstm:
        return y, hidden, trace, elig, theta, z.new_empty(B, O)
    return y, hidden, trace, elig, theta


@torch.library.register_fake("torchplastic::plastic_scan")
def _plastic_scan_fake(*args, **kwargs):
    a = _bind("plastic_scan", args, kwargs)
    _check_devices(a, lstm=False)
    return _fake_states(a)


def _checkpoint_count(T, checkpoint_every: Optional[int]):
    """How many traces plastic_scan_forward saves: one before each segment of K steps but the
    first (csrc/ops/checks.h). Under torch.compile T may be symbolic: K and the count are then
    expressions in T, the same arithmetic as the C++ (checkpoint_interval), so that one graph
    serves every sequence length."""
    if isinstance(T, int):
        return max(-(-T // _C.checkpoint_interval(T, checkpoint_every)) - 1, 0)
    # T >= 1 here, and ceil(T / min(K, T)) = ceil(T / K).
    K = checkpoint_every if checkpoint_every is not None else math.ceil(torch.sym_sqrt(T))
    return torch.sym_max((T + K - 1) // K - 1, 0)


@torch.library.register_fake("torchplastic::plastic_lstm_scan")
def _plastic_lstm_scan_fake(*args, **kwargs):
    a = _bind("plastic_lstm_scan", args, kwargs)
    _check_devices(a, lstm=True)
    return _fake_states(a, lstm=True)


def _fake_checkpoints(a: SimpleNamespace, lstm: bool, with_eligibility: bool):
    T, B, O, I = _sizes(a, lstm)
    S = _checkpoint_count(T, a.checkpoint_every)
    sd = _state_dtype(a.z)
    trace_ckpt = a.z.new_empty(S, B, O, I, dtype=sd)
    elig_ckpt = a.z.new_empty(S, B, O, I, dtype=sd) if with_eligibility else a.z.new_empty(0, dtype=sd)
    return trace_ckpt, elig_ckpt


@torch.library.register_fake("torchplastic::plastic_scan_forward")
def _plastic_scan_forward_fake(*args, **kwargs):
    a = _bind("plastic_scan_forward", args, kwargs)
    _check_devices(a, lstm=False)
    y, h, H, E, theta = _fake_states(a)
    return (y, h, H, E, theta) + _fake_checkpoints(a, False, E.dim() > 1)


@torch.library.register_fake("torchplastic::plastic_lstm_scan_forward")
def _plastic_lstm_scan_forward_fake(*args, **kwargs):
    a = _bind("plastic_lstm_scan_forward", args, kwargs)
    _check_devices(a, lstm=True)
    y, h, H, E, theta, c = _fake_states(a, lstm=True)
    T, B, O, _ = _sizes(a, True)
    activations = a.z.new_empty(5, T, B, O, dtype=_state_dtype(a.z))
    return (y, h, H, E, theta, c) + _fake_checkpoints(a, True, E.dim() > 1) + (activations,)


def _fake_records(a: SimpleNamespace, lstm: bool):
    _check_devices(a, lstm)
    T, B, O, I = _sizes(a, lstm)
    sd = _state_dtype(a.z)
    modulation = (a.z.new_empty(T, B, O, dtype=sd) if rule_info(a.rule).modulated
                  else a.z.new_empty(0, dtype=sd))
    return a.z.new_empty(T // a.every, B, O, I, dtype=sd), a.z.new_empty(T, B, dtype=sd), modulation


@torch.library.register_fake("torchplastic::plastic_scan_record")
def _plastic_scan_record_fake(*args, **kwargs):
    return _fake_records(_bind("plastic_scan_record", args, kwargs), lstm=False)


@torch.library.register_fake("torchplastic::plastic_lstm_scan_record")
def _plastic_lstm_scan_record_fake(*args, **kwargs):
    return _fake_records(_bind("plastic_lstm_scan_record", args, kwargs), lstm=True)


def _fake_gradients(a: SimpleNamespace):
    inputs = [getattr(a, name) for name in SCAN_TENSOR_ARGUMENTS]
    return [a.z.new_empty(0) if t is None else t.new_empty(t.shape) for t in inputs]


@torch.library.register_fake("torchplastic::plastic_scan_backward")
def _plastic_scan_backward_fake(*args, **kwargs):
    a = _bind("plastic_scan_backward", args, kwargs)
    _check_devices(a, lstm=False, backward_inputs=_SCAN_BACKWARD_INPUTS)
    return _fake_gradients(a)


@torch.library.register_fake("torchplastic::plastic_lstm_scan_backward")
def _plastic_lstm_scan_backward_fake(*args, **kwargs):
    a = _bind("plastic_lstm_scan_backward", args, kwargs)
    _check_devices(a, lstm=True, backward_inputs=_LSTM_SCAN_BACKWARD_INPUTS)
    return _fake_gradients(a)
