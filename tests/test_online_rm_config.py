"""The online reward model from the config (`learned_preference` + `online_reward_model`), in tiny GRPO runs.

Each run trains 3 steps of 4 completions (one group of 4 per step, so 6 within-group pairs) on the tiny kit, and
checks the reward model's bookkeeping step by step and that its weights moved: a gold labeler from a recipe-like
YAML (the command line's JSON string for the dict field), a person answering a label queue while training runs, and
the local tiny judge as the labeler.
"""

from __future__ import annotations

import doctest
import json
import threading
import time

import pytest
import torch
import yaml

import trl_grpo_ext.rewards.bradley_terry as bradley_terry_module
import trl_grpo_ext.rewards.labelers as labelers_module
import trl_grpo_ext.rewards.online as online_module
import trl_grpo_ext.rewards.online_config as online_config_module
import trl_grpo_ext.rewards.online_settings as online_settings_module
from tests.helpers import build_trainer, digit_reward, last_logged, prompt_dataset
from trl_grpo_ext import GRPOExtConfig
from trl_grpo_ext.report import write_report
from trl_grpo_ext.rewards import (
    GoldLabeler,
    JudgeLabeler,
    OnlineRewardModel,
    QueueLabeler,
    accuracy,
    online_reward_model_from_config,
)

RECIPE = """
reward_objectives: {accuracy: 0.5, learned_preference: 0.5}
online_reward_model: >-
  {"model": "tiny:tiny", "pairs_per_update": 4, "label_budget": 10, "update_steps": 2, "learning_rate": 3e-3,
   "heldout_fraction": 0.25, "seed": 3, "labeler": {"type": "gold", "objective": "tests.helpers:digit_reward"}}
reward_error_policy: skip
max_steps: 3
"""


def _online_rm(trainer) -> OnlineRewardModel:
    found = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, OnlineRewardModel)]
    assert len(found) == 1
    return found[0]


def _weights(rm: OnlineRewardModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in rm.model.state_dict().items()}


def _moved(before: dict[str, torch.Tensor], rm: OnlineRewardModel) -> float:
    return max((rm.model.state_dict()[k] - v).abs().max().item() for k, v in before.items())


def test_module_examples():
    for module in (online_module, online_config_module, bradley_terry_module, online_settings_module, labelers_module):
        result = doctest.testmod(module, raise_on_error=False)
        assert result.failed == 0 and result.attempted >= 2, module


def test_the_builder_gives_the_constructor_arguments(tmp_path):
    rm = online_reward_model_from_config(
        {
            "model": "tiny:tiny",
            "name": "prefs",
            "selector": "uncertain",
            "buffer_size": 7,
            "seed_pairs": [{"prompt": "1+2=", "chosen": "3", "rejected": "x"}],
            "labeler": {"type": "gold", "objective": "accuracy"},
        }
    )
    assert (rm.name, rm.selector, rm.buffer_size, rm.update_every, rm.label_budget) == (
        "prefs",
        "uncertain",
        7,
        1,
        None,
    )
    assert isinstance(rm.labeler, GoldLabeler) and rm.labeler.fn is accuracy
    assert rm.required_columns == [("answer", "solution")]  # the gold objective's columns: the dataset check
    seed_file = tmp_path / "seed.jsonl"
    seed_file.write_text(json.dumps({"prompt": "1+2=", "chosen": "3", "rejected": "x", "margin": 0.5}) + "\n\n")
    queue = online_reward_model_from_config(
        {
            "model": "tiny:tiny",
            "seed_pairs_file": str(seed_file),
            "labeler": {"type": "queue", "path": str(tmp_path / "l.jsonl"), "timeout": 2, "poll_interval": 0.1},
        }
    )
    assert isinstance(queue.labeler, QueueLabeler) and (queue.labeler.timeout, queue.labeler.poll_interval) == (2, 0.1)
    assert queue._seed_pairs == [{"prompt": "1+2=", "a": "3", "b": "x", "label": 1.0, "margin": 0.5}]
    judged = online_reward_model_from_config(
        {"model": "tiny:tiny", "labeler": {"type": "judge", "principles": ["Is it a number?"]}},
        judge={"model": "tiny:tiny", "batch_size": 4},
    )
    assert isinstance(judged.labeler, JudgeLabeler)
    assert [p.question for p in judged.labeler.objective.principles] == ["Is it a number?"]
    assert judged.labeler.objective.judge.batch_size == 4


