"""Looking inside a plastic network: what its traces store and when neuromodulation fires
(SPEC §4), recorded by the fused kernels::

    with tp.inspect.record(model, every=10) as rec:   # every plastic module inside model
        out, state = model(u)
    r = rec["rnn"][0]        # by qualified name ("" for model itself), one Recording per call
    r.trace                  # [T // 10, B, O, I]: H after steps 10, 20, ...
    r.trace_norm             # [T, B]: Frobenius norm of H_t after every step
    r.modulation             # [T, B, O]: m_t, for the modulated rules (else None)
    tp.inspect.plot(r, "rec.png")

While recording, each call of a plastic module runs the fused forward a second time, by the
kernels that record (``torch.ops.torchplastic.plastic_scan_record``), without autograd: the
records are detached, the module's outputs and gradients are those of an ordinary call, and
nothing changes when no recording is on. The records are time-major, whatever
``batch_first``; an unbatched call records with B = 1. Past its length (``lengths=``) a
sequence's trace records hold and its modulation is zero. The modules of ``torchplastic.cpp``
run in C++ and are not recorded.
"""

from collections import defaultdict
from collections.abc import Mapping
from typing import Dict, List, NamedTuple, Optional

import torch
from torch import Tensor, nn

from . import functional
from .cpp import _CppModule
from .nn import _PlasticBase

__all__ = ["Recording", "record", "plot"]


class Recording(NamedTuple):
    """What one call of a plastic module stored, detached, time-major.

    * ``trace``      ``[T // every, B, O, I]``: the Hebbian trace H after steps every, 2·every, …
    * ``trace_norm`` ``[T, B]``: ‖H_t‖ (Frobenius norm over O × I) after every step
    * ``modulation`` ``[T, B, O]``: the neuromodulation m_t (modulated rules; ``None`` otherwise)
    * ``every``      the recording interval

    Example:
        >>> import torch, torchplastic as tp
        >>> model = tp.PlasticLinear(3, 2, rule="modulated", modulation="external")
        >>> with tp.inspect.record(model, every=5) as rec:
        ...     _ = model(torch.randn(10, 4, 3), modulation=torch.randn(10, 4))
        >>> r = rec[""][0]
        >>> r.trace.shape, r.every
        (torch.Size([2, 4, 2, 3]), 5)
    """

    trace: Tensor
    trace_norm: Tensor
    modulation: Optional[Tensor]
    every: int


class record(Mapping):
    """Records every plastic module inside ``model`` (``model`` itself included) while the
    ``with`` block runs: ``rec[name]`` is the list of :class:`Recording` of the module of that
    qualified name (``""`` for ``model``), one per call. ``rec`` is a read-only mapping from
    those names (``keys()``, ``items()``, ``in``, ``len``).

    Args:
        model: an ``nn.Module`` holding :class:`~torchplastic.PlasticLinear`,
            :class:`~torchplastic.PlasticRNN`, :class:`~torchplastic.PlasticRNNCell`,
            :class:`~torchplastic.PlasticLSTM` or :class:`~torchplastic.PlasticLSTMCell`
            modules (those of ``torchplastic.cpp`` run in C++ and are not recorded).
        every: record the full trace every ``every`` steps (its norm is recorded at every
            step). An int ≥ 1.

    Example:
        >>> import torch, torchplastic as tp
        >>> model = tp.PlasticRNN(8, 32, rule="modulated")
        >>> with tp.inspect.record(model, every=4) as rec:
        ...     out, state = model(torch.randn(40, 2, 8))
        >>> r = rec[""][0]                        # model itself, first call
        >>> r.trace.shape, r.trace_norm.shape, r.modulation.shape
        (torch.Size([10, 2, 32, 32]), torch.Size([40, 2]), torch.Size([40, 2, 32]))
    """

    def __init__(self, model: nn.Module, every: int = 1):
        if not isinstance(model, nn.Module):
            raise TypeError(f"record: model: expected an nn.Module, got {type(model).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every < 2**63:
            raise ValueError(f"record: every: expected an int >= 1 (that fits 64 bits), got {every!r}")
        self.every = every
        self._modules = {name: m for name, m in model.named_modules() if isinstance(m, _PlasticBase)}
        if not self._modules:
            in_cpp = any(isinstance(m, _CppModule) for m in model.modules())
            raise ValueError(f"record: model: expected a module with plastic layers inside, got "
                             f"{type(model).__name__} with none"
                             + (" (the modules of torchplastic.cpp run in C++ and are not recorded)"
                                if in_cpp else ""))
        self._records: Dict[str, List[Recording]] = defaultdict(list)
        self._handles = []

    def __enter__(self) -> "record":
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_pre_hook(self._start(name)))
            self._handles.append(module.register_forward_hook(self._stop))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        functional._recording_sink = None

    def _start(self, name: str):
        def hook(module, inputs):
            def sink(records):
                trace, norm, modulation = records
                self._records[name].append(Recording(
                    trace, norm, modulation if modulation.numel() > 0 else None, self.every))
            functional._recording_sink = (sink, self.every)
        return hook

    def _stop(self, module, inputs, outputs):
        functional._recording_sink = None

    def __getitem__(self, name: str) -> List[Recording]:
        if name not in self._modules:
            raise KeyError(f"record: no plastic module named {name!r}; the recorded ones are "
                           f"{sorted(self._modules)}")
        return self._records[name]

    def __iter__(self):
        """The qualified names of the recorded modules."""
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)


