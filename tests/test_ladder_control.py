"""The closed-loop ladder (`temperature_control="zero_std"`): the law, its validation, and real tiny training runs.

Runs are 3 steps on the tiny kit (about 1 s a step on 2 shared cores); the resume test is marked slow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import TrainerState

from tests.helpers import build_trainer, digit_reward, last_logged, prompt_dataset, tiny_args, tiny_tokenizer_cached
from trl_grpo_ext import GRPOExtConfig, GRPOExtTrainer
from trl_grpo_ext.kit import resolve_model_path
from trl_grpo_ext.report import write_report
from trl_grpo_ext.sampling import LadderController, next_scale, zero_std_fraction

CONTROL = dict(temperature_schedule="linear", temperature_control="zero_std", temperature_control_target=0.2)


# ---------------------------------------------------------------------------------------------------- the signal
def test_zero_std_fraction_golden_numbers():
    # Two objectives, weights (1, 0.5); groups of 3. Group 0: weighted 1.5, 1.5, 1.5 (equal although the columns
    # differ row to row); group 1: 1.0, 0.5, 1.0; group 2: one unscorable row (all NaN) and two equal ones.
    rewards = torch.tensor(
        [
            [1.0, 1.0],
            [0.5, 2.0],
            [1.5, 0.0],
            [1.0, 0.0],
            [0.0, 1.0],
            [1.0, 0.0],
            [math.nan, math.nan],
            [0.2, math.nan],
            [0.2, math.nan],
        ]
    )
    assert zero_std_fraction(rewards, torch.tensor([1.0, 0.5]), num_generations=3) == pytest.approx(2 / 3)
    assert zero_std_fraction(rewards, torch.tensor([1.0, 0.0]), num_generations=3) == pytest.approx(1 / 3)
    assert zero_std_fraction(rewards[:2], torch.tensor([1.0, 0.5]), num_generations=1) == 1.0
    with pytest.raises(ValueError, match="whole groups of num_generations=4"):
        zero_std_fraction(rewards, torch.tensor([1.0, 0.5]), num_generations=4)


# ---------------------------------------------------------------------------------------------------- the law
def test_next_scale_golden_numbers():
    law = dict(target=0.2, rate=0.5, tolerance=0.05, bounds=(0.25, 4.0))
    assert next_scale(1.0, 1.0, **law) == pytest.approx(math.exp(0.5 * 0.75))  # error 0.8, band 0.05 off
    assert next_scale(1.0, 0.0, **law) == pytest.approx(math.exp(-0.5 * 0.15))
    assert next_scale(2.0, 0.25, **law) == 2.0  # on the band's edge: no move
    assert next_scale(3.9, 1.0, **law) == 4.0  # clipped at the top
    assert next_scale(0.26, 0.0, **{**law, "rate": 10.0}) == 0.25  # and at the bottom
    assert next_scale(1.5, math.nan, **law) == 1.5  # nothing measured: no move


@settings(max_examples=300, deadline=None)
@given(
    scale=st.floats(0.2, 5.0),
    low=st.floats(0.0, 1.0),
    high=st.floats(0.0, 1.0),
    target=st.floats(0.0, 0.99),
    rate=st.floats(0.01, 10.0),
    tolerance=st.floats(0.0, 0.5),
)
def test_next_scale_properties(scale, low, high, target, rate, tolerance):
    low, high = sorted((low, high))
    law = dict(target=target, rate=rate, tolerance=tolerance, bounds=(0.2, 5.0))
    after_low, after_high = next_scale(scale, low, **law), next_scale(scale, high, **law)
    assert 0.2 <= after_low <= after_high <= 5.0  # inside the bounds, and monotone in the signal
    if high < target - tolerance:
        assert after_high <= scale  # fewer silent groups than wanted: never hotter
    if low > target + tolerance:
        assert after_low >= scale  # more silent groups than wanted: never colder
    if abs(low - target) <= tolerance:
        assert after_low == scale  # inside the band: no move


def test_controller_keeps_the_ladder_shape_inside_the_bounds():
    control = LadderController([0.2, 0.4], [0.1, 1.0], target=0.2, rate=3.0)
    assert control.scale_bounds == (0.5, 2.5)
    ladders = []
    for signal in [1.0] * 4 + [0.0] * 8:
        control.update(signal)
        ladders.append(control.apply([0.2, 0.3, 0.4]))
    assert ladders[3] == pytest.approx([0.5, 0.75, 1.0])  # hot end at the ceiling, shape kept
    assert ladders[-1] == pytest.approx([0.1, 0.15, 0.2])  # cold end at the floor
    assert all(0.1 <= t <= 1.0 for ladder in ladders for t in ladder)
    assert all(ladder[2] / ladder[0] == pytest.approx(2.0) for ladder in ladders)
    # No wind-up: one batch above the target after sitting at the floor moves it up at once.
    assert control.update(1.0) > control.scale_bounds[0]


def test_controller_state_round_trips_through_a_trainer_state(tmp_path):
    control = LadderController([0.5, 1.0], [0.1, 2.0], target=0.3, rate=0.7, tolerance=0.1)
    control.update(0.9)
    state = TrainerState(stateful_callbacks=[control])
    state.save_to_json(str(tmp_path / "trainer_state.json"))
    restored = LadderController([0.5, 1.0], [0.1, 2.0], target=0.3, rate=0.7, tolerance=0.1)
    restored.on_train_begin(None, TrainerState.load_from_json(str(tmp_path / "trainer_state.json")), None)
    assert (restored.scale, restored.updates, restored.last_signal) == (control.scale, 1, 0.9)
    # transformers' own restore path (`restore_callback_states_from_checkpoint`): type(cb)(**args) + attributes.
    saved = json.loads((tmp_path / "trainer_state.json").read_text())["stateful_callbacks"]["LadderController"]
    rebuilt = LadderController.from_state(saved)
    assert rebuilt.state() == control.state()


# ---------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(temperature_control="pid"), r"`temperature_control` must be one of \['none', 'zero_std'\], got 'pid'"),
        (dict(temperature_control_target=1.0), r"`temperature_control_target` must be in \[0, 1\), got 1.0"),
        (
            dict(temperature_control_rate=0.0),
            r"`temperature_control_rate` must be a finite number > 0 and <= 10 \(.*\), got 0.0",
        ),
        (dict(temperature_control_tolerance=-0.1), r"`temperature_control_tolerance` must be in \[0, 1\), got -0.1"),
        (
            dict(temperature_bounds=[2.0, 1.0]),
            r"`temperature_bounds` must satisfy t_floor <= t_ceiling, got \[2.0, 1.0\]",
        ),
        (
            dict(temperature_control_rate="fast"),
            r"`temperature_control_rate` must be a finite number > 0 and <= 10 \(.*\), got 'fast'",
        ),
        (dict(temperature_schedule="constant"), r"needs a ladder: set `temperature_schedule`"),
        (dict(group_temperatures=[0.5, 1.0, 1.0, 1.5]), r"cannot be combined with explicit `group_temperatures`"),
        (dict(temperature_range_final=[0.5, 0.9]), r"cannot be combined with the step schedule"),
        (dict(temperature_bounds=[0.8, 2.0]), r"`temperature_bounds` \[0.8, 2.0\] must contain `temperature_range`"),
        (
            dict(use_vllm=True, temperature_bounds=[0.1, 3.0]),
            r"`temperature_bounds` \[0.1, 3.0\] is outside vLLM's temperature range \[0.01, 2.0\]",
        ),
        (
            dict(use_vllm=True, temperature_bounds=[0.005, 2.0]),
            r"`temperature_bounds` \[0.005, 2.0\] is outside vLLM's temperature range \[0.01, 2.0\]",
        ),
    ],
)
def test_config_refuses(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_args(tmp_path, **{**CONTROL, **overrides})


def test_config_accepts_plain_kwargs_and_json_strings(tmp_path):
    args = tiny_args(tmp_path, **{**CONTROL, "temperature_bounds": "[0.05, 1.5]", "temperature_control_target": 0})
    assert args.temperature_bounds == [0.05, 1.5] and args.temperature_control_target == 0.0
    defaults = GRPOExtConfig(str(tmp_path), use_cpu=True, bf16=False)
    assert defaults.temperature_control == "none"
    assert (defaults.temperature_control_target, defaults.temperature_control_rate) == (0.5, 0.5)
    assert (defaults.temperature_control_tolerance, defaults.temperature_bounds) == (0.05, [0.1, 2.0])


# ---------------------------------------------------------------------------------------------------- training runs
def _run(tmp_path, reward_funcs, **overrides):
    trainer = build_trainer(tmp_path, reward_funcs=reward_funcs, **{**CONTROL, **overrides})
    trainer.train()
    history = trainer.state.log_history
    ends = list(zip(last_logged(history, "ladder/t_min"), last_logged(history, "ladder/t_max")))
    return trainer, history, ends, last_logged(history, "ladder/zero_std_frac")


def test_near_greedy_start_heats_up_until_groups_differ(tmp_path):
    """At T ~ 0.01 every group's 4 completions are the same text: all groups silent. The ladder heats up by
    exp(rate * (1 - 0.2 - 0.05)) per batch until the fraction is back in the target band."""
    trainer, history, ends, signal = _run(
        tmp_path,
        [digit_reward],
        temperature_range=[0.01, 0.02],
        temperature_bounds=[0.01, 2.0],
        temperature_control_rate=2.0,
    )
    assert signal[0] == 1.0 and last_logged(history, "ladder/distinct_frac")[0] == 0.25  # identical completions
    assert signal == last_logged(history, "frac_reward_zero_std")  # the same number TRL logs
    assert last_logged(history, "ladder/zero_std_target") == [0.2, 0.2, 0.2]
    assert ends[0] == pytest.approx((0.01, 0.02))
    factor = math.exp(2.0 * 0.75)
    hot = [i for i, z in enumerate(signal) if z > 0.25]
    assert hot and hot == list(range(len(hot)))  # silent from the start until it is not
    for i in hot[:-1] if len(hot) == len(signal) else hot:
        assert ends[i + 1][0] == pytest.approx(ends[i][0] * factor)  # hotter by exactly the law's factor
    assert signal[-1] <= 0.25, f"still silent after {len(signal)} batches: {signal}, ladder {ends}"
    assert all(t_max / t_min == pytest.approx(2.0) for t_min, t_max in ends)
    assert trainer.ladder_controller.updates == 3

    # `trl-grpo-ext report` plots the ladder's ends against the signal.
    trainer.save_state()
    paths = {path.name: path for path in write_report(trainer.args.output_dir)}
    assert paths["ladder_control.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = paths["report.md"].read_text()
    assert f"| `ladder/zero_std_frac` | 1 | {signal[-1]:.4g} |" in markdown
    assert "](ladder_control.png)" in markdown


def test_hot_start_with_varied_groups_cools_down(tmp_path):
    trainer, history, ends, signal = _run(
        tmp_path,
        [digit_reward],
        temperature_range=[1.5, 2.0],
        temperature_control_rate=1.0,
    )
    assert signal == [0.0, 0.0, 0.0]  # random completions at T >= 1.5 always differ in digits
    assert [t_max for _, t_max in ends] == pytest.approx([2.0, 2.0 * math.exp(-0.15), 2.0 * math.exp(-0.3)])
    assert trainer.ladder_controller.scale == pytest.approx(math.exp(-0.45))


def _constant_reward(completions, **kwargs):
    return [1.0] * len(completions)


def _distinct_reward(completions, **kwargs):
    return [float(i) for i in range(len(completions))]


@pytest.mark.parametrize(
    "reward, expected_ends",
    [
        (_constant_reward, [(0.2, 0.4), (0.4, 0.8), (0.4, 0.8)]),  # always silent: up to the ceiling, and stays
        (_distinct_reward, [(0.2, 0.4), (0.1, 0.2), (0.1, 0.2)]),  # never silent: down to the floor, and stays
    ],
)
def test_ladder_stays_within_its_bounds(tmp_path, reward, expected_ends):
    _, _, ends, _ = _run(
        tmp_path,
        [reward],
        temperature_range=[0.2, 0.4],
        temperature_bounds=[0.1, 0.8],
        temperature_control_rate=5.0,
        temperature_control_tolerance=0.0,
    )
    assert [t for pair in ends for t in pair] == pytest.approx([t for pair in expected_ends for t in pair])


def test_one_update_per_generation_batch_and_a_fixed_eval_ladder(tmp_path):
    """steps_per_generation=2 and num_iterations=2: 4 optimizer steps reuse one generation batch, so a 4-step run
    generates once and the ladder moves once; evaluation samples at `temperature_range`'s ladder."""
    trainer = GRPOExtTrainer(
        model=resolve_model_path("tiny:tiny"),
        reward_funcs=[_constant_reward],
        args=tiny_args(
            tmp_path,
            **CONTROL,
            temperature_range=[0.2, 0.4],
            temperature_bounds=[0.1, 0.8],
            steps_per_generation=2,
            num_iterations=2,
            per_device_train_batch_size=2,
            max_steps=4,
            eval_strategy="steps",
            eval_steps=4,
            per_device_eval_batch_size=4,
        ),
        train_dataset=prompt_dataset(16),
        eval_dataset=prompt_dataset(4),
        processing_class=tiny_tokenizer_cached(),
    )
    trainer.train()
    history = trainer.state.log_history
    assert trainer.ladder_controller.updates == 1
    assert [e["step"] for e in history if "ladder/t_min" in e] == [1]
    assert trainer.ladder_controller.scale == pytest.approx(math.exp(0.5 * 0.75))
    evaluated = [e for e in history if "eval_ladder/t_min" in e]
    assert evaluated and all((e["eval_ladder/t_min"], e["eval_ladder/t_max"]) == (0.2, 0.4) for e in evaluated)
    assert not any("eval_ladder/zero_std_frac" in e for e in history)


