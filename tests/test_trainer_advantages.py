"""Advantage estimators inside GRPOExtTrainer: rank trains, import paths load, advantages match the pure functions."""

import pytest
import torch

from tests.helpers import build_trainer, centred_estimator, last_logged
from trl_grpo_ext.advantages import estimate_advantages, rank_advantages


def _last_batch(trainer):
    """Global rewards matrix, weights and logged advantages of the last generation batch."""
    names = trainer.reward_func_names
    rewards = torch.tensor([list(trainer._logs["rewards"][n]) for n in names]).T
    return rewards, trainer.reward_weights, torch.tensor(list(trainer._logs["advantages"]))


@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum"])
def test_rank_trains_and_matches_pure_function(tmp_path, aggregation):
    trainer = build_trainer(tmp_path, advantage_estimator="rank", multi_objective_aggregation=aggregation)
    start = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    rewards, weights, logged = _last_batch(trainer)
    expected = estimate_advantages(rewards, weights, 4, rank_advantages, aggregation)
    torch.testing.assert_close(logged, expected.float(), atol=1e-6, rtol=0)
    if aggregation == "sum_then_normalize":
        assert logged.abs().max() <= 1.0
        assert logged.view(-1, 4).sum(dim=1).abs().max() < 1e-6  # rank advantages sum to zero per group
    assert all(v <= 1.0 + 1e-6 for v in last_logged(trainer.state.log_history, "advantages/abs_max")) or (
        aggregation == "normalize_then_sum"
    )
    assert any(not torch.equal(a, b) for a, b in zip(start, trainer.model.parameters())), "policy did not move"


def test_import_path_estimator(tmp_path):
    trainer = build_trainer(tmp_path, advantage_estimator="tests.helpers:centred_estimator", max_steps=1)
    trainer.train()
    rewards, weights, logged = _last_batch(trainer)
    total = (rewards * weights).nansum(dim=1)
    torch.testing.assert_close(logged, centred_estimator(total, 4), atol=1e-6, rtol=0)


def test_advantage_metrics_logged_with_an_estimator_and_consistent(tmp_path):
    # "zscore" is TRL's own path and logs TRL's keys only (tests/test_trainer_edge_cases.py); another estimator logs advantages/*.
    trainer = build_trainer(tmp_path, max_steps=1, advantage_estimator="rank")
    trainer.train()
    _, _, logged = _last_batch(trainer)
    entry = next(e for e in trainer.state.log_history if "advantages/mean" in e)
    assert entry["advantages/mean"] == pytest.approx(logged.mean().item(), abs=1e-6)
    assert entry["advantages/abs_max"] == pytest.approx(logged.abs().max().item(), abs=1e-6)


def test_rung_centred_estimator_trains_with_the_ladder(tmp_path):
    from trl_grpo_ext.advantages import rank_rung_centred_advantages

    trainer = build_trainer(
        tmp_path, advantage_estimator="rank_rung_centred", temperature_schedule="linear", max_steps=1
    )
    trainer.train()
    rewards, weights, logged = _last_batch(trainer)
    expected = rank_rung_centred_advantages((rewards * weights).nansum(dim=1), 4)
    torch.testing.assert_close(logged, expected.float(), atol=1e-6, rtol=0)
    assert logged.view(-1, 4).mean(dim=0).abs().max() < 1e-6  # every rung's advantages average 0 over the batch
