"""`trl-grpo-ext time-to-accuracy`: the interpolation, the fraction of TRL's time, fingerprints, locks, the report from
synthetic runs, and one quick end-to-end run of `trl` and `fast` on the real model (slow: it trains
SmolLM2-135M-Instruct on a CPU)."""

from __future__ import annotations

import doctest
import json
import math
import os
import random
import socket
import subprocess
import sys
from dataclasses import replace

import pytest

from trl_grpo_ext.experiment import time_to_accuracy as tta
from trl_grpo_ext.experiment.time_to_accuracy import (
    FULL,
    QUICK,
    Arm,
    ArmUnavailable,
    SettingsMismatch,
    arm_shape,
    check_arm,
    check_finished,
    claim_run,
    evaluate_greedy,
    fingerprint,
    fraction_of_reference,
    group_size_arms,
    lock_holder,
    paired_ratio,
    release_run,
    run_paths,
    time_to_target,
    write_report,
)


def test_doctests():
    assert doctest.testmod(tta, raise_on_error=False).failed == 0


def _curve(points, x="train_seconds"):
    return [{"step": i, x: t, "validation_accuracy": a} for i, (t, a) in enumerate(points)]


def test_time_to_target_interpolates_the_first_crossing():
    curve = _curve([(0.0, 0.30), (20.0, 0.40), (40.0, 0.60), (60.0, 0.50), (80.0, 0.70)])
    assert time_to_target(curve, 0.55) == pytest.approx(35.0)  # 20 + (0.55 - 0.40) / (0.60 - 0.40) * 20
    assert time_to_target(curve, 0.60) == pytest.approx(40.0)  # reached exactly at a point
    assert time_to_target(curve, 0.65) == pytest.approx(75.0)  # the first crossing, after the dip: 60 + 15/20 * 20
    assert time_to_target(curve, 0.30) == 0.0 and time_to_target(curve, 0.10) == 0.0  # already there at step 0
    assert time_to_target(curve, 0.71) is None
    completions = _curve([(0, 0.2), (32, 0.4), (64, 0.8)], x="completions")
    assert time_to_target(completions, 0.5, x="completions") == pytest.approx(40.0)


def test_fraction_of_trl_time_and_paired_ratios():
    arm = _curve([(0.0, 0.3), (10.0, 0.5), (30.0, 0.7)])
    assert fraction_of_reference(arm, 0.6, 80.0) == pytest.approx(0.25)  # 20 s of TRL's 80 s
    assert fraction_of_reference(arm, 0.75, 80.0) is None
    assert fraction_of_reference(arm, 0.6, 0.0) is None
    ratio = paired_ratio({0: 30.0, 1: 60.0, 2: 45.0}, {0: 100.0, 1: 100.0, 2: 100.0})
    assert ratio["ratios"] == pytest.approx([0.3, 0.6, 0.45]) and ratio["n"] == 3
    assert ratio["geometric_mean"] == pytest.approx((0.3 * 0.6 * 0.45) ** (1 / 3))
    logs = [math.log(r) for r in (0.3, 0.6, 0.45)]
    mean = sum(logs) / 3
    se = math.sqrt(sum((v - mean) ** 2 for v in logs) / 2 / 3)
    assert ratio["ci95"] == pytest.approx([math.exp(mean - 4.302652729 * se), math.exp(mean + 4.302652729 * se)])
    assert paired_ratio({0: 1.0}, {1: 1.0})["n"] == 0


def test_arm_shapes_keep_the_completion_budget_and_refuse_what_does_not_fit():
    assert {k: arm_shape(FULL, name) for k, name in group_size_arms(FULL).items()} == {
        2: (16, 2), 4: (8, 4), 8: (4, 8), 16: (2, 16),
    }  # fmt: skip
    with pytest.raises(ArmUnavailable, match="it is the 'fast' arm under these settings"):
        arm_shape(QUICK, "fast_k4")  # quick: K = 4 is fast's own
    with pytest.raises(ArmUnavailable, match="K = 16 to divide the completion budget per step"):
        arm_shape(QUICK, "fast_k16")
    assert tta.default_arms(QUICK)[0] == ["trl", "fast", "fast_dynamic", "fast_t085", "fast_dynamic_rank", "fast_k2"]
    configs = {name: tta.arm_config(FULL, name)["options"] for name in tta.ARMS}
    assert configs["fast_dynamic_rank"] == {
        "share_prompt": True, "skip_zero_advantage": True, "log_tied_groups": True, "dynamic_sampling": True,
        "advantage_estimator": "rank",
    }  # fmt: skip
    assert configs["trl"] == {} and configs["fast_t085"]["temperature"] == 0.85


