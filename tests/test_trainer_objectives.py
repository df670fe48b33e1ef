"""Named objectives inside GRPOExtTrainer: expansion equals hand-written TRL, schedules, built-ins, fault policy."""

import pytest
from trl import GRPOConfig, GRPOTrainer

from tests.helpers import (
    assert_logs_match,
    build_trainer,
    digit_reward,
    last_logged,
    length_reward,
    prompt_dataset,
    tiny_kwargs,
    tiny_tokenizer_cached,
)
from trl_grpo_ext.kit import resolve_model_path
from trl_grpo_ext.rewards import WeightedReward


@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum"])
def test_expansion_equals_manual_trl(tmp_path, aggregation):
    trl_trainer = GRPOTrainer(
        model=resolve_model_path("tiny:tiny"),
        reward_funcs=[digit_reward, length_reward],
        args=GRPOConfig(
            **tiny_kwargs(tmp_path / "trl", reward_weights=[0.7, 0.3], multi_objective_aggregation=aggregation)
        ),
        train_dataset=prompt_dataset(16),
        processing_class=tiny_tokenizer_cached(),
    )
    trl_trainer.train()
    weighted = WeightedReward(
        {"digit_reward": digit_reward, "length_reward": length_reward},
        weights={"digit_reward": 0.7, "length_reward": 0.3},
    )
    ext = build_trainer(tmp_path, reward_funcs=weighted, multi_objective_aggregation=aggregation)
    ext.train()
    assert ext.reward_func_names == ["digit_reward", "length_reward"]
    assert ext.reward_weights.tolist() == pytest.approx([0.7, 0.3])
    assert_logs_match(trl_trainer.state.log_history, ext.state.log_history, atol=1e-6)


def test_objective_weights_override_and_schedule(tmp_path):
    weighted = WeightedReward({"digits": digit_reward, "length": length_reward})
    trainer = build_trainer(
        tmp_path,
        reward_funcs=weighted,
        objective_weights={"digits": 1.0, "length": 0.0},
        objective_weights_final={"length": 1.0},
        max_steps=4,
    )
    trainer.train()
    # Weights are set from global_step before each generation: step s of 4 -> w0 + (w1 - w0) * s / 4.
    assert last_logged(trainer.state.log_history, "objectives/length/weight") == pytest.approx([0, 0.25, 0.5, 0.75])
    assert last_logged(trainer.state.log_history, "objectives/digits/weight") == pytest.approx([1.0] * 4)


def test_three_builtin_objectives_from_config(tmp_path):
    trainer = build_trainer(
        tmp_path,
        reward_funcs=None,
        reward_objectives={"accuracy": 0.7, "readability": 0.2, "novelty": 0.1},
        temperature_schedule="linear",
        advantage_estimator="rank",
        max_steps=2,
    )
    assert trainer.reward_func_names == ["accuracy", "readability", "novelty"]
    trainer.train()
    for name in ("accuracy", "readability", "novelty"):
        values = last_logged(trainer.state.log_history, f"rewards/{name}/mean")
        assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values), (name, values)
    # Novelty of a group with distinct completions is high; the tiny random model rarely repeats itself.
    assert last_logged(trainer.state.log_history, "rewards/novelty/mean")[0] > 0.3


def _flaky(prompts, completions, **kwargs):
    if any("7" in (c if isinstance(c, str) else c[-1]["content"]) for c in completions) or len(completions) > 0:
        raise RuntimeError("scorer down")
    return [0.0] * len(completions)


def test_fault_policy_raise_names_objective(tmp_path):
    weighted = WeightedReward({"digits": digit_reward, "flaky": _flaky})
    trainer = build_trainer(tmp_path, reward_funcs=weighted, max_steps=1)
    with pytest.raises(Exception, match="flaky"):
        trainer.train()


def test_fault_policy_skip_counts_errors(tmp_path):
    weighted = WeightedReward({"digits": digit_reward, "flaky": _flaky})
    trainer = build_trainer(tmp_path, reward_funcs=weighted, reward_error_policy="skip", max_steps=2)
    trainer.train()
    errors = last_logged(trainer.state.log_history, "rewards/flaky/errors")
    assert errors and all(e > 0 for e in errors)
    # The failing objective is None (NaN, excluded), never a silent 0: its mean is missing, digits still train.
    assert all(v is None for v in last_logged(trainer.state.log_history, "rewards/flaky/mean"))
    assert len(last_logged(trainer.state.log_history, "rewards/digits/mean")) == 2


def test_missing_column_fails_before_training(tmp_path):
    from datasets import Dataset

    from trl_grpo_ext.rewards import accuracy

    with pytest.raises(ValueError, match="answer"):
        build_trainer(
            tmp_path,
            reward_funcs=WeightedReward({"accuracy": accuracy}),
            dataset=Dataset.from_list([{"prompt": "1+1="}] * 8),
        )


def test_reward_model_objective_by_path(tmp_path):
    path = resolve_model_path("tiny:tiny") + "/reward"
    weighted = WeightedReward({"rm": path, "digits": digit_reward}, weights={"rm": 0.5, "digits": 0.5})
    trainer = build_trainer(tmp_path, reward_funcs=weighted, max_steps=1)
    assert trainer.reward_func_names == ["rm", "digits"]
    trainer.train()
    assert len(last_logged(trainer.state.log_history, "rewards/rm/mean")) == 1


def test_weighted_reward_in_plain_trl(tmp_path):
    """Portable mode: one ordinary reward function for trl.GRPOTrainer, objectives logged through log_metric."""
    weighted = WeightedReward(
        {"digits": digit_reward, "length": length_reward}, weights={"digits": 0.7, "length": 0.3}
    )
    trainer = GRPOTrainer(
        model=resolve_model_path("tiny:tiny"),
        reward_funcs=weighted,
        args=GRPOConfig(**tiny_kwargs(tmp_path, max_steps=2)),
        train_dataset=prompt_dataset(16),
        processing_class=tiny_tokenizer_cached(),
    )
    trainer.train()
    logs = trainer.state.log_history
    digits, length = last_logged(logs, "objectives/digits/mean"), last_logged(logs, "objectives/length/mean")
    rewards = last_logged(logs, "reward")
    assert len(digits) == len(length) == len(rewards) == 2
    for d, n, r in zip(digits, length, rewards):
        assert r == pytest.approx(0.7 * d + 0.3 * n, abs=1e-5)
