"""torchplastic: differentiable synaptic plasticity for PyTorch.

Hebbian traces with learned plasticity coefficients, neuromodulation and homeostasis, run by
fused C++/CUDA kernels that keep one trace per sequence and recompute the rest in the backward.

    import torchplastic as tp
    rnn = tp.PlasticRNN(input_size=10, hidden_size=64, rule="retroactive")
    out, state = rnn(u)                # u [T, B, 10] → out [T, B, 64]
    out, state = rnn(u2, state)        # carry the plastic state on
"""

import torch  # noqa: F401  (loads libtorch before our library)

from . import _C  # loads libtorchplastic, whose static initialisers register the ops
from . import cpp, functional, inspect, reference, rules  # cpp: the C++ modules as nn.Modules
from .nn import PlasticLinear, PlasticLSTM, PlasticLSTMCell, PlasticRNN, PlasticRNNCell
from .state import PlasticState

__version__ = _C.build_info()["version"]


def build_info() -> dict:
    """What this build holds: ``version``, ``with_cuda``, ``torch_version``, ``cuda_version``,
    ``cuda_archs``, ``cpu_kernels`` (the instruction set of the CPU kernels this process runs:
    ``"avx512"``, ``"avx2"`` or ``"generic"``, the widest this CPU has; the environment variable
    ``TORCHPLASTIC_CPU_ISA`` caps it) and ``cpu_kernels_built`` (those the build holds,
    comma-separated).

    Example:
        >>> import torchplastic as tp
        >>> sorted(tp.build_info())[:3]
        ['cpu_kernels', 'cpu_kernels_built', 'cuda_archs']
    """
    return dict(_C.build_info())


__all__ = ["PlasticLinear", "PlasticRNN", "PlasticRNNCell", "PlasticLSTM", "PlasticLSTMCell", "PlasticState", "cpp", "functional",
           "inspect", "reference", "rules", "build_info", "__version__"]
