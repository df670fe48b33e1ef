"""`trl-grpo-ext experiment`: reward conditions, statistics, arms, and the quick grid end to end (resumable)."""

from __future__ import annotations

import dataclasses
import doctest
import json
import math
import random
import subprocess
import sys

import pytest

from trl_grpo_ext import GRPOExtConfig
from trl_grpo_ext.experiment import arms, conditions, stats
from trl_grpo_ext.experiment.conditions import (
    CONDITIONS,
    ConditionReward,
    add_gaussian_noise,
    add_outliers,
    group_monotone_distortion,
    partial_credit,
)
from trl_grpo_ext.experiment.stats import mean_se, paired_difference


@pytest.mark.parametrize("module", [conditions, stats])
def test_doctests(module):
    assert doctest.testmod(module, raise_on_error=False).failed == 0


# ------------------------------------------------------------------------------------------------ conditions
def test_partial_credit_is_one_only_for_the_exact_answer():
    assert partial_credit("54321", "54321") == 1.0
    assert partial_credit("54329", "54321") == pytest.approx(0.8)
    assert partial_credit("5432", "54321") == pytest.approx(0.8)  # a missing digit costs one position
    assert partial_credit("543211", "54321") == pytest.approx(5 / 6)  # an extra one too
    assert partial_credit("12345", "54321") == pytest.approx(0.2)


def test_outliers_hit_the_requested_fraction_with_the_spurious_value():
    rewards = add_outliers([0.0] * 20000, p=0.2, rng=random.Random(1))
    share = sum(r == conditions.OUTLIER_VALUE for r in rewards) / len(rewards)
    assert abs(share - 0.2) < 0.01
    assert set(rewards) == {0.0, conditions.OUTLIER_VALUE}


def test_distortion_keeps_the_order_within_each_group_but_not_the_gaps():
    clean = [0.0, 0.2, 0.6, 1.0] * 50
    distorted = group_monotone_distortion(clean, 4, s_max=12.0, rng=random.Random(0))
    groups = [distorted[i : i + 4] for i in range(0, len(distorted), 4)]
    assert all(g == sorted(g) for g in groups)
    ratios = {round((g[3] - g[2]) / (g[1] - g[0] + 1e-12), 3) for g in groups}  # differs by group: not affine
    assert len(ratios) > 40


def test_gaussian_noise_has_the_requested_spread():
    noisy = add_gaussian_noise([0.5] * 20000, sigma=0.4, rng=random.Random(0))
    mean, se = mean_se(noisy)
    assert abs(mean - 0.5) < 0.02
    assert abs(se * math.sqrt(len(noisy)) - 0.4) < 0.01


def test_condition_reward_scores_the_clean_answer_and_records_accuracy_by_slot():
    reward = ConditionReward("clean", None, group_size=2, seed=0)
    out = reward(["p"] * 4, ["12", "21", "12", "12"], answer=["12", "12", "12", "12"])
    assert out == [1.0, 0.0, 1.0, 1.0]
    assert reward.history == [[1.0, 0.5]]  # slot 0 right in both groups, slot 1 in one of two
    assert reward.distinct_history == [0.75]  # groups ("12", "21") and ("12", "12"): 2/2 and 1/2 distinct
    noisy = ConditionReward("noisy_partial", 0.1, group_size=2, seed=0)
    assert noisy(["p"] * 2, ["12", "11"], answer=["12", "12"]) != [1.0, 0.5]
    assert noisy.history == [[1.0, 0.0]]  # the slot record is the clean exact accuracy, not the noisy reward
    with pytest.raises(ValueError, match="`condition` must be one of"):
        ConditionReward("nope", None, 2, 0)


def test_every_corrupted_condition_has_candidate_levels():
    for condition in CONDITIONS.values():
        assert bool(condition.candidate_levels) == (condition.level_name is not None)


# ------------------------------------------------------------------------------------------------ statistics
def test_paired_difference_golden_numbers_and_detectability():
    a = {0: 0.70, 1: 0.60, 2: 0.80, 3: 0.5}
    b = {0: 0.60, 1: 0.55, 2: 0.70}  # seed 3 unpaired: left out
    d = paired_difference(a, b)
    assert d["n"] == 3 and d["seeds"] == [0, 1, 2]
    assert d["mean"] == pytest.approx(0.25 / 3)
    assert d["se"] == pytest.approx(0.016667, abs=1e-6)
    assert d["ci95"][0] == pytest.approx(0.25 / 3 - 4.303 * 0.0166667, abs=1e-5)
    assert d["detectable"]
    noisy = paired_difference({0: 0.7, 1: 0.5, 2: 0.6}, {0: 0.6, 1: 0.6, 2: 0.6})
    assert not noisy["detectable"] and noisy["wins"] == 1