def plot(recording: Recording, path: str, sequence: int = 0, snapshots: int = 4,
         title: Optional[str] = None) -> None:
    """Draws one sequence of a :class:`Recording` into ``path`` (any format matplotlib
    writes): the trace as heatmaps at up to ``snapshots`` recorded steps, its norm over time
    and, for the modulated rules, the neuromodulation over time (mean and range over the
    neurons). Imports matplotlib only when called.

    Example:
        >>> import torch, torchplastic as tp
        >>> model = tp.PlasticRNN(8, 32, rule="modulated")
        >>> with tp.inspect.record(model, every=4) as rec:
        ...     _ = model(torch.randn(40, 2, 8))
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "recording.png")
        >>> tp.inspect.plot(rec[""][0], path, sequence=1)
        >>> os.path.getsize(path) > 0
        True
    """
    if not isinstance(recording, Recording):
        raise TypeError(f"plot: recording: expected a Recording, got {type(recording).__name__}")
    S, B = recording.trace.shape[0], recording.trace_norm.shape[1]
    if not 0 <= sequence < B:
        raise ValueError(f"plot: sequence: expected an index in [0, {B}), got {sequence}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(snapshots, S)  # evenly spaced, the last one included
    shown = sorted({round(k * (S - 1) / max(n - 1, 1)) for k in range(n)})
    rows = 2 if recording.modulation is None else 3
    fig = plt.figure(figsize=(3.2 * max(len(shown), 2), 2.6 * rows), constrained_layout=True)
    grid = fig.add_gridspec(rows, max(len(shown), 1))
    traces = recording.trace[:, sequence].float().cpu().numpy()
    lim = float(abs(traces).max(initial=0.0)) or 1.0
    for k, s in enumerate(shown):
        ax = fig.add_subplot(grid[0, k])
        im = ax.imshow(traces[s], cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_title(f"H after step {(s + 1) * recording.every}", fontsize=9)
        ax.set_xlabel("presynaptic i")
        if k == 0:
            ax.set_ylabel("postsynaptic o")
    if shown:
        fig.colorbar(im, ax=fig.axes[:len(shown)], shrink=0.8)
    steps = torch.arange(1, recording.trace_norm.shape[0] + 1).numpy()
    ax = fig.add_subplot(grid[1, :])
    ax.plot(steps, recording.trace_norm[:, sequence].float().cpu().numpy())
    ax.set_xlabel("step t")
    ax.set_ylabel("‖H_t‖")
    if recording.modulation is not None:
        m = recording.modulation[:, sequence].float().cpu().numpy()
        ax = fig.add_subplot(grid[2, :])
        ax.plot(steps, m.mean(-1), label="mean over neurons")
        ax.fill_between(steps, m.min(-1), m.max(-1), alpha=0.3, label="range")
        ax.set_xlabel("step t")
        ax.set_ylabel("m_t")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
