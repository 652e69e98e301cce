"""The C++ modules of torchplastic (``torchplastic/nn.h``) as ``torch.nn.Module`` s.

The modules LibTorch programs use, reached from Python: ``torchplastic.cpp.PlasticLinear``,
``PlasticRNN``, ``PlasticRNNCell``, ``PlasticLSTM`` and ``PlasticLSTMCell`` take the same arguments as their Python counterparts and
compute the same function; their C++ constructor initialises the parameters (from the same
seed, the same values as the Python modules).

The parameters belong to the Python module, so ``.to()``, ``.double()``, ``deepcopy``,
``pickle``, ``torch.save``, ``state_dict`` and ``torch.func.functional_call`` behave as for any
``nn.Module``; each call hands them to the C++ module's ``forward``. Under ``torch.compile``
the C++ call is a graph break: the rest of the model compiles, ``fullgraph=True`` is refused.

    import torchplastic as tp
    rnn = tp.cpp.PlasticRNN(10, 64, rule="retroactive").double()
    out, state = rnn(u)                     # u [T, B, 10] → out [T, B, 64]
"""

from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import _C
from .nn import _as_lengths, _check_modulation_type, _packed_like
from .state import PlasticState, as_state

__all__ = ["PlasticLinear", "PlasticRNN", "PlasticRNNCell", "PlasticLSTM", "PlasticLSTMCell"]


@torch.compiler.disable(reason="torchplastic.cpp modules run in C++, outside the compiled graph; "
                                "the Python modules (torchplastic.PlasticRNN, ...) compile whole")
def _run(impl, parameters, input, state, modulation, lengths):
    return impl.forward_with(parameters, input, state, modulation, lengths)


class _CppModule(nn.Module):
    """A C++ module (the pybind11 class ``_bound``) whose parameters this module owns."""

    _bound = None  # the bound C++ class

    def __init__(self, *args, **kwargs):
        super().__init__()
        self._arguments = (args, dict(kwargs))
        impl = type(self)._bound(*args, **kwargs)
        object.__setattr__(self, "_impl", impl)  # not a submodule, not a parameter
        for name, value in impl.named_parameters().items():
            self.register_parameter(name, nn.Parameter(value.detach()))

    def forward(self, input: Union[Tensor, PackedSequence], state: Optional[PlasticState] = None,
                modulation: Optional[Tensor] = None,
                lengths: Optional[Tensor] = None) -> Tuple[Union[Tensor, PackedSequence], PlasticState]:
        """Runs the C++ module's ``forward`` with this module's parameters (whatever
        ``functional_call`` or an assignment put there). Arguments and results as the Python
        module of the same name (a ``PackedSequence`` input is padded here, the C++ module
        runs with its lengths, and the output is packed the same way)."""
        parameters = {name: getattr(self, name) for name in self._parameters}
        name = type(self).__name__
        state = as_state(state, name)
        lengths = _as_lengths(name, lengths)
        cell = name.endswith("Cell")
        # Named here as the Python modules name them; pybind11 would refuse them all with one
        # list of the C++ signature.
        if not isinstance(input, Tensor) and (cell or not isinstance(input, PackedSequence)):
            argument = "x" if name == "PlasticLinear" else "input"  # as the Python module's
            raise TypeError(f"{name}: {argument}: expected a Tensor"
                            f"{'' if cell else ' or a PackedSequence'}, got {type(input).__name__}")
        if not isinstance(input, PackedSequence):
            _check_modulation_type(name, modulation)
            return _run(self._impl, parameters, input, state, modulation, lengths)
        if lengths is not None:
            raise ValueError(f"{name}: lengths: expected None with a PackedSequence input, which "
                             f"carries its lengths, got {lengths!r}")
        batch_first = self._arguments[1].get("batch_first", False)
        padded, lengths = pad_packed_sequence(input, batch_first=batch_first)
        if isinstance(modulation, PackedSequence):
            modulation = pad_packed_sequence(modulation, batch_first=batch_first)[0]
        _check_modulation_type(name, modulation)
        y, state = _run(self._impl, parameters, padded, state, modulation, lengths)
        return _packed_like(y.transpose(0, 1) if batch_first else y, input, lengths), state

    def reset_parameters(self) -> None:
        """Initialises the parameters again, as the C++ module's constructor does."""
        impl = type(self)._bound(*self._arguments[0], **self._arguments[1])
        with torch.no_grad():
            for name, value in impl.named_parameters().items():
                getattr(self, name).copy_(value)

    def extra_repr(self) -> str:
        text = self._impl.describe()  # "torchplastic::PlasticRNN(5, 4, rule=hebb, ...)"
        return text[text.index("(") + 1:text.rindex(")")]

    # Pickling (and so deepcopy and torch.save) rebuilds the C++ module from the constructor's
    # arguments; the parameters travel with the Python state.
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_impl"]
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        args, kwargs = self._arguments
        object.__setattr__(self, "_impl", type(self)._bound(*args, **kwargs))


