"""Plastic layers as ``torch.nn`` modules: PlasticLinear, PlasticRNN, PlasticRNNCell,
PlasticLSTM and PlasticLSTMCell (SPEC §4).

The modules own parameters and state only; every step of the math runs in the fused ops
(:func:`torchplastic.functional.plastic_scan`,
:func:`~torchplastic.functional.plastic_lstm_scan`). They take ``[T, B, I]`` sequences
(``[B, T, I]`` with ``batch_first=True``) or unbatched ``[T, I]`` ones, like ``torch.nn.RNN``,
and return the output and a :class:`~torchplastic.PlasticState` to pass to the next call.
"""

import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _C, functional
from .rules import rule_info
from .state import PlasticState, as_state

__all__ = ["PlasticLinear", "PlasticRNN", "PlasticRNNCell", "PlasticLSTM", "PlasticLSTMCell"]


def _packed_like(y: Tensor, packed: PackedSequence, lengths: Tensor) -> PackedSequence:
    """y [T, B, O], in the batch's own order, packed as `packed` is (its batch sizes and
    order), as torch.nn.RNN returns its output."""
    order = packed.sorted_indices
    if order is not None:
        y, lengths = y.index_select(1, order), lengths.index_select(0, order.cpu())
    data = pack_padded_sequence(y, lengths, enforce_sorted=True).data
    return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)

_GRANULARITIES = ("connection", "neuron", "scalar")
_MODULATIONS = ("internal", "fanout", "external")
# The sources computed from the module's own output, by a modulation head (mod_weight,
# mod_bias); "fanout" adds its fan-out (mod_fanout_weight, mod_fanout_bias).
_HEAD_MODULATIONS = ("internal", "fanout")


def _check_modulation_type(owner: str, modulation) -> None:
    """A modulation that is not a tensor, refused by name before a call reshapes it (the Python
    modules and torchplastic.cpp's alike)."""
    if modulation is not None and not isinstance(modulation, Tensor):
        raise TypeError(f"{owner}: modulation: expected a Tensor or None, got {type(modulation).__name__}")


def _as_lengths(owner: str, lengths) -> Optional[Tensor]:
    """lengths= as a tensor (a list or tuple of ints also does), or None; its shape and values
    are checked where the batch size is known."""
    if lengths is None:
        return None
    if isinstance(lengths, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in lengths):
            raise ValueError(f"{owner}: lengths: expected a [B] tensor or list of ints, got {lengths!r}")
        lengths = torch.tensor(lengths, dtype=torch.long)
    if not isinstance(lengths, Tensor):
        raise TypeError(f"{owner}: lengths: expected a [B] integer tensor, got {type(lengths).__name__}")
    return lengths


def _check_choice(owner: str, name: str, value, choices):
    # The names a module translates into parameters; every other option is the op's to check.
    if value not in choices:
        raise ValueError(f"{owner}: {name}: expected one of {choices}, got {value!r}")


def _number(owner: str, name: str, value, kind=float):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{owner}: {name}: expected a number or None, got {value!r}")
    return kind(value)


