"""Robustness of the closed-loop ladder, the recipe loader and the experiment harness against hostile inputs.

The controller's gain is bounded and its update cannot overflow; a batch with nothing scored leaves the ladder where
it is; a recipe that is not a mapping of names to values is one `error:` line; runs at levels that only differ past
six significant digits are distinct runs, and a `result.json` that records no settings is never taken as finished.

Module-level imports stay light: the experiment test's spawned worker imports this module to run `_record_run_job`.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

CONTROL = dict(temperature_schedule="linear", temperature_control="zero_std", temperature_control_target=0.2)


# ------------------------------------------------------------------------------------------------ the controller's gain
@pytest.mark.parametrize("rate", [1000.0, 10.5])
def test_config_refuses_a_control_rate_above_the_documented_range(tmp_path, rate):
    from tests.helpers import tiny_args

    with pytest.raises(
        ValueError,
        match=r"`temperature_control_rate` must be a finite number > 0 and <= 10 \(the error is in \[-1, 1\], so 10 already "
        r"moves the ladder up to exp\(10\) ~ 22000x per batch\), got ",
    ):
        tiny_args(tmp_path, **CONTROL, temperature_control_rate=rate)
    assert tiny_args(tmp_path, **CONTROL, temperature_control_rate=10).temperature_control_rate == 10.0


def test_controller_refuses_a_rate_outside_the_documented_range():
    from trl_grpo_ext.sampling import LadderController

    for rate in (1000.0, 0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match=r"`rate` must be in \(0, 10\]"):
            LadderController([0.5, 1.0], [0.1, 2.0], target=0.2, rate=rate)


@pytest.mark.parametrize("rate", [1000.0, 1e308, math.inf])
def test_the_update_returns_the_bound_instead_of_overflowing(rate):
    from trl_grpo_ext.sampling import next_scale

    law = dict(tolerance=0.0, bounds=(0.25, 4.0))
    assert next_scale(1.0, 1.0, target=0.0, rate=rate, **law) == 4.0  # error +1: at the ceiling, exactly
    assert next_scale(1.0, 0.0, target=0.99, rate=rate, **law) == 0.25  # error -0.99: at the floor, exactly
    assert next_scale(2.0, 0.5, target=0.5, rate=rate, **law) == 2.0  # no error: no move, whatever the gain


def test_the_bounded_update_keeps_the_numbers_of_the_law():
    from trl_grpo_ext.sampling import next_scale

    law = dict(target=0.2, rate=0.5, tolerance=0.05, bounds=(0.25, 4.0))
    assert next_scale(1.0, 1.0, **law) == 1.0 * math.exp(0.5 * 0.75)  # bit for bit the unclipped step
    assert next_scale(3.0, 0.0, **law) == 3.0 * math.exp(-0.5 * 0.15)
    assert next_scale(3.9, 1.0, **law) == 4.0


# ---------------------------------------------------------------------------------------------- nothing scored
def _trl_frac_reward_zero_std(rewards_per_func, reward_weights, num_generations: int) -> float:
    """TRL 1.16's `frac_reward_zero_std` (`_generate_and_score_completions`, sum_then_normalize, scale "group")."""
    import torch
    from trl.trainer.utils import nanstd

    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * reward_weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = torch.nan
    std = nanstd(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations, dim=0)
    return torch.isclose(std, torch.zeros_like(std)).float().mean().item()


def test_zero_std_fraction_is_trls_number_for_scorable_rewards():
    import torch

    from trl_grpo_ext.sampling import zero_std_fraction

    generator = torch.Generator().manual_seed(0)
    weights = torch.tensor([1.0, 0.5])
    for _ in range(50):
        rewards = torch.randint(0, 3, (6 * 4, 2), generator=generator).float()  # ties: some groups are silent
        rewards[torch.rand(rewards.shape, generator=generator) < 0.2] = math.nan  # some objectives unscorable
        rewards[torch.isnan(rewards).all(dim=1), 0] = 1.0  # ... but every completion has a reward
        assert zero_std_fraction(rewards, weights, 4) == _trl_frac_reward_zero_std(rewards, weights, 4)


