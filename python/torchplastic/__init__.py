"""torchplastic: differentiable synaptic plasticity for PyTorch.

Hebbian traces with learned plasticity coefficients, neuromodulation and homeostasis, run by
fused C++/CUDA kernels that keep one trace per sequence and recompute the rest in the backward.

    import torchplastic as tp
    y, state = tp.functional.plastic_scan(z, alpha, eta, None, weight=W)
"""

import torch  # noqa: F401  (loads libtorch before our library)

from . import _C  # loads libtorchplastic, whose static initialisers register the ops
from . import functional, reference
from .state import PlasticState

__version__ = _C.build_info()["version"]


def build_info() -> dict:
    """What this build holds: ``version``, ``with_cuda``, ``torch_version``, ``cuda_version``,
    ``cuda_archs``."""
    return dict(_C.build_info())


__all__ = ["PlasticState", "functional", "reference", "build_info", "__version__"]
