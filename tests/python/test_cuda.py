"""plastic_scan on CUDA against the CPU kernel and the reference. Skipped without a GPU.

Tolerances against float64 on the CPU: float64 1e-10; float32 about 1e-5 relative (after T
steps of a recurrence, 1e-4 absolute); float16 and bfloat16 inputs run with float32 traces and
accumulation, so only the input and output roundings differ: 1e-2 (float16) and 5e-2
(bfloat16), relative and absolute.
"""

import pytest
import torch

import torchplastic as tp
from helpers import (RULES, Config, all_rule_mode_sources, call, call_lstm, gradcheck_call, loss_of,
                     make_inputs, make_lstm_inputs, tensor_inputs)
from test_plastic_scan import OPTION_CASES, opcheck_args
from test_random import assert_same_results, random_case, run_cases, run_scan

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and tp.build_info()["with_cuda"]),
    reason="needs a CUDA device and a build with CUDA")

CUDA_LAYOUTS = [
    {},                                      # what the planner picks
    {"TORCHPLASTIC_CUDA_CLUSTER": "1"},      # one block per sequence
    {"TORCHPLASTIC_CUDA_CLUSTER": "4"},      # four blocks exchanging y through DSMEM
    {"TORCHPLASTIC_CUDA_CLUSTER": "3"},      # three blocks, rows split unevenly
    {"TORCHPLASTIC_CUDA_OFF_CHIP": "1", "TORCHPLASTIC_CUDA_CLUSTER": "2"},  # streaming
]


def to_device(kw, device, dtype=None):
    out = {}
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().to(device=device, dtype=dtype or v.dtype).requires_grad_(v.requires_grad)
        out[k] = v
    return out


def compare_cuda_with_cpu(cfg, dtype=torch.float64, rtol=1e-10, atol=1e-10, grads=True, seed=0):
    assert_cuda_matches_cpu(make_inputs(cfg, seed=seed), dtype, rtol, atol, grads)


def assert_cuda_matches_cpu(kw_cpu, dtype=None, rtol=1e-10, atol=1e-10, grads=True):
    """plastic_scan on kw_cpu against the same call on CUDA with the inputs in `dtype` there
    (default: as on the CPU): outputs and final state within rtol/atol, gradients within ten
    times that. CUDA's results are compared in the CPU's dtype."""
    kw_gpu = to_device(kw_cpu, "cuda", dtype)
    y_c, s_c = call(tp.functional.plastic_scan, kw_cpu)
    y_g, s_g = call(tp.functional.plastic_scan, kw_gpu)
    torch.testing.assert_close(y_g.to(y_c.dtype).cpu(), y_c, rtol=rtol, atol=atol)
    for name in s_c._fields:
        a, b = getattr(s_g, name), getattr(s_c, name)
        assert (a is None) == (b is None), name
        if b is not None:
            torch.testing.assert_close(a.to(b.dtype).cpu(), b, rtol=rtol, atol=atol,
                                       msg=lambda m: f"{name}: {m}")
    if not grads:
        return
    leaves_c = list(tensor_inputs(kw_cpu).values())
    leaves_g = list(tensor_inputs(kw_gpu).values())
    g_c = torch.autograd.grad(loss_of(y_c, s_c), leaves_c)
    g_g = torch.autograd.grad(loss_of(y_g.to(y_c.dtype), type(s_g)(*[None if t is None else t.to(y_c.dtype) for t in s_g])), leaves_g)
    for name, a, b in zip(tensor_inputs(kw_cpu), g_g, g_c):
        torch.testing.assert_close(a.to(b.dtype).cpu(), b, rtol=rtol * 10, atol=atol * 10,
                                   msg=lambda m: f"grad {name}: {m}")


@pytest.fixture(params=range(len(CUDA_LAYOUTS)), ids=["auto", "cluster1", "cluster4", "cluster3", "off_chip"])
def layout(request, monkeypatch):
    for k, v in CUDA_LAYOUTS[request.param].items():
        monkeypatch.setenv(k, v)
    return request.param


@pytest.mark.parametrize("cfg", all_rule_mode_sources(), ids=Config.id)
def test_cuda_float64_matches_cpu(cfg, layout):
    compare_cuda_with_cpu(cfg)


@pytest.mark.parametrize("cfg", OPTION_CASES, ids=Config.id)
def test_cuda_options_match_cpu(cfg):
    compare_cuda_with_cpu(cfg)


