"""The experiment refuses results and warm starts trained with other settings; its t quantile matches the tables and
inverts the t distribution (docs/reliability.md, "Hardening 2", items 5 and 6)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest


# ------------------------------------------------------------------------------------ 5. experiment settings
def _result(spec, settings, accuracy: float) -> dict:
    from trl_grpo_ext.experiment.runner import settings_fingerprint

    return {
        **dataclasses.asdict(spec),
        "cell": spec.cell,
        "steps": settings.grpo_steps,
        "validation_accuracy": accuracy,
        "test_accuracy": accuracy,
        "curve": [{"step": 0, "accuracy": 0.3, "entropy": 1.0}, {"step": 1, "accuracy": accuracy, "entropy": 0.8}],
        "log": [{"step": 1, "reward": accuracy, "frac_reward_zero_std": 0.1}],
        "clean_accuracy_by_slot": [accuracy] * 8,
        "seconds": 1.0,
        "settings": settings_fingerprint(settings),
    }


def _write_grid(root, arm_settings: dict, accuracy: dict) -> None:
    from trl_grpo_ext.experiment.arms import ARMS
    from trl_grpo_ext.experiment.runner import RunSpec, write_json

    for arm, settings in arm_settings.items():
        for seed in (0, 1, 2):
            spec = RunSpec("clean", None, arm, ARMS[arm], seed)
            write_json(spec.directory(root) / "result.json", _result(spec, settings, accuracy[arm] + 0.01 * seed))


def test_report_only_refuses_runs_trained_with_other_settings(tmp_path, capsys):
    from trl_grpo_ext import experiment
    from trl_grpo_ext.experiment.runner import FULL_SETTINGS, with_steps

    # A 60-step trl grid, then rank runs added later with `--steps 30` in the same directory.
    _write_grid(tmp_path, {"trl": FULL_SETTINGS, "rank": with_steps(FULL_SETTINGS, 30)}, {"trl": 0.4, "rank": 0.5})
    argv = ["--output-dir", str(tmp_path), "--report-only", "--conditions", "clean", "--arms", "trl", "rank"]
    code = experiment.main(argv)
    out, err = capsys.readouterr()
    assert code != 0 and "beats" not in out and not (tmp_path / "results.md").exists()
    assert "3 of 6 finished runs were trained with other settings" in err, err
    for seed in (0, 1, 2):
        assert f"runs/clean/rank/seed{seed}" in err
    assert "runs/clean/trl" not in err and "grpo_steps: 30 in the run, 60 here" in err

    # The settings the rank runs were trained with: now the trl runs are the odd ones out.
    assert experiment.main([*argv, "--steps", "30"]) != 0
    assert "runs/clean/trl/seed0" in capsys.readouterr().err

    # One setting for every run: the report is written.
    _write_grid(tmp_path, {"rank": FULL_SETTINGS}, {"rank": 0.5})
    assert experiment.main(argv) == 0
    assert "rank beats trl by 10.0" in (tmp_path / "results.md").read_text()


def _fake_sft(monkeypatch):
    from trl_grpo_ext.experiment import runner

    def warm_start(model, tokenizer, train, validation, settings, output_dir, seed):
        output_dir.mkdir(parents=True)
        return {"sft_steps": 0}

    monkeypatch.setattr(runner, "warm_start", warm_start)
    monkeypatch.setattr(runner, "greedy_accuracy", lambda *args, **kwargs: 0.25)


def test_warm_start_records_its_settings_and_a_mismatch_is_refused(tmp_path, monkeypatch):
    from trl_grpo_ext.experiment.runner import (
        FULL_SETTINGS,
        QUICK_SETTINGS,
        warm_start_dir,
        warm_start_job,
        with_steps,
    )

    _fake_sft(monkeypatch)  # the bookkeeping is under test, not the SFT
    info = warm_start_job(tmp_path, 0, FULL_SETTINGS)
    written = json.loads((warm_start_dir(tmp_path, 0) / "warmstart.json").read_text())
    assert written == info and written["settings"]["sft_max_steps"] == FULL_SETTINGS.demo.sft_max_steps
    assert written["settings"]["num_train"] == FULL_SETTINGS.demo.num_train
    assert warm_start_job(tmp_path, 0, with_steps(FULL_SETTINGS, 30)) == info  # GRPO steps: same warm start

    # A `--quick` run pointed at the full-size directory.
    with pytest.raises(ValueError) as error:
        warm_start_job(tmp_path, 0, QUICK_SETTINGS)
    message = str(error.value)
    assert "warmstart/seed0" in message and "sft_max_steps: 600 in the warm start, 20 here" in message, message
    assert "num_train: 4000 in the warm start, 128 here" in message and "--output-dir" in message

    # A warm start written before settings were recorded cannot be checked: refused too.
    written.pop("settings")
    (warm_start_dir(tmp_path, 0) / "warmstart.json").write_text(json.dumps(written))
    with pytest.raises(ValueError, match="records no settings"):
        warm_start_job(tmp_path, 0, FULL_SETTINGS)


def test_cached_warm_start_of_other_settings_stops_the_grid_before_training(tmp_path, monkeypatch, capsys):
    from trl_grpo_ext import experiment
    from trl_grpo_ext.experiment import runner
    from trl_grpo_ext.experiment.runner import FULL_SETTINGS, warm_start_job

    _fake_sft(monkeypatch)

    def no_training(*args, **kwargs):
        raise AssertionError("the grid started training from a warm start of other settings")

    monkeypatch.setattr(runner, "ProcessPoolExecutor", no_training)
    warm_start_job(tmp_path, 0, FULL_SETTINGS)
    argv = ["--quick", "--output-dir", str(tmp_path), "--seeds", "0", "--arms", "trl", "--conditions", "clean"]
    assert experiment.main(argv) != 0
    assert "warmstart/seed0 was built with other settings" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert experiment.main([*argv, "--report-only"]) != 0  # the report's gains would use it too
    assert "warmstart/seed0 was built with other settings" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ 6. the t quantile
@pytest.mark.parametrize(
    "df, expected",
    [
        (1, 12.7062),
        (2, 4.3027),
        (5, 2.5706),
        (10, 2.2281),
        (11, 2.2010),
        (20, 2.0860),
        (30, 2.0423),
        (100, 1.9840),
        (1000, 1.9623),
    ],
)
def test_t975_matches_the_tables(df, expected):
    from trl_grpo_ext.experiment.stats import t975

    assert t975(df) == pytest.approx(expected, abs=1e-4)


def test_t975_is_the_exact_inverse_of_the_t_distribution():
    from trl_grpo_ext.experiment.stats import _t_cdf, t975

    values = [t975(df) for df in range(1, 301)]
    assert all(a > b for a, b in zip(values, values[1:]))  # decreasing toward the normal's 1.959964
    assert values[-1] > 1.959964 and t975(10**6) == pytest.approx(1.959966, abs=1e-5)
    for df in (1, 2, 3, 7, 11, 15, 29, 64, 199, 500):
        assert _t_cdf(t975(df), df) == pytest.approx(0.975, abs=1e-10)
    assert _t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)  # Cauchy: 1/2 + atan(1)/pi
    assert _t_cdf(1.0, 2) == pytest.approx(0.5 + 1 / (2 * math.sqrt(3)), abs=1e-12)  # 1/2 + t/(2 sqrt(2 + t^2))
    assert t975(1) == pytest.approx(math.tan(0.475 * math.pi), abs=1e-10)  # closed forms: Cauchy, and df = 2
    assert t975(2) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), abs=1e-10)
    assert math.isnan(t975(0))
