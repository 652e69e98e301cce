"""The CUDA kernels on the CPU: cuda/*.cu compiled for the host and launched by an emulated
CUDA runtime (tests/cuda_emulation: each CUDA thread a fiber, switching only at barriers, shared
memory per block, thread block clusters, warp shuffles; a device with an H100's figures), as
the ops of a library of their own, torchplastic_cuda_emulated, against the CPU kernels. So the
CUDA kernels' logic (their layouts, row loops, staging, checkpoints and planner) is tested on
every machine, GPU or not; their speed, races and memory errors still need a GPU
(`make gpu-check`). The cases are test_cuda.py's, as far as the emulation's speed allows:
test_random's configurations under the CUDA layouts, the float forward's row loops, the
plastic LSTM.
"""

import inspect
import os

import pytest
import torch

import torchplastic as tp
from torchplastic import functional
from test_cuda import CUDA_LAYOUTS, FLOAT32_ROW_LAYOUT_IDS, FLOAT32_ROW_LAYOUTS, FLOAT32_ROW_RULES, float32_row_case
from test_random import assert_same_results, random_case, run_cases, run_scan

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIBRARY = os.path.join(ROOT, os.environ.get("TORCHPLASTIC_BUILD_DIR", "build"), "tests",
                       "cuda_emulation", "libtorchplastic_cuda_emulated.so")

# The emulation runs a few hundred thousand thread switches a second: each family of random
# cases gets this long.
SECONDS = float(os.environ.get("TORCHPLASTIC_EMULATION_SECONDS", "15"))


@pytest.fixture(scope="module", autouse=True)
def emulated_library():
    if not os.path.exists(LIBRARY):
        pytest.skip(f"needs the CUDA emulation library of a build with tests ({LIBRARY})")
    torch.ops.load_library(LIBRARY)


class _EmulatedScan(torch.autograd.Function):
    """The emulated forward op, and its backward op as the backward (as csrc/autograd does for
    the real ones). `values`: the op's arguments in the schema's order."""

    @staticmethod
    def forward(ctx, lstm, *values):
        ops = torch.ops.torchplastic_cuda_emulated
        outputs = (ops.plastic_lstm_scan_forward if lstm else ops.plastic_scan_forward)(*values)
        states = 6 if lstm else 5
        ctx.lstm, ctx.values = lstm, values
        ctx.kept = (outputs[0], *outputs[states:])  # y; the checkpoints (and activations)
        ctx.set_materialize_grads(False)
        return outputs[:states]

    @staticmethod
    def backward(ctx, *grads):
        ops = torch.ops.torchplastic_cuda_emulated
        y = ctx.kept[0]
        grads = [torch.empty(0, dtype=y.dtype) if g is None else g for g in grads]
        op = ops.plastic_lstm_scan_backward if ctx.lstm else ops.plastic_scan_backward
        returned = iter(op(*grads, *ctx.kept, *ctx.values))
        out = [None]  # lstm
        for name, value in zip(functional.SCAN_ARGUMENTS, ctx.values):
            if name not in functional.SCAN_TENSOR_ARGUMENTS:
                out.append(None)
                continue
            g = next(returned)
            wanted = isinstance(value, torch.Tensor) and value.is_floating_point()
            out.append(g if wanted and g.shape == value.shape else None)
        return tuple(out)


def _emulated(fn, lstm, *args, **kw):
    """fn's call (tp.functional's plastic_scan or plastic_lstm_scan) on the emulated ops."""
    values = inspect.signature(fn).bind(*args, **kw)
    values.apply_defaults()
    values = dict(values.arguments)
    if lstm:
        values.update(weight=values.pop("weight_hh"), x=None, activation="tanh")
    else:
        values["cell"] = None
    arguments = functional._as_op_arguments("emulated", **values)
    outputs = _EmulatedScan.apply(lstm, *arguments.values())
    info = tp.rules.rule_info(values["rule"])
    state = tp.PlasticState(
        hidden=outputs[1] if values["x"] is None else None, trace=outputs[2],
        eligibility=outputs[3] if info.eligibility else None,
        threshold=outputs[4] if values["adaptive_threshold"] is not None else None,
        cell=outputs[5] if lstm else None)
    return outputs[0], state


class EmulatedFunctional:
    """tp.functional's two scans, run by the emulated CUDA kernels."""

    @staticmethod
    def plastic_scan(*args, **kw):
        return _emulated(functional.plastic_scan, False, *args, **kw)

    @staticmethod
    def plastic_lstm_scan(*args, **kw):
        return _emulated(functional.plastic_lstm_scan, True, *args, **kw)


def check_random_case_emulated(seed: int, wide: bool = False, lstm: bool = False):
    """test_random's case `seed` under a layout drawn from CUDA_LAYOUTS by the seed, on the
    emulated CUDA kernels against the CPU's, both in float64 (test_cuda.py's
    check_random_case_on_cuda, on the emulation)."""
    kw = random_case(seed, wide, lstm)
    layout = CUDA_LAYOUTS[seed % len(CUDA_LAYOUTS)]
    O = kw["z"].shape[-1] // (4 if lstm else 1)
    if int(layout.get("TORCHPLASTIC_CUDA_CLUSTER", "1")) > O:
        layout = {}
    with pytest.MonkeyPatch.context() as m:
        for k, v in layout.items():
            m.setenv(k, v)
        assert_same_results(kw, kw, lambda k: run_scan(EmulatedFunctional, k, lstm),
                            lambda k: run_scan(tp.functional, k, lstm), tol=(1e-10, 1e-10),
                            grad_tol=(1e-9, 1e-9))


@pytest.mark.parametrize("family", [dict(), dict(wide=True), dict(wide=True, lstm=True)],
                         ids=["small", "wide", "wide_lstm"])
def test_emulated_random_configurations_match_cpu(family):
    run_cases(3000, SECONDS, check=check_random_case_emulated, **family)


@pytest.mark.parametrize("O,env", FLOAT32_ROW_LAYOUTS, ids=FLOAT32_ROW_LAYOUT_IDS)
@pytest.mark.parametrize("rule,source", FLOAT32_ROW_RULES)
def test_emulated_float32_forward_rows_match_cpu(rule, source, O, env, monkeypatch):
    """test_cuda.py's float row loops (recurrent: the layouts that keep W off chip need it), on
    the emulation."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    kw = float32_row_case(rule, source, True, O)
    assert_same_results(kw, kw, lambda k: run_scan(EmulatedFunctional, k, False),
                        lambda k: run_scan(tp.functional, k, False), tol=(1e-4, 1e-5),
                        grad_tol=(1e-3, 1e-4))