# ---------------------------------------------------------------------------------------------------- resume
@pytest.mark.slow
def test_resumed_run_continues_with_the_same_ladder(tmp_path):
    """Stopped after step 3 and resumed: steps 4-6 log what the uninterrupted run logs, ladder included, with the
    controller restored from trainer_state.json (and through transformers' own callback restore too)."""
    from tests.dist import train_tiny as run
    from tests.test_resume import StopAfter, _assert_same, _step_entries

    model_path = resolve_model_path("tiny:tiny")
    kwargs = dict(
        max_steps=6,
        save_steps=3,
        temperature_range=[0.01, 0.02],
        temperature_range_final=None,
        temperature_control="zero_std",
        temperature_control_rate=2.0,
        temperature_bounds=[0.01, 2.0],
    )
    uninterrupted = run.build_trainer(tmp_path / "uninterrupted", model_path, **kwargs)
    uninterrupted.train()
    interrupted = run.build_trainer(tmp_path / "resumed", model_path, callbacks=[StopAfter(3)], **kwargs)
    interrupted.train()
    checkpoint = tmp_path / "resumed" / "checkpoint-3"
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["LadderController"]
    assert saved["attributes"]["updates"] == 3
    assert saved["attributes"]["scale"] == interrupted.ladder_controller.scale != 1.0

    expected = _step_entries(uninterrupted.state.log_history, range(4, 7))
    assert expected[4]["ladder/t_min"] != 0.01  # the ladder had moved: a reset would show
    for restore in (False, True):
        resumed = run.build_trainer(
            tmp_path / f"resumed-{restore}", model_path, restore_callback_states_from_checkpoint=restore, **kwargs
        )
        resumed.train(resume_from_checkpoint=str(checkpoint))
        actual = _step_entries(resumed.state.log_history, range(4, 7))
        for step in range(4, 7):
            _assert_same(expected[step], actual[step])
        assert resumed.ladder_controller.state() == uninterrupted.ladder_controller.state()
        assert list(resumed._logs["completion"]) == list(uninterrupted._logs["completion"])


