"""The principles objective inside GRPOExtTrainer: tiny GRPO runs with a local judge (from the config) and with an
endpoint that is down (reward_error_policy='skip')."""

import pytest

from tests.helpers import build_trainer, last_logged
from tests.judge_server import FakeJudgeServer

PRINCIPLES = [{"question": "Is the answer a number?", "weight": 3, "name": "number"}, "Is the response short?"]


def test_grpo_trains_with_a_local_judge_from_the_config(tmp_path):
    trainer = build_trainer(
        tmp_path,
        reward_funcs=None,
        reward_objectives={"principles": 0.6, "readability": 0.4},
        principles=PRINCIPLES,
        judge={"model": "tiny:tiny", "batch_size": 8},
        max_steps=2,
    )
    assert trainer.reward_func_names == ["principles", "readability"]
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    history = trainer.state.log_history
    judged = last_logged(history, "rewards/principles/mean")
    number = last_logged(history, "rewards/principles/number/mean")
    short = last_logged(history, "rewards/principles/is_the_response_short/mean")
    assert len(judged) == 2 and all(0.0 < v < 1.0 for v in judged), judged
    # The reward of a completion is (3 P(number) + P(short)) / 4, so its mean is the same mix of the means.
    assert judged == pytest.approx([(3 * n + s) / 4 for n, s in zip(number, short)], abs=1e-5)
    reward = last_logged(history, "reward")
    readability = last_logged(history, "rewards/readability/mean")
    assert reward == pytest.approx([0.6 * j + 0.4 * r for j, r in zip(judged, readability)], abs=1e-5)
    # 4 completions x 2 principles per step: each text is sent to the judge once or answered by its cache.
    calls = last_logged(history, "rewards/principles/judge_calls")
    hits = last_logged(history, "rewards/principles/judge_cache_hits")
    assert [c + h for c, h in zip(calls, hits)] == [8.0, 8.0] and calls[0] >= 1
    assert all(s > 0 for s in last_logged(history, "rewards/principles/judge_seconds"))
    assert any(not p.detach().equal(b) for p, b in zip(trainer.model.parameters(), before)), "no update"


def test_grpo_with_a_down_endpoint_skips_and_counts(tmp_path):
    with FakeJudgeServer() as server:
        server.default = "500"
        trainer = build_trainer(
            tmp_path,
            reward_funcs=None,
            reward_objectives={"principles": 0.5, "readability": 0.5},
            principles=["Is it kind?"],
            judge={"base_url": server.url, "model": "judge", "max_retries": 1, "backoff": 0.01},
            reward_error_policy="skip",
            max_steps=2,
        )
        trainer.train()
    history = trainer.state.log_history
    assert last_logged(history, "rewards/principles/errors") == [4.0, 4.0]  # every completion, every step
    assert last_logged(history, "rewards/principles/judge_retries") == [1.0, 1.0]  # one request per step, retried once
    assert last_logged(history, "rewards/principles/mean") == [None, None]  # no score, not a silent 0
    assert all(0.0 <= r <= 0.5 for r in last_logged(history, "reward"))  # readability alone, weighted 0.5
    assert len(server.requests) == 4