class PlasticLinear(_CppModule):
    """``torchplastic::PlasticLinear``: ``PlasticLinear(in_features, out_features, bias=True,
    **keywords)``, the keywords of :class:`torchplastic.PlasticLinear`.
    ``x [T, B, I]`` → ``y [T, B, O]`` and the :class:`~torchplastic.PlasticState`.

    Example:
        >>> import torch, torchplastic as tp
        >>> y, state = tp.cpp.PlasticLinear(20, 5)(torch.randn(30, 8, 20))
        >>> y.shape
        torch.Size([30, 8, 5])
    """

    _bound = _C.cpp.PlasticLinear


class PlasticRNN(_CppModule):
    """``torchplastic::PlasticRNN``: ``PlasticRNN(input_size, hidden_size, bias=True,
    **keywords)``, the keywords of :class:`torchplastic.PlasticRNN`.
    ``u [T, B, input_size]`` → ``out [T, B, hidden_size]`` and the state.

    Example:
        >>> import torch, torchplastic as tp
        >>> from torchplastic.cpp import PlasticRNN
        >>> rnn = PlasticRNN(10, 64, rule="retroactive").double()
        >>> out, state = rnn(torch.randn(100, 32, 10, dtype=torch.float64))
        >>> out.shape, out.dtype
        (torch.Size([100, 32, 64]), torch.float64)
    """

    _bound = _C.cpp.PlasticRNN


class PlasticRNNCell(_CppModule):
    """``torchplastic::PlasticRNNCell``: one step of :class:`PlasticRNN`,
    ``u_t [B, input_size]`` → ``h [B, hidden_size]`` and the state.

    Example:
        >>> import torch, torchplastic as tp
        >>> h, state = tp.cpp.PlasticRNNCell(4, 16)(torch.randn(8, 4))
        >>> h.shape
        torch.Size([8, 16])
    """

    _bound = _C.cpp.PlasticRNNCell


class PlasticLSTM(_CppModule):
    """``torchplastic::PlasticLSTM``: ``PlasticLSTM(input_size, hidden_size, bias=True,
    **keywords)``, the keywords of :class:`torchplastic.PlasticLSTM`.
    ``u [T, B, input_size]`` → ``out [T, B, hidden_size]`` and the state (with ``cell``).

    Example:
        >>> import torch, torchplastic as tp
        >>> out, state = tp.cpp.PlasticLSTM(10, 32, rule="retroactive")(torch.randn(20, 4, 10))
        >>> out.shape, state.cell.shape
        (torch.Size([20, 4, 32]), torch.Size([4, 32]))
    """

    _bound = _C.cpp.PlasticLSTM


class PlasticLSTMCell(_CppModule):
    """``torchplastic::PlasticLSTMCell``: one step of :class:`PlasticLSTM`,
    ``u_t [B, input_size]`` → ``h [B, hidden_size]`` and the state.

    Example:
        >>> import torch, torchplastic as tp
        >>> h, state = tp.cpp.PlasticLSTMCell(4, 16)(torch.randn(8, 4))
        >>> h.shape, state.cell.shape
        (torch.Size([8, 16]), torch.Size([8, 16]))
    """

    _bound = _C.cpp.PlasticLSTMCell