def test_an_arm_whose_config_field_is_missing_fails_clearly():
    arms = {**tta.ARMS, "future": Arm("needs a field", options={"share_prompt": True, "no_such_field": 3})}
    with pytest.raises(ArmUnavailable, match=r"needs the GRPOExtConfig field\(s\) \['no_such_field'\]"):
        check_arm(FULL, "future", arms)
    with pytest.raises(ArmUnavailable, match="unknown arm 'nope'; valid arms: trl, fast"):
        check_arm(FULL, "nope")


def test_a_finished_run_of_other_settings_is_refused_naming_the_differences(tmp_path):
    path = tmp_path / "result.json"
    assert not check_finished(path, fingerprint(QUICK, "fast"))
    path.write_text(json.dumps({"fingerprint": fingerprint(QUICK, "fast")}))
    assert check_finished(path, fingerprint(QUICK, "fast"))
    assert check_finished(path, fingerprint(replace(QUICK, seeds=(0, 1, 2)), "fast"))  # the seeds list is not in it
    with pytest.raises(SettingsMismatch) as raised:
        check_finished(path, fingerprint(replace(QUICK, grpo_steps=3, threads=2), "fast_dynamic"))
    message = str(raised.value)
    assert "settings.grpo_steps: 2 in the run, 3 here" in message
    assert "settings.threads: 1 in the run, 2 here" in message
    assert "arm.options.dynamic_sampling: missing in the run, True here" in message
    path.write_text(json.dumps({"test_accuracy": 0.5}))
    with pytest.raises(SettingsMismatch, match="records no fingerprint"):
        check_finished(path, fingerprint(QUICK, "fast"))