# ---------------------------------------------------------------------------------------------------- 2 processes
@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_move_the_same_ladder_as_one_would(tmp_path, monkeypatch):
    """torchrun, 2 CPU processes, a group straddling them: every process samples at the same ladder, and that ladder
    is what one process computes from the gathered rewards (tests/dist/record_control.py)."""
    from tests.dist import record_control as run
    from tests.helpers import run_torchrun

    model_path = resolve_model_path("tiny:tiny")  # materialised once, here, not by two racing processes
    run_torchrun("tests/dist/record_control.py", tmp_path, model_path)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]

    K, rows = run.NUM_GENERATIONS, run.PER_DEVICE_BATCH
    one = LadderController(
        run.CONFIG["temperature_range"], run.CONFIG["temperature_bounds"], target=0.2, rate=2.0, tolerance=0.05
    )
    assert run.CONFIG["temperature_control_target"] == 0.2
    signals = []
    for batch in zip(*(r["records"] for r in ranks)):
        assert [rec["process_index"] for rec in batch] == [0, 1]
        assert batch[0]["rewards_per_func"] == batch[1]["rewards_per_func"]  # gathered: the global batch
        ladder = one.apply([0.01 + 0.01 * i / (K - 1) for i in range(K)])
        for rec in batch:  # global row g sits in slot g mod K
            expected = [ladder[(rec["process_index"] * rows + j) % K] for j in range(rows)]
            assert rec["temperatures"] == pytest.approx(expected, rel=1e-6)
        signal = zero_std_fraction(torch.tensor(batch[0]["rewards_per_func"]), torch.tensor([1.0]), K)
        signals.append(signal)
        one.update(signal)
        assert batch[0]["scale_after"] == batch[1]["scale_after"] == pytest.approx(one.scale, rel=1e-12)
    assert len(signals) == run.MAX_STEPS and signals[0] == 1.0 and one.scale > 1.0  # the ladder did move
    logged = [e["ladder/zero_std_frac"] for e in ranks[0]["log_history"] if "ladder/zero_std_frac" in e]
    assert logged == pytest.approx(signals)


