"""Issue "Hardening 2": defects found in the judge, the closed-loop resume and the experiment, each pinned by a test.

docs/reliability.md ("Hardening 2") lists the items with the test that holds each one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings

import pytest
from transformers import TrainerState

from tests.helpers import build_trainer, everything_shown
from tests.judge_server import FakeJudgeServer
from trl_grpo_ext.rewards import ObjectiveError, OpenAIJudge, PrinciplesObjective, guard_objective
from trl_grpo_ext.rewards.judges import DEFAULT_TEMPLATE
from trl_grpo_ext.sampling import LadderController

SECRET = "sk-hardening2-0123456789abcdef"


# ------------------------------------------------------------------------------------ 2. the judge's API key
@pytest.fixture
def server():
    with FakeJudgeServer() as running:
        yield running


def _prompt(p):
    return DEFAULT_TEMPLATE.format(prompt="q", completion=str(p), principle="Is it good?")


def _judge(server, **kwargs):
    return OpenAIJudge(**{"base_url": server.url, "model": "fake", "backoff": 0.01, "timeout": 5.0, **kwargs})


def test_api_key_read_with_a_trailing_newline_is_sent_without_it(server, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET + "\n")  # a key read from a file or a mounted secret
    judge = _judge(server, api_key_env="JUDGE_TEST_KEY", max_retries=0)
    assert judge.score([_prompt(0.3)]) == pytest.approx([0.3])
    assert server.requests[0][2]["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("bad", ["\nsuffix", "\x1bx", "\u00e9t\u00e9"])
def test_api_key_with_an_inner_control_character_is_refused_without_echo(monkeypatch, bad):
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET + bad)
    with pytest.raises(ValueError) as info:
        OpenAIJudge("http://127.0.0.1:9/v1", "m", api_key_env="JUDGE_TEST_KEY")
    message = str(info.value)
    assert "`judge.api_key_env`" in message and "'JUDGE_TEST_KEY'" in message and "printable ASCII" in message
    assert SECRET not in message and "sk-" not in message and bad.strip() not in message


def _score_guarded(judge, policy: str, caplog):
    """Score two completions through the guard under `policy`; returns (raised exception or None, the message)."""
    guarded = guard_objective("judged", PrinciplesObjective(["Is it good?"], judge, name="judged"), policy)
    if policy == "raise":
        with pytest.raises(ObjectiveError) as info:
            guarded(["q", "q"], ["0.5", "0.6"])
        return info.value, str(info.value)
    assert guarded(["q", "q"], ["0.5", "0.6"], log_metric=lambda k, v: None) == [None, None]
    return None, "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("trl_grpo_ext"))


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_a_key_read_with_a_newline_never_shows_in_errors_or_logs(server, monkeypatch, caplog, policy):
    """The key file's newline, and a server that refuses the key: every exception (chained ones included), log
    record (every logger, DEBUG up) and warning is scanned for the key, under both reward error policies."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET + "\n")
    server.default = "401"
    judge = _judge(server, api_key_env="JUDGE_TEST_KEY", max_retries=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raised, message = _score_guarded(judge, policy, caplog)
    assert "HTTP 401" in message and judge.url in message, message  # the server's answer, not a transport error
    shown = everything_shown(raised, caplog, caught)
    assert SECRET not in shown and "Bearer" not in shown
    assert len(server.requests) == 1 and server.requests[0][2]["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_a_request_that_cannot_be_sent_names_the_error_class_and_is_not_retried(server, monkeypatch, caplog, policy):
    """httpx refuses a header value (a key whose control character got past the read): the request fails at once,
    naming the error's class and the URL; nothing this package raises, logs or warns holds the key."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)
    judge = _judge(server, api_key_env="JUDGE_TEST_KEY", max_retries=3)
    judge._api_key = SECRET + "\n"  # what the old read kept from a key file
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raised, message = _score_guarded(judge, policy, caplog)
    assert "LocalProtocolError" in message and judge.url in message, message
    # httpcore's own DEBUG trace repeats the refused header; everything of this package is scanned.
    caplog.records[:] = [r for r in caplog.records if not r.name.startswith("httpcore")]
    shown = everything_shown(raised, caplog, caught)
    assert SECRET not in shown and "Bearer" not in shown
    assert judge.retries == 0 and server.requests == []  # a request that cannot be sent is not retried


def test_error_body_that_echoes_the_key_is_redacted(monkeypatch):
    """A proxy that echoes the request's headers in its error page: the snippet in the error hides the key."""
    from trl_grpo_ext.rewards.judges import http

    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)
    judge = OpenAIJudge("http://judge.invalid/v1", "m", api_key_env="JUDGE_TEST_KEY", max_retries=0)

    def echo(request):
        return http.httpx.Response(401, text=f"denied: Authorization: {request.headers['Authorization']}")

    headers = {"Authorization": f"Bearer {SECRET}"}
    judge._client = http.httpx.Client(transport=http.httpx.MockTransport(echo), headers=headers)
    (error,) = judge.score(["x"])
    assert "HTTP 401" in str(error) and "denied: Authorization: Bearer ***" in str(error)
    assert SECRET not in str(error)


# ------------------------------------------------------------------------------------ 3. closed-loop resume
CONTROL = dict(
    temperature_schedule="linear",
    temperature_control="zero_std",
    temperature_control_tolerance=0.0,
    save_strategy="steps",
    save_steps=1,
)


def _distinct_reward(completions, **kwargs):
    return [float(i) for i in range(len(completions))]  # never a silent group: the ladder cools


@pytest.fixture(scope="module")
def cooled_checkpoint(tmp_path_factory):
    """Run A: range [1, 2] (scale bounds [0.1, 1]), target 0.5, cooled to scale 0.1 in one step, saved."""
    tmp_path = tmp_path_factory.mktemp("run_a")
    trainer = build_trainer(
        tmp_path,
        reward_funcs=[_distinct_reward],
        **CONTROL,
        temperature_range=[1.0, 2.0],
        temperature_control_target=0.5,
        temperature_control_rate=10.0,
        max_steps=1,
    )
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoint-1"
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["LadderController"]
    assert saved["attributes"]["scale"] == pytest.approx(0.1) and saved["args"]["temperature_range"] == [1.0, 2.0]
    return checkpoint


@pytest.mark.parametrize("restore_callbacks", [False, True])
def test_resume_with_other_controller_settings_keeps_the_new_ones(tmp_path, cooled_checkpoint, restore_callbacks):
    """Run B resumes run A with range [0.2, 0.4] (scale bounds [0.5, 5]) and target 0.2: the saved scale 0.1 is
    clipped to 0.5, so the first resumed ladder is [0.1, 0.2] (shape kept, not [0.1, 0.1]), and B's target holds."""
    trainer = build_trainer(
        tmp_path,
        reward_funcs=[_distinct_reward],
        **CONTROL,
        temperature_range=[0.2, 0.4],
        temperature_control_target=0.2,
        temperature_control_rate=1.0,
        max_steps=2,
        restore_callback_states_from_checkpoint=restore_callbacks,
    )
    with pytest.warns(UserWarning, match=r"temperature_range \[1.0, 2.0\] -> \[0.2, 0.4\]") as record:
        trainer.train(resume_from_checkpoint=str(cooled_checkpoint))
    (warning,) = [w for w in record if "LadderController" in str(w.message)]
    assert "target 0.5 -> 0.2" in str(warning.message) and "rate 10.0 -> 1.0" in str(warning.message)
    (step_2,) = [e for e in trainer.state.log_history if e.get("step") == 2 and "ladder/t_min" in e]  # 1 is A's
    assert (step_2["ladder/t_min"], step_2["ladder/t_max"]) == pytest.approx((0.1, 0.2))  # before: (0.1, 0.1)
    assert step_2["ladder/zero_std_target"] == 0.2
    controller = trainer.ladder_controller
    assert (controller.temperature_range, controller.target, controller.rate) == ([0.2, 0.4], 0.2, 1.0)
    assert controller.updates == 2 and controller.scale == pytest.approx(0.5)  # colder, but held at B's floor
    saved = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["LadderController"]["args"]["temperature_range"] == [0.2, 0.4]


def test_controller_restore_compares_the_recorded_settings(tmp_path):
    """Callback level, both of transformers' paths: equal settings restore exactly and silently; other settings
    keep the new ones, clip the scale into the new bounds and warn, even when the controller was rebuilt from the
    checkpoint's args (`restore_callback_states_from_checkpoint`)."""
    from tests.helpers import tiny_args

    old = LadderController([1.0, 2.0], [0.1, 2.0], target=0.5, rate=0.7, tolerance=0.1)
    for _ in range(12):
        old.update(0.0)
    assert old.scale == pytest.approx(0.1)
    TrainerState(stateful_callbacks=[old]).save_to_json(str(tmp_path / "trainer_state.json"))

    same = LadderController([1.0, 2.0], [0.1, 2.0], target=0.5, rate=0.7, tolerance=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same.on_train_begin(None, TrainerState.load_from_json(str(tmp_path / "trainer_state.json")), None)
    assert same.state() == old.state()

    new_args = tiny_args(
        tmp_path,
        temperature_schedule="linear",
        temperature_control="zero_std",
        temperature_range=[0.2, 0.4],
        temperature_control_target=0.2,
    )
    saved = json.loads((tmp_path / "trainer_state.json").read_text())["stateful_callbacks"]["LadderController"]
    for controller in (LadderController.from_config(new_args), LadderController.from_state(saved)):
        with pytest.warns(UserWarning, match="other settings") as record:
            controller.on_train_begin(
                new_args, TrainerState.load_from_json(str(tmp_path / "trainer_state.json")), None
            )
        message = str(record[0].message)
        for change in ("temperature_range [1.0, 2.0] -> [0.2, 0.4]", "target 0.5 -> 0.2", "rate 0.7 -> 0.5"):
            assert change in message, message
        assert "clipped" in message and "0.5" in message
        assert controller.temperature_range == [0.2, 0.4] and controller.target == 0.2 and controller.rate == 0.5
        assert controller.scale == pytest.approx(0.5) and controller.updates == 12
        assert controller.apply([0.2, 0.3, 0.4]) == pytest.approx([0.1, 0.15, 0.2])


# ------------------------------------------------------------------------------------ 5. experiment settings
def _result(spec, settings, accuracy: float) -> dict:
    from trl_grpo_ext.experiment.runner import _fingerprint

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
        "settings": _fingerprint(settings),
    }


def _write_grid(root, arm_settings: dict, accuracy: dict) -> None:
    from trl_grpo_ext.experiment.arms import ARMS
    from trl_grpo_ext.experiment.runner import RunSpec, _write_json

    for arm, settings in arm_settings.items():
        for seed in (0, 1, 2):
            spec = RunSpec("clean", None, arm, ARMS[arm], seed)
            _write_json(spec.directory(root) / "result.json", _result(spec, settings, accuracy[arm] + 0.01 * seed))


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
    from trl_grpo_ext import demo

    def warm_start(model, tokenizer, train, validation, settings, output_dir, seed):
        output_dir.mkdir(parents=True)
        return {"sft_steps": 0}

    monkeypatch.setattr(demo, "warm_start", warm_start)
    monkeypatch.setattr(demo, "greedy_accuracy", lambda *args, **kwargs: 0.25)


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