def test_the_trainer_refuses_a_field_it_would_not_use(tmp_path):
    args = dict(reward_objectives={"learned_preference": 1.0}, online_reward_model={"model": "tiny:tiny"})
    with pytest.raises(ValueError, match=r"`online_reward_model` is set, but the reward functions given"):
        build_trainer(tmp_path, reward_funcs=[digit_reward], **args)
    with pytest.raises(ValueError, match="Objective 'learned_preference' needs the dataset column 'answer'"):
        build_trainer(
            tmp_path,
            reward_funcs=None,
            dataset=prompt_dataset(8).remove_columns("answer"),
            reward_objectives={"accuracy": 0.0, "learned_preference": 1.0},
            online_reward_model={"model": "tiny:tiny", "labeler": {"type": "gold", "objective": "accuracy"}},
            reward_error_policy="skip",
        )


@pytest.fixture(scope="module")
def gold_run(tmp_path_factory):
    """A recipe-like YAML through GRPOExtConfig, as `trl-grpo-ext train` hands it over (dict field as JSON)."""
    out = tmp_path_factory.mktemp("gold-run")
    trainer = build_trainer(out, reward_funcs=None, **yaml.safe_load(RECIPE))
    rm = _online_rm(trainer)
    before = _weights(rm)
    start = time.perf_counter()
    trainer.train()
    trainer.save_state()
    return trainer, rm, before, out, time.perf_counter() - start


def test_gold_labeler_from_a_recipe(gold_run):
    trainer, rm, before, _, _ = gold_run
    assert isinstance(trainer.args, GRPOExtConfig) and trainer.args.online_reward_model["label_budget"] == 10
    assert trainer.reward_func_names == ["accuracy", "learned_preference"]
    assert isinstance(rm.labeler, GoldLabeler) and rm.labeler.fn is digit_reward and rm.error_policy == "skip"
    history = trainer.state.log_history
    assert last_logged(history, "rm/labels_used") == [4.0, 8.0, 10.0]  # 4 pairs a step until the budget of 10
    assert last_logged(history, "rm/budget_left") == [6.0, 2.0, 0.0]
    assert last_logged(history, "rm/label_errors") == [0.0, 0.0, 0.0]
    assert len(last_logged(history, "rm/loss")) == 3 and rm.updates == 3
    assert len(rm.buffer) + len(rm.heldout) == 10 and len(rm.heldout) == 1 + 1 + 0  # round(0.25 * 4), 0.25 * 2
    assert len(last_logged(history, "rewards/learned_preference/mean")) == 3
    assert _moved(before, rm) > 1e-4


def test_report_draws_the_online_reward_model(gold_run, tmp_path):
    trainer, _, _, out, _ = gold_run
    paths = write_report(out / "run", tmp_path / "report")
    assert "online_rm.png" in [p.name for p in paths]
    markdown = paths[-1].read_text()
    used = last_logged(trainer.state.log_history, "rm/labels_used")
    assert f"| `rm/labels_used` | {used[0]:.4g} | {used[-1]:.4g} | {used[-1] - used[0]:+.4g} |" in markdown
    assert "| `rm/budget_left` | 6 | 0 | -6 |" in markdown
    assert "| `rm/loss` |" in markdown and "| `rm/gold_agreement` |" in markdown


def test_queue_labeler_from_the_config_with_a_person_answering(tmp_path):
    labels, requests = tmp_path / "labels.jsonl", tmp_path / "labels.requests.jsonl"
    stop = threading.Event()
    answered: list[str] = []

    def person():
        # Answers every request as it appears: the side with more digits wins, equal counts tie.
        while not stop.is_set():
            lines = requests.read_text().split("\n")[:-1] if requests.exists() else []  # complete lines only
            with labels.open("a") as f:
                for line in lines[len(answered) :]:
                    request = json.loads(line)
                    a, b = digit_reward([request["a"], request["b"]])
                    f.write(json.dumps({"id": request["id"], "label": 1 if a > b else 0 if a < b else 0.5}) + "\n")
                    answered.append(request["id"])
            time.sleep(0.02)

    trainer = build_trainer(
        tmp_path,
        reward_funcs=None,
        reward_objectives={"accuracy": 0.5, "learned_preference": 0.5},
        online_reward_model={
            "model": "tiny:tiny",
            "pairs_per_update": 3,
            "learning_rate": 3e-3,
            "heldout_fraction": 0.0,
            "labeler": {"type": "queue", "path": str(labels), "timeout": 20, "poll_interval": 0.02},
        },
        reward_error_policy="skip",
    )
    rm = _online_rm(trainer)
    before = _weights(rm)
    thread = threading.Thread(target=person, daemon=True)
    thread.start()
    try:
        trainer.train()
    finally:
        stop.set()
        thread.join(timeout=5)
    assert last_logged(trainer.state.log_history, "rm/labels_used") == [3.0, 6.0, 9.0]
    assert len(requests.read_text().splitlines()) == len(answered) == 9 and rm.labeler.outstanding == 0
    expected = {}
    for line in requests.read_text().splitlines():
        request = json.loads(line)
        a, b = digit_reward([request["a"], request["b"]])
        expected[(request["a"], request["b"])] = 1.0 if a > b else 0.0 if a < b else 0.5
    assert {(p["a"], p["b"]): p["label"] for p in rm.buffer} == expected  # the person's labels, each learnt
    assert _moved(before, rm) > 1e-4