class _PlasticBase(nn.Module):
    """Parameters and options shared by the modules; subclasses define the drive z."""

    recurrent: bool = False
    lstm: bool = False  # the plastic LSTM (plastic_lstm_scan): recurrent, its gates in z
    # The names of the two sizes in the subclass's signature, for error messages.
    _size_names: Tuple[str, str] = ("in_features", "out_features")

    def __init__(self, in_features: int, out_features: int, *, rule: str = "hebb",
                 alpha: str = "connection", eta: str = "scalar", activation: str = "tanh",
                 clip: Union[str, float, None] = "auto", modulation: str = "internal",
                 synaptic_scaling: Optional[float] = None, adaptive_threshold: Optional[float] = None,
                 target_activity: float = 0.0, alpha_init: float = 0.01, eta_init: float = 0.01,
                 abcd: str = "connection", abcd_init: Tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0),
                 checkpoint_every: Optional[int] = None, batch_first: bool = False,
                 device=None, dtype=None):
        super().__init__()
        owner = type(self).__name__
        for name, value in zip(self._size_names, (in_features, out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{owner}: {name}: expected a positive int, got {value!r}")
        info = rule_info(rule, owner)
        _check_choice(owner, "alpha", alpha, _GRANULARITIES)
        _check_choice(owner, "eta", eta, _GRANULARITIES)
        _check_choice(owner, "abcd", abcd, _GRANULARITIES)
        abcd_init = tuple(abcd_init)
        if len(abcd_init) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in abcd_init):
            raise ValueError(f"{owner}: abcd_init: expected four numbers (A, B, C, D), got {abcd_init!r}")
        _check_choice(owner, "modulation", modulation, _MODULATIONS)
        if clip == "auto":
            clip = info.default_clip
        clip = _number(owner, "clip", clip)
        synaptic_scaling = _number(owner, "synaptic_scaling", synaptic_scaling)
        adaptive_threshold = _number(owner, "adaptive_threshold", adaptive_threshold)
        if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)):
            raise ValueError(f"{owner}: checkpoint_every: expected an int >= 1 or None, got {checkpoint_every!r}")
        # The op's own checks (csrc/ops/checks.cpp), run here so that a bad option fails where
        # the module is built rather than at its first call.
        if not isinstance(activation, str):
            raise ValueError(f"{owner}: activation: expected a str, got {activation!r}")
        if self.lstm and activation != "tanh":
            raise ValueError(f"{owner}: activation: expected 'tanh' (the LSTM's cell candidate), "
                             f"got {activation!r}")
        _C.check_scan_options(owner, activation, clip, synaptic_scaling, adaptive_threshold,
                              checkpoint_every)

        self.in_features, self.out_features = in_features, out_features
        self.rule, self.activation, self.clip = rule, activation, clip
        self.alpha_granularity, self.eta_granularity = alpha, eta
        self.abcd_granularity = abcd if info.coefficients else None
        self.abcd_init = tuple(float(v) for v in abcd_init)
        self.modulation = modulation if info.modulated else None
        self.synaptic_scaling, self.adaptive_threshold = synaptic_scaling, adaptive_threshold
        self.target_activity = float(target_activity)
        self.alpha_init, self.eta_init = float(alpha_init), float(eta_init)
        self.checkpoint_every, self.batch_first = checkpoint_every, batch_first

        kw = dict(device=device, dtype=dtype)
        O, I = out_features, self._presynaptic_size()
        shape = {"connection": (O, I), "neuron": (O, 1), "scalar": (1, 1)}
        self.alpha = nn.Parameter(torch.empty(shape[alpha], **kw))
        # A rule without η gets no parameter: one without gradient would break DDP.
        self.eta = nn.Parameter(torch.empty(shape[eta], **kw)) if info.uses_eta else None
        # A, B, C, D of rule abcd, stacked.
        self.abcd = nn.Parameter(torch.empty(4, *shape[abcd], **kw)) if info.coefficients else None
        if self.modulation in _HEAD_MODULATIONS:
            self.mod_weight = nn.Parameter(torch.empty(O, **kw))
            self.mod_bias = nn.Parameter(torch.empty(1, **kw))
        if self.modulation == "fanout":
            self.mod_fanout_weight = nn.Parameter(torch.empty(O, **kw))
            self.mod_fanout_bias = nn.Parameter(torch.empty(O, **kw))

    def _presynaptic_size(self) -> int:
        return self.out_features if self.recurrent else self.in_features

    def reset_parameters(self) -> None:
        """α ~ alpha_init · U(0, 1) (Miconi et al. 2018), η = eta_init, A–D = abcd_init, the
        modulation head U(−1/√O, 1/√O) and its fan-out U(−1, 1) (a Linear(1, O), as in
        Backpropamine)."""
        with torch.no_grad():
            self.alpha.uniform_(0.0, 1.0).mul_(self.alpha_init)
            if self.eta is not None:
                self.eta.fill_(self.eta_init)
            if self.abcd is not None:
                for k, value in enumerate(self.abcd_init):
                    self.abcd[k].fill_(value)
            if self.modulation in _HEAD_MODULATIONS:
                bound = 1.0 / math.sqrt(self.out_features)
                self.mod_weight.uniform_(-bound, bound)
                self.mod_bias.uniform_(-bound, bound)
            if self.modulation == "fanout":
                self.mod_fanout_weight.uniform_(-1.0, 1.0)
                self.mod_fanout_bias.uniform_(-1.0, 1.0)

    def extra_repr(self) -> str:
        s = f"{self.in_features}, {self.out_features}"
        if getattr(self, "bias", None) is None:
            s += ", bias=False"
        s += f", rule={self.rule!r}"
        if self.modulation is not None:
            s += f", modulation={self.modulation!r}"
        s += f", alpha={self.alpha_granularity!r}, eta={self.eta_granularity!r}"
        if self.abcd_granularity is not None:
            s += f", abcd={self.abcd_granularity!r}"
        if self.activation != "tanh":
            s += f", activation={self.activation!r}"
        for name in ("clip", "synaptic_scaling", "adaptive_threshold", "checkpoint_every"):
            if getattr(self, name) is not None:
                s += f", {name}={getattr(self, name)}"
        if self.batch_first:
            s += ", batch_first=True"
        return s

    # ------------------------------------------------------------------ the call

    def _scan(self, z: Tensor, x: Optional[Tensor], state: Optional[PlasticState],
              modulation: Optional[Tensor], unbatched: bool,
              lengths: Optional[Tensor] = None) -> Tuple[Tensor, PlasticState]:
        owner = type(self).__name__
        state = as_state(state, owner)
        if unbatched:
            state = PlasticState(*(None if t is None else t.unsqueeze(0) for t in state))
            if modulation is not None:
                modulation = modulation.unsqueeze(1)
        # A field this module has no use for would be dropped here or refused by the op under
        # its own name: refused here, saying why.
        unused = None
        if state.hidden is not None and not self.recurrent:
            unused = "hidden", "a feedforward layer has no hidden state"
        elif state.eligibility is not None and not rule_info(self.rule).eligibility:
            unused = "eligibility", f"rule={self.rule!r} has no eligibility trace"
        elif state.threshold is not None and self.adaptive_threshold is None:
            unused = "threshold", "the module has no adaptive threshold"
        elif state.cell is not None and not self.lstm:
            unused = "cell", "only the plastic LSTM has a cell state"
        if unused is not None:
            raise ValueError(f"{owner}: state: expected {unused[0]} None ({unused[1]}), got a tensor")
        B = z.shape[1]
        O, I = self.out_features, self._presynaptic_size()
        checked_dtypes = None  # whether dtypes are this call's to check (not under autocast)
        for name, t in zip(state._fields, state):
            if t is None:
                continue
            size = (O, I) if name in ("trace", "eligibility") else (O,)
            if t.shape != (B,) + size:
                if unbatched:  # as the caller passed it, without the batch dimension added above
                    raise ValueError(f"{owner}: state: expected {name} of shape {list(size)} "
                                     f"(unbatched input), got shape {list(t.shape[1:])}")
                raise ValueError(f"{owner}: state: expected {name} of shape {[B, *size]} for "
                                 f"batch size {B} (from the input), got shape {list(t.shape)}")
            # Dtypes as the op takes them: the parameters', or for the traces also float32
            # where the parameters are float16/bfloat16; under autocast, which casts them, not
            # here.
            if t.dtype != z.dtype:
                if checked_dtypes is None:
                    checked_dtypes = not torch._C._is_any_autocast_enabled()
                traces = name in ("trace", "eligibility", "threshold")
                compute = torch.float64 if z.dtype == torch.float64 else torch.float32
                if checked_dtypes and not (traces and t.dtype == compute):
                    also = f" or {compute}" if traces and compute != z.dtype else ""
                    raise ValueError(f"{owner}: state: expected {name} of dtype {z.dtype}{also} "
                                     f"(the module's parameters), got {t.dtype}")
        # The modulation head's parameters exist only for the sources that use them; asking for
        # them by getattr with a default would raise and catch an AttributeError per parameter
        # missing, on every call.
        head = self.modulation in _HEAD_MODULATIONS
        fanout = self.modulation == "fanout"
        # The op's arguments built straight from the module, as tp.functional builds them, and
        # the op called where tp.functional calls it (_run_scan): a cell takes this path on
        # every step, and the functional API's keyword call would add its cost to each
        # (docs/performance.md, "Single steps and rollouts").
        lstm = self.lstm
        arguments = functional._op_positional(
            "plastic_lstm_scan" if lstm else "plastic_scan",
            z=z, alpha=self.alpha, eta=self.eta, trace=state.trace, x=x,
            weight=self.weight_hh if self.recurrent else None,
            hidden=state.hidden if self.recurrent else None, eligibility=state.eligibility,
            threshold=state.threshold, modulation=modulation,
            mod_weight=self.mod_weight if head else None, mod_bias=self.mod_bias if head else None,
            mod_fanout_weight=self.mod_fanout_weight if fanout else None,
            mod_fanout_bias=self.mod_fanout_bias if fanout else None, rule=self.rule,
            activation=self.activation, clip=self.clip, synaptic_scaling=self.synaptic_scaling,
            adaptive_threshold=self.adaptive_threshold, target_activity=self.target_activity,
            checkpoint_every=self.checkpoint_every, abcd=self.abcd, lengths=lengths,
            cell=state.cell if lstm else None)
        y, new_state = functional._run_scan(arguments, lstm)
        if unbatched:
            y = y.squeeze(1)
            new_state = PlasticState(*(None if t is None else t.squeeze(0) for t in new_state))
        return y, new_state

    def _forward_sequence(self, inp, name: str, size: int, weight: Tensor, bias: Optional[Tensor],
                          state, modulation, lengths):
        """The forward of PlasticLinear and PlasticRNN: inp [T, B, size] in the module's layout,
        or a PackedSequence (then the output is one too, as torch.nn.RNN does)."""
        packed = isinstance(inp, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError(f"{type(self).__name__}: lengths: expected None with a "
                                 f"PackedSequence {name}, which carries its lengths, got {lengths!r}")
            x, lengths = pad_packed_sequence(inp)  # [T, B, F] in the batch's own order
            x, unbatched = self._sequence_input(x, name, size, layout="[T, B, F]")
            if isinstance(modulation, PackedSequence):
                modulation = pad_packed_sequence(modulation)[0]
            self._check_modulation(modulation, x.shape[:2], "T, B", ", padded as the input")
        else:
            x, unbatched = self._sequence_input(inp, name, size)
            lengths = self._lengths(lengths, x, unbatched, "T, the input's steps")
            modulation = self._sequence_modulation(modulation, x, unbatched)
        self._input_dtype(x, name, weight)
        z = nn.functional.linear(x, weight, bias)
        y, state = self._scan(z, None if self.recurrent else x, state, modulation, unbatched, lengths)
        if packed:
            return _packed_like(y, inp, lengths), state
        return self._output(y, unbatched), state

    def _lengths(self, lengths, x: Tensor, unbatched: bool, steps: str) -> Optional[Tensor]:
        """lengths= as a [B] integer tensor (a list or tuple of ints also does), for x [T, B, F];
        `steps` says what T is, for the message of a length beyond it."""
        owner = type(self).__name__
        lengths = _as_lengths(owner, lengths)
        if lengths is None:
            return None
        if unbatched and lengths.numel() == 1:
            lengths = lengths.reshape(1)
        B = x.shape[1]
        if lengths.shape != (B,):
            raise ValueError(f"{owner}: lengths: expected shape [{B}] (the batch size of the input), "
                             f"got {list(lengths.shape)}")
        if lengths.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{owner}: lengths: expected an integer tensor (int64 or int32), "
                             f"got {lengths.dtype}")
        # The values too where reading them costs no wait for a device (on the CPU, where
        # torch.nn.utils.rnn keeps them) and no graph break (torch.compile): the op checks them
        # in any case, but under its own name, with T as the length of z.
        if lengths.is_cpu and B > 0 and not torch.compiler.is_compiling():
            values = lengths.tolist()
            shortest, longest = min(values), max(values)
            if shortest < 0 or longest > x.shape[0]:
                raise ValueError(f"{owner}: lengths: expected values in [0, {x.shape[0]}] ({steps}), "
                                 f"got values from {shortest} to {longest}")
        return lengths

    def _sequence_input(self, x: Tensor, name: str, size: int, layout: Optional[str] = None) -> Tuple[Tensor, bool]:
        """[T, B, F] (or [B, T, F] if batch_first, or unbatched [T, F]) → [T, B, F]. `layout`
        overrides batch_first (a padded PackedSequence is [T, B, F] whatever the module's)."""
        owner = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{owner}: {name}: expected a Tensor or a PackedSequence, got {type(x).__name__}")
        layout = layout or ("[B, T, F]" if self.batch_first else "[T, B, F]")
        if x.dim() not in (2, 3):
            raise ValueError(f"{owner}: {name}: expected a 3-D tensor {layout} or an unbatched 2-D "
                             f"[T, F], got shape {list(x.shape)}")
        if x.shape[-1] != size:
            raise ValueError(f"{owner}: {name}: expected last dimension {size} "
                             f"({self._size_names[0]}), got shape {list(x.shape)}")
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1)
        elif layout == "[B, T, F]":
            x = x.transpose(0, 1)
        return x, unbatched

    def _input_dtype(self, x: Tensor, name: str, weight: Tensor) -> None:
        """As torch.nn.RNN: an input of another dtype than the module's weights is refused here,
        naming both, rather than deep in a matrix product; under autocast, which casts both, it
        passes."""
        if x.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
            # Converting the module is advice only where the op computes in the input's dtype
            # (float32/float64; float16/bfloat16 on CUDA), not for integer inputs.
            computable = (torch.float32, torch.float64) + (
                (torch.float16, torch.bfloat16) if weight.is_cuda else ())
            also = f" or the module with .to({x.dtype})" if x.dtype in computable else ""
            raise ValueError(f"{type(self).__name__}: {name}: expected dtype {weight.dtype} (the "
                             f"module's parameters), got {x.dtype}; convert the input with "
                             f".to({weight.dtype}){also}")

    def _output(self, y: Tensor, unbatched: bool) -> Tensor:
        return y.transpose(0, 1) if (self.batch_first and not unbatched) else y

    def _sequence_modulation(self, modulation: Optional[Tensor], x: Tensor,
                             unbatched: bool) -> Optional[Tensor]:
        """External modulation in the input's layout ([B, T(, O)] if batch_first, [T(, O)]
        unbatched), checked against x [T, B, F] → [T, B(, O)] (unbatched: as given)."""
        T, B = x.shape[0], x.shape[1]
        if unbatched:
            self._check_modulation(modulation, (T,), "T", ", unbatched")
        elif self.batch_first:
            self._check_modulation(modulation, (B, T), "B, T", ", batch_first=True")
        else:
            self._check_modulation(modulation, (T, B), "T, B")
        if modulation is not None and self.batch_first and not unbatched:
            modulation = modulation.transpose(0, 1)
        return modulation

    def _check_modulation(self, modulation, leading, names: str, layout: str = "") -> None:
        """External modulation as the caller passed it, before any change of layout: with
        modulation="external", a tensor of shape `leading` (the input's sizes before its
        features, named `names`, e.g. "T, B") or `leading` + [O]; otherwise None. `layout`
        names the input's layout where it is not [T, B, F] (", batch_first=True")."""
        owner = type(self).__name__
        _check_modulation_type(owner, modulation)
        if self.modulation != "external":
            if modulation is not None:
                why = (f"rule={self.rule!r} takes no neuromodulation" if self.modulation is None else
                       f"modulation={self.modulation!r}: the module computes its own")
                raise ValueError(f"{owner}: modulation: expected None ({why}), got a tensor")
            return
        def forms():
            return f"[{names}] or [{names + ', ' if names else ''}{'H' if self.recurrent else 'O'}]"
        if modulation is None:
            raise ValueError(f"{owner}: modulation: expected a tensor {forms()} "
                             f"(modulation='external'{layout}), got None")
        leading = tuple(leading)
        if modulation.shape != leading and modulation.shape != leading + (self.out_features,):
            raise ValueError(f"{owner}: modulation: expected shape {list(leading)} or "
                             f"{[*leading, self.out_features]} ({forms()}{layout}), "
                             f"got {list(modulation.shape)}")
        if modulation.dtype != self.alpha.dtype and not torch._C._is_any_autocast_enabled():
            raise ValueError(f"{owner}: modulation: expected dtype {self.alpha.dtype} (the module's "
                             f"parameters), got {modulation.dtype}")


