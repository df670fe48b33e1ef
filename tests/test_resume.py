"""Checkpoint / resume with the ladder schedule, rank advantages and an objective weight schedule.

Everything the extension schedules is derived from `state.global_step` (and `state.max_steps`), which HF Trainer
restores from `trainer_state.json`, so a resumed run must log what an uninterrupted one logs.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import TrainerCallback

from tests.dist import train_tiny as run
from tests.helpers import TIMING_KEYS
from trl_grpo_ext.kit import resolve_model_path

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS, STOP_STEP = 6, 3


class StopAfter(TrainerCallback):
    """Stop training after step `step` (HF still saves that step's checkpoint: saving follows `on_step_end`)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _step_entries(log_history, steps) -> dict[int, dict]:
    """The per-step training log entry (the one with the loss) of each step in `steps`."""
    entries = {e["step"]: e for e in log_history if "loss" in e and e["step"] in steps}
    assert sorted(entries) == sorted(steps), f"missing steps: {sorted(set(steps) - set(entries))}"
    return entries


def _numeric(entry: dict) -> dict[str, float]:
    return {
        k: v
        for k, v in entry.items()
        if isinstance(v, (int, float)) and not any(timing in k for timing in TIMING_KEYS)
    }


def _assert_same(expected: dict, actual: dict, atol: float = 1e-6) -> None:
    exp, act = _numeric(expected), _numeric(actual)
    assert exp.keys() == act.keys()
    bad = {
        k: (exp[k], act[k])
        for k in exp
        if not (math.isnan(exp[k]) and math.isnan(act[k])) and abs(exp[k] - act[k]) > atol
    }
    assert not bad, f"step {expected['step']}: resumed run differs: {bad}"


def _assert_schedules(entry: dict, max_steps: int) -> None:
    """What the extension derives from the global step, at the step that generated `entry`'s batch."""
    generated_at = entry["step"] - 1  # the batch of step s is generated at global_step s - 1
    t_min, t_max = run.expected_ladder_ends(generated_at, max_steps)
    assert entry["ladder/t_min"] == pytest.approx(t_min, abs=1e-6)
    assert entry["ladder/t_max"] == pytest.approx(t_max, abs=1e-6)
    for name in run.WEIGHTS:
        assert entry[f"objectives/{name}/weight"] == pytest.approx(
            run.expected_weight(name, generated_at, max_steps), abs=1e-6
        )


@pytest.mark.slow
def test_resumed_run_logs_what_an_uninterrupted_run_logs(tmp_path):
    model_path = resolve_model_path("tiny:tiny")
    kwargs = dict(max_steps=MAX_STEPS, save_steps=STOP_STEP)

    uninterrupted = run.build_trainer(tmp_path / "uninterrupted", model_path, **kwargs)
    uninterrupted.train()

    interrupted = run.build_trainer(tmp_path / "resumed", model_path, callbacks=[StopAfter(STOP_STEP)], **kwargs)
    interrupted.train()
    assert interrupted.state.global_step == STOP_STEP
    checkpoint = tmp_path / "resumed" / f"checkpoint-{STOP_STEP}"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == STOP_STEP
    assert not (tmp_path / "resumed" / f"checkpoint-{MAX_STEPS}").exists()

    resumed = run.build_trainer(tmp_path / "resumed", model_path, **kwargs)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == MAX_STEPS

    later_steps = range(STOP_STEP + 1, MAX_STEPS + 1)
    expected = _step_entries(uninterrupted.state.log_history, later_steps)
    actual = _step_entries(resumed.state.log_history, later_steps)
    for step in later_steps:
        _assert_schedules(actual[step], MAX_STEPS)
        _assert_same(expected[step], actual[step])
    # The schedules moved: the test would notice a resumed run that restarted them from step 0.
    assert actual[MAX_STEPS]["ladder/t_min"] > _step_entries(resumed.state.log_history, [1])[1]["ladder/t_min"]
    # Same completions, rewards and (rank) advantages in the last generation batch.
    assert list(resumed._logs["completion"]) == list(uninterrupted._logs["completion"])
    assert list(resumed._logs["advantages"]) == list(uninterrupted._logs["advantages"])
    for name in run.WEIGHTS:
        assert list(resumed._logs["rewards"][name]) == list(uninterrupted._logs["rewards"][name])


def _env() -> dict:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes_from_latest_checkpoint(tmp_path):
    model_path = resolve_model_path("tiny:tiny")
    output_dir = tmp_path / "run"
    script = [sys.executable, "tests/dist/train_tiny.py", str(output_dir), model_path, "--max-steps", "4"]
    log = (tmp_path / "killed.log").open("w")
    killed = subprocess.Popen(
        [*script, "--save-steps", "1", "--pause-at-step", "2", "--pause-seconds", "120"],
        cwd=REPO_ROOT,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        while not (output_dir / "checkpoint-2" / "trainer_state.json").exists():
            assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no checkpoint-2 within 240 s"
            time.sleep(0.2)
        os.kill(killed.pid, signal.SIGKILL)
        assert killed.wait(timeout=30) == -signal.SIGKILL
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.wait()
        log.close()
    assert not (output_dir / "checkpoint-4").exists() and not (output_dir / "log_history.json").exists()

    resumed = subprocess.run(
        [*script, "--save-steps", "1", "--resume"],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-4000:]
    assert json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
    result = json.loads((output_dir / "log_history.json").read_text())
    assert Path(result["resumed_from"]).name == "checkpoint-2"
    for entry in _step_entries(result["log_history"], [3, 4]).values():
        _assert_schedules(entry, max_steps=4)
