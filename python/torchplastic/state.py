"""The state a plastic layer carries from one call to the next."""

from typing import NamedTuple, Optional

import torch


class PlasticState(NamedTuple):
    """State of a plastic layer after the last step (SPEC §2).

    Fields that the configuration does not use are ``None``:

    * ``hidden``      ``[B, O]`` last output ``h_T`` (recurrent mode only)
    * ``trace``       ``[B, O, I]`` Hebbian trace ``H_T``
    * ``eligibility`` ``[B, O, I]`` eligibility trace ``E_T`` (rule ``retroactive`` only)
    * ``threshold``   ``[B, O]`` adaptive threshold ``θ_T`` (adaptive threshold only)
    * ``cell``        ``[B, H]`` cell state ``c_T`` (plastic LSTM only)

    Example:
        >>> import torch, torchplastic as tp
        >>> _, state = tp.PlasticRNN(3, 4)(torch.randn(5, 2, 3))
        >>> state.hidden.shape, state.trace.shape, state.eligibility
        (torch.Size([2, 4]), torch.Size([2, 4, 4]), None)
    """

    hidden: Optional[torch.Tensor] = None
    trace: Optional[torch.Tensor] = None
    eligibility: Optional[torch.Tensor] = None
    threshold: Optional[torch.Tensor] = None
    cell: Optional[torch.Tensor] = None

    def detach(self) -> "PlasticState":
        """The same state cut from the graph, for truncated backpropagation through time."""
        return PlasticState(*(None if t is None else t.detach() for t in self))


def as_state(state, owner: str) -> PlasticState:
    """The state a module's forward was given, as a PlasticState: None (zeros), a PlasticState or
    a plain tuple of its fields (hidden, trace, eligibility, threshold[, cell]). Anything else is
    refused naming `owner`, and so is a field that is neither a tensor nor None."""
    if state is None:
        return PlasticState()
    if not isinstance(state, PlasticState):
        if not (isinstance(state, tuple) and len(state) in (4, 5)):
            raise TypeError(f"{owner}: state: expected a PlasticState or None, got {type(state).__name__}")
        state = PlasticState(*state)
    for name, t in zip(state._fields, state):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{owner}: state: expected {name} to be a tensor or None, got {type(t).__name__}")
    return state


# A saved state loads under torch.load's default weights_only=True.
torch.serialization.add_safe_globals([PlasticState])
# A pytree node with a stable name, so that torch.export.save can write a program whose
# outputs hold a PlasticState.
torch.utils._pytree._register_namedtuple(PlasticState, serialized_type_name="torchplastic.PlasticState")
