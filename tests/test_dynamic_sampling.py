"""`dynamic_sampling`: groups whose rewards are all equal replaced by groups of new prompts (sampling/dynamic.py).

The pure functions with exact examples; the merge of rounds on global positions simulated over two processes; the
trainer on the tiny kit (every trained group teaches while rounds are left, the round limit, resume, composition with
the ladder, estimators, objectives and the exact speed options); 2 processes decide as 1 (torchrun).
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest
import torch
from datasets import IterableDataset
from transformers import TrainerCallback

from tests.helpers import prompt_dataset, run_torchrun, tiny_args, tiny_model, tiny_tokenizer_cached
from trl_grpo_ext import GRPOExtConfig, GRPOExtTrainer
from trl_grpo_ext.kit import resolve_model_path
from trl_grpo_ext.rewards import WeightedReward
from trl_grpo_ext.sampling import RefillSampler, dynamic, fill_batch, zero_std_fraction

K = 4


def test_docstring_examples_are_exact():
    assert doctest.testmod(dynamic, raise_on_error=False).failed == 0


def test_zero_std_fraction_and_the_tied_groups_are_one_definition():
    rewards = torch.tensor([[1.0], [1.0], [0.0], [1.0], [0.5], [0.5], [float("nan")], [2.0]])
    tied, measured = dynamic.tied_groups(rewards, torch.tensor([1.0]), 2)
    assert tied.tolist() == [True, False, True, False] and measured.tolist() == [True, True, True, False]
    assert zero_std_fraction(rewards, torch.tensor([1.0]), 2) == pytest.approx(2 / 3)


def test_groups_tied_at_any_weighted_reward_count_as_tied_where_trl_s_std_test_misses_them():
    from trl.trainer.utils import nanstd

    from trl_grpo_ext.advantages import weighted_rewards

    weights = torch.tensor([0.8, 0.2])  # 0.8 x accuracy + 0.2 x format, the real demo's reward
    per_row = {
        "wrong, bare number": [0.0, 1.0],  # 0.2
        "right, verbose": [1.0, 0.0],  # 0.8
        "right, bare number": [1.0, 1.0],  # 1.0
        "wrong, verbose": [0.0, 0.0],  # 0.0
    }
    for name, row in per_row.items():
        group = torch.tensor([row] * 8)
        assert dynamic.tied_groups(group, weights, 8)[0].tolist() == [True], name
        assert dynamic.teaching_groups(group, weights, 8).tolist() == [False], name
    # TRL's test, isclose(nanstd, 0), sees rounding noise above its atol at 0.2 and 0.8 and calls them teaching.
    trl_tied = {
        name: torch.isclose(nanstd(weighted_rewards(torch.tensor([row] * 8), weights).view(1, 8), dim=1),
                            torch.zeros(1)).item()
        for name, row in per_row.items()
    }  # fmt: skip
    assert trl_tied == {"wrong, bare number": False, "right, verbose": False, "right, bare number": True,
                        "wrong, verbose": True}  # fmt: skip
    # One reward apart is not a tie, however small the gap in relative terms of the reward's size.
    near = torch.tensor([[1.0, 0.0]] * 7 + [[1.0, 0.001]])
    assert dynamic.tied_groups(near, weights, 8)[0].tolist() == [False]
    mixed = torch.cat([torch.tensor([[1.0, 0.0]] * 8), torch.tensor([[0.0, 0.0]] * 4 + [[1.0, 0.0]] * 4)])
    assert zero_std_fraction(mixed, weights, 8) == 0.5


def test_the_sampler_walks_a_seeded_permutation_the_same_everywhere():
    a, b = RefillSampler(10, seed=3), RefillSampler(10, seed=3)
    drawn = a.draw(4) + a.draw(6)
    assert sorted(drawn) == list(range(10)) and b.draw(10) == drawn
    assert RefillSampler(10, seed=4).draw(10) != drawn
    assert (a.epoch, a.position, a.drawn) == (1, 0, 10)
    with pytest.raises(ValueError, match="dataset_size"):
        RefillSampler(0, seed=0)


# ------------------------------------------------------------------------------------------- fill_batch, simulated
def _round(number: int, groups: int, prompt_width: int, completion_width: int) -> dict:
    """A synthetic global batch: row r of round n has prompt id 100 n + r, completion ids 1000 n + r."""
    rows = groups * K
    ids = torch.arange(rows)
    prompt = torch.zeros(rows, prompt_width, dtype=torch.long)
    prompt[:, -1] = 100 * number + ids
    completion = torch.zeros(rows, completion_width, dtype=torch.long)
    completion[:, 0] = 1000 * number + ids
    mask = torch.zeros(rows, completion_width, dtype=torch.long)
    mask[:, : completion_width - number % 2] = 1
    return {
        "prompt_ids": prompt,
        "prompt_mask": (prompt != 0).long(),
        "completion_ids": completion,
        "completion_mask": mask,
        "advantages": torch.full((rows,), float(number)),
        "old_per_token_logps": torch.full((rows, completion_width), -float(number)),
    }


def _simulate(process: int, processes: int, teaching: list[list[bool]], max_rounds: int):
    """fill_batch on process `process` of `processes`, round n teaching per `teaching[n]` (G groups each)."""
    groups = len(teaching[0])
    rounds = [_round(n, groups, prompt_width=2 + n, completion_width=3 + n) for n in range(len(teaching))]
    rows = groups * K // processes

    def local(batch):
        out = {key: value[process * rows : (process + 1) * rows] for key, value in batch.items()}
        out["num_items_in_batch"] = batch["completion_mask"].sum()
        return out

    def rewards_of(number):  # one reward per row; a teaching group gets two values
        values = torch.zeros(groups * K, 1)
        for group, teaches in enumerate(teaching[number]):
            if teaches:
                values[group * K] = 1.0
        return values

    calls = iter(range(1, len(teaching)))

    def score_round(inputs):
        assert len(inputs) == rows
        number = next(calls)
        return local(rounds[number]), rewards_of(number)

    def gather(batch):  # every process sees the global round: find it by its first prompt id
        number = int(batch["prompt_ids"][0, -1]) // 100
        return {**rounds[number], "num_items_in_batch": batch["num_items_in_batch"]}

    return fill_batch(
        local(rounds[0]),
        rewards_of(0),
        score_round,
        is_teaching=lambda r: dynamic.teaching_groups(r, torch.tensor([1.0]), K),
        draw_inputs=lambda count: [{}] * rows,
        gather=gather,
        process_index=process,
        num_generations=K,
        max_rounds=max_rounds,
        pad_token_id=0,
    )


def test_tied_groups_are_replaced_in_order_and_the_processes_split_the_global_batch():
    teaching = [[True, False, False], [False, True, False], [True, True, True]]
    whole, stats = _simulate(0, 1, teaching, max_rounds=3)
    assert stats == {"rounds": 3, "groups": 3, "groups_generated": 9, "teaching": 3}
    # slot 0 keeps round 0's group 0; slot 1 takes round 1's group 1; slot 2 round 2's group 0
    expected_prompts = [0, 1, 2, 3] + [104, 105, 106, 107] + [200, 201, 202, 203]
    assert whole["prompt_ids"][:, -1].tolist() == expected_prompts
    assert whole["prompt_ids"].shape == (12, 4) and whole["completion_ids"].shape == (12, 5)  # the widest round
    assert whole["prompt_ids"][0].tolist() == [0, 0, 0, 0] and whole["prompt_mask"][4].tolist() == [0, 0, 0, 1]
    assert whole["advantages"].tolist() == [0.0] * 4 + [1.0] * 4 + [2.0] * 4
    assert whole["old_per_token_logps"][4].tolist() == [-1.0] * 4 + [0.0]  # padded on the right with 0
    assert int(whole["num_items_in_batch"]) == int(whole["completion_mask"].sum()) == 4 * 3 + 4 * 3 + 4 * 5
    # Two processes with 6 rows each (group 1 straddles them): their rows are the global batch's, in order.
    halves = [_simulate(p, 2, teaching, max_rounds=3)[0] for p in (0, 1)]
    for key in ("prompt_ids", "completion_ids", "completion_mask", "advantages", "old_per_token_logps"):
        assert torch.equal(torch.cat([h[key] for h in halves]), whole[key]), key
    assert all(int(h["num_items_in_batch"]) == int(whole["num_items_in_batch"]) for h in halves)


def test_the_round_limit_keeps_the_tied_groups_left_and_a_teaching_batch_is_untouched():
    merged, stats = _simulate(0, 1, [[False, True], [False, False]], max_rounds=1)
    assert stats == {"rounds": 2, "groups": 2, "groups_generated": 4, "teaching": 1}
    assert merged["prompt_ids"][:, -1].tolist() == list(range(8))  # round 0's groups, re-padded to round 1's width
    first = _round(0, 2, 2, 3)
    first["num_items_in_batch"] = first["completion_mask"].sum()
    kept, stats = fill_batch(
        first,
        torch.tensor([[0.0], [1.0]] * 4),
        lambda inputs: pytest.fail("no round is needed"),
        is_teaching=lambda r: dynamic.teaching_groups(r, torch.tensor([1.0]), K),
        draw_inputs=lambda count: pytest.fail("no prompt is needed"),
        gather=lambda batch: pytest.fail("nothing to gather"),
        process_index=0,
        num_generations=K,
        max_rounds=3,
        pad_token_id=0,
    )
    assert kept is first and stats["rounds"] == 1


def test_a_key_dynamic_sampling_cannot_merge_is_an_error():
    batch = {"prompt_ids": torch.zeros(2, 1), "pixel_values": torch.zeros(2, 3)}
    with pytest.raises(RuntimeError, match="pixel_values"):
        dynamic.merge_rows([batch, batch], [(0, 0)], pad_token_id=0)


# ------------------------------------------------------------------------------------------------- the trainer
def pass_fail(completions, **kwargs):
    """1 when a digit is among the first two characters: on the random tiny model most groups are tied at 0."""
    return [float(any(ch.isdigit() for ch in c[:2])) for c in completions]


def always_one(completions, **kwargs):
    return [1.0] * len(completions)


class Recording(GRPOExtTrainer):
    """Keeps every training batch dynamic sampling hands to TRL (before TRL shuffles and splits it)."""

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self.batches.append({key: value.clone() for key, value in output.items() if torch.is_tensor(value)})
        return output


def _train(tmp_path, reward=pass_fail, trainer_cls=Recording, dataset=None, callbacks=None, **overrides):
    settings = {"max_steps": 4, "dynamic_sampling": True, **overrides}
    trainer = trainer_cls(
        tiny_model(),
        reward_funcs=reward,
        args=tiny_args(tmp_path / "run", **settings),
        train_dataset=dataset if dataset is not None else prompt_dataset(32),
        processing_class=tiny_tokenizer_cached(),
        callbacks=callbacks,
    )
    trainer.batches = []
    trainer.train()
    return trainer


def _steps(trainer) -> list[dict]:
    return [e for e in trainer.state.log_history if "dynamic_sampling/rounds" in e]


def _group_signal(batch) -> list[bool]:
    return (batch["advantages"].view(-1, K) != 0).any(dim=1).tolist()


def test_every_trained_group_teaches_while_rounds_are_left(tmp_path):
    trainer = _train(tmp_path, per_device_train_batch_size=8, dynamic_sampling_max_rounds=5)
    steps = _steps(trainer)
    assert len(steps) == len(trainer.batches) == 4
    assert any(e["dynamic_sampling/rounds"] > 1 for e in steps), steps  # the base model ties most groups
    for entry, batch in zip(steps, trainer.batches):
        signal = _group_signal(batch)
        assert entry["dynamic_sampling/teaching_frac"] == pytest.approx(sum(signal) / len(signal))
        assert entry["dynamic_sampling/groups_generated"] == entry["dynamic_sampling/rounds"] * 2
        if entry["dynamic_sampling/rounds"] < 6:
            assert all(signal), entry
        if any(signal):
            assert entry["dynamic_sampling/groups_per_kept"] == entry["dynamic_sampling/groups_generated"] / sum(
                signal
            )
        assert batch["prompt_ids"].shape[0] == 8 and int(batch["num_items_in_batch"]) == int(
            batch["completion_mask"].sum()
        )
    # frac_reward_zero_std is TRL's, over every round; the tied groups sat at the bottom (pass / fail at 0)
    assert all(
        e["tied_groups/top_frac"] + e["tied_groups/bottom_frac"] <= e["frac_reward_zero_std"] + 1e-6 for e in steps
    )


def test_the_rounds_stop_at_the_limit_and_the_batch_keeps_trls_groups(tmp_path):
    plain = _train(tmp_path / "plain", reward=always_one, dynamic_sampling=False, log_tied_groups=True)
    limited = _train(tmp_path / "limited", reward=always_one, dynamic_sampling_max_rounds=2)
    for entry in _steps(limited):
        assert entry["dynamic_sampling/rounds"] == 3 and entry["dynamic_sampling/groups_generated"] == 3
        assert entry["dynamic_sampling/teaching_frac"] == 0 and "dynamic_sampling/groups_per_kept" not in entry
    for ours, trls in zip(limited.batches, plain.batches, strict=True):
        width = trls["prompt_ids"].size(1)
        assert torch.equal(ours["prompt_ids"][:, -width:], trls["prompt_ids"])  # TRL's prompts, in TRL's order
    sampler = next(cb for cb in limited.callback_handler.callbacks if isinstance(cb, RefillSampler))
    assert sampler.drawn == 4 * 2  # two rounds of one group per step


def test_log_tied_groups_adds_its_two_keys_and_changes_nothing_else(tmp_path):
    plain = _train(tmp_path / "plain", dynamic_sampling=False, optim="sgd")
    logged = _train(tmp_path / "logged", dynamic_sampling=False, log_tied_groups=True, optim="sgd")
    extra = {"tied_groups/top_frac", "tied_groups/bottom_frac"}
    for a, b in zip(plain.state.log_history, logged.state.log_history, strict=True):
        assert set(b) - set(a) == (extra if "loss" in a else set())
        for key in a:
            if isinstance(a[key], float) and key not in ("step_time", "train_runtime") and "per_second" not in key:
                assert a[key] == pytest.approx(b[key], abs=1e-7, nan_ok=True), key
    for p, q in zip(plain.model.parameters(), logged.model.parameters()):
        assert torch.equal(p, q)


def test_the_exact_speed_options_stay_exact_on_top_of_dynamic_sampling(tmp_path):
    common = dict(optim="sgd", gradient_checkpointing=False, per_device_train_batch_size=8)
    base = _train(tmp_path / "base", **common)
    fast = _train(tmp_path / "fast", share_prompt=True, skip_zero_advantage=True, **common)
    assert any(e["dynamic_sampling/rounds"] > 1 for e in _steps(base))
    for a, b in zip(base.batches, fast.batches, strict=True):
        assert torch.equal(a["completion_ids"], b["completion_ids"])
    worst = max((p - q).abs().max().item() for p, q in zip(base.model.parameters(), fast.model.parameters()))
    assert worst <= 1e-6, worst


def test_dynamic_sampling_composes_with_the_ladder_rank_objectives_and_the_closed_loop(tmp_path):
    reward = WeightedReward({"pass": pass_fail, "one": always_one}, weights={"pass": 0.8, "one": 0.2})
    trainer = _train(
        tmp_path,
        reward=reward,
        per_device_train_batch_size=8,
        temperature_schedule="linear",
        temperature_range=[0.7, 1.0],
        advantage_estimator="rank",
        temperature_control="zero_std",
    )
    steps = _steps(trainer)
    for entry, batch in zip(steps, trainer.batches):
        assert entry["dynamic_sampling/teaching_frac"] == pytest.approx(sum(_group_signal(batch)) / 2)
        temperatures = batch["ext_temperature"].view(-1, K)  # every group, refilled or not, on the ladder
        assert torch.equal(temperatures, temperatures[:1].expand_as(temperatures))
        assert (temperatures.diff(dim=1) > 0).all()
    assert any(e["dynamic_sampling/rounds"] > 1 for e in steps)
    controller = next(cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "LadderController")
    assert controller.updates == 4  # measured on TRL's batch once per step, not once per round


class StopAfter(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_a_resumed_run_draws_and_trains_what_the_uninterrupted_run_did(tmp_path):
    model_path = resolve_model_path("tiny:tiny")
    settings = dict(
        max_steps=4, dynamic_sampling=True, save_strategy="steps", save_steps=2, per_device_train_batch_size=8
    )

    def build(directory, callbacks=None):
        trainer = Recording(
            model_path,
            reward_funcs=pass_fail,
            args=tiny_args(directory, **settings),
            train_dataset=prompt_dataset(32),
            processing_class=tiny_tokenizer_cached(),
            callbacks=callbacks,
        )
        trainer.batches = []
        return trainer

    whole = build(tmp_path / "whole")
    whole.train()
    first = build(tmp_path / "cut", callbacks=[StopAfter(2)])
    first.train()
    saved = json.loads((tmp_path / "cut" / "checkpoint-2" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["RefillSampler"]["attributes"]["drawn"] > 0
    resumed = build(tmp_path / "cut")
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-2"))
    assert sum(e["dynamic_sampling/rounds"] for e in _steps(whole)) > 4
    for a, b in zip(whole.batches[2:], resumed.batches, strict=True):
        assert torch.equal(a["prompt_ids"], b["prompt_ids"]) and torch.equal(a["completion_ids"], b["completion_ids"])
    worst = max((p - q).abs().max().item() for p, q in zip(whole.model.parameters(), resumed.model.parameters()))
    assert worst <= 1e-6, worst
    sampler = [
        next(cb for cb in t.callback_handler.callbacks if isinstance(cb, RefillSampler)) for t in (whole, resumed)
    ]
    assert sampler[0].state() == sampler[1].state()


def test_evaluation_is_not_refilled(tmp_path):
    args = tiny_args(tmp_path / "eval", max_steps=2, dynamic_sampling=True, eval_strategy="steps", eval_steps=2)
    trainer = GRPOExtTrainer(
        tiny_model(),
        reward_funcs=always_one,
        args=args,
        train_dataset=prompt_dataset(16),
        eval_dataset=prompt_dataset(8),
        processing_class=tiny_tokenizer_cached(),
    )
    trainer.train()
    evaluations = [e for e in trainer.state.log_history if "eval_reward" in e]
    assert evaluations and not any(key.startswith("eval_dynamic_sampling") for e in evaluations for key in e)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(dynamic_sampling="yes"), "`dynamic_sampling` must be true or false"),
        (dict(log_tied_groups=1), "`log_tied_groups` must be true or false"),
        (
            dict(dynamic_sampling_max_rounds=0),
            r"`dynamic_sampling_max_rounds` must be an integer >= 1, got 0",
        ),
        (
            dict(dynamic_sampling_max_rounds=101),
            r"`dynamic_sampling_max_rounds` must be an integer >= 1 and <= 100, got 101",
        ),
        (dict(dynamic_sampling_max_rounds=True), r"`dynamic_sampling_max_rounds` must be an integer >= 1, got True"),
        (
            dict(dynamic_sampling=True, multi_objective_aggregation="normalize_then_sum"),
            "needs `multi_objective_aggregation='sum_then_normalize'`, got 'normalize_then_sum'",
        ),
    ],
)
def test_the_config_names_the_field_the_value_and_what_is_allowed(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        GRPOExtConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, **overrides)


def test_an_iterable_training_set_is_refused(tmp_path):
    rows = prompt_dataset(8).to_list()
    stream = IterableDataset.from_generator(lambda: iter(rows))
    with pytest.raises(ValueError, match="draws new prompts by index; the training set is a IterableDataset"):
        GRPOExtTrainer(
            tiny_model(),
            reward_funcs=pass_fail,
            args=tiny_args(tmp_path, dynamic_sampling=True, max_steps=1),
            train_dataset=stream,
            processing_class=tiny_tokenizer_cached(),
        )


@pytest.mark.slow
def test_two_processes_take_the_decisions_of_one(tmp_path):
    """The reward decides ties by prompt, so decisions do not depend on the (per-process) sampled completions."""
    model_path = resolve_model_path("tiny:tiny")
    records = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        run_torchrun("tests/dist/train_dynamic.py", out, model_path, nproc=processes)
        records[processes] = json.loads((out / "decisions.json").read_text())
    one, two = records[1], records[2]
    assert two["world"] == 2 and one["world"] == 1
    assert [b["prompts"] for b in one["batches"]] == [b["prompts"] for b in two["batches"]]
    assert one["metrics"] == two["metrics"] and one["sampler"] == two["sampler"]
    assert any(m["dynamic_sampling/rounds"] > 1 for m in one["metrics"])
    for batch in two["batches"]:  # every group (one straddles the processes) is one prompt's
        prompts = batch["prompts"]
        assert all(len(set(prompts[g : g + 4])) == 1 for g in range(0, len(prompts), 4))


def test_the_report_draws_the_tied_groups_and_dynamic_sampling(tmp_path):
    from trl_grpo_ext.report import write_report

    trainer = _train(tmp_path, per_device_train_batch_size=8, logging_steps=1)
    trainer.save_state()
    written = {path.name for path in write_report(tmp_path / "run")}
    assert {"tied_groups.png", "dynamic_sampling.png", "report.md"} <= written
    markdown = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "`dynamic_sampling/rounds`" in markdown and "`tied_groups/bottom_frac`" in markdown


def test_the_runnable_example_of_the_docs_runs(tmp_path, monkeypatch, capsys):
    text = (Path(__file__).resolve().parents[1] / "docs" / "dynamic-sampling.md").read_text()
    example = text.split("A runnable example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/dynamic-sampling.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    rounds = eval(printed)  # [(rounds, teaching_frac), ...] per step
    assert len(rounds) == 3 and all(1 <= r <= 4 and 0 <= t <= 1 for r, t in rounds)