# ------------------------------------------------------------------------------------------------ arms
def test_every_arm_is_a_valid_config_and_the_closed_loop_arm_follows_the_config():
    table = arms.available_arms()
    has_control = "temperature_control" in {f.name for f in dataclasses.fields(GRPOExtConfig)}
    assert ("closed_loop" in table) == has_control
    for config in table.values():
        GRPOExtConfig(
            "out",
            num_generations=8,
            per_device_train_batch_size=8,
            report_to="none",
            use_cpu=True,
            bf16=False,
            **config,
        )
    assert table["trl"] == {}
    for arm, reference, _ in arms.COMPARISONS:
        assert arm in table or arm.startswith("closed_loop")
        assert reference in table


# ------------------------------------------------------------------------------------------------ the quick grid
@pytest.mark.slow
def test_quick_grid_writes_results_and_resumes(tmp_path):
    out = tmp_path / "exp"
    command = [sys.executable, "-m", "trl_grpo_ext", "experiment", "--quick", "--output-dir", str(out)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["missing"] == []
    assert set(results["cells"]) == {"clean", f"outliers_{results['levels']['outliers']:g}"}
    for cell in results["cells"].values():
        assert set(cell["arms"]) == {"trl", "ladder_rank"}
        for arm in cell["arms"].values():
            assert arm["seeds"] == [0, 1]
            assert all(0.0 <= acc <= 1.0 for acc in arm["test_accuracy"].values())
            assert arm["entropy_final_mean_se"][0] > 0
        assert cell["comparisons"][0]["test_accuracy"]["n"] == 2
        # Within-group diversity is recorded for every arm, the constant-temperature `trl` too, and paired.
        assert all(0 < v <= 1 for arm in cell["arms"].values() for v in arm["distinct_frac"].values())
        assert cell["comparisons"][0]["distinct_frac"]["n"] == 2
    assert (out / "plots" / "clean.png").stat().st_size > 10_000
    assert "| ladder_rank | 2 |" in (out / "results.md").read_text()
    # Both arms of one seed trained from the same cached warm start.
    assert sorted(p.name for p in (out / "warmstart").iterdir()) == ["seed0", "seed1"]

    # Resume: one run deleted, only that run trains again; the others are read back unchanged.
    runs = sorted(out.glob("runs/*/*/seed*/result.json"))
    assert len(runs) == 8
    kept = {p: p.stat().st_mtime_ns for p in runs[1:]}
    runs[0].unlink()
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert runs[0].exists()
    assert {p: p.stat().st_mtime_ns for p in runs[1:]} == kept
    assert "8/8 runs finished" in second.stdout

    # Finished runs of other settings are never mixed in silently.
    third = subprocess.run(command + ["--steps", "3"], capture_output=True, text=True, timeout=600)
    assert third.returncode != 0 and "use another `--output-dir`" in third.stderr


def test_a_finished_run_is_reused_with_more_seeds_but_refused_with_other_settings(tmp_path):
    from trl_grpo_ext.experiment.runner import QUICK_SETTINGS, run_finished, settings_fingerprint

    path = tmp_path / "result.json"
    assert not run_finished(path, QUICK_SETTINGS)
    path.write_text(json.dumps({"settings": settings_fingerprint(QUICK_SETTINGS)}))
    assert run_finished(path, dataclasses.replace(QUICK_SETTINGS, seeds=(0, 1, 2, 3)))
    with pytest.raises(ValueError, match="use another `--output-dir`"):
        run_finished(path, dataclasses.replace(QUICK_SETTINGS, grpo_steps=7))
    path.write_text(
        json.dumps({"settings": settings_fingerprint(QUICK_SETTINGS), "arm_config": {"advantage_estimator": "rank"}})
    )
    assert run_finished(path, QUICK_SETTINGS, {"advantage_estimator": "rank"})
    with pytest.raises(ValueError, match="give the changed arm a new name"):
        run_finished(path, QUICK_SETTINGS, {"advantage_estimator": "zscore"})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_command_takes_its_workers_with_it(tmp_path):
    """A timeout or a session's end kills `experiment`; its spawned workers must not keep training (they did)."""
    import os
    import time

    script = tmp_path / "pool.py"
    script.write_text(
        "import os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from multiprocessing import get_context\n"
        "from trl_grpo_ext.experiment.runner import _quiet_worker\n"
        "if __name__ == '__main__':\n"
        "    with ProcessPoolExecutor(1, mp_context=get_context('spawn'), initializer=_quiet_worker) as pool:\n"
        "        print(pool.submit(os.getpid).result(), flush=True)\n"
        "        pool.submit(time.sleep, 120).result()\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _ in range(50):
        try:
            state = next(line for line in open(f"/proc/{worker}/status") if line.startswith("State"))
        except (FileNotFoundError, StopIteration):
            break
        if "zombie" in state:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, 9)
        pytest.fail("the worker outlived the killed command")