@pytest.mark.parametrize("size", [dict(B=1, O=1, I=1, T=3), dict(B=2, O=5, I=300, T=9),
                                  dict(B=3, O=130, I=7, T=4), dict(B=2, O=256, I=256, T=6),
                                  dict(B=40, O=64, I=64, T=5), dict(B=2, O=1024, I=1024, T=3)],
                         ids=lambda s: "B{B}-O{O}-I{I}-T{T}".format(**s))
@pytest.mark.parametrize("rule", ["hebb", "retroactive"])
def test_cuda_sizes_including_off_chip(size, rule):
    for recurrent in (False, True):
        cfg = size_case(rule, recurrent, size)
        compare_cuda_with_cpu(cfg, grads=size["O"] * size["I"] <= 70000)


def size_case(rule, recurrent, size):
    """The Config of a size test (also run by test_cuda_emulated.py): hebb, or retroactive with
    internal modulation and clipping; synaptic scaling on, so that the per-row reductions run."""
    retroactive = rule == "retroactive"
    return Config(rule=rule, recurrent=recurrent, source="internal" if retroactive else None,
                  clip=1.0 if retroactive else None, scaling=2.0, **size)


def test_cuda_float32_matches_float64():
    # Weights scaled down so that the recurrence contracts: with the default random weights it
    # is chaotic, and float32 and float64 (on the CPU as well) part ways after ~20 steps.
    cfg = Config(rule="retroactive", source="fanout", clip=1.0, T=64, B=8, O=64, I=64, threshold=0.05)
    kw = make_inputs(cfg, requires_grad=False)
    kw["weight"], kw["alpha"] = 0.2 * kw["weight"], 0.2 * kw["alpha"]
    y64, _ = call(tp.functional.plastic_scan, kw)
    y32_cuda, _ = call(tp.functional.plastic_scan, to_device(kw, "cuda", torch.float32))
    y32_cpu, _ = call(tp.functional.plastic_scan, to_device(kw, "cpu", torch.float32))
    torch.testing.assert_close(y32_cuda.double().cpu(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y32_cuda.cpu(), y32_cpu, rtol=1e-5, atol=1e-6)


# The float forward's row loops, by layout: (O, environment of the planner's test hooks). Also
# run by test_cuda_emulated.py. The shared-memory loops (forward.cu) where the planner would
# take the register forward are asked for with TORCHPLASTIC_CUDA_NO_REGISTERS.
_SHARED = {"TORCHPLASTIC_CUDA_NO_REGISTERS": "1"}
FLOAT32_ROW_LAYOUTS = [
    (37, {"TORCHPLASTIC_CUDA_CLUSTER": "1", **_SHARED}),   # 37 rows per block: pairs, and a row alone
    (64, {"TORCHPLASTIC_CUDA_CLUSTER": "2", **_SHARED}),   # 32 rows per block: pairs only
    (64, {"TORCHPLASTIC_CUDA_CLUSTER": "1", "TORCHPLASTIC_CUDA_PLAIN_LOOPS": "1"}),
    (64, {"TORCHPLASTIC_CUDA_CLUSTER": "1", "TORCHPLASTIC_CUDA_OFF_CHIP": "1"}),
    (160, {"TORCHPLASTIC_CUDA_CLUSTER": "2", **_SHARED}),  # rows of 160: a chunk of 4 per lane, then 1
    (160, {"TORCHPLASTIC_CUDA_CLUSTER": "2", "TORCHPLASTIC_CUDA_OFF_CHIP": "1"}),
    # One block of 160 rows: H and α fit its shared memory, W (recurrent) does not, so the
    # pre-activations read H and α on chip and W from global memory (and retroactive's E, which
    # does not fit either, takes the off-chip loops).
    (160, {"TORCHPLASTIC_CUDA_CLUSTER": "1"}),
    # The register forward (cuda/forward_registers.cu): 37 rows in one block (warps of 4 and 5
    # rows, rows shorter than a warp in feed-forward); rows of 100 in blocks of 50 (retroactive,
    # whose warps hold at most 6 rows of H and E, takes the shared-memory loops there); rows of
    # 256 in blocks of 86, every register of a lane's row in use (the benchmark's layout).
    (37, {"TORCHPLASTIC_CUDA_CLUSTER": "1"}),
    (100, {"TORCHPLASTIC_CUDA_CLUSTER": "2"}),
    (256, {"TORCHPLASTIC_CUDA_CLUSTER": "3"}),
]
FLOAT32_ROW_LAYOUT_IDS = ["pairs-and-single", "pairs", "plain-loops", "off-chip", "chunks",
                          "chunks-off-chip", "all-but-weight-on-chip", "registers-37",
                          "registers-100", "registers-256"]
# Every rule, with the modulation sources whose updates come row by row and after all rows.
FLOAT32_ROW_RULES = [(r, s) for r in RULES for s in
                     (("external", "fanout") if tp.rules.rule_info(r).modulated else (None,))]


@pytest.mark.parametrize("O,env", FLOAT32_ROW_LAYOUTS, ids=FLOAT32_ROW_LAYOUT_IDS)
@pytest.mark.parametrize("recurrent", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("rule,source", FLOAT32_ROW_RULES)
def test_cuda_float32_forward_rows_match_cpu(rule, source, recurrent, O, env, monkeypatch):
    """The float forward's row loops: in pairs per warp (more than 16 rows per block), one row
    alone, the plain loops and the off-chip ones, and rows long enough for whole chunks
    (row_chunks, cuda/common.cuh: four elements per lane, loaded before they are stored) and a
    rest; row-local updates (external modulation or none) and updates after every row's output
    (fan-out). Against the CPU in float32, and the gradients (the backward recomputes the
    forward's traces, with the same loops)."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert_cuda_matches_cpu(float32_row_case(rule, source, recurrent, O), rtol=1e-4,
                            atol=1e-5)  # gradients within 1e-3, 1e-4


def float32_row_case(rule, source, recurrent, O):
    """The inputs of a float32 row-loop case: T=6, B=3, O rows, a contracting recurrence (as in
    test_cuda_float32_matches_float64, and as much at O=160 as at 64: there float32 on the CPU
    stays within a third of the row tests' tolerances of float64)."""
    info = tp.rules.rule_info(rule)
    cfg = Config(rule=rule, recurrent=recurrent, source=source, clip=info.default_clip, T=6, B=3,
                 O=O, I=O if recurrent else 24)
    kw = make_inputs(cfg, dtype=torch.float32)
    with torch.no_grad():
        for name in ("weight", "alpha"):
            if kw.get(name) is not None:
                kw[name].mul_(0.2 * min(1.0, (64 / O) ** 0.5))
    return kw


def register_forward_cases():
    """(id, inputs): float32 calls the register forward takes (cuda/forward_registers.cu):
    test_plastic_scan's OPTION_CASES (every rule, option and granularity), rows of 256 in
    clusters of 3 (86 rows per block, as at the benchmark's size) and a batch with lengths. Also
    run by test_cuda_emulated.py."""
    cases = [(cfg.id(), make_inputs(cfg, dtype=torch.float32)) for cfg in OPTION_CASES]
    kw = make_inputs(Config(rule="hebb", T=5, B=2, O=256, I=256, checkpoint_every=2),
                     dtype=torch.float32)
    with torch.no_grad():
        kw["weight"].mul_(0.1)
        kw["alpha"].mul_(0.1)
    cases.append(("hebb-rows-of-256-cluster-3", kw))
    kw = make_inputs(Config(rule="retroactive", source="fanout", clip=1.0, threshold=0.1, T=7,
                            B=3, O=40, I=40, checkpoint_every=3), dtype=torch.float32)
    kw["lengths"] = torch.tensor([7, 2, 5])
    cases.append(("retroactive-fanout-lengths", kw))
    return cases


REGISTER_FORWARD_CASES = register_forward_cases()


def outputs_and_gradients(functional, kw, lstm=False):
    """functional.plastic_scan (plastic_lstm_scan with lstm) on kw: the output, the final state and
    the gradients of loss_of in every input that requires one (the backward recomputes the
    forward from its checkpoints), as one list."""
    y, state = run_scan(functional, kw, lstm)
    leaves = [t for t in tensor_inputs(kw).values() if t.requires_grad]
    grads = torch.autograd.grad(loss_of(y, state), leaves, allow_unused=True)
    return [y, *state, *grads]


def assert_bitwise_equal(got, expected, equal_nan=False):
    """Two lists of outputs_and_gradients: None in the same places, the rest equal bit for bit
    (NaN where NaN, with equal_nan)."""
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert (a is None) == (b is None), i
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=equal_nan,
                                       msg=lambda m: f"result {i}: {m}")


def assert_register_forward_equals_shared_memory_forward(functional, case_id, kw, monkeypatch,
                                                         capfd):
    """The register forward gives the shared-memory forward's results bit for bit: each row's
    sums run over the same elements in the same order, through the same rule code. The plan log
    shows that the register forward ran (it prints a plan that differs from the last one it
    printed, and the shared-memory call comes just before)."""
    if case_id == "hebb-rows-of-256-cluster-3":
        monkeypatch.setenv("TORCHPLASTIC_CUDA_CLUSTER", "3")
    monkeypatch.setenv("TORCHPLASTIC_CUDA_PLAN_LOG", "1")
    monkeypatch.setenv("TORCHPLASTIC_CUDA_NO_REGISTERS", "1")
    expected = outputs_and_gradients(functional, kw)
    capfd.readouterr()
    monkeypatch.delenv("TORCHPLASTIC_CUDA_NO_REGISTERS")
    got = outputs_and_gradients(functional, kw)
    forward_plans = [line for line in capfd.readouterr().err.splitlines() if "forward plan" in line]
    assert forward_plans and "H in registers" in forward_plans[-1], forward_plans
    assert_bitwise_equal(got, expected)


def check_random_case_register_forward(seed, functional, device, wide=False):
    """test_random's case `seed` in float32 on `device` by `functional` (tp.functional, or the
    emulation's): the same results with the register forward allowed and without it, bit for
    bit (values equal, NaN where NaN). Cases the register forward does not take compare
    forward.cu with itself."""
    kw = {k: v.detach().float().to(device).requires_grad_(v.requires_grad)
          if isinstance(v, torch.Tensor) and v.is_floating_point() else v
          for k, v in random_case(seed, wide).items()}
    with pytest.MonkeyPatch.context() as m:
        m.setenv("TORCHPLASTIC_CUDA_NO_REGISTERS", "1")
        expected = outputs_and_gradients(functional, kw)
        m.delenv("TORCHPLASTIC_CUDA_NO_REGISTERS")
        got = outputs_and_gradients(functional, kw)
    assert_bitwise_equal(got, expected, equal_nan=True)


@pytest.mark.parametrize("wide", [False, True], ids=["small", "wide"])
def test_cuda_register_forward_on_random_configurations(wide):
    run_cases(7000, 10, check=check_random_case_register_forward, functional=tp.functional,
              device="cuda", wide=wide)


@pytest.mark.parametrize("case_id,kw", REGISTER_FORWARD_CASES, ids=[c for c, _ in REGISTER_FORWARD_CASES])
def test_cuda_register_forward_equals_shared_memory_forward(case_id, kw, monkeypatch, capfd):
    assert_register_forward_equals_shared_memory_forward(tp.functional, case_id,
                                                         to_device(kw, "cuda"), monkeypatch, capfd)


def prefetch_cases():
    """(id, inputs, lstm, layout): calls whose backward prefetches rows in global memory, for
    the prefetch hooks' test (bench_gpu.py --layouts times them): rows in clusters of 3 (20 rows
    per block, fewer than the 16 warps' rows two or four ahead) with α, W and the accumulators on
    chip or all off it, an eligibility trace, and the plastic LSTM (whose backward also asks for
    W_hh's rows). Also run by test_cuda_emulated.py."""
    cfg = Config(rule="retroactive", source="fanout", clip=1.0, T=3, B=2, O=60, I=60,
                 checkpoint_every=2)
    on_chip = {"TORCHPLASTIC_CUDA_CLUSTER": "3"}
    off_chip = {"TORCHPLASTIC_CUDA_CLUSTER": "2", "TORCHPLASTIC_CUDA_OFF_CHIP": "1"}
    return [("retroactive-cluster3", make_inputs(cfg), False, on_chip),
            ("retroactive-off_chip", make_inputs(cfg), False, off_chip),
            ("lstm-hebb-cluster3", make_lstm_inputs(Config(rule="hebb", T=3, B=2, O=60, I=20,
                                                            checkpoint_every=2)), True, on_chip)]


PREFETCH_CASES = prefetch_cases()


def assert_prefetch_hooks_change_no_result(functional, kw, lstm, layout, monkeypatch, capfd):
    """The backward's prefetches into L2 instead of L1, and two or four rows ahead instead of one
    (TORCHPLASTIC_CUDA_PREFETCH_L2, TORCHPLASTIC_CUDA_PREFETCH_AHEAD), give the default's results
    bit for bit: a prefetch only moves lines between caches. The plan log shows each hook took
    effect (it prints a plan that differs from the last one it printed)."""
    for k, v in layout.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("TORCHPLASTIC_CUDA_PLAN_LOG", "1")
    expected = outputs_and_gradients(functional, kw, lstm)
    for to_l2, ahead in (("1", "1"), ("0", "2"), ("1", "4")):
        capfd.readouterr()
        monkeypatch.setenv("TORCHPLASTIC_CUDA_PREFETCH_L2", to_l2)
        monkeypatch.setenv("TORCHPLASTIC_CUDA_PREFETCH_AHEAD", ahead)
        got = outputs_and_gradients(functional, kw, lstm)
        plans = [line for line in capfd.readouterr().err.splitlines() if "backward plan" in line]
        cache = "L2" if to_l2 == "1" else "L1"
        assert plans and f"rows prefetched into {cache}, {ahead} ahead" in plans[-1], plans
        assert_bitwise_equal(got, expected)


@pytest.mark.parametrize("case_id,kw,lstm,layout", PREFETCH_CASES, ids=[c[0] for c in PREFETCH_CASES])
def test_cuda_prefetch_hooks_change_no_result(case_id, kw, lstm, layout, monkeypatch, capfd):
    assert_prefetch_hooks_change_no_result(tp.functional, to_device(kw, "cuda"), lstm, layout,
                                           monkeypatch, capfd)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_cuda_half_precision_inputs(dtype, tol):
    cfg = Config(rule="hebb", T=16, B=4, O=32, I=32)
    kw = make_inputs(cfg)
    kw_half = to_device(kw, "cuda", dtype)
    y, state = call(tp.functional.plastic_scan, kw_half)
    assert y.dtype == dtype and state.trace.dtype == torch.float32
    kw_round = {k: (v.detach().to(dtype).double() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    y_ref, _ = call(tp.reference.plastic_scan, kw_round)
    torch.testing.assert_close(y.double().cpu(), y_ref, rtol=tol, atol=tol)
    loss = loss_of(y.float(), state)
    grads = torch.autograd.grad(loss, [kw_half["z"], kw_half["alpha"]])
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("rule", RULES)
def test_cuda_gradcheck(rule):
    cfg = Config(rule=rule, recurrent=rule != "oja", source="fanout" if rule == "retroactive" else None,
                 T=3, B=2, O=3, I=2, clip=None if tp.rules.rule_info(rule).default_clip is None else 2.0,
                 threshold=0.2 if rule in ("hebb", "abcd") else None, checkpoint_every=2)
    kw = to_device(make_inputs(cfg), "cuda")
    assert gradcheck_call(call, tp.functional.plastic_scan, kw, atol=1e-8, rtol=1e-6)


def test_cuda_opcheck():
    args = opcheck_args(Config(rule="retroactive", source="fanout", clip=1.0, threshold=0.1))
    args = tuple(a.cuda().detach().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                 for a in args)
    torch.library.opcheck(torch.ops.torchplastic.plastic_scan.default, args)


def test_cuda_torch_compile():
    torch._dynamo.reset()
    cfg = Config(rule="hebb", T=6, B=4, O=16)
    kw = to_device(make_inputs(cfg, dtype=torch.float32), "cuda")

    def model(z):
        y, state = call(tp.functional.plastic_scan, dict(kw, z=z))
        return y.square().sum() + state.trace.sum()

    z = kw["z"].detach().requires_grad_(True)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(z), model(z))
    g1, = torch.autograd.grad(compiled(z), z)
    g2, = torch.autograd.grad(model(z), z)
    torch.testing.assert_close(g1, g2)


def test_cuda_does_not_synchronize():
    cfg = Config(rule="hebb", T=8, B=4, O=32)
    kw = to_device(make_inputs(cfg, dtype=torch.float32), "cuda")
    call(tp.functional.plastic_scan, kw)  # warm up
    torch.cuda.set_sync_debug_mode("error")
    try:
        y, state = call(tp.functional.plastic_scan, kw)
        (y.sum() + state.trace.sum()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def plan_log_resident(line):
    """How many clusters of a plan the plan log says the device holds at once."""
    return int(line.split("; ")[-1].split()[0])


def test_cuda_plan_log_names_each_plan_once(monkeypatch, capfd):
    # Only calls with the log on set its memory of the last plan, and no other test turns it on,
    # so the first call prints both plans. O=37 splits its rows unevenly over the two blocks.
    cfg = Config(rule="retroactive", source="fanout", T=4, B=3, O=37, I=37)
    kw = to_device(make_inputs(cfg, dtype=torch.float32), "cuda")
    monkeypatch.setenv("TORCHPLASTIC_CUDA_PLAN_LOG", "1")
    monkeypatch.setenv("TORCHPLASTIC_CUDA_CLUSTER", "2")
    for _ in range(2):
        y, state = call(tp.functional.plastic_scan, kw)
        (y.sum() + state.trace.sum()).backward()
    torch.cuda.synchronize()
    lines = [line for line in capfd.readouterr().err.splitlines() if "plastic_scan (CUDA)" in line]
    assert len(lines) == 2, lines  # one forward plan and one backward plan, each printed once
    assert lines[0].startswith("plastic_scan (CUDA) forward plan: B=3 O=37 I=37: cluster 2, 19 rows")
    assert lines[1].startswith("plastic_scan (CUDA) backward plan: B=3 O=37 I=37: cluster 2, 19 rows")
    assert "rows prefetched" in lines[1] and "rows prefetched" not in lines[0]  # rows of 148 B
    for line in lines:
        assert plan_log_resident(line) >= 1, line
        assert line.endswith("clusters resident at once, 3 launched")


def test_cuda_planner_runs_every_sequence_in_one_wave(monkeypatch, capfd):
    # The benchmark's size (B=32, N=256, float32). Clusters of 4 blocks keep H, α and W on chip
    # but an H200 holds only 30 of them at once; the planner (cuda/plan_policy.h) must take a
    # layout whose clusters are all resident at once, the driver's count, wherever the device
    # has the SMs for one block per sequence.
    B, N = 32, 256
    if torch.cuda.get_device_properties(0).multi_processor_count < B:
        pytest.skip("fewer SMs than sequences: no layout runs them in one wave")
    cfg = Config(rule="hebb", T=3, B=B, O=N, I=N)
    kw = to_device(make_inputs(cfg, dtype=torch.float32), "cuda")
    monkeypatch.setenv("TORCHPLASTIC_CUDA_PLAN_LOG", "1")
    monkeypatch.delenv("TORCHPLASTIC_CUDA_CLUSTER", raising=False)
    monkeypatch.delenv("TORCHPLASTIC_CUDA_OFF_CHIP", raising=False)
    y, state = call(tp.functional.plastic_scan, kw)
    (y.sum() + state.trace.sum()).backward()
    torch.cuda.synchronize()
    lines = [line for line in capfd.readouterr().err.splitlines()
             if f"plan: B={B} O={N} I={N}:" in line]
    assert {line.split(" plan:")[0] for line in lines} == {
        "plastic_scan (CUDA) forward", "plastic_scan (CUDA) backward"}, lines
    for line in lines:
        assert plan_log_resident(line) >= B, line


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_runs_half_with_float32_traces(dtype):
    torch.manual_seed(0)
    m = tp.PlasticRNN(5, 16, rule="retroactive", modulation="fanout").cuda()
    x = torch.randn(6, 3, 5, device="cuda")
    with torch.no_grad():
        y_fp32, _ = m(x)
    with torch.autocast("cuda", dtype=dtype):
        y, state = m(x)
    assert y.dtype == dtype and state.trace.dtype == torch.float32
    torch.testing.assert_close(y.float(), y_fp32, rtol=0.05, atol=0.05)
    y.float().square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("cfg", [Config(rule="retroactive", source="fanout", clip=1.0, threshold=0.1),
                                 Config(rule="abcd", recurrent=False, scaling=1.0)], ids=Config.id)
def test_cuda_double_backward_and_jvp_match_the_reference(cfg):
    # Both run the ATen loop of csrc/autograd/aten_scan.cpp, here on CUDA tensors.
    kw = to_device(make_inputs(cfg), "cuda")
    leaves = list(tensor_inputs(kw).values())

    def penalty_gradients(fn):
        first = torch.autograd.grad(loss_of(*call(fn, kw)), leaves, create_graph=True, allow_unused=True)
        penalty = sum(g.square().sum() for g in first if g is not None)
        return torch.autograd.grad(penalty, leaves, allow_unused=True)

    for a, b in zip(penalty_gradients(tp.functional.plastic_scan),
                    penalty_gradients(tp.reference.plastic_scan)):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)

    names = list(tensor_inputs(kw))
    primals = tuple(t.detach() for t in leaves)
    v = tuple(torch.randn_like(t) for t in primals)

    def function_of(fn):
        def f(*tensors):
            y, state = call(fn, dict(kw, **dict(zip(names, tensors))))
            return (y, *[t for t in state if t is not None])
        return f

    _, t_fused = torch.func.jvp(function_of(tp.functional.plastic_scan), primals, v)
    _, t_ref = torch.func.jvp(function_of(tp.reference.plastic_scan), primals, v)
    for a, b in zip(t_fused, t_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cfg", [Config(rule="retroactive", source="internal", clip=1.0, threshold=0.1,
                                        checkpoint_every=2, T=7),
                                 Config(rule="hebb", recurrent=False, scaling=1.0)], ids=Config.id)
@pytest.mark.parametrize("lengths_device", ["cpu", "cuda"])
def test_cuda_lengths_match_cpu(cfg, lengths_device, layout):
    kw_cpu = make_inputs(cfg)
    kw_cpu["lengths"] = torch.tensor([cfg.T, 0, cfg.T // 2])
    kw_gpu = to_device(kw_cpu, "cuda")
    kw_gpu["lengths"] = kw_cpu["lengths"].to(lengths_device)
    out = []
    for kw in (kw_cpu, kw_gpu):
        leaves = [t for t in tensor_inputs(kw).values() if t.is_floating_point()]
        y, state = call(tp.functional.plastic_scan, kw)
        out.append((y, state, torch.autograd.grad(loss_of(y, state), leaves)))
    (y_c, s_c, g_c), (y_g, s_g, g_g) = out
    torch.testing.assert_close(y_g.cpu(), y_c)
    for a, b in zip(s_g, s_c):
        if b is not None:
            torch.testing.assert_close(a.cpu(), b)
    for a, b in zip(g_g, g_c):
        torch.testing.assert_close(a.cpu(), b)


@pytest.mark.parametrize("every", [1, 3])
def test_cuda_records_match_cpu(every, layout):
    # tp.inspect's records: Σ H² is summed over the cluster's blocks by atomics on CUDA.
    torch.manual_seed(0)
    m = tp.PlasticRNN(3, 40, rule="retroactive", modulation="fanout", dtype=torch.float64)
    u = torch.randn(7, 3, 3, dtype=torch.float64)
    records = []
    for device in ("cpu", "cuda"):
        m.to(device)
        with tp.inspect.record(m, every=every) as rec:
            m(u.to(device), lengths=torch.tensor([7, 2, 5]))
        records.append(rec[""][0])
    for a, b in zip(records[1][:3], records[0][:3]):
        torch.testing.assert_close(a.cpu(), b)


# ---------------------------------------------------------------- the plastic LSTM

def compare_lstm_cuda_with_cpu(cfg, dtype=torch.float64, rtol=1e-10, atol=1e-10, grads=True):
    kw_cpu = make_lstm_inputs(cfg)
    kw_gpu = to_device(kw_cpu, "cuda", dtype)
    h_c, s_c = call_lstm(tp.functional.plastic_lstm_scan, kw_cpu)
    h_g, s_g = call_lstm(tp.functional.plastic_lstm_scan, kw_gpu)
    torch.testing.assert_close(h_g.double().cpu(), h_c, rtol=rtol, atol=atol)
    for name in s_c._fields:
        a, b = getattr(s_g, name), getattr(s_c, name)
        assert (a is None) == (b is None), name
        if b is not None:
            torch.testing.assert_close(a.double().cpu(), b, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
    if not grads:
        return
    leaves_c = list(tensor_inputs(kw_cpu).values())
    leaves_g = list(tensor_inputs(kw_gpu).values())
    g_c = torch.autograd.grad(loss_of(h_c, s_c), leaves_c)
    g_g = torch.autograd.grad(loss_of(h_g.double(), type(s_g)(*[None if t is None else t.double() for t in s_g])),
                              leaves_g)
    for name, a, b in zip(tensor_inputs(kw_cpu), g_g, g_c):
        torch.testing.assert_close(a.double().cpu(), b, rtol=rtol * 10, atol=atol * 10,
                                   msg=lambda m: f"grad {name}: {m}")


def lstm_cuda_configs():
    out = []
    for rule in RULES:
        info = tp.rules.rule_info(rule)
        for source in (("external_per_neuron", "internal", "fanout") if info.modulated else (None,)):
            out.append(Config(rule=rule, source=source, clip=info.default_clip, threshold=0.1))
    return out + [Config(rule="hebb", scaling=1.0, alpha="neuron", eta="connection", checkpoint_every=2)]


@pytest.mark.parametrize("cfg", lstm_cuda_configs(), ids=Config.id)
def test_cuda_lstm_float64_matches_cpu(cfg, layout):
    compare_lstm_cuda_with_cpu(cfg)


@pytest.mark.parametrize("size", [dict(B=3, O=130, T=4), dict(B=2, O=256, T=6), dict(B=2, O=1024, T=3)],
                         ids=lambda s: "B{B}-H{O}-T{T}".format(**s))
def test_cuda_lstm_sizes_including_off_chip(size):
    cfg = Config(rule="retroactive", source="internal", clip=1.0, **size)
    compare_lstm_cuda_with_cpu(cfg, grads=size["O"] <= 256)


def test_cuda_lstm_lengths_and_half_precision():
    cfg = Config(rule="retroactive", source="fanout", clip=1.0, T=6)
    kw = make_lstm_inputs(cfg)
    kw["lengths"] = torch.tensor([6, 0, 3])
    h_c, s_c = call_lstm(tp.functional.plastic_lstm_scan, kw)
    h_g, s_g = call_lstm(tp.functional.plastic_lstm_scan, to_device(kw, "cuda"))
    torch.testing.assert_close(h_g.cpu(), h_c)
    torch.testing.assert_close(s_g.cell.cpu(), s_c.cell)
    for dtype, tol in ((torch.float16, 1e-2), (torch.bfloat16, 5e-2)):
        kw_half = to_device(make_lstm_inputs(Config(rule="hebb", T=16, B=4, O=32)), "cuda", dtype)
        h, state = call_lstm(tp.functional.plastic_lstm_scan, kw_half)
        assert h.dtype == dtype and state.trace.dtype == torch.float32
        kw_round = {k: (v.detach().to(dtype).double().cpu() if isinstance(v, torch.Tensor) else v)
                    for k, v in kw_half.items()}
        h_ref, _ = call_lstm(tp.reference.plastic_lstm_scan, kw_round)
        torch.testing.assert_close(h.double().cpu(), h_ref, rtol=tol, atol=tol)


def test_cuda_lstm_gradcheck_and_module():
    cfg = Config(rule="retroactive", source="fanout", clip=2.0, T=3, B=2, O=3, threshold=0.2, checkpoint_every=2)
    kw = to_device(make_lstm_inputs(cfg), "cuda")
    assert gradcheck_call(call_lstm, tp.functional.plastic_lstm_scan, kw, atol=1e-8, rtol=1e-6)
    torch.manual_seed(0)
    lstm = tp.PlasticLSTM(5, 8, rule="retroactive", modulation="fanout").cuda()
    out, state = lstm(torch.randn(7, 3, 5, device="cuda"))
    (out.sum() + state.cell.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lstm.parameters())


def check_random_case_on_cuda(seed: int, wide: bool = False, lstm: bool = False):
    """test_random's case `seed` (non-contiguous, expanded and transposed inputs, lengths at wide
    sizes) on CUDA under a layout drawn from CUDA_LAYOUTS by the seed, against the CPU kernel,
    both in float64."""
    kw = random_case(seed, wide, lstm)
    layout = CUDA_LAYOUTS[seed % len(CUDA_LAYOUTS)]
    O = kw["z"].shape[-1] // (4 if lstm else 1)
    if int(layout.get("TORCHPLASTIC_CUDA_CLUSTER", "1")) > O:
        layout = {}  # the planner never splits fewer rows than blocks: what it picks instead
    with pytest.MonkeyPatch.context() as m:
        for k, v in layout.items():
            m.setenv(k, v)
        assert_same_results(to_device(kw, "cuda"), kw, lambda k: run_scan(tp.functional, k, lstm),
                            lambda k: run_scan(tp.functional, k, lstm), tol=(1e-10, 1e-10),
                            grad_tol=(1e-9, 1e-9))


# test_random's three families on CUDA, ten seconds each (gpu-check's time is short).
@pytest.mark.parametrize("family", [dict(), dict(wide=True), dict(wide=True, lstm=True)],
                         ids=["small", "wide", "wide_lstm"])
def test_cuda_random_configurations_match_cpu(family):
    run_cases(3000, 10, check=check_random_case_on_cuda, **family)
