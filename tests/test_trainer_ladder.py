"""The temperature ladder inside GRPOExtTrainer: sampling, scoring, metrics, rows through shuffle/split."""

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from tests.helpers import (
    assert_logs_match,
    build_trainer,
    digit_reward,
    last_logged,
    length_reward,
    prompt_dataset,
    tiny_args,
    tiny_kwargs,
    tiny_tokenizer_cached,
)
from trl_grpo_ext import GRPOExtTrainer
from trl_grpo_ext.kit import resolve_model_path
from trl_grpo_ext.trainer import TEMPERATURE_KEY


def test_linear_ladder_metrics(tmp_path):
    trainer = build_trainer(tmp_path, temperature_schedule="linear", temperature_range=[0.7, 1.0], max_steps=2)
    trainer.train()
    logs = trainer.state.log_history
    assert last_logged(logs, "ladder/t_min") == pytest.approx([0.7, 0.7])
    assert last_logged(logs, "ladder/t_max") == pytest.approx([1.0, 1.0])
    for rung in range(4):
        assert len(last_logged(logs, f"ladder/reward_rung_{rung}")) == 2
    assert all(0.25 <= v <= 1.0 for v in last_logged(logs, "ladder/distinct_frac"))


def test_constant_ladder_equal_to_temperature_is_trl(tmp_path):
    """Per-row temperatures all equal to `temperature` sample bit-identical ids and train exactly like TRL."""
    common = dict(temperature=0.7, top_k=5, top_p=0.9, max_steps=2)
    trl_trainer = GRPOTrainer(
        model=resolve_model_path("tiny:tiny"),
        reward_funcs=[digit_reward, length_reward],
        args=GRPOConfig(**tiny_kwargs(tmp_path / "trl", **common)),
        train_dataset=prompt_dataset(16),
        processing_class=tiny_tokenizer_cached(),
    )
    trl_trainer.train()
    ext = build_trainer(tmp_path, group_temperatures=[0.7] * 4, **common)
    ext.train()
    assert list(trl_trainer._logs["completion"]) == list(ext._logs["completion"])
    assert_logs_match(trl_trainer.state.log_history, ext.state.log_history, atol=1e-6)


def test_cold_rungs_agree_hot_rungs_differ(tmp_path):
    trainer = build_trainer(tmp_path, group_temperatures=[0.01, 0.01, 0.01, 0.01], max_steps=1, learning_rate=0.0)
    trainer.train()
    cold = list(trainer._logs["completion"])
    cold_groups = [cold[i : i + 4] for i in range(0, len(cold), 4)]
    assert all(len(set(g)) == 1 for g in cold_groups), cold_groups

    trainer = build_trainer(tmp_path, group_temperatures=[4.0] * 4, max_steps=1, learning_rate=0.0)
    trainer.train()
    hot = list(trainer._logs["completion"])
    hot_groups = [hot[i : i + 4] for i in range(0, len(hot), 4)]
    assert sum(len(set(g)) for g in hot_groups) / len(hot) > 0.9, hot_groups


def test_scoring_matches_log_softmax_at_row_temperature(tmp_path):
    """Log-probs of row i equal log_softmax(logits / T_i), through TRL's fused head and our hidden-state scaling."""
    trainer = build_trainer(tmp_path, temperature_schedule="linear", temperature_range=[0.5, 2.0], temperature=0.9)
    model = trainer.model
    torch.manual_seed(0)
    input_ids = torch.randint(5, 90, (4, 12))
    attention_mask = torch.ones_like(input_ids)
    temps = torch.tensor([0.5, 1.0, 1.5, 2.0])
    trainer._scoring_temperatures = temps
    try:
        logps, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, attention_mask, 5, batch_size=3)
    finally:
        trainer._scoring_temperatures = None
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -6:-1]
    expected = torch.log_softmax(logits / temps[:, None, None], dim=-1).gather(-1, input_ids[:, -5:, None])[..., 0]
    torch.testing.assert_close(logps, expected, atol=5e-6, rtol=0)
    # "base" scoring is TRL's scalar temperature.
    base, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, attention_mask, 5)
    expected_base = torch.log_softmax(logits / 0.9, dim=-1).gather(-1, input_ids[:, -5:, None])[..., 0]
    torch.testing.assert_close(base, expected_base, atol=5e-6, rtol=0)


def test_row_temperatures_follow_rows_through_shuffle_and_split(tmp_path):
    """With steps_per_generation=2 TRL shuffles and splits the generation batch: each loss row keeps its temperature."""
    seen_generation, seen_loss = [], []

    class Recording(GRPOExtTrainer):
        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            seen_generation.append(output)
            return output

        def _compute_loss(self, model, inputs):
            seen_loss.append({k: inputs[k] for k in ("completion_ids", "advantages", TEMPERATURE_KEY)})
            return super()._compute_loss(model, inputs)

    trainer = build_trainer(
        tmp_path,
        trainer_cls=Recording,
        group_temperatures=[0.3, 0.9, 1.5, 2.5],
        steps_per_generation=2,
        gradient_accumulation_steps=2,
        per_device_train_batch_size=2,
        max_steps=1,
    )
    trainer.train()
    gen = seen_generation[0]
    assert gen[TEMPERATURE_KEY].tolist() == pytest.approx([0.3, 0.9, 1.5, 2.5])
    rows = {
        (tuple(c.tolist()), round(a.item(), 6)): t.item()
        for c, a, t in zip(gen["completion_ids"], gen["advantages"], gen[TEMPERATURE_KEY])
    }
    assert len(seen_loss) == 2
    for batch in seen_loss:
        for c, a, t in zip(batch["completion_ids"], batch["advantages"], batch[TEMPERATURE_KEY]):
            assert rows[(tuple(c.tolist()), round(a.item(), 6))] == pytest.approx(t.item())


def test_ladder_refuses_tools(tmp_path):
    def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: first
            b: second
        """
        return a + b

    with pytest.raises(ValueError, match="tools"):
        GRPOExtTrainer(
            model=resolve_model_path("tiny:tiny"),
            reward_funcs=[digit_reward],
            args=tiny_args(tmp_path, temperature_schedule="linear"),
            train_dataset=prompt_dataset(8),
            processing_class=tiny_tokenizer_cached(),
            tools=[add],
        )


def test_eval_uses_num_generations_eval_for_the_ladder(tmp_path):
    trainer = build_trainer(
        tmp_path,
        temperature_schedule="linear",
        temperature_range=[0.5, 1.5],
        num_generations_eval=2,
        per_device_eval_batch_size=4,
        max_steps=1,
    )
    metrics = trainer.evaluate(eval_dataset=prompt_dataset(4))
    # Eval groups have 2 slots: the ladder's two ends, and one reward per rung.
    assert metrics["eval_ladder/t_min"] == pytest.approx(0.5)
    assert metrics["eval_ladder/t_max"] == pytest.approx(1.5)
    assert "eval_ladder/reward_rung_1" in metrics and "eval_ladder/reward_rung_2" not in metrics
