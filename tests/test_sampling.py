"""Tests of `trl_grpo_ext.sampling`: the ladder's numbers, the per-row temperature processor against transformers' own
warpers, bit-identical sampling, exact scoring by hidden-state scaling, and the ladder's effect on diversity."""

import doctest
import math

import pytest
import torch
from torch import nn
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from trl.trainer.utils import add_fused_lm_head

from trl_grpo_ext import sampling
from trl_grpo_ext.kit.tiny import build_tiny_model
from trl_grpo_ext.sampling import (
    RowTemperatureLogitsProcessor,
    check_exact_temperature_scoring,
    distinct_fraction,
    group_ladder,
    reward_by_rung,
    row_temperatures,
    scale_hidden_states,
    scheduled_range,
    temperature_ladder,
)


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model(tokenizer, seed=0).eval()


@pytest.mark.parametrize("module", [sampling.ladder, sampling.processors, sampling.scoring, sampling.metrics])
def test_docstring_examples(module):
    assert doctest.testmod(module, raise_on_error=False).failed == 0


# 1. The ladder's numbers
def test_linear_ladder_uses_both_ends():
    assert temperature_ladder(4, 0.7, 1.0) == [0.7, 0.8, 0.9, 1.0]
    assert temperature_ladder(8, 0.7, 1.0)[0] == 0.7 and temperature_ladder(8, 0.7, 1.0)[-1] == 1.0
    assert temperature_ladder(1, 0.7, 1.0) == [0.7]
    assert temperature_ladder(3, 0.8, 0.8) == [0.8, 0.8, 0.8]


def test_seed_formula_never_reaches_t_max():
    # Seed 001: temp = 0.7 + 0.3 * (i / K), commented "0.7 to 1.0"; for K = 8 it stops at 0.9625.
    seed = [0.7 + 0.3 * (i / 8) for i in range(8)]
    assert seed[-1] == pytest.approx(0.9625)
    ours = temperature_ladder(8, 0.7, 1.0)
    assert ours == pytest.approx([0.7 + 0.3 * i / 7 for i in range(8)])
    assert ours[-1] == 1.0 > seed[-1]


def test_geometric_ladder():
    assert temperature_ladder(3, 0.5, 2.0, kind="geometric") == [0.5, 1.0, 2.0]
    ladder = temperature_ladder(4, 0.7, 1.0, kind="geometric")
    assert ladder == pytest.approx([0.7, 0.7883735163, 0.8879040017, 1.0])
    ratios = [b / a for a, b in zip(ladder, ladder[1:])]
    assert ratios == pytest.approx([(1.0 / 0.7) ** (1 / 3)] * 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "cubic"}, "`kind` must be one of \\['linear', 'geometric'\\], got 'cubic'"),
        ({"t_min": 0.0}, "`t_min` must be a finite temperature > 0, got 0.0"),
        ({"t_max": -1.0}, "`t_max` must be a finite temperature > 0, got -1.0"),
        ({"t_min": 1.2, "t_max": 1.0}, "`t_min` must be <= `t_max`, got t_min=1.2, t_max=1.0"),
        ({"num_generations": 0}, "`num_generations` must be an integer >= 1, got 0"),
        ({"t_max": math.inf}, "`t_max` must be a finite temperature > 0, got inf"),
    ],
)
def test_ladder_validation(kwargs, match):
    args = {"num_generations": 4, "t_min": 0.7, "t_max": 1.0} | kwargs
    with pytest.raises(ValueError, match=match):
        temperature_ladder(**args)


def test_scheduled_range():
    start, final = [0.7, 1.0], [0.5, 0.9]
    assert scheduled_range(start, final, step=0, max_steps=100) == (0.7, 1.0)
    assert scheduled_range(start, final, step=50, max_steps=100) == (0.6, 0.95)
    assert scheduled_range(start, final, step=100, max_steps=100) == (0.5, 0.9)
    assert scheduled_range(start, final, step=250, max_steps=100) == (0.5, 0.9)  # clamped
    assert scheduled_range(start, None, step=50, max_steps=100) == (0.7, 1.0)
    assert scheduled_range(start, final, step=50, max_steps=0) == (0.7, 1.0)


