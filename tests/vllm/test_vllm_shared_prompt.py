"""`share_prompt` + `skip_zero_advantage` with a colocated vLLM engine: the same completions and weights as without.

vLLM generates (its own prefix caching shares the prompts there, and is on in colocate mode); the options change the
loss's forward and backward, the old-policy forward TRL runs for the importance-sampling correction, and nothing
else. SGD at a learning rate that moves the weights, so the engine syncs new weights at every step.

Run in the vLLM venv: `.ci/vllm-tests` (CI) or `VENV/bin/python -m pytest -m vllm tests/vllm`.
"""

import pytest

from tests.vllm.test_vllm_ladder import train

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

SETTINGS = dict(learning_rate=1e-2, optim="sgd", max_steps=3, gradient_checkpointing=False, beta=0.0)


def test_the_options_train_the_same_weights_through_vllm(tmp_path):
    base = train(tmp_path, "off", record_weights=True, **SETTINGS)
    other = train(tmp_path, "on", record_weights=True, share_prompt=True, skip_zero_advantage=True, **SETTINGS)
    assert other["completions"] == base["completions"]
    assert other["prefix_caching"] and base["prefix_caching"]  # vLLM shares the prompts on its side
    moved = max(abs(a - b) for a, b in zip(base["weights"], base["weights_start"], strict=True))
    assert moved > 1e-4, moved
    worst = max(abs(a - b) for a, b in zip(base["weights"], other["weights"], strict=True))
    assert worst <= 1e-5, worst
    logged = [e for e in other["log_history"] if "reward" in e]
    assert all(e["efficiency/prompt_tokens_saved_frac"] > 0.5 for e in logged), logged
    assert all(abs(e["sampling/importance_sampling_ratio/mean"] - 1) < 1e-2 for e in logged), logged
