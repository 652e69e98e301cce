"""The build's and the GPU check's own tools, which run where no GPU test can watch them:
the ptxas report launcher (cmake/ptxas_report.py), the GPU check's profile step
(scripts/ncu_profile.sh), the cases that compute-sanitizer and Nsight Compute run
(scripts/cuda_case.py) and the SASS reader (scripts/sass_loops.py), which also checks this
build's CUDA kernels for spills in their element loops; and pytest's --shard (conftest.py),
which splits the sanitizer's emulated tests over two processes."""

import os
import pytest
import subprocess
import sys
import textwrap

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
LAUNCHER = os.path.join(ROOT, "cmake", "ptxas_report.py")

# What nvcc -Xptxas=-v prints for two kernels, one of them spilling, with a warning between.
PTXAS_OUTPUT = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN12torchplastic4cuda27plastic_scan_forward_kernelIfNS_7kernels5rules4HebbEEEvNS2_10ScanParamsIT_EENS0_4PlanE' for 'sm_90'
ptxas info    : Function properties for _ZN12torchplastic4cuda27plastic_scan_forward_kernelIfNS_7kernels5rules4HebbEEEvNS2_10ScanParamsIT_EENS0_4PlanE
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 96 registers, used 1 barriers
ptxas info    : Compile time = 517.533 ms
cuda/backward.cu(12): warning #177-D: variable "unused" was declared but never referenced
ptxas info    : Compiling entry function '_ZN12torchplastic4cuda28plastic_scan_backward_kernelIdNS_7kernels5rules11RetroactiveEEEvNS2_10ScanParamsIT_EENS0_4PlanE' for 'sm_90'
ptxas info    : Function properties for _ZN12torchplastic4cuda28plastic_scan_backward_kernelIdNS_7kernels5rules11RetroactiveEEEvNS2_10ScanParamsIT_EENS0_4PlanE
    48 bytes stack frame, 76 bytes spill stores, 184 bytes spill loads
ptxas info    : Used 128 registers, used 1 barriers
"""


def fake_nvcc(tmp_path, returncode=0):
    """A stand-in for nvcc: checks that -Xptxas=-v was added, prints PTXAS_OUTPUT on stderr,
    writes the object file and exits with `returncode`."""
    script = tmp_path / "fake_nvcc.py"
    script.write_text(textwrap.dedent(f"""\
        import sys
        assert "-Xptxas=-v" in sys.argv, sys.argv
        sys.stderr.write({PTXAS_OUTPUT!r})
        open(sys.argv[sys.argv.index("-o") + 1], "w").write("object")
        sys.exit({returncode})
        """))
    return [sys.executable, str(script)]


def run_launcher(tmp_path, compiler):
    report_dir = tmp_path / "build" / "ptxas"
    obj = tmp_path / "build" / "backward.cu.o"
    obj.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, LAUNCHER, str(report_dir), *compiler, "-c", "cuda/backward.cu", "-o", str(obj)]
    return subprocess.run(cmd, capture_output=True, text=True), tmp_path / "build" / "ptxas_report.txt"


def test_ptxas_report_tables_every_kernel_and_summarises_the_spills(tmp_path):
    result, report = run_launcher(tmp_path, fake_nvcc(tmp_path))
    assert result.returncode == 0, result.stderr
    # nvcc's warning still reaches the build log; ptxas's info lines do not.
    assert 'warning #177-D' in result.stderr
    assert "ptxas info" not in result.stderr
    assert result.stdout.strip() == (
        f"ptxas: backward.cu sm_90: 2 kernels, 96-128 registers, 1 spill "
        f"(max 76 B stored, 184 B loaded): see {report}")
    rows = report.read_text().splitlines()
    assert rows[0] == "# backward.cu"
    # Demangled and shortened names; registers, stack, spill stores and loads per kernel.
    assert any(r.split()[:4] == ["128", "48", "76", "184"] and
               r.endswith("plastic_scan_backward_kernel<double, Retroactive>") for r in rows), rows
    assert any(r.split()[:4] == ["96", "0", "0", "0"] and
               r.endswith("plastic_scan_forward_kernel<float, Hebb>") for r in rows), rows


def test_ptxas_report_passes_a_failed_compile_through(tmp_path):
    result, report = run_launcher(tmp_path, fake_nvcc(tmp_path, returncode=2))
    assert result.returncode == 2
    assert 'warning #177-D' in result.stderr
    assert not report.exists()


def test_cuda_case_runs_every_small_case_on_the_cpu():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "cuda_case.py"), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == 5, result.stdout


def test_cuda_case_has_help():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "cuda_case.py"), "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "usage" in result.stdout


NCU_PROFILE = os.path.join(ROOT, "scripts", "ncu_profile.sh")
NCU_REPORT = """\
  plastic_scan_forward_kernel<float, Hebb>(ScanParams<float>, Plan) (32, 1, 1)x(256, 1, 1)
    Duration                                  usecond       412.35
    Registers Per Thread               register/thread           96
