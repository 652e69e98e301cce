"""The CUDA kernels on the CPU: cuda/*.cu compiled for the host and launched by an emulated
CUDA runtime (tests/cuda_emulation: each CUDA thread a fiber, switching only at barriers, shared
memory per block, thread block clusters, warp shuffles; a device with an H100's figures), as
the ops of a library of their own, torchplastic_cuda_emulated, against the CPU kernels. So the
CUDA kernels' logic (their layouts, row loops, staging, checkpoints and planner) is tested on
every machine, GPU or not, and so are the races that change results (the threads run in shuffled
orders between barriers); `make test-emulated-asan` runs a share of these tests under
AddressSanitizer, a memory checker for the kernels. Their speed, and the races and memory errors
only the device shows, still need a GPU (`make gpu-check`). The cases are test_cuda.py's, as far
as the emulation's speed allows (about two million switches between threads a second on the
2-core VM): every rule, mode and modulation source and the plastic LSTM in the five launch
layouts, every option, sizes up to N=256 on and off chip, the records, the float forward's row
loops, and test_random's configurations.
"""

import inspect
import os

import pytest
import torch

import torchplastic as tp
from torchplastic import functional
from helpers import Config, all_rule_mode_sources, make_inputs, make_lstm_inputs
from test_cuda import (CUDA_LAYOUTS, FLOAT32_ROW_LAYOUT_IDS, FLOAT32_ROW_LAYOUTS, FLOAT32_ROW_RULES,
                       PREFETCH_CASES, REGISTER_FORWARD_CASES, assert_bitwise_equal,
                       assert_prefetch_hooks_change_no_result,
                       assert_register_forward_equals_shared_memory_forward,
                       check_random_case_register_forward,
                       float32_row_case, layout, lstm_cuda_configs, outputs_and_gradients, size_case)  # noqa: F401 (layout: a fixture)
from test_plastic_scan import OPTION_CASES
from test_random import assert_same_results, random_case, run_cases, run_scan

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The build's, or TORCHPLASTIC_EMULATION_LIBRARY (a build of it under AddressSanitizer, say).
LIBRARY = os.environ.get("TORCHPLASTIC_EMULATION_LIBRARY") or os.path.join(
    ROOT, os.environ.get("TORCHPLASTIC_BUILD_DIR", "build"), "tests", "cuda_emulation",
    "libtorchplastic_cuda_emulated.so")

# How long each family of random cases runs.
SECONDS = float(os.environ.get("TORCHPLASTIC_EMULATION_SECONDS", "15"))


@pytest.fixture(scope="module", autouse=True)
def emulated_library():
    if not os.path.exists(LIBRARY):
        # CI builds it (make test): there its absence is a failure, not a reason to skip.
        message = f"needs the CUDA emulation library of a build with tests ({LIBRARY})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
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


def assert_emulated_matches_cpu(kw, lstm=False, tol=(1e-10, 1e-10), grad_tol=(1e-9, 1e-9)):
    """The call kw (random_case's form: plastic_lstm_scan's with lstm) on the emulated CUDA
    kernels against the CPU's: outputs, final state and the gradients of loss_of."""
    assert_same_results(kw, kw, lambda k: run_scan(EmulatedFunctional, k, lstm),
                        lambda k: run_scan(tp.functional, k, lstm), tol=tol, grad_tol=grad_tol)


# test_cuda.py's float64 comparisons: every rule, mode and modulation source in every layout,
# every option, sizes up to those that leave the chip, the plastic LSTM.

@pytest.mark.parametrize("cfg", all_rule_mode_sources(), ids=Config.id)
def test_emulated_float64_matches_cpu(cfg, layout):
    assert_emulated_matches_cpu(make_inputs(cfg))


@pytest.mark.parametrize("cfg", OPTION_CASES, ids=Config.id)
def test_emulated_options_match_cpu(cfg):
    assert_emulated_matches_cpu(make_inputs(cfg))


@pytest.mark.parametrize("size", [dict(B=2, O=5, I=300, T=9), dict(B=3, O=130, I=7, T=4),
                                  dict(B=2, O=256, I=256, T=4)],
                         ids=lambda s: "B{B}-O{O}-I{I}-T{T}".format(**s))
@pytest.mark.parametrize("rule", ["hebb", "retroactive"])
def test_emulated_sizes_including_off_chip(size, rule):
    for recurrent in (False, True):
        assert_emulated_matches_cpu(make_inputs(size_case(rule, recurrent, size)))