def test_judge_labeler_in_a_grpo_run(tmp_path):
    trainer = build_trainer(
        tmp_path,
        reward_funcs=None,
        reward_objectives={"accuracy": 0.5, "learned_preference": 0.5},
        judge={"model": "tiny:tiny", "batch_size": 8},
        online_reward_model={
            "model": "tiny:tiny",
            "pairs_per_update": 3,
            "learning_rate": 3e-3,
            "labeler": {"type": "judge", "principles": ["Is the answer a number?"]},
        },
        reward_error_policy="skip",
    )
    rm = _online_rm(trainer)
    before = _weights(rm)
    trainer.train()
    history = trainer.state.log_history
    assert last_logged(history, "rm/labels_used") == [3.0, 6.0, 9.0]
    assert last_logged(history, "rm/label_errors") == [0.0, 0.0, 0.0]
    judge = rm.labeler.objective.judge
    assert judge.calls + judge.cache_hits == 3 * 3 * 2  # 3 pairs a step, both sides, one principle
    # Each label is the judge's comparison of the two sides.
    for pair in rm.buffer + rm.heldout:
        scores = JudgeLabeler(judge, ["Is the answer a number?"])([pair["prompt"]], [pair["a"]], [pair["b"]])
        assert scores == [pair["label"]]
    assert _moved(before, rm) > 1e-4


def test_python_and_config_build_the_same_objective(tmp_path):
    # The same settings, in Python and from the config: equal scores before and after one update on one batch.
    batch = dict(prompts=["1+2="] * 4, completions=["3", "12", "ab", "3!"], answer=["3"] * 4, num_generations=4)
    settings = dict(pairs_per_update=4, learning_rate=1e-2, seed=1)
    python = OnlineRewardModel("tiny:tiny", labeler=GoldLabeler(accuracy), **settings)
    config = online_reward_model_from_config(
        {"model": "tiny:tiny", **settings, "labeler": {"type": "gold", "objective": "accuracy"}}
    )
    first = python(**batch)
    assert config(**batch) == pytest.approx(first, abs=1e-6)  # scored before learning: the kit's reward model
    second = python(**batch)
    assert config(**batch) == pytest.approx(second, abs=1e-6)  # after one equal update
    assert second != pytest.approx(first, abs=1e-4)


def test_resume_from_the_config_gives_the_uninterrupted_reward_model(gold_run, tmp_path):
    # gold_run trained 3 steps straight; here 2 steps, a checkpoint, then a resumed run for the third.
    from tests.test_online_rm import StopAfter

    trainer, rm, _, _, _ = gold_run
    recipe = {**yaml.safe_load(RECIPE), "save_strategy": "steps", "save_steps": 2}
    stopped = build_trainer(tmp_path, reward_funcs=None, **recipe)
    stopped.add_callback(StopAfter(2))
    stopped.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / "online_rm" / "rm" / "model.safetensors").is_file()
    resumed = build_trainer(tmp_path, reward_funcs=None, **recipe)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    resumed_rm = _online_rm(resumed)
    expected = [e for e in trainer.state.log_history if e.get("step") == 3 and "rm/labels_used" in e][0]
    actual = [e for e in resumed.state.log_history if e.get("step") == 3 and "rm/labels_used" in e][0]
    rm_keys = [k for k in expected if k.startswith("rm/")]
    assert {k: actual[k] for k in rm_keys} == pytest.approx({k: expected[k] for k in rm_keys}, abs=1e-6)
    assert (resumed_rm.labels_used, resumed_rm.updates) == (rm.labels_used, rm.updates) == (10, 3)
    for key, value in rm.model.state_dict().items():
        torch.testing.assert_close(resumed_rm.model.state_dict()[key], value, atol=1e-6, rtol=1e-5)
