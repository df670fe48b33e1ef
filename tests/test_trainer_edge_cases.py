"""Eight defects found by reading the trainer against TRL 1.16 (docs/reliability.md, "Hardening"), each pinned by a test.

docs/reliability.md ("Hardening") lists the items with the test that holds each one. Item 3 (group objectives
checked on the global result, 2 processes) lives in tests/test_distributed.py.
"""

import asyncio
import dataclasses
import inspect
import math

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from tests.helpers import (
    build_trainer,
    digit_reward,
    last_logged,
    length_reward,
    prompt_dataset,
    tiny_args,
    tiny_kwargs,
    tiny_tokenizer_cached,
)
from trl_grpo_ext import GRPOExtConfig, GRPOExtTrainer
from trl_grpo_ext.kit import resolve_model_path
from trl_grpo_ext.kit.tiny import build_tiny_tokenizer
from trl_grpo_ext.rewards import WeightedReward, group_objective, novelty
from trl_grpo_ext.sampling import distinct_fraction, group_ladder

# ------------------------------------------------------------------------------------ 1. environment reward


class _ScoredEnvironment:
    """An environment that owns a reward (`get_reward`) and exposes no tool."""

    def reset(self, **kwargs):
        return None

    def get_reward(self) -> float:
        return 0.25


_TOOL_CHAT_TEMPLATE = (  # the tiny ChatML template, plus tool calls, so that TRL accepts an environment_factory
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] }}"
    "{% if message.get('tool_calls') %}{{ message['tool_calls'] | tojson }}{% endif %}"
    "{% if message.get('name') %}{{ message['name'] }}{% endif %}"
    "{{ '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_objectives_beside_an_environment_reward(tmp_path):
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = _TOOL_CHAT_TEMPLATE
    trainer = GRPOExtTrainer(
        model=resolve_model_path("tiny:tiny"),
        reward_funcs=WeightedReward({"digits": digit_reward, "length": length_reward}, {"length": 0.5}),
        args=tiny_args(tmp_path, max_steps=1),
        train_dataset=prompt_dataset(8, conversational=True),
        processing_class=tokenizer,
        environment_factory=_ScoredEnvironment,
    )
    assert trainer.reward_func_names == ["digits", "length", "_ScoredEnvironment"]
    assert trainer.reward_weights.tolist() == [1.0, 0.5, 1.0]
    trainer.train()
    assert last_logged(trainer.state.log_history, "rewards/_ScoredEnvironment/mean") == [0.25]
    assert len(last_logged(trainer.state.log_history, "rewards/digits/mean")) == 1


# ------------------------------------------------------------------------------------ 2. async group objective


@group_objective
async def _async_novelty(prompts, completions, num_generations=None, novelty_ngram=3, **kwargs):
    await asyncio.sleep(0)
    return novelty(None, completions, num_generations=num_generations, novelty_ngram=novelty_ngram)


def test_async_group_objective_in_a_weighted_reward(tmp_path):
    weighted = WeightedReward({"digits": digit_reward, "anovelty": _async_novelty})
    trainer = build_trainer(tmp_path, reward_funcs=weighted, max_steps=1, novelty_ngram=1)
    trainer.train()
    expected = novelty(None, list(trainer._logs["completion"]), num_generations=4, novelty_ngram=1)
    assert list(trainer._logs["rewards"]["anovelty"]) == pytest.approx(expected)


def test_group_module_and_config_conversion_examples():
    import doctest

    import trl_grpo_ext.config
    import trl_grpo_ext.rewards.group

    for module in (trl_grpo_ext.rewards.group, trl_grpo_ext.config):
        assert doctest.testmod(module, raise_on_error=False).failed == 0, module


# ------------------------------------------------------------------------------------ 4. anneal one objective away


@pytest.mark.parametrize("field_name", ["objective_weights", "objective_weights_final"])
def test_zero_weight_for_one_objective_is_accepted(field_name, tmp_path):
    objectives = {"accuracy": 1.0, "novelty": 0.5}
    args = tiny_args(tmp_path, reward_objectives=objectives, **{field_name: {"novelty": 0.0}})
    assert getattr(args, field_name) == {"novelty": 0.0}
    with pytest.raises(
        ValueError, match=f"`{field_name}` makes all objective weights zero"
    ):  # the combined vector must not be all zero
        tiny_args(tmp_path, reward_objectives=objectives, **{field_name: {"novelty": 0.0, "accuracy": 0.0}})
    args = tiny_args(tmp_path, max_steps=2, **{field_name: {"novelty": 0.0}})
    weighted = WeightedReward({"digits": digit_reward, "novelty": novelty})
    trainer = GRPOExtTrainer(
        model=resolve_model_path("tiny:tiny"),
        reward_funcs=weighted,
        args=args,
        train_dataset=prompt_dataset(16),
        processing_class=tiny_tokenizer_cached(),
    )
    trainer.train()
    if field_name == "objective_weights_final":
        assert last_logged(trainer.state.log_history, "objectives/novelty/weight") == pytest.approx([1.0, 0.5])
    else:
        assert trainer.reward_weights.tolist() == [1.0, 0.0]