# ---------------------------------------------------------------------------------------------------- the demo
def test_demo_closed_loop_arm_trains_with_the_controller(tmp_path, monkeypatch):
    from trl_grpo_ext import demos
    from trl_grpo_ext.demos import tiny
    from trl_grpo_ext.kit.tasks import reversal_dataset
    from trl_grpo_ext.kit.tiny import build_tiny_model

    seen = {}
    monkeypatch.setattr(tiny, "run_demo", lambda output_dir, **kwargs: seen.update(kwargs))
    assert demos.main(["--closed-loop", "--quick", "--output-dir", str(tmp_path)]) == 0
    assert seen["closed_loop"] is True and seen["compare"] is False and seen["control_target"] is None

    settings = tiny.DemoSettings(grpo_steps=2, grpo_batch_size=16, logging_steps=1)
    tokenizer = tiny_tokenizer_cached()
    trainer, _ = tiny.train_grpo(
        build_tiny_model(tokenizer, size="tiny", seed=0),
        tokenizer,
        reversal_dataset(32, seed=0, split="train", min_length=3, max_length=4),
        settings,
        tmp_path / "grpo",
        seed=0,
        closed_loop=True,
    )
    assert trainer.args.temperature_control == "zero_std"
    assert trainer.ladder_controller.updates == 2
    assert len(last_logged(trainer.state.log_history, "ladder/zero_std_frac")) == 2


