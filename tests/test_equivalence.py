"""With no new option set, GRPOExtTrainer is trl.GRPOTrainer: same log_history, completions and weights."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl import GRPOConfig, GRPOTrainer

from tests.helpers import (
    assert_logs_match,
    digit_reward,
    length_reward,
    prompt_dataset,
    tiny_kwargs,
    tiny_tokenizer_cached,
)
from trl_grpo_ext import GRPOExtConfig, GRPOExtTrainer
from trl_grpo_ext.kit import resolve_model_path

SETTINGS = {
    "defaults": {},
    "beta_iterations_steps_per_generation": {
        "beta": 0.1,
        "num_iterations": 2,
        "steps_per_generation": 2,
        "gradient_accumulation_steps": 1,
    },
    "batch_scaling_dr_grpo": {"scale_rewards": "batch", "loss_type": "dr_grpo"},
    "normalize_then_sum_bnpo": {"multi_objective_aggregation": "normalize_then_sum", "loss_type": "bnpo"},
}


def _train(trainer_cls, config_cls, tmp_path, **overrides):
    args = config_cls(**tiny_kwargs(tmp_path / trainer_cls.__name__, **overrides))
    trainer = trainer_cls(
        model=resolve_model_path("tiny:tiny"),  # a path: with beta > 0 TRL loads the reference model from it
        reward_funcs=[digit_reward, length_reward],
        args=args,
        train_dataset=prompt_dataset(16),
        processing_class=tiny_tokenizer_cached(),
    )
    trainer.train()
    return trainer


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_defaults_are_trl(setting, tmp_path):
    trl_trainer = _train(GRPOTrainer, GRPOConfig, tmp_path, **SETTINGS[setting])
    ext_trainer = _train(GRPOExtTrainer, GRPOExtConfig, tmp_path, **SETTINGS[setting])

    assert_logs_match(trl_trainer.state.log_history, ext_trainer.state.log_history, atol=1e-6)
    # Exactly TRL's log keys, both ways: no option set means no extra metric.
    trl_keys = [sorted(entry) for entry in trl_trainer.state.log_history]
    assert [sorted(entry) for entry in ext_trainer.state.log_history] == trl_keys
    # Same completions and rewards in the last generation batch, and the same trained weights.
    assert list(trl_trainer._logs["completion"]) == list(ext_trainer._logs["completion"])
    for name in trl_trainer.reward_func_names:
        assert list(trl_trainer._logs["rewards"][name]) == list(ext_trainer._logs["rewards"][name])
    assert list(trl_trainer._logs["advantages"]) == list(ext_trainer._logs["advantages"])
    for (name, p_trl), (_, p_ext) in zip(trl_trainer.model.named_parameters(), ext_trainer.model.named_parameters()):
        assert torch.equal(p_trl, p_ext), name
    # The runs really trained: the loss entries exist and the policy moved away from its initialisation.
    assert any("loss" in e for e in ext_trainer.state.log_history)
    start = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny:tiny"))
    assert any(not torch.equal(a, b) for a, b in zip(start.parameters(), ext_trainer.model.parameters()))