def test_zero_std_fraction_measures_only_groups_with_a_defined_spread():
    import torch

    from trl_grpo_ext.sampling import zero_std_fraction

    nan = math.nan
    rewards = torch.tensor(
        [
            [nan, nan], [nan, nan], [nan, nan],  # group 0: nothing scored          -> not measured
            [0.3, nan], [nan, nan], [nan, nan],  # group 1: one scored completion    -> not measured (no spread)
            [0.3, nan], [nan, 0.6], [nan, nan],  # group 2: two equal weighted ones  -> measured, silent
            [0.3, nan], [0.4, nan], [nan, nan],  # group 3: two different ones       -> measured, not silent
        ]
    )  # fmt: skip
    weights = torch.tensor([1.0, 0.5])
    assert zero_std_fraction(rewards, weights, 3) == 0.5  # 1 silent of the 2 measured groups
    assert math.isnan(zero_std_fraction(rewards[:6], weights, 3))  # no group measured
    assert _trl_frac_reward_zero_std(rewards, weights, 3) == 0.25  # TRL counts the unmeasured ones as not silent


def test_ten_batches_with_every_reward_unscorable_leave_the_ladder_exactly_where_it_was():
    import torch

    from trl_grpo_ext.sampling import LadderController, zero_std_fraction

    control = LadderController([0.5, 1.0], [0.1, 2.0], target=0.5, rate=0.5, tolerance=0.05)
    ladder = [0.5, 0.75, 1.0]
    control.update(1.0)  # one real measurement first: the ladder is off scale 1
    before_scale, before_ladder = control.scale, control.apply(ladder)
    outage = torch.full((8 * 4, 2), math.nan)  # a judge outage under the `skip` policy: every reward NaN
    for _ in range(10):
        control.update(zero_std_fraction(outage, torch.tensor([1.0, 1.0]), num_generations=4))
    assert control.scale == before_scale
    assert control.apply(ladder) == before_ladder
    assert control.last_signal is None


def test_training_with_every_reward_unscorable_keeps_the_configured_ladder(tmp_path):
    from tests.helpers import build_trainer, last_logged

    def unscorable(completions, **kwargs):  # every completion unscored, as under a judge outage
        return [None] * len(completions)

    trainer = build_trainer(
        tmp_path, reward_funcs=[unscorable], temperature_range=[0.5, 1.0], temperature_bounds=[0.1, 2.0], **CONTROL
    )
    trainer.train()
    history = trainer.state.log_history
    assert last_logged(history, "ladder/t_min") == [0.5, 0.5, 0.5]
    assert last_logged(history, "ladder/t_max") == [1.0, 1.0, 1.0]
    assert trainer.ladder_controller.scale == 1.0


# ------------------------------------------------------------------------------------------------ the recipe
BASE = """\
model_name_or_path: tiny:tiny
dataset_preset: arithmetic
use_cpu: true
bf16: false
per_device_train_batch_size: 4
num_generations: 4
reward_objectives: {accuracy: 1.0}
"""


def _train(capsys, tmp_path, text: str):
    from trl_grpo_ext import cli

    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    code = cli.main(["train", "--config", str(path), "--dry-run"])
    return code, capsys.readouterr().err, str(path)


@pytest.mark.parametrize(
    "extra, key",
    [("1: 2\n", "1"), ("on: 1\n", "True"), ("null: 1\n", "None"), ("1.5: 1\n", "1.5")],
)
def test_a_recipe_key_that_is_not_a_name_is_one_error_line(capsys, tmp_path, extra, key):
    code, err, path = _train(capsys, tmp_path, BASE + extra)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert f"recipe key {key}" in err and path in err and "quote it" in err