@pytest.mark.parametrize("cluster", ["3", "4"])
def test_emulated_benchmark_layouts_match_cpu(cluster, monkeypatch):
    # bench_gpu.py's call (recurrent hebb, float32, N=256) in the layouts the planner takes for it
    # on an H100 or H200: clusters of 4 with everything on chip, or of 3 (86 rows per block) with
    # W in global memory (and α in the backward); a few steps in two segments.
    monkeypatch.setenv("TORCHPLASTIC_CUDA_CLUSTER", cluster)
    cfg = Config(rule="hebb", T=4, B=2, O=256, I=256, checkpoint_every=3)
    kw = make_inputs(cfg, dtype=torch.float32)
    with torch.no_grad():
        kw["weight"].mul_(0.1)
        kw["alpha"].mul_(0.1)
    assert_emulated_matches_cpu(kw, tol=(1e-4, 1e-5), grad_tol=(1e-3, 1e-4))


@pytest.mark.parametrize("cfg", lstm_cuda_configs(), ids=Config.id)
def test_emulated_lstm_float64_matches_cpu(cfg, layout):
    assert_emulated_matches_cpu(make_lstm_inputs(cfg), lstm=True)


@pytest.mark.parametrize("lstm", [False, True], ids=["rnn", "lstm"])
@pytest.mark.parametrize("every", [1, 3])
def test_emulated_records_match_cpu(every, lstm, layout):
    # tp.inspect's records (the record ops), with lengths: Σ H² is summed over a cluster's blocks
    # by atomics on CUDA.
    cfg = Config(rule="retroactive", source="fanout", clip=1.0, T=7, B=3, O=40, I=40)
    kw = make_lstm_inputs(cfg) if lstm else make_inputs(cfg)
    kw["lengths"] = torch.tensor([7, 2, 5])
    if lstm:
        kw.update(weight=kw.pop("weight_hh"), x=None, activation="tanh")
    name = "plastic_lstm_scan_record" if lstm else "plastic_scan_record"
    values = inspect.signature(getattr(functional, name[:-len("_record")])).parameters
    arguments = functional._as_op_arguments(
        "records", **{n: kw.get(n, values[n].default if n in values else None)
                      for n in functional.SCAN_ARGUMENTS})
    with torch.no_grad():
        got = getattr(torch.ops.torchplastic_cuda_emulated, name)(*arguments.values(), every=every)
        expected = getattr(torch.ops.torchplastic, name)(*arguments.values(), every=every)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("lstm,dtype", [(False, torch.float64), (False, torch.float32),
                                        (True, torch.float64)], ids=["rnn", "rnn-float32", "lstm"])
def test_emulated_results_do_not_depend_on_the_threads_order(lstm, dtype, layout, monkeypatch):
    # Threads that run between two barriers in another order (the runtime's shuffled schedules)
    # give the same results, bit for bit: no result rests on an order that no barrier enforces.
    # (In float32 the planner's layouts take the register forward.)
    cfg = Config(rule="retroactive", source="fanout", clip=1.0, threshold=0.1, T=4, B=2, O=20,
                 I=20, checkpoint_every=2)
    kw = make_lstm_inputs(cfg, dtype=dtype) if lstm else make_inputs(cfg, dtype=dtype)
    expected = outputs_and_gradients(EmulatedFunctional, kw, lstm)
    monkeypatch.setenv("TORCHPLASTIC_EMULATION_SCHEDULE", "1")
    assert_bitwise_equal(outputs_and_gradients(EmulatedFunctional, kw, lstm), expected)


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
        assert_emulated_matches_cpu(kw, lstm)


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
    assert_emulated_matches_cpu(float32_row_case(rule, source, True, O), tol=(1e-4, 1e-5),
                                grad_tol=(1e-3, 1e-4))


@pytest.mark.parametrize("case_id,kw", REGISTER_FORWARD_CASES, ids=[c for c, _ in REGISTER_FORWARD_CASES])
def test_emulated_register_forward_equals_shared_memory_forward(case_id, kw, monkeypatch, capfd):
    """test_cuda.py's comparison of the register forward with the shared-memory one, bit for
    bit, on the emulation."""
    assert_register_forward_equals_shared_memory_forward(EmulatedFunctional, case_id, kw,
                                                         monkeypatch, capfd)


def test_emulated_register_forward_on_random_configurations():
    """test_cuda.py's random float32 cases, register forward against shared-memory forward, on
    the emulation: the small family (one case of the wide one can run past a minute here)."""
    run_cases(7000, SECONDS, check=check_random_case_register_forward,
              functional=EmulatedFunctional, device="cpu")


@pytest.mark.parametrize("case_id,kw,lstm,layout", PREFETCH_CASES, ids=[c[0] for c in PREFETCH_CASES])
def test_emulated_prefetch_hooks_change_no_result(case_id, kw, lstm, layout, monkeypatch, capfd):
    """test_cuda.py's check of the backward's prefetch hooks on the emulation, which reads a
    byte at each address a prefetch asks for (a row past the arrays: a memory error, reported
    under AddressSanitizer, make test-asan) and otherwise leaves the results alone; the plan
    log shows each hook."""
    assert_prefetch_hooks_change_no_result(EmulatedFunctional, kw, lstm, layout, monkeypatch,
                                           capfd)