# ---------------------------------------------------------------------------------------------------- command line
def test_cli_dry_run_takes_the_controller_fields(capsys):
    from trl_grpo_ext import cli

    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "cpu-offline.yaml")
    flags = ["--temperature_control", "zero_std", "--temperature_bounds", "0.2", "1.5"]
    code = cli.main(["train", "--config", recipe, "--dry-run", *flags, "--temperature_control_target", "0.3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "closed loop (zero_std): scaled toward 0.3 +- 0.05 at rate 0.5, within [0.2, 1.5]" in out
    code = cli.main(["train", "--config", recipe, "--dry-run", *flags])
    assert "scaled toward 0.5 +- 0.05" in capsys.readouterr().out

    code = cli.main(["train", "--config", recipe, "--dry-run", *flags, "--temperature_control_rate", "-1"])
    assert code != 0
    assert (
        "`temperature_control_rate` must be a finite number > 0 and <= 10 (the error is in [-1, 1], so 10 already "
        "moves the ladder up to exp(10) ~ 22000x per batch), got -1.0" in capsys.readouterr().err
    )


def test_docs_example_runs_as_written(tmp_path, monkeypatch):
    import re

    docs = (Path(__file__).resolve().parents[1] / "docs" / "ladder.md").read_text()
    section = docs.split("## Closed-loop ladder", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # The example is written for an accelerator machine; TRL refuses its bf16 default on a CPU-only one.
    code = code.replace('"runs/closed-loop", ', '"runs/closed-loop", use_cpu=True, bf16=False, ')
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "docs/ladder.md", "exec"), namespace)
    assert namespace["args"].temperature_control == "zero_std"
    assert namespace["control"].scale == pytest.approx(math.exp(0.25))
    assert namespace["control"].apply([0.7, 0.8, 0.9, 1.0]) == pytest.approx([0.8988, 1.0272, 1.1556, 1.284], abs=1e-4)
