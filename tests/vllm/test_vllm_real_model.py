"""The ladder through a colocated vLLM engine on the real pretrained model (SmolLM2-135M-Instruct, 49k vocabulary).

Run in the vLLM venv: `.ci/vllm-tests` (CI) or `VENV/bin/python -m pytest -m vllm tests/vllm`. The kit converts the
model once per session (~30 s); each run starts its own engine (~40-60 s).
"""

import pytest

from tests.helpers import last_logged
from tests.vllm.test_vllm_ladder import groups, train

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

SMOLLM2 = "smollm2:135m-instruct"
RATIO = "sampling/importance_sampling_ratio/mean"


def test_cold_rung_is_greedy_hot_rungs_vary_on_the_real_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_grpo_ext.kit import resolve_model_path

    run = train(
        tmp_path, "cold-hot", model=SMOLLM2, group_temperatures=[0.01, 0.01, 1.5, 1.5], learning_rate=0.0, max_steps=1
    )
    by_group = groups(run["completions"])
    assert all(g[0] == g[1] for g in by_group), [g[:2] for g in by_group]
    hot = [(g[2], g[3]) for g in by_group]
    assert sum(a != b for a, b in hot) >= 0.75 * len(hot), hot

    # The cold slot is the greedy completion (transformers, same weights): argmax ties aside, the same text.
    path = resolve_model_path(SMOLLM2)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    prompts = run["prompts"][::4]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=8, do_sample=False)
    greedy = tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    agree = sum(g[0] == text for g, text in zip(by_group, greedy))
    assert agree >= 0.75 * len(greedy), list(zip([g[0] for g in by_group], greedy))


def test_real_model_engine_follows_the_trained_weights(tmp_path):
    """A learning rate that moves the 135M weights, a linear ladder 0.5-1.5, TRL's weight sync every step: the
    importance-sampling ratio over the 49k vocabulary stays within 1e-2 of 1."""
    run = train(
        tmp_path,
        "synced",
        model=SMOLLM2,
        temperature_schedule="linear",
        temperature_range=[0.5, 1.5],
        learning_rate=1e-5,
        max_steps=3,
    )
    ratios = last_logged(run["log_history"], RATIO)
    assert len(ratios) == 3 and all(abs(r - 1) < 1e-2 for r in ratios), ratios
    assert max(last_logged(run["log_history"], "grad_norm")) > 0