def test_a_lock_of_a_dead_pid_is_taken_over_and_one_of_a_live_pid_is_not(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "runs" / "fast" / "seed0" / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert lock_holder(lock) is None
    assert claim_run(lock)
    assert json.loads(lock.read_text())["pid"] == os.getpid() and lock_holder(lock) == os.getpid()
    assert claim_run(lock)  # ours already
    release_run(lock)
    assert not lock.exists()

    lock.write_text(str(os.getppid()))  # a live process (a bare PID is read too)
    assert lock_holder(lock) == os.getppid()
    assert not claim_run(lock)
    release_run(lock)  # not ours: kept
    assert lock.read_text() == str(os.getppid())
    lock.unlink()
    assert claim_run(lock) and not (lock.parent / "lock.takeover").exists()


def test_evaluation_leaves_the_random_state_and_train_mode(monkeypatch):
    import torch

    from trl_grpo_ext.demos.common import GreedyEvaluation

    def noisy_evaluation(model, tokenizer, dataset, max_new_tokens, score, batch_size):
        model.eval()
        torch.rand(10)
        random.random()
        return GreedyEvaluation(replies=[], accuracy=0.5)

    monkeypatch.setattr(tta, "greedy_evaluation", noisy_evaluation)
    model = torch.nn.Linear(2, 2)
    torch.manual_seed(3)
    random.seed(3)
    expected_torch, expected_python = torch.rand(3), random.random()
    torch.manual_seed(3)
    random.seed(3)
    assert evaluate_greedy(model, None, None, QUICK) == 0.5
    assert torch.equal(torch.rand(3), expected_torch) and random.random() == expected_python
    assert model.training


# ---------------------------------------------------------------------------------------------------- the report
def _synthetic_run(arm: str, seed: int, test: float, seconds: float, accuracies, completions_per_step=32, **log):
    """A result.json of FULL settings: evaluations at steps 0, 20, 40, evenly spaced in training seconds."""
    steps = [0, 20, 40]
    curve = [
        {
            "step": s,
            "validation_accuracy": a,
            "train_seconds": seconds * s / 40,
            "cpu_seconds": 0.9 * seconds * s / 40,
            "completions": completions_per_step * s,
        }
        for s, a in zip(steps, accuracies)
    ]
    history = [{"step": s, "reward": 0.5, **log} for s in range(1, 41)]
    return {
        "arm": arm, "seed": seed, "steps": 40, "curve": curve, "validation_accuracy": accuracies[-1],
        "test_accuracy": test, "train_seconds": seconds, "cpu_seconds": 0.9 * seconds,
        "completions": completions_per_step * 40, "log_history": history, "fingerprint": fingerprint(FULL, arm),
    }  # fmt: skip


def _write_runs(root, runs):
    for run in runs:
        path, _ = run_paths(root, run["arm"], run["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run))


def test_report_from_synthetic_runs(tmp_path):
    runs = []
    for seed, (trl_test, fast_test) in enumerate([(0.60, 0.63), (0.58, 0.62), (0.61, 0.66)]):
        runs.append(_synthetic_run("trl", seed, trl_test, 400.0, [0.3, 0.5, 0.6], frac_reward_zero_std=0.5))
        runs.append(
            _synthetic_run(
                "fast", seed, fast_test, 100.0 + 20 * seed, [0.3, 0.6, 0.62], frac_reward_zero_std=0.25,
                **{"tied_groups/top_frac": 0.1, "tied_groups/bottom_frac": 0.15},
            )
        )  # fmt: skip
        for arm, k_test in (("fast_k2", fast_test - 0.10), ("fast_k4", fast_test - 0.04), ("fast_k16", fast_test)):
            runs.append(_synthetic_run(arm, seed, k_test, 100.0, [0.3, 0.5, 0.6]))
    runs.append(
        _synthetic_run(
            "fast_dynamic", 0, 0.66, 150.0, [0.3, 0.7, 0.7], 40, **{"dynamic_sampling/groups_per_kept": 1.5}
        )
    )
    _write_runs(tmp_path, runs)
    (tmp_path / "runs" / "old_arm" / "seed0").mkdir(parents=True)
    (tmp_path / "runs" / "old_arm" / "seed0" / "result.json").write_text("{}")
    paths = write_report(tmp_path, FULL, ["trl", "fast", "fast_dynamic", "fast_k2", "fast_k4", "fast_k16"], [0, 1, 2])
    summary = json.loads((tmp_path / "results.json").read_text())

    trl, fast, dynamic = (summary["arms"][name] for name in ("trl", "fast", "fast_dynamic"))
    assert fast["seeds"] == [0, 1, 2] and dynamic["seeds"] == [0]
    assert fast["test"]["mean"] == pytest.approx(0.6366667) and fast["test"]["se"] == pytest.approx(0.0120185, 1e-4)
    assert fast["train_seconds"]["mean"] == pytest.approx(120.0) and fast["completions"]["mean"] == 1280
    # 55 %: trl crosses between 0.5 (200 s) and 0.6 (400 s): 300 s; fast between 0.3 (0 s) and 0.6 (half its time);
    # times are on the CPU clock (0.9 x the wall seconds in these synthetic runs)
    assert trl["time_to_target"] == {"0": pytest.approx(270.0), "1": pytest.approx(270.0), "2": pytest.approx(270.0)}
    assert fast["time_to_target"]["0"] == pytest.approx(0.9 * 50.0 * 0.25 / 0.3)
    assert fast["completions_to_target"]["0"] == pytest.approx(640.0 * 0.25 / 0.3)
    # TRL's final validation accuracy (0.6) per seed: fast reaches it at half its own time, over TRL's 400 s
    assert fast["fraction_of_trl_time"] == {
        "0": pytest.approx(50.0 / 400), "1": pytest.approx(60.0 / 400), "2": pytest.approx(70.0 / 400),
    }  # fmt: skip
    assert trl["fraction_of_trl_time"]["0"] == pytest.approx(1.0)  # TRL reaches its own final at its end
    assert fast["fraction_goal_met"] == 3 and fast["fraction_stretch_met"] == 3 and trl["fraction_goal_met"] == 0
    assert fast["metrics"]["frac_reward_zero_std"]["mean"] == pytest.approx(0.25)
    assert fast["metrics"]["tied_groups/bottom_frac"]["mean"] == pytest.approx(0.15)
    assert trl["metrics"]["tied_groups/top_frac"] is None
    assert dynamic["metrics"]["dynamic_sampling/groups_per_kept"]["mean"] == pytest.approx(1.5)

    (fast_vs_trl, *_rest) = summary["comparisons"]
    assert fast_vs_trl["difference"]["diffs"] == pytest.approx([0.03, 0.04, 0.05])
    assert fast_vs_trl["verdict"].startswith(
        "fast beats trl by 4.0 +- 0.6 points (95% CI [1.5, 6.5], 3 seeds, 3/3 wins)"
    )
    assert summary["time_ratios"]["fast/trl"]["ratios"] == pytest.approx([0.25, 0.3, 0.35])
    assert summary["time_ratios"]["fast_dynamic/trl"]["n"] == 1

    group = summary["group_size"]
    assert group["arms"] == {"2": "fast_k2", "4": "fast_k4", "8": "fast", "16": "fast_k16"}
    assert group["differences"]["K4 - K2"]["mean"] == pytest.approx(0.06)
    assert group["differences"]["K16 - K8"]["mean"] == pytest.approx(0.0)
    assert group["verdict"].startswith("Test accuracy rises with K up to the second-largest size, every step detect")
    assert "no detectable change at the top" in group["verdict"]

    assert summary["missing"] == ["fast_dynamic seed 1", "fast_dynamic seed 2"]
    assert any("old_arm" in note for note in summary["notes"])
    text = (tmp_path / "results.md").read_text()
    assert "| fast | 0,1,2 | 63.7 ± 1.2 | 62.0 ± 0.0 | 120 ± 12 |" in text
    assert "| trl | 270 ± 0 (3/3 reached) |" in text
    assert "fast/trl: 0.30 (95% CI [" in text and "Not finished: fast_dynamic seed 1, fast_dynamic seed 2." in text
    for name in ("validation_vs_time.png", "validation_vs_completions.png", "group_size.png"):
        path = tmp_path / "plots" / name
        assert path in paths and path.stat().st_size > 10_000

    # A run written with other settings is an error of the report too, not a silent mix.
    assert tta.main(["--output-dir", str(tmp_path), "--report-only", "--threads", "2"]) == 2


def test_the_group_size_verdict_claims_saturation_only_after_a_shown_rise():
    from trl_grpo_ext.experiment.time_to_accuracy import group_size_verdict

    def step(mean, detectable):
        return {"mean": mean, "detectable": detectable, "n": 3}

    noisy = {"K4 - K2": step(0.506, False), "K8 - K4": step(-0.214, False), "K16 - K8": step(0.091, False)}
    text = group_size_verdict(noisy)
    assert "does not rise monotonically" in text and "consistent with saturation" not in text
    assert text.endswith("No step is detectable: these seeds neither show nor refute a rise or a saturation.")
    shown = {"K4 - K2": step(0.05, True), "K8 - K4": step(0.03, True), "K16 - K8": step(0.0, False)}
    assert group_size_verdict(shown).endswith("(K16 - K8 +0.0 points (not detectable)): consistent with saturation.")
    unshown = {**shown, "K8 - K4": step(0.03, False)}
    assert "not every step detectable" in group_size_verdict(unshown)
    assert "consistent with saturation" not in group_size_verdict(unshown)


def test_a_seed_where_trl_did_not_improve_is_left_out_of_the_fraction_of_its_time(tmp_path):
    _write_runs(
        tmp_path,
        [
            _synthetic_run("trl", 0, 0.6, 400.0, [0.3, 0.5, 0.6]),
            _synthetic_run("fast", 0, 0.6, 100.0, [0.3, 0.5, 0.6]),
            _synthetic_run("trl", 1, 0.1, 400.0, [0.3, 0.05, 0.1]),  # collapsed: ends below its start
            _synthetic_run("fast", 1, 0.1, 100.0, [0.3, 0.05, 0.1]),
        ],
    )
    write_report(tmp_path, FULL, ["trl", "fast"], [0, 1])
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["reference_no_gain_seeds"] == [1]
    # Seed 1's step-0 accuracy (0.3) is above trl's final 0.1: counted, it would read "reached at time 0".
    assert summary["arms"]["fast"]["fraction_of_trl_time"] == {"0": pytest.approx(0.25)}
    assert summary["arms"]["fast"]["fraction_goal_met"] == 1 and summary["arms"]["trl"]["fraction_goal_met"] == 0
    text = (tmp_path / "results.md").read_text()
    assert (
        "ended no higher than its step-0 accuracy (nothing of it to reach) are left out of that fraction: 1." in text
    )
    assert "| fast | 0,1 |" in text  # its accuracy and cost still count both seeds


def test_a_report_of_nothing_lists_what_is_missing(tmp_path, capsys):
    assert tta.main(["--output-dir", str(tmp_path), "--report-only", "--quick", "--arms", "trl,fast"]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["missing"] == ["trl seed 0", "fast seed 0"]
    assert "0/2 requested runs finished" in capsys.readouterr().out
    assert (tmp_path / "plots" / "group_size.png").exists()


def test_the_group_size_arms_run_their_three_seeds_only(tmp_path, capsys, monkeypatch):
    assert all(tta.ARMS[name].seeds == (0, 1, 2) for name in ("fast_k2", "fast_k4", "fast_k16"))
    assert all(tta.ARMS[name].seeds is None for name in ("trl", "fast", "fast_dynamic"))
    assert tta.main(["--output-dir", str(tmp_path), "--report-only", "--arms", "fast,fast_k4", "--seeds", "2,3"]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["missing"] == ["fast seed 2", "fast_k4 seed 2", "fast seed 3"]  # fast_k4 seed 3 is not a run
    assert "0/3 requested runs finished" in capsys.readouterr().out
    trained = []
    fake = {
        "test_accuracy": 0.5,
        "validation_accuracy": 0.5,
        "train_seconds": 1.0,
        "cpu_seconds": 1.0,
        "completions": 8,
    }
    monkeypatch.setattr(tta, "run_one", lambda root, name, seed, *args, **kwargs: trained.append((name, seed)) or fake)
    assert tta.run_all(tmp_path, FULL, ["fast_k4"], [2, 3], log=lambda line: None) == []
    assert trained == [("fast_k4", 2)]


def test_the_command_refuses_unknown_arms_and_arms_that_do_not_fit(tmp_path, capsys):
    from trl_grpo_ext import cli

    assert cli.main(["time-to-accuracy", "--output-dir", str(tmp_path), "--arms", "trl,fsat"]) == 2
    assert "unknown arm(s) fsat; valid arms: trl, fast, fast_dynamic" in capsys.readouterr().err
    assert tta.main(["--output-dir", str(tmp_path), "--quick", "--arms", "fast_k16"]) == 2
    assert "to divide the completion budget" in capsys.readouterr().err
    assert tta.main(["--output-dir", str(tmp_path), "--seeds", "0,x"]) == 2
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_quick_runs_on_the_real_model_write_curves_and_resume(tmp_path):
    out = tmp_path / "tta"
    command = [
        sys.executable, "-m", "trl_grpo_ext", "time-to-accuracy", "--quick", "--arms", "trl,fast", "--output-dir",
        str(out),
    ]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "finished trl seed 0" in first.stdout and "finished fast seed 0" in first.stdout
    for arm in ("trl", "fast"):
        run = json.loads((out / "runs" / arm / "seed0" / "result.json").read_text())
        curve = run["curve"]
        assert [p["step"] for p in curve] == [0, 1, 2]
        for key in ("train_seconds", "cpu_seconds", "completions"):
            values = [p[key] for p in curve]
            assert values == sorted(values), (arm, key, values)
        assert [p["completions"] for p in curve] == [0, 8, 16] and run["completions"] == 16
        assert curve[-1]["train_seconds"] <= run["train_seconds"] and run["train_seconds"] > 0
        assert 0.0 <= run["test_accuracy"] <= 1.0 and run["validation_accuracy"] == curve[-1]["validation_accuracy"]
        assert [e["step"] for e in run["log_history"] if "reward" in e] == [1, 2]
        assert run["peak_rss_mb"] > 100 and not (out / "runs" / arm / "seed0" / "lock").exists()
    fast = json.loads((out / "runs" / "fast" / "seed0" / "result.json").read_text())
    assert "tied_groups/top_frac" in fast["log_history"][0] and fast["metrics_not_logged"] == []
    assert (out / "plots" / "validation_vs_time.png").stat().st_size > 5_000
    summary = json.loads((out / "results.json").read_text())
    assert summary["missing"] == [] and summary["arms"]["fast"]["seeds"] == [0]

    kept = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed0/result.json")}
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "skip trl seed 0: finished" in second.stdout and "skip fast seed 0: finished" in second.stdout
    assert "train " not in second.stdout and "2/2 requested runs finished" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in kept} == kept


def test_a_run_locked_by_a_live_worker_is_left_to_it(tmp_path):
    result, lock = run_paths(tmp_path, "fast", 0)
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    lines = []
    assert tta.run_all(tmp_path, QUICK, ["fast"], [0], log=lines.append) == []
    assert lines == [f"skip fast seed 0: being trained by PID {os.getppid()} (lock {lock})"]
    assert lock.exists() and not result.exists()