def test_an_env_variable_name_that_is_not_a_string_is_one_error_line(capsys, tmp_path):
    code, err, path = _train(capsys, tmp_path, BASE + "env:\n  1: x\n")
    assert code == 2
    assert err.count("\n") == 1 and "`env` variable name 1" in err and path in err


@pytest.mark.parametrize(
    "text, kind",
    [
        ("- model_name_or_path: tiny:tiny\n", "a list"),
        ("tiny:tiny\n", "a str"),
        ("", "an empty file"),
        ("3\n", "an int"),
    ],
)
def test_a_recipe_that_is_not_a_mapping_is_one_error_line(capsys, tmp_path, text, kind):
    code, err, path = _train(capsys, tmp_path, text)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert f"the recipe {path} must be a mapping of keys to values" in err and f"got {kind}" in err


def test_a_config_flag_without_a_path_is_one_error_line(capsys):
    from trl_grpo_ext import cli

    assert cli.main(["train", "--dry-run", "--config"]) == 2
    err = capsys.readouterr().err
    assert err == "error: `--config` needs the path of a recipe: trl-grpo-ext train --config X.yaml.\n"


def test_an_integer_recipe_key_through_the_installed_command(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(BASE + "1: 2\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "trl_grpo_ext", "train", "--config", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"error: recipe key 1 in {path} is not a name" in done.stderr


# ------------------------------------------------------------------------------------------- the experiment grid
def _start_record(root: Path, seed: int) -> Path:
    return root / "start" / f"seed{seed}.json"


def _check_start(path: Path, settings) -> dict:
    return json.loads(path.read_text())


def _start_job(root: Path, seed: int, settings) -> dict:
    path = _start_record(root, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return {}


def _record_run_job(root: Path, spec, settings, group: str = "runs") -> dict:
    """A run that trains nothing: it writes the result the real runs write (the spec and the settings)."""
    from trl_grpo_ext.experiment.runner import settings_fingerprint, write_json

    result = {**asdict(spec), "cell": spec.cell, "seconds": 0.0, "settings": settings_fingerprint(settings)}
    write_json(spec.directory(root, group) / "result.json", result)
    return result


def test_levels_that_differ_past_six_digits_are_separate_runs(tmp_path):
    from trl_grpo_ext.experiment.runner import QUICK_SETTINGS, RunSpec, Task, execute

    task = Task(_start_record, _check_start, _start_job, _record_run_job)
    first = RunSpec("outliers", 0.1, "trl", {}, 0)
    (done,) = execute(tmp_path, QUICK_SETTINGS, [first], workers=1, task=task)
    assert done["level"] == 0.1
    close = RunSpec("outliers", 0.1000001, "trl", {}, 0)
    results = list(execute(tmp_path, QUICK_SETTINGS, [first, close], workers=1, task=task))
    assert sorted(r["level"] for r in results) == [0.1, 0.1000001]
    assert first.directory(tmp_path) != close.directory(tmp_path)
    assert first.cell == "outliers_0.1"  # a level that six digits give exactly keeps its short name


def test_a_result_that_records_no_settings_is_not_finished(tmp_path):
    from trl_grpo_ext.experiment import _finished_results
    from trl_grpo_ext.experiment.runner import QUICK_SETTINGS, RunSpec, SettingsMismatch, Task, execute, run_finished

    spec = RunSpec("clean", None, "trl", {}, 0)
    path = spec.directory(tmp_path) / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**asdict(spec), "cell": spec.cell, "test_accuracy": 0.9}))
    with pytest.raises(SettingsMismatch, match="records no settings"):
        run_finished(path, QUICK_SETTINGS, spec.arm_config)
    task = Task(_start_record, _check_start, _start_job, _record_run_job)
    with pytest.raises(SettingsMismatch, match=re.escape(f"{path} records no settings")):
        list(execute(tmp_path, QUICK_SETTINGS, [spec], workers=1, task=task))
    with pytest.raises(SettingsMismatch, match="settings: none recorded in the run"):  # --report-only
        _finished_results(tmp_path, QUICK_SETTINGS, [spec])
