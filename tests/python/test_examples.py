"""Smoke tests: every example runs a few steps, writes its plots and checkpoint, resumes."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args],
                          check=True, capture_output=True, text=True, timeout=300).stdout


def test_pattern_example_runs_and_resumes(tmp_path):
    out = run("pattern.py", "--episodes", "3", "--batch", "4", "--eval-batches", "1",
              "--out", str(tmp_path), "--no-progress")
    assert out.strip().startswith("pattern memorization: plastic error")
    for f in ("errors.png", "trace.png", "recording.png", "checkpoint.pt"):
        assert (tmp_path / f).exists(), f
    out = run("pattern.py", "--episodes", "5", "--batch", "4", "--eval-batches", "1",
              "--out", str(tmp_path), "--no-progress", "--resume")
    assert "(5 episodes" in out


def test_pattern_example_resumes_after_kill_9_with_no_step_lost(tmp_path):
    """SIGKILL mid-run, then --resume: the run ends where and as the uninterrupted one does, the
    same errors at every step and the same weights bit for bit, so no completed step was lost or
    repeated (each step's checkpoint carries the data generator's state too)."""
    import signal
    import time

    import torch
    args = ["--episodes", "400", "--batch", "4", "--bits", "16", "--patterns", "3",
            "--eval-batches", "1", "--no-progress"]
    run("pattern.py", *args, "--out", str(tmp_path / "straight"))
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", "pattern.py"), *args,
                             "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, at_kill = time.time() + 120, 0
    try:
        while time.time() < deadline and proc.poll() is None:
            if (killed / "checkpoint.pt").exists():
                at_kill = torch.load(killed / "checkpoint.pt", weights_only=False)["episode"]
                if at_kill >= 20:
                    break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    interrupted = torch.load(killed / "checkpoint.pt", weights_only=False)["episode"]
    assert 20 <= interrupted < 400

    out = run("pattern.py", *args, "--out", str(killed), "--resume")
    assert "(400 episodes" in out
    resumed = torch.load(killed / "checkpoint.pt", weights_only=False)
    for name in ("plastic", "non-plastic"):
        assert resumed["history"][name] == straight["history"][name]
        for key, value in straight["models"][name].items():
            assert torch.equal(resumed["models"][name][key], value), (name, key)


def test_pattern_example_takes_bits_and_patterns(tmp_path):
    out = run("pattern.py", "--bits", "40", "--patterns", "3", "--episodes", "2", "--batch", "2",
              "--eval-batches", "1", "--out", str(tmp_path), "--no-progress")
    assert out.strip().startswith("pattern memorization: plastic error") and "(2 episodes" in out
    state = __import__("torch").load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["models"]["plastic"]["rnn.weight_hh"].shape == (40, 40)


def test_examples_have_help():
    for script in ("pattern.py", "maze.py", "omniglot.py", "charlm.py", "continual.py", "export_model.py"):
        assert "--seed" in run(script, "--help")


def test_maze_example_runs_and_resumes(tmp_path):
    args = ["--episodes", "2", "--steps", "5", "--batch", "2", "--seeds", "1", "--hidden", "8",
            "--variants", "modulated", "rnn", "--out", str(tmp_path), "--no-progress"]
    out = run("maze.py", *args)
    assert out.strip().startswith("maze: mean reward")
    for f in ("rewards.png", "curves.json", "checkpoint_modulated_0.pt", "checkpoint_rnn_0.pt"):
        assert (tmp_path / f).exists(), f
    out = run("maze.py", *args[:-1], "--seeds", "2", "--no-progress", "--resume")
    assert "(4 runs" in out


def test_maze_runs_extended_by_resume_equal_runs_that_long_from_the_start(tmp_path):
    """--resume with a larger --episodes continues finished runs from their checkpoints: the
    curves must be those of runs trained that long in one go, bit for bit (model, Adam, the
    maze generator and the global generators all restored)."""
    args = ["--steps", "5", "--batch", "2", "--seeds", "1", "--hidden", "8",
            "--variants", "retroactive", "rnn", "--no-progress"]
    whole, extended = tmp_path / "whole", tmp_path / "extended"
    run("maze.py", *args, "--episodes", "4", "--out", str(whole))
    run("maze.py", *args, "--episodes", "2", "--out", str(extended))
    out = run("maze.py", *args, "--episodes", "4", "--out", str(extended), "--resume")
    assert "(2 runs of 4 episodes" in out
    with open(whole / "curves.json") as f:
        expected = json.load(f)
    with open(extended / "curves.json") as f:
        got = json.load(f)
    for variant in ("retroactive", "rnn"):
        assert len(got[variant]["0"]) == 4, variant
        assert got[variant]["0"] == expected[variant]["0"], variant


def test_maze_agent_acts_and_learns_with_the_same_outputs():
    """The maze agent acts one step per call and learns from the episode as one sequence: the
    recurrent core must give the same outputs both ways, bit for bit, and the heads (linear
    layers over other shapes) the same to rounding, or the A2C loss would score other
    probabilities than those the actions were sampled from."""
    import importlib
    import torch
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        maze = importlib.import_module("maze")
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    u = torch.randn(9, 3, maze.INPUTS)
    for variant in maze.VARIANTS:
        agent = maze.Agent(variant, 8)
        with torch.no_grad():
            state, hs = None, []
            for t in range(len(u)):
                h, state = agent.core(u[t:t + 1], state)
                hs.append(h)
            h, _ = agent.core(u)
            assert torch.equal(torch.cat(hs), h), variant
            logits, value, _ = agent(u)
            step_logits = torch.stack([agent.policy(h_t[0]) for h_t in hs])  # as when acting
            step_value = torch.stack([agent.value(h_t[0]).squeeze(-1) for h_t in hs])
        torch.testing.assert_close(step_logits, logits, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(step_value, value, rtol=1e-6, atol=1e-7)


def test_omniglot_example_runs_and_resumes(tmp_path):
    data = os.path.join(ROOT, "..", "shared", "data", "omniglot")
    if not os.path.isdir(data):
        import pytest
        pytest.skip("no Omniglot data beside the project")
    args = ["--steps", "2", "--batch", "2", "--eval-every", "1", "--eval-batches", "1",
            "--out", str(tmp_path), "--no-progress", "--data", data]
    out = run("omniglot.py", *args)
    assert out.strip().startswith("omniglot: 5-way 1-shot accuracy on held-out characters")
    for f in ("accuracy.png", "checkpoint.pt", "omniglot_28.pt"):
        assert (tmp_path / f).exists(), f
    out = run("omniglot.py", *[a if a != "2" else "3" for a in args[:2]], *args[2:], "--resume")
    assert "(3 steps" in out


def test_charlm_example_runs_and_resumes(tmp_path):
    data = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare", "input.txt")
    if not os.path.exists(data):
        import pytest
        pytest.skip("no tiny Shakespeare beside the project")
    args = ["--max-steps", "3", "--hidden", "16", "--embed", "8", "--batch", "4", "--bptt", "16",
            "--eval-chars", "500", "--sample", "20", "--out", str(tmp_path), "--no-progress",
            "--data", data]
    out = run("charlm.py", *args)
    last = out.strip().splitlines()[-1]
    assert last.startswith("charlm: plastic") and "(validation, 3 and 3 steps" in last
    assert "--- plastic sample ---" in out and "--- lstm sample ---" in out
    for f in ("bpc.png", "checkpoint_plastic.pt", "checkpoint_lstm.pt"):
        assert (tmp_path / f).exists(), f
    out = run("charlm.py", *[a if a != "3" else "5" for a in args], "--resume")
    assert "(validation, 5 and 5 steps" in out


def test_continual_example_runs_and_resumes(tmp_path):
    args = ["--seeds", "1", "--epochs", "1", "--hidden", "16", "--out", str(tmp_path), "--no-progress"]
    out = run("continual.py", *args)
    assert out.strip().startswith("continual: plastic average accuracy") and "1 seeds" in out
    for f in ("accuracy.png", "checkpoint.pt"):
        assert (tmp_path / f).exists(), f
    out = run("continual.py", *[a if a != "1" else "2" for a in args[:2]], *args[2:], "--resume")
    assert "2 seeds" in out