def test_group_ladder():
    common = {"temperature": 0.9, "temperature_range": [0.7, 1.0]}
    assert group_ladder(3, schedule="constant", **common) == [0.9, 0.9, 0.9]
    assert group_ladder(4, schedule="linear", **common) == [0.7, 0.8, 0.9, 1.0]
    assert group_ladder(3, schedule="geometric", **common) == temperature_ladder(3, 0.7, 1.0, "geometric")
    assert group_ladder(2, schedule="constant", group_temperatures=[0.3, 1.5], **common) == [0.3, 1.5]
    moved = group_ladder(2, schedule="linear", temperature_range_final=[0.5, 0.9], step=50, max_steps=100, **common)
    assert moved == [0.6, 0.95]
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        group_ladder(2, schedule="cosine", **common)
    with pytest.raises(ValueError, match="`group_temperatures` must hold num_generations=3"):
        group_ladder(3, schedule="linear", group_temperatures=[0.5, 1.0], **common)


def test_row_temperatures_follow_global_slots():
    ladder = [0.5, 1.0, 2.0]  # K = 3; 2 processes x 4 rows: global slots 0,1,2,0 | 1,2,0,1
    assert row_temperatures(ladder, num_rows=4, process_index=0).tolist() == [0.5, 1.0, 2.0, 0.5]
    assert row_temperatures(ladder, num_rows=4, process_index=1).tolist() == [1.0, 2.0, 0.5, 1.0]
    temps = row_temperatures(ladder, num_rows=6)
    assert temps.dtype == torch.float32 and temps.shape == (6,)
    assert temps.tolist() == [0.5, 1.0, 2.0] * 2


def test_metric_helpers():
    assert distinct_fraction([(1, 2), (1, 2), (3,), (4,)], num_generations=2) == 0.75
    assert reward_by_rung(torch.tensor([0.0, 1.0, 2.0, float("nan")]), num_generations=2).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="whole groups of num_generations=3"):
        distinct_fraction(["a", "b"], num_generations=3)


# 2. The processor equals transformers' own warpers, row by row
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_processor_matches_transformers_warpers_row_by_row(seed):
    generator = torch.Generator().manual_seed(seed)
    temps = row_temperatures(temperature_ladder(4, 0.3, 2.5, kind="geometric"), num_rows=8, process_index=1)
    scores = torch.randn(8, 257, generator=generator) * 4
    input_ids = torch.zeros(8, 3, dtype=torch.long)
    warpers = [TopKLogitsWarper(top_k=40), TopPLogitsWarper(top_p=0.8), MinPLogitsWarper(min_p=0.05)]

    ours = LogitsProcessorList([RowTemperatureLogitsProcessor(temps), *warpers])(input_ids, scores.clone())
    for i, temperature in enumerate(temps.tolist()):
        reference = LogitsProcessorList([TemperatureLogitsWarper(temperature), *warpers])
        expected = reference(input_ids[i : i + 1], scores[i : i + 1].clone())
        assert torch.equal(ours[i : i + 1], expected), f"row {i} (T={temperature})"
        assert torch.isinf(expected).any()  # the filters did cut something


def test_processor_rejects_wrong_batch_and_bad_temperatures():
    proc = RowTemperatureLogitsProcessor([0.7, 1.0])
    with pytest.raises(ValueError, match="holds 2 row temperatures but got scores for 4 rows"):
        proc(None, torch.zeros(4, 5))
    with pytest.raises(ValueError, match="finite and > 0"):
        RowTemperatureLogitsProcessor([0.7, 0.0])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        RowTemperatureLogitsProcessor([])


# 3. Inside `generate`: bit-identical sampling, and the pipeline order with a mixed ladder
@pytest.mark.parametrize(
    "temperature, filters",
    [(0.7, {"top_k": 10, "top_p": 0.9}), (1.3, {"top_k": 20, "top_p": 0.95, "min_p": 0.02})],
)
def test_generate_bit_identical_to_temperature(model, tokenizer, temperature, filters):
    enc = tokenizer(["12+3=", "7*8=", "100-1=", "4/2="] * 2, padding=True, return_tensors="pt")
    common = {"do_sample": True, "max_new_tokens": 8, **filters}

    torch.manual_seed(11)
    expected = model.generate(**enc, temperature=temperature, **common)
    proc = RowTemperatureLogitsProcessor(torch.full((8,), temperature))
    torch.manual_seed(11)
    ours = model.generate(**enc, temperature=1.0, logits_processor=LogitsProcessorList([proc]), **common)
    assert torch.equal(ours, expected)