def test_final_weights_that_zero_every_objective_are_refused(tmp_path):
    weighted = WeightedReward({"digits": digit_reward, "length": length_reward}, {"length": 0.0})
    with pytest.raises(ValueError, match=r"`objective_weights_final`.*'digits': 0\.0"):
        build_trainer(tmp_path, reward_funcs=weighted, objective_weights_final={"digits": 0.0})


# ------------------------------------------------------------------------------------ 5. entropy under the ladder


@pytest.mark.parametrize(
    "field_name, value",
    [("top_entropy_quantile", 0.2), ("entropy_coef", 0.01), ("use_adaptive_entropy", True)],
)
def test_entropy_options_refused_with_sampled_ladder_scoring(field_name, value, tmp_path):
    with pytest.raises(ValueError) as info:
        tiny_args(tmp_path, temperature_schedule="linear", **{field_name: value})
    message = str(info.value)
    assert f"`{field_name}`" in message and repr(value) in message and "ladder_logprob_temperature" in message
    # Allowed where entropies are TRL's (all rows at `temperature`): no ladder, or base-temperature scoring.
    tiny_args(tmp_path, **{field_name: value})
    tiny_args(tmp_path, temperature_schedule="linear", ladder_logprob_temperature="base", **{field_name: value})


def test_entropy_metric_is_each_rows_sampling_entropy(tmp_path):
    """Documented meaning of `entropy` under a ladder with "sampled" scoring: entropy of softmax(logits / T_row)."""
    trainer = build_trainer(tmp_path, temperature_schedule="linear", temperature_range=[0.5, 2.0], temperature=0.9)
    torch.manual_seed(0)
    input_ids = torch.randint(5, 90, (4, 12))
    attention_mask = torch.ones_like(input_ids)
    temps = torch.tensor([0.5, 1.0, 1.5, 2.0])
    trainer._scoring_temperatures = temps
    try:
        _, entropies, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, attention_mask, 5, compute_entropy=True
        )
    finally:
        trainer._scoring_temperatures = None
    with torch.no_grad():
        logits = trainer.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -6:-1]
    probs = torch.softmax(logits / temps[:, None, None], dim=-1)
    expected = -(probs * probs.log()).sum(-1)
    torch.testing.assert_close(entropies, expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ 6. distinct_frac, truncation


def test_distinct_frac_uses_real_ids_of_truncated_completions(tmp_path):
    trainer = build_trainer(
        tmp_path, temperature_schedule="linear", mask_truncated_completions=True, max_steps=1, max_completion_length=6
    )
    trainer.train()
    completions = list(trainer._logs["completion"])
    (logged,) = last_logged(trainer.state.log_history, "ladder/distinct_frac")
    assert logged == pytest.approx(distinct_fraction(completions, 4))
    assert logged > 0.5  # the tiny random model rarely repeats 6 characters; all-masked would read 1/4


# ------------------------------------------------------------------------------------ 7. defaults log TRL's keys


def test_defaults_run_no_extra_collective_and_log_no_extra_key(tmp_path, monkeypatch):
    import trl_grpo_ext.trainer as trainer_module

    calls = []
    original = trainer_module.gather_object
    monkeypatch.setattr(trainer_module, "gather_object", lambda obj: calls.append(len(obj)) or original(obj))
    trainer = build_trainer(tmp_path, max_steps=1)
    trainer.train()
    assert calls == []
    keys = {k for entry in trainer.state.log_history for k in entry}
    assert not {k for k in keys if k.startswith(("advantages/", "ladder/", "objectives/"))}, keys


# ------------------------------------------------------------------------------------ 8. drop-in details


def test_trl_config_is_converted_with_every_field_kept(tmp_path):
    trl_args = GRPOConfig(**tiny_kwargs(tmp_path, beta=0.05, reward_weights=[0.3, 0.7], max_steps=1))
    trainer = GRPOExtTrainer(
        resolve_model_path("tiny:tiny"),
        [digit_reward, length_reward],
        trl_args,
        prompt_dataset(8),
        processing_class=tiny_tokenizer_cached(),
    )
    assert isinstance(trainer.args, GRPOExtConfig)
    for field in dataclasses.fields(GRPOConfig):
        assert getattr(trainer.args, field.name) == getattr(trl_args, field.name), field.name
    assert trainer.args.temperature_schedule == "constant" and trainer.args.advantage_estimator == "zscore"
    assert trainer.reward_weights.tolist() == pytest.approx([0.3, 0.7])
    trainer.train()


def test_trl_config_conversion_accepts_extension_fields(tmp_path):
    trl_args = GRPOConfig(**tiny_kwargs(tmp_path))
    ext = GRPOExtConfig.from_trl(trl_args, temperature_schedule="linear", temperature_range=[0.5, 1.0])
    assert ext.temperature_schedule == "linear" and ext.temperature_range == [0.5, 1.0]
    trl_dict, ext_dict = trl_args.to_dict(), ext.to_dict()
    assert {k: ext_dict[k] for k in trl_dict} == trl_dict
    with pytest.raises(ValueError, match="`temperature_schedule`"):
        GRPOExtConfig.from_trl(trl_args, temperature_schedule="cosine")
    with pytest.raises(TypeError, match="GRPOConfig"):
        GRPOExtConfig.from_trl({"output_dir": "x"})


def test_signature_is_trls():
    def parameters(cls):
        return [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()]

    assert parameters(GRPOExtTrainer) == parameters(GRPOTrainer)


def test_eval_dataset_by_position(tmp_path):
    eval_dataset = prompt_dataset(4)
    trainer = GRPOExtTrainer(
        resolve_model_path("tiny:tiny"), digit_reward, tiny_args(tmp_path), prompt_dataset(8), eval_dataset
    )
    assert trainer.eval_dataset is eval_dataset


def test_reward_processing_classes_are_expanded_with_the_objectives(tmp_path):
    tokenizer = tiny_tokenizer_cached()
    weighted = WeightedReward({"digits": digit_reward, "length": length_reward})
    trainer = GRPOExtTrainer(
        resolve_model_path("tiny:tiny"),
        [weighted, digit_reward],
        tiny_args(tmp_path, objective_weights={"digit_reward": 0.5}),
        prompt_dataset(8),
        processing_class=tokenizer,
        reward_processing_classes=[tokenizer, None],
    )
    assert trainer.reward_processing_classes == [tokenizer, tokenizer, None]
    with pytest.raises(ValueError, match="`reward_processing_classes` has 3 entries but 2 reward functions"):
        GRPOExtTrainer(
            resolve_model_path("tiny:tiny"),
            [weighted, digit_reward],
            tiny_args(tmp_path),
            prompt_dataset(8),
            processing_class=tokenizer,
            reward_processing_classes=[tokenizer, None, None],
        )


def test_instance_generate_patched_by_other_code_is_restored(tmp_path):
    trainer = build_trainer(tmp_path, temperature_schedule="linear", max_steps=1)
    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    calls = []
    class_generate = model.generate

    def patched_generate(*args, **kwargs):
        calls.append(kwargs.get("logits_processor"))
        return class_generate(*args, **kwargs)

    model.generate = patched_generate
    trainer.train()
    assert calls and all(len(processors) >= 1 for processors in calls)  # the ladder went through the patch
    assert vars(model)["generate"] is patched_generate


def test_temperature_in_generation_kwargs_refused_with_a_ladder(tmp_path):
    with pytest.raises(ValueError) as info:
        tiny_args(tmp_path, temperature_schedule="linear", generation_kwargs={"temperature": 0.3, "top_k": 5})
    message = str(info.value)
    assert "`generation_kwargs`" in message and "'temperature': 0.3" in message and "temperature_range" in message
    tiny_args(tmp_path, temperature_schedule="linear", generation_kwargs={"top_k": 5})
    tiny_args(tmp_path, generation_kwargs={"temperature": 0.3})  # no ladder: TRL's behaviour


def test_group_of_one_samples_at_temperature():
    assert group_ladder(1, schedule="linear", temperature=0.9, temperature_range=[0.5, 1.5]) == [0.9]
    assert group_ladder(1, schedule="geometric", temperature=1.2, temperature_range=[0.5, 1.5]) == [1.2]
    assert group_ladder(2, schedule="linear", temperature=0.9, temperature_range=[0.5, 1.5]) == [0.5, 1.5]


def _nanstd(x: torch.Tensor) -> torch.Tensor:
    scored = x[~torch.isnan(x)]
    return scored.std()


def test_skipped_objective_weighs_as_documented():
    """docs/reliability.md: under "skip", a skipped objective adds nothing to the completion's weighted sum.

    sum_then_normalize: exactly as if it had returned 0 (TRL's nansum). normalize_then_sum: its normalised value is
    taken as 0, i.e. the mean of that objective over the group's scored completions, whose mean and std exclude it.
    """
    from trl_grpo_ext.advantages import estimate_advantages, zscore_advantages

    rewards = torch.tensor([[1.0, 2.0], [0.0, math.nan], [1.0, 1.0], [0.5, 3.0]])
    weights = torch.tensor([1.0, 0.5])
    as_zero = rewards.nan_to_num(0.0)
    skipped = estimate_advantages(rewards, weights, 4, zscore_advantages, "sum_then_normalize")
    torch.testing.assert_close(skipped, estimate_advantages(as_zero, weights, 4, zscore_advantages))

    normalised = (rewards - rewards.nanmean(0)) / (torch.stack([_nanstd(c) for c in rewards.T]) + 1e-4)
    total = (normalised.nan_to_num(0.0) * weights).sum(1)
    expected = (total - total.mean()) / (total.std() + 1e-4)
    skipped = estimate_advantages(rewards, weights, 4, zscore_advantages, "normalize_then_sum")
    torch.testing.assert_close(skipped, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(
        skipped, estimate_advantages(as_zero, weights, 4, zscore_advantages, "normalize_then_sum")
    )