"""


def run_ncu_profile_with(tmp_path, ncu_program):
    """scripts/ncu_profile.sh with `ncu_program` (a script's text) as the `ncu` first on PATH;
    returns the run and the ncu.txt it wrote."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ncu = bin_dir / "ncu"
    ncu.write_text(ncu_program)
    ncu.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    result = subprocess.run(["bash", NCU_PROFILE, str(out), sys.executable], capture_output=True,
                            text=True, env=env, timeout=60)
    return result, (out / "ncu.txt").read_text()


def run_ncu_profile(tmp_path, output, returncode):
    """scripts/ncu_profile.sh with a stand-in `ncu` that prints `output` and exits with
    `returncode`."""
    (tmp_path / "ncu_output.txt").write_text(output)
    return run_ncu_profile_with(
        tmp_path, f"#!/bin/sh\ncat {tmp_path / 'ncu_output.txt'}\nexit {returncode}\n")


def test_ncu_profile_summarises_the_kernels_it_profiled(tmp_path):
    result, log = run_ncu_profile(tmp_path, NCU_REPORT, 0)
    assert result.returncode == 0, result.stdout + result.stderr
    assert log == NCU_REPORT
    assert "plastic_scan_forward_kernel" in result.stdout and "Duration" in result.stdout


def test_ncu_profile_reports_withheld_counters_without_failing(tmp_path):
    result, _ = run_ncu_profile(
        tmp_path, "==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access "
        "NVIDIA GPU Performance Counters on the target device 0.\n", 1)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERR_NVGPUCTRPERM" in result.stdout


@pytest.mark.parametrize("output, returncode, says", [
    ("==ERROR== The application returned an error code (1).\nRuntimeError: CUDA error\n", 1,
     "RuntimeError: CUDA error"),
    ("==WARNING== No kernels were profiled.\n", 0, "no kernel matched"),
], ids=["ncu fails", "no kernel matched"])
def test_ncu_profile_fails_on_any_other_error(tmp_path, output, returncode, says):
    result, _ = run_ncu_profile(tmp_path, output, returncode)
    assert result.returncode == 1, result.stdout + result.stderr
    assert says in result.stdout


# The source page of a report (`ncu --import R --page source --csv --print-source sass`), as
# Nsight Compute prints it: the kernel's name, then one row per instruction.
NCU_SOURCE_CSV = """\
"Kernel Name","plastic_scan_backward_kernel<float, Hebb>"
"Address","Source","Warp Stall Sampling (All Samples)","stall_long_sb","stall_barrier","stall_wait"
"0x7f00","MOV R1, c[0x0][0x28]","2","0","0","2"
"0x7f10","LDG.E R115, desc[UR20][R88.64]","10","0","0","1"
"0x7f20","FFMA R79, R112, R107, R79","150","140","0","10"
"0x7f30","BAR.SYNC.DEFER_BLOCKING 0x0","38","0","36","2"
"""


def test_ncu_profile_adds_the_most_stalled_instructions(tmp_path):
    """Against a stand-in ncu that writes a report with -o, prints its details on --import and
    its source page on --import --page source: ncu.txt gets the details and, per kernel, the
    instructions ranked by their warps' stall samples with their largest reasons."""
    (tmp_path / "details.txt").write_text(NCU_REPORT)
    (tmp_path / "source.csv").write_text(NCU_SOURCE_CSV)
    result, log = run_ncu_profile_with(tmp_path, textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        args = sys.argv[1:]
        if "-o" in args:
            open(args[args.index("-o") + 1] + ".ncu-rep", "w").write("report")
            print("==PROF== Report: ...")
        elif "--page" in args:
            print(open({str(tmp_path / "source.csv")!r}).read(), end="")
        else:
            print(open({str(tmp_path / "details.txt")!r}).read(), end="")
        """))
    assert result.returncode == 0, result.stdout + result.stderr
    assert NCU_REPORT in log
    hot = log[log.index("plastic_scan_backward_kernel<float, Hebb>: 4 instructions, 200"):]
    lines = hot.splitlines()[1:4]
    assert "75.0%" in lines[0] and "FFMA" in lines[0] and "stall_long_sb 140" in lines[0]
    assert "19.0%" in lines[1] and "BAR.SYNC" in lines[1] and "stall_barrier 36" in lines[1]
    assert "LDG.E" in lines[2]
    assert "FFMA R79" in result.stdout  # the summary printed


def test_ncu_hot_instructions_reports_a_file_it_cannot_read(tmp_path):
    csv_file = tmp_path / "source.csv"
    csv_file.write_text("==ERROR== something else entirely\n")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "ncu_hot_instructions.py"),
                             str(csv_file)], capture_output=True, text=True)
    assert result.returncode == 0 and "no table of instructions" in result.stdout


def import_sass_loops():
    """scripts/sass_loops.py as a module (scripts/ is no package)."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import sass_loops
    finally:
        sys.path.pop(0)
    return sass_loops


# Two loops of cuobjdump -sass output: a 4-instruction one (shared-memory loads) nested in a
# longer one that branches back past it, and a forward branch that is no loop.
SASS = """\
\t\tFunction : _ZN12torchplastic4cuda27plastic_scan_forward_kernelIfNS_7kernels7VariantINS2_5rules4HebbELb0ELb0EEEEEvNS2_10ScanParamsIT_EENS0_4PlanE
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDS R2, [R3] ;
        /*0020*/                   LDS R4, [R3+0x4] ;
        /*0030*/              @!P0 FFMA.FTZ R5, R2, R4, R5 ;
        /*0040*/               @P1 BRA 0x10 ;
        /*0050*/                   BRA 0x70 ;
        /*0060*/                   LD.E R6, [R8.64] ;
        /*0070*/               @P2 BRA 0x0 ;
"""


def test_sass_loops_finds_the_backward_branches_and_counts_their_instructions():
    sass_loops = import_sass_loops()
    kernels = sass_loops.kernels(SASS)
    (name, instructions), = kernels.items()
    assert "HebbELb0ELb0E" in name and len(instructions) == 8
    loops = sass_loops.loops(instructions, max_length=200)
    assert [(start, end) for start, end, _ in loops] == [(0x0, 0x70), (0x10, 0x40)]
    assert dict(loops[1][2]) == {"LDS": 2, "FFMA": 1, "BRA": 1}  # predicates and suffixes dropped
    assert sass_loops.loops(instructions, max_length=4) == [loops[1]]


# A kernel's spills, cuobjdump -sass: one before every loop, one in a loop of integer work (a
# set-up loop), one in a loop with floating-point arithmetic (an element loop).
SPILLING_SASS = """\
\t\tFunction : _ZN12torchplastic4cuda28plastic_scan_backward_kernelIfNS_7kernels7VariantINS2_5rules11RetroactiveELb1ELb1EEEEEvNS2_10ScanParamsIT_EENS2_14ScanGradParamsIS8_EENS0_4PlanEPS8_
        /*0000*/                   STL [R1], R12 ;
        /*0010*/                   LDL R4, [R1] ;
        /*0020*/                   IADD3 R5, R4, 0x1, RZ ;
        /*0030*/               @P0 BRA 0x10 ;
        /*0040*/                   LDL R6, [R1+0x4] ;
        /*0050*/                   FFMA R7, R6, R6, R7 ;
        /*0060*/               @P1 BRA 0x40 ;
"""


def test_sass_loops_tells_spills_in_element_loops_from_the_others():
    sass_loops = import_sass_loops()
    (instructions,) = sass_loops.kernels(SPILLING_SASS).values()
    found = sass_loops.spills(instructions, max_length=200)
    assert [(address, loop and loop[:2]) for address, _, loop in found] == [
        (0x0, None), (0x10, (0x10, 0x30)), (0x40, (0x40, 0x60))]
    assert [sass_loops.is_element_loop(loop) for _, _, loop in found] == [False, False, True]
    # HFMA2, DADD, FMUL count as arithmetic; integer adds and local loads do not.
    assert [sass_loops.is_arithmetic(op) for op in ("HFMA2", "DADD", "FMUL", "IADD3", "LDL")] == [
        True, True, True, False, False]


def cuda_objects():
    """The built CUDA kernels' object files, where this build compiled them."""
    build = os.path.join(ROOT, os.environ.get("TORCHPLASTIC_BUILD_DIR", "build"))
    paths = [os.path.join(build, "CMakeFiles", "torchplastic.dir", "cuda", f"{name}.cu.o")
             for name in ("forward", "forward_registers", "backward")]
    return [p for p in paths if os.path.exists(p)]


def test_cuda_kernels_spill_in_no_element_loop():
    # ptxas -v counts some backward kernels' spills (build/ptxas_report.txt); this checks where
    # they are, in the SASS: a spill in a loop over a row's elements would cost a local-memory
    # access per element, one in set-up or once per row or step next to nothing.
    sass_loops = import_sass_loops()
    objects = cuda_objects()
    tool = sass_loops.find_cuobjdump()
    if not objects or not tool:
        pytest.skip("needs the CUDA objects of this build and cuobjdump")
    checked = []
    for path in objects:
        for name, instructions in sass_loops.kernels(sass_loops.disassemble(tool, path)).items():
            checked.append(name)
            hot = [hex(address) for address, _, loop in sass_loops.spills(instructions, 200)
                   if sass_loops.is_element_loop(loop)]
            assert not hot, f"{name}: spills in element loops at {hot}"
    # Every object's kernels were read (an empty listing would pass the loop above).
    for kind in ("forward", "forward_registers", "backward"):
        if any(path.endswith(f"/{kind}.cu.o") for path in objects):
            assert any(f"plastic_scan_{kind}_kernel" in name for name in checked), kind


def collected(*args):
    """The test ids pytest collects from this file with `args`, and its result."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", __file__, *args],
        capture_output=True, text=True, cwd=ROOT)
    return [line for line in result.stdout.splitlines() if "::" in line], result


def test_shards_split_the_selected_tests_between_them():
    everything, _ = collected("-k", "ncu or sass")
    assert len(everything) >= 6
    shards = [collected("-k", "ncu or sass", "--shard", f"{i}/3")[0] for i in (1, 2, 3)]
    assert sorted(sum(shards, [])) == sorted(everything)
    assert all(len(shard) in (len(everything) // 3, len(everything) // 3 + 1) for shard in shards)


@pytest.mark.parametrize("shard", ["0/2", "3/2", "1", "a/b"])
def test_a_shard_outside_its_count_is_refused(shard):
    tests, result = collected("--shard", shard)
    assert result.returncode != 0 and not tests
    assert "--shard: expected I/N" in result.stderr + result.stdout