def test_generate_applies_row_temperature_before_filters(model, tokenizer):
    # The scores `generate` samples from are, row by row, [TemperatureLogitsWarper(T_i), TopK, TopP, MinP] applied
    # to its raw logits: our processor runs before the filters and no second temperature warper is added.
    enc = tokenizer(["12+3="] * 6, return_tensors="pt")
    temps = row_temperatures([0.4, 1.0, 2.5], num_rows=6)
    torch.manual_seed(3)
    out = model.generate(
        **enc,
        do_sample=True,
        temperature=1.0,
        top_k=10,
        top_p=0.9,
        min_p=0.05,
        max_new_tokens=4,
        logits_processor=LogitsProcessorList([RowTemperatureLogitsProcessor(temps)]),
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
    )
    filters = [TopKLogitsWarper(top_k=10), TopPLogitsWarper(top_p=0.9), MinPLogitsWarper(min_p=0.05)]
    for raw, processed in zip(out.logits, out.scores):
        for i, temperature in enumerate(temps.tolist()):
            expected = LogitsProcessorList([TemperatureLogitsWarper(temperature), *filters])(None, raw[i : i + 1])
            assert torch.equal(processed[i : i + 1], expected)


# 4. Scoring at the sampled temperature by scaling the hidden state
def test_hidden_state_scaling_scores_at_row_temperature(model, tokenizer):
    ids = tokenizer(["12+3=15", "7*8=56", "100-1=9"], padding=True, return_tensors="pt").input_ids
    temps, base = torch.tensor([0.5, 0.9, 1.7]), 0.9
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state
        scaled = torch.log_softmax(model.lm_head(scale_hidden_states(hidden, base / temps)) / base, dim=-1)
        direct = torch.log_softmax(model.lm_head(hidden) / temps[:, None, None], dim=-1)
    torch.testing.assert_close(scaled, direct, atol=5e-6, rtol=0)
    assert scale_hidden_states(hidden.bfloat16(), base / temps).dtype == torch.bfloat16


@pytest.mark.parametrize("logit_scale", [None, 0.5])
def test_hidden_state_scaling_through_trl_fused_head(tokenizer, logit_scale):
    # How the trainer scores: TRL's fused head at T_base, the backbone's last hidden state scaled by T_base / T_i.
    model = build_tiny_model(tokenizer, seed=1).eval()
    model.config.logit_scale = logit_scale  # multiplicative, so still exact
    check_exact_temperature_scoring(model)
    ids = tokenizer(["12+3=15", "7*8=56", "100-1=9"], padding=True, return_tensors="pt").input_ids
    temps, base = torch.tensor([0.5, 0.9, 1.7]), 0.9
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1] * (logit_scale or 1.0)
    expected = torch.log_softmax(logits / temps[:, None, None], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)

    add_fused_lm_head(model, temperature=base)

    def scale_last_hidden_state(module, args, output):
        output.last_hidden_state = scale_hidden_states(output.last_hidden_state, base / temps)
        return output

    handle = model.model.register_forward_hook(scale_last_hidden_state)
    with torch.no_grad():
        log_probs = model(input_ids=ids, labels=ids, fused_lm_head=True).log_probs
    handle.remove()
    torch.testing.assert_close(log_probs, expected, atol=5e-6, rtol=0)


def test_check_exact_temperature_scoring(tokenizer):
    check_exact_temperature_scoring(build_tiny_model(tokenizer))
    llama = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    check_exact_temperature_scoring(LlamaForCausalLM(llama))

    biased = build_tiny_model(tokenizer)
    biased.lm_head = nn.Linear(biased.config.hidden_size, biased.config.vocab_size, bias=True)
    with pytest.raises(ValueError, match=r"Qwen2ForCausalLM \(model_type='qwen2'\): lm_head has a bias"):
        check_exact_temperature_scoring(biased)

    gemma2 = Gemma2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=30.0,
    )
    with pytest.raises(ValueError, match=r"Gemma2ForCausalLM \(model_type='gemma2'\): final_logit_softcapping=30.0"):
        check_exact_temperature_scoring(Gemma2ForCausalLM(gemma2))


# 5. Behaviour: cold rungs collapse, hot rungs spread
def test_cold_rows_agree_hot_rows_differ(model, tokenizer):
    # The random tiny model is flat (logit std ~0.2), so "cold" needs 0.02 to be near-greedy here.
    enc = tokenizer(["12+3="] * 8, return_tensors="pt")
    proc = RowTemperatureLogitsProcessor([0.02] * 4 + [3.0] * 4)
    torch.manual_seed(0)
    out = model.generate(
        **enc,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        max_new_tokens=12,
        min_new_tokens=12,
        logits_processor=LogitsProcessorList([proc]),
    )
    completions = [tuple(row) for row in out[:, enc.input_ids.shape[1] :].tolist()]
    assert len(set(completions[:4])) == 1
    assert len(set(completions[4:])) == 4
    assert distinct_fraction(completions, num_generations=4) == pytest.approx((1 / 4 + 1) / 2)