class PlasticLinear(_PlasticBase):
    r"""A feedforward plastic layer: ``y_t = φ(x_t Wᵀ + b + (α ⊙ H_{t-1}) x_t)``, with the
    Hebbian trace H updated after each step by ``rule`` (SPEC §2).

    Args:
        in_features, out_features: sizes I and O.
        bias: learn the bias b.
        rule: ``"hebb"``, ``"oja"``, ``"modulated"``, ``"retroactive"`` or ``"abcd"``.
        alpha, eta: granularity of α and η: ``"connection"``, ``"neuron"`` or ``"scalar"``.
        abcd, abcd_init: granularity and initial values (A, B, C, D) of the coefficients of
            rule ``"abcd"``, the parameter ``abcd`` [4, O|1, I|1]:
            ΔH = η (A y pᵀ + B p + C y + D) (Najarro & Risi 2020).
        activation: ``"tanh"``, ``"relu"``, ``"sigmoid"`` or ``"identity"``.
        clip: trace bound; ``"auto"`` is 1.0 for the modulated rules, none otherwise.
        modulation: ``"internal"``, ``"fanout"`` or ``"external"`` (modulated rules only).
        synaptic_scaling, adaptive_threshold, target_activity: homeostasis (SPEC §2 steps 7, 8).
        alpha_init, eta_init: α ~ alpha_init · U(0, 1); η = eta_init.
        checkpoint_every: K of the memory contract (default ⌈√T⌉).
        batch_first: inputs and outputs are ``[B, T, F]``.

    Shape: ``x [T, B, I]`` → ``y [T, B, O]``, and the state with ``trace [B, O, I]``.

    Example:
        >>> import torch, torchplastic as tp
        >>> layer = tp.PlasticLinear(20, 5, rule="hebb")
        >>> y, state = layer(torch.randn(30, 8, 20))          # [T, B, I]
        >>> y.shape, state.trace.shape
        (torch.Size([30, 8, 5]), torch.Size([8, 5, 20]))
    """

    recurrent = False

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs):
        super().__init__(in_features, out_features, **kwargs)
        kw = dict(device=kwargs.get("device"), dtype=kwargs.get("dtype"))
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.bias = nn.Parameter(torch.empty(out_features, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W and b as ``torch.nn.Linear`` initialises them; α, η and the modulation head as
        :meth:`_PlasticBase.reset_parameters`."""
        super().reset_parameters()
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Union[Tensor, PackedSequence], state: Optional[PlasticState] = None,
                modulation: Optional[Tensor] = None,
                lengths: Optional[Tensor] = None) -> Tuple[Union[Tensor, PackedSequence], PlasticState]:
        """Runs the layer over a sequence.

        Args:
            x: ``[T, B, I]`` (``[B, T, I]`` if ``batch_first``), or unbatched ``[T, I]``.
            state: the :class:`~torchplastic.PlasticState` a previous call returned (or a
                plain tuple of its fields), or ``None`` for zeros.
            modulation: external neuromodulation (``modulation="external"`` only): ``[T, B]``
                or ``[T, B, O]`` (``[B, T]`` or ``[B, T, O]`` if ``batch_first``; ``[T]`` or
                ``[T, O]`` unbatched).
            lengths: ``[B]`` steps of each sequence (a tensor, on the CPU or the input's
                device, or a list of ints): past its length a sequence holds its state and
                outputs zeros, and costs nothing. ``x`` may instead be a
                ``torch.nn.utils.rnn.PackedSequence``; ``y`` is then one too.

        Returns:
            ``y`` in the layout of ``x`` with O features, and the state after the last step
            (of each sequence's own length).
        """
        return self._forward_sequence(x, "x", self.in_features, self.weight, self.bias, state,
                                      modulation, lengths)


class PlasticRNN(_PlasticBase):
    r"""A recurrent plastic layer (Miconi et al. 2018; Backpropamine 2019):
    ``h_t = φ(u_t W_ihᵀ + b + (W_hh + α ⊙ H_{t-1}) h_{t-1})``, the trace H of the recurrent
    connections updated after each step by ``rule``. Keywords as :class:`PlasticLinear`.

    Shape: ``u [T, B, input_size]`` → ``out [T, B, hidden_size]``; the state holds
    ``hidden [B, H]`` and ``trace [B, H, H]``.

    Example:
        >>> import torch, torchplastic as tp
        >>> rnn = tp.PlasticRNN(10, 64, rule="retroactive", modulation="fanout")
        >>> out, state = rnn(torch.randn(100, 32, 10))        # [T, B, input_size]
        >>> out.shape, state.trace.shape, state.eligibility.shape
        (torch.Size([100, 32, 64]), torch.Size([32, 64, 64]), torch.Size([32, 64, 64]))
        >>> out, state = rnn(torch.randn(50, 32, 10), state)  # carry the state on
    """

    recurrent = True
    _size_names = ("input_size", "hidden_size")

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, **kwargs):
        super().__init__(input_size, hidden_size, **kwargs)
        self.input_size, self.hidden_size = input_size, hidden_size
        kw = dict(device=kwargs.get("device"), dtype=kwargs.get("dtype"))
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, **kw))
        self.bias = nn.Parameter(torch.empty(hidden_size, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W_ih, W_hh and b ~ U(−1/√H, 1/√H), as ``torch.nn.RNN``; α, η and the modulation head
        as :meth:`_PlasticBase.reset_parameters`."""
        super().reset_parameters()
        bound = 1.0 / math.sqrt(self.hidden_size)
        for w in (self.weight_ih, self.weight_hh, self.bias):
            if w is not None:
                nn.init.uniform_(w, -bound, bound)

    def forward(self, u: Union[Tensor, PackedSequence], state: Optional[PlasticState] = None,
                modulation: Optional[Tensor] = None,
                lengths: Optional[Tensor] = None) -> Tuple[Union[Tensor, PackedSequence], PlasticState]:
        """Runs the network over a sequence.

        Args:
            u: ``[T, B, input_size]`` (``[B, T, input_size]`` if ``batch_first``), or
                unbatched ``[T, input_size]``.
            state: the :class:`~torchplastic.PlasticState` a previous call returned (hidden
                state, traces; or a plain tuple of its fields), or ``None`` for zeros.
            modulation: external neuromodulation (``modulation="external"`` only): ``[T, B]``
                or ``[T, B, H]`` (``[B, T]`` or ``[B, T, H]`` if ``batch_first``; ``[T]`` or
                ``[T, H]`` unbatched).
            lengths: ``[B]`` steps of each sequence (a tensor, on the CPU or the input's
                device, or a list of ints): past its length a sequence holds its state and
                outputs zeros, and costs nothing. ``u`` may instead be a
                ``torch.nn.utils.rnn.PackedSequence``; ``out`` is then one too.

        Returns:
            ``out`` (every step's hidden state, in the layout of ``u``) and the state after
            the last step (of each sequence's own length).
        """
        return self._forward_sequence(u, "input", self.input_size, self.weight_ih, self.bias,
                                      state, modulation, lengths)


class PlasticRNNCell(PlasticRNN):
    r"""One step of :class:`PlasticRNN`: ``u_t [B, input_size]`` (or unbatched
    ``[input_size]``) → ``h [B, hidden_size]`` and the new state. External modulation is
    ``[B]`` or ``[B, H]``. Same parameters and keywords as :class:`PlasticRNN`.

    Example:
        >>> import torch, torchplastic as tp
        >>> cell = tp.PlasticRNNCell(4, 16, rule="modulated")
        >>> state = None
        >>> for t in range(3):                                # one step per call
        ...     h, state = cell(torch.randn(8, 4), state)
        >>> h.shape, state.trace.shape
        (torch.Size([8, 16]), torch.Size([8, 16, 16]))
    """

    def forward(self, u: Tensor, state: Optional[PlasticState] = None,
                modulation: Optional[Tensor] = None,
                lengths: Optional[Tensor] = None) -> Tuple[Tensor, PlasticState]:
        """One step: ``u [B, input_size]`` (or unbatched ``[input_size]``), the state of the
        previous step (``None`` for zeros) and, with ``modulation="external"``, ``m_t`` as
        ``[B]`` or ``[B, H]`` → ``h [B, hidden_size]`` and the new state.

        ``lengths`` (``[B]``, 0 or 1, as for a sequence module of one step): the sequences with
        0 skip the step, holding their state, with a zero output; for example the finished
        episodes of a batch of environments."""
        owner = type(self).__name__
        if not isinstance(u, Tensor):
            raise TypeError(f"{owner}: input: expected a Tensor, got {type(u).__name__}")
        dim = u.dim()
        if dim not in (1, 2) or u.shape[-1] != self.input_size:
            raise ValueError(f"{owner}: input: expected shape [B, {self.input_size}] or "
                             f"[{self.input_size}], got {list(u.shape)}")
        weight_ih = self.weight_ih
        self._input_dtype(u, "input", weight_ih)
        unbatched = dim == 1
        # _scan takes z [T = 1, B, H]; for an unbatched input B = 1, and _scan adds and removes
        # the batch dimension of the state and the modulation itself.
        z = nn.functional.linear(u.unsqueeze(0) if unbatched else u, weight_ih, self.bias).unsqueeze(0)
        lengths = self._lengths(lengths, z, unbatched, "0 skips the step, 1 takes it")
        if unbatched:
            self._check_modulation(modulation, (), "", ", unbatched")
        else:
            self._check_modulation(modulation, (u.shape[0],), "B")
        if modulation is not None:
            modulation = modulation.unsqueeze(0)
        y, state = self._scan(z, None, state, modulation, unbatched, lengths)
        # The one step's output as a view whose backward is a reshape; y[0]'s would build
        # zeros of y's shape and copy into them.
        return y.squeeze(0), state


class PlasticLSTM(PlasticRNN):
    r"""Backpropamine's plastic LSTM (Miconi et al. 2019; SPEC §2b): ``torch.nn.LSTM`` whose
    connections from ``h_{t-1}`` to the cell candidate g are plastic,
    ``g̃_t = z_g + (W_hg + α ⊙ H_{t-1}) h_{t-1}``, the trace H updated after each step by
    ``rule`` with ``g_t`` as the postsynaptic activity (the internal neuromodulation head
    reads ``h_t``). Keywords as :class:`PlasticLinear` (``activation`` is tanh, the LSTM's).

    Parameters: ``weight_ih [4H, input_size]``, ``weight_hh [4H, H]`` and ``bias [4H]`` in
    ``torch.nn.LSTM``'s gate order (i, f, g, o; ``bias`` is an ``nn.LSTM``'s
    ``bias_ih + bias_hh``), then α, η etc. on the h → g connections ``[H, H]``. With α = 0 it
    computes ``torch.nn.LSTM``.

    Shape: ``u [T, B, input_size]`` → ``out [T, B, hidden_size]``; the state holds
    ``hidden [B, H]``, ``cell [B, H]`` and ``trace [B, H, H]``.

    Example:
        >>> import torch, torchplastic as tp
        >>> lstm = tp.PlasticLSTM(10, 64, rule="retroactive", modulation="fanout")
        >>> out, state = lstm(torch.randn(100, 32, 10))       # [T, B, input_size]
        >>> out.shape, state.cell.shape, state.trace.shape
        (torch.Size([100, 32, 64]), torch.Size([32, 64]), torch.Size([32, 64, 64]))
        >>> out, state = lstm(torch.randn(50, 32, 10), state) # carry the state on
    """

    lstm = True

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, **kwargs):
        _PlasticBase.__init__(self, input_size, hidden_size, **kwargs)
        self.input_size, self.hidden_size = input_size, hidden_size
        kw = dict(device=kwargs.get("device"), dtype=kwargs.get("dtype"))
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **kw))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W_ih, W_hh and b ~ U(−1/√H, 1/√H), as ``torch.nn.LSTM``; α, η and the modulation
        head as :meth:`_PlasticBase.reset_parameters`."""
        super().reset_parameters()

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, **kwargs) -> "PlasticLSTM":
        """A plastic LSTM with the weights of a one-layer unidirectional ``torch.nn.LSTM``
        (``bias = bias_ih + bias_hh``); keywords as the constructor's. α starts at
        ``alpha_init · U(0, 1)``: pass ``alpha_init=0.0`` for exactly the LSTM's function.

        Example:
            >>> import torch, torchplastic as tp
            >>> lstm = torch.nn.LSTM(3, 8)
            >>> plastic = tp.PlasticLSTM.from_lstm(lstm, alpha_init=0.0)
            >>> u = torch.randn(5, 2, 3)
            >>> torch.allclose(plastic(u)[0], lstm(u)[0], atol=1e-6)
            True
        """
        if lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size:
            raise ValueError(f"{cls.__name__}.from_lstm: lstm: expected one unidirectional layer "
                             f"without projection, got {lstm}")
        kwargs.setdefault("batch_first", lstm.batch_first)
        ref = lstm.weight_ih_l0
        kwargs.setdefault("device", ref.device)
        kwargs.setdefault("dtype", ref.dtype)
        module = cls(lstm.input_size, lstm.hidden_size, bias=lstm.bias, **kwargs)
        with torch.no_grad():
            module.weight_ih.copy_(lstm.weight_ih_l0)
            module.weight_hh.copy_(lstm.weight_hh_l0)
            if lstm.bias:
                module.bias.copy_(lstm.bias_ih_l0 + lstm.bias_hh_l0)
        return module


class PlasticLSTMCell(PlasticLSTM):
    r"""One step of :class:`PlasticLSTM`: ``u_t [B, input_size]`` (or unbatched
    ``[input_size]``) → ``h [B, hidden_size]`` and the new state (with ``cell``). Same
    parameters, keywords and step semantics as :class:`PlasticRNNCell`.

    Example:
        >>> import torch, torchplastic as tp
        >>> cell = tp.PlasticLSTMCell(4, 16, rule="modulated")
        >>> state = None
        >>> for t in range(3):                                # one step per call
        ...     h, state = cell(torch.randn(8, 4), state)
        >>> h.shape, state.cell.shape, state.trace.shape
        (torch.Size([8, 16]), torch.Size([8, 16]), torch.Size([8, 16, 16]))
    """

    forward = PlasticRNNCell.forward
