"""`share_prompt` and `skip_zero_advantage` compute less and train the same weights as TRL's path.

The pure pieces (prompt grouping, the rows kept, the shared forward against TRL's) are checked on numbers; the options
are checked by training the tiny kit with them on and off from the same seed: same completions, same rewards, and
weights within float32 rounding after several steps, for several loss types, LoRA, the ladder, num_iterations > 1 and
gradient accumulation. SGD keeps the comparison honest: Adam divides by sqrt(v) and turns a 1e-9 rounding difference
in a near-zero gradient into a step of the learning rate's size.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM
from trl.trainer.utils import add_fused_lm_head

from tests.helpers import (
    REPO_ROOT,
    digit_reward,
    prompt_dataset,
    run_torchrun,
    tiny_args,
    tiny_model,
    tiny_tokenizer_cached,
)
from trl_grpo_ext import GRPOExtConfig, GRPOExtTrainer
from trl_grpo_ext.efficiency import (
    fill_rows,
    prompt_groups,
    rows_with_signal,
    shared_prompt,
    shared_prompt_log_probs,
    zero_advantage,
)
from trl_grpo_ext.kit import resolve_model_path


def any_digit_early(completions, **kwargs):
    """Pass / fail: most groups of a random model tie (all 0 or all 1), as on the real model."""
    return [float(any(ch.isdigit() for ch in c[:2])) for c in completions]


# ------------------------------------------------------------------------------------------------ pure pieces
class _FencedDocTestParser(doctest.DocTestParser):
    """Our docstrings fence examples in ```python ... ``` (TRL's style); the closing fence is not expected output."""

    def parse(self, string, name="<string>"):
        return super().parse(re.sub(r"^[ \t]*```.*$", "", string, flags=re.MULTILINE), name)


@pytest.mark.parametrize("module", [shared_prompt, zero_advantage], ids=lambda m: m.__name__)
def test_docstring_examples_are_exact(module):
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder(parser=_FencedDocTestParser()).find(module, module.__name__):
        runner.run(test)
    assert runner.summarize(verbose=False).attempted >= 3
    assert runner.failures == 0


def test_prompt_groups_number_distinct_prompts_by_first_appearance():
    ids = torch.tensor([[0, 5, 6], [7, 8, 9], [0, 5, 6], [0, 5, 6], [7, 8, 9], [0, 0, 6]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]])
    first, inverse = prompt_groups(ids, mask)
    assert first.tolist() == [0, 1, 5]
    assert inverse.tolist() == [0, 1, 0, 0, 1, 2]


def test_prompt_groups_tell_apart_equal_ids_with_different_masks():
    ids = torch.tensor([[0, 5], [0, 5]])
    first, inverse = prompt_groups(ids, torch.tensor([[0, 1], [1, 1]]))
    assert first.tolist() == [0, 1] and inverse.tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(5))
def test_prompt_groups_reconstruct_any_shuffled_batch(seed):
    generator = torch.Generator().manual_seed(seed)
    distinct = torch.randint(0, 4, (5, 6), generator=generator)
    rows = torch.randint(0, 5, (23,), generator=generator)
    ids, mask = distinct[rows], torch.ones(23, 6, dtype=torch.long)
    first, inverse = prompt_groups(ids, mask)
    assert torch.equal(ids[first][inverse], ids)
    assert len(first) == len({tuple(r) for r in ids.tolist()})
    assert first.tolist() == sorted(first.tolist())  # numbered by first appearance


def test_rows_with_signal_keeps_non_zero_rows_and_one_row_of_an_all_zero_batch():
    assert rows_with_signal(torch.tensor([0.0, -0.0, 2.0, 1e-30])).tolist() == [False, False, True, True]
    assert rows_with_signal(torch.zeros(3)).tolist() == [True, False, False]
    assert rows_with_signal(torch.tensor([[0.0, 0.0], [0.0, 0.5]])).tolist() == [False, True]  # per-token advantages


def test_fill_rows_sends_the_gradient_to_the_computed_rows_only():
    computed = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    placeholder = torch.full((3, 2), -7.0, requires_grad=True)
    full = fill_rows(computed, torch.tensor([True, False, True]), placeholder)
    assert full.tolist() == [[1.0, 2.0], [-7.0, -7.0], [3.0, 4.0]]
    (full * torch.arange(6.0).view(3, 2)).sum().backward()
    assert computed.grad.tolist() == [[0.0, 1.0], [4.0, 5.0]]
    assert placeholder.grad is None


# ------------------------------------------------------------------------------- the shared forward vs TRL's
def _scoring_batch():
    """Left-padded prompts of different lengths, each repeated, shuffled; completions right-padded."""
    prompts = [[11, 12, 13, 14, 15], [21, 22, 23], [31, 32, 33, 34]]
    order = [0, 1, 0, 2, 1, 0, 2, 2, 1, 0]
    generator = torch.Generator().manual_seed(0)
    width, length = 5, 6
    prompt_ids = torch.zeros(len(order), width, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    for row, p in enumerate(order):
        prompt_ids[row, width - len(prompts[p]) :] = torch.tensor(prompts[p])
        prompt_mask[row, width - len(prompts[p]) :] = 1
    completion_ids = torch.randint(3, 40, (len(order), length), generator=generator)
    completion_mask = torch.ones_like(completion_ids)
    for row, end in enumerate([6, 3, 6, 1, 4, 6, 2, 5, 6, 6]):
        completion_mask[row, end:] = 0
    return torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1), length


def _trl_forward(model, input_ids, attention_mask, logits_to_keep, compute_entropy=False, batch_size=None):
    """TRL 1.16's plain scoring of a text batch: labels on the completion, the fused LM head, chunked rows."""
    batch_size = batch_size or input_ids.size(0)
    logps, entropies = [], []
    for start in range(0, input_ids.size(0), batch_size):
        ids, mask = input_ids[start : start + batch_size], attention_mask[start : start + batch_size]
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :-logits_to_keep] = -100
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        logps.append(out.log_probs[:, -logits_to_keep:])
        entropies.append(out.entropy[:, -logits_to_keep:])
    return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None


@pytest.mark.parametrize("batch_size", [None, 4])
def test_shared_prompt_log_probs_equal_trls_forward_and_its_gradients(batch_size):
    model = tiny_model(seed=3)
    add_fused_lm_head(model, temperature=0.9, outputs=("log_probs", "entropy"))
    input_ids, attention_mask, keep = _scoring_batch()
    weights = torch.randn(input_ids.size(0), keep, generator=torch.Generator().manual_seed(1))

    plain, plain_entropy, _ = _trl_forward(model, input_ids, attention_mask, keep, True, batch_size)
    (plain * weights).sum().backward()
    plain_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    shared, shared_entropy, _ = shared_prompt_log_probs(
        model, input_ids, attention_mask, keep, compute_entropy=True, batch_size=batch_size, plain=_trl_forward
    )
    (shared * weights).sum().backward()

    assert plain.abs().max() > 1.0  # real log-probs, not a masked-out zero tensor
    torch.testing.assert_close(shared, plain, atol=2e-5, rtol=0)
    torch.testing.assert_close(shared_entropy, plain_entropy, atol=2e-5, rtol=0)
    assert torch.equal(shared == 0, plain == 0)  # the masked completion tokens, exactly where TRL has them
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, plain_grads[name], atol=2e-5, rtol=1e-4, msg=name)


def test_a_chunk_without_repeated_prompts_is_scored_by_the_plain_forward():
    model = tiny_model(seed=3)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    input_ids, attention_mask, keep = _scoring_batch()
    calls = []

    def plain(*args, **kwargs):
        calls.append(args[1].size(0))
        return _trl_forward(*args, **kwargs)

    distinct_rows = torch.tensor([0, 1, 3])
    shared_prompt_log_probs(model, input_ids[distinct_rows], attention_mask[distinct_rows], keep, plain=plain)
    assert calls == [3]


# ------------------------------------------------------------------------------------- training, on vs off
def _train(reward=any_digit_early, peft=False, max_steps=3, **overrides):
    args = tiny_args(tempfile.mkdtemp(), gradient_checkpointing=False, optim="sgd", max_steps=max_steps, **overrides)
    trainer = GRPOExtTrainer(
        tiny_model(),
        reward_funcs=reward,
        args=args,
        train_dataset=prompt_dataset(),
        processing_class=tiny_tokenizer_cached(),
        peft_config=LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0) if peft else None,
    )
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    end = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return trainer, start, end


def _assert_same_training(base, other, atol=1e-6):
    (trainer_a, start, end_a), (trainer_b, _, end_b) = base, other
    moved = max((end_a[n] - start[n]).abs().max().item() for n in start)
    assert moved > 1e-4, moved  # the weights did move: equal weights are not "nothing happened"
    worst = max((end_a[n] - end_b[n]).abs().max().item() for n in start)
    assert worst <= atol, f"weights differ by {worst:.3g} (moved {moved:.3g})"
    assert list(trainer_b._logs["completion"]) == list(trainer_a._logs["completion"])  # the same completions
    rewards_a = [e["reward"] for e in trainer_a.state.log_history if "reward" in e]
    rewards_b = [e["reward"] for e in trainer_b.state.log_history if "reward" in e]
    assert rewards_b == rewards_a


OPTIONS = {
    "share_prompt": dict(share_prompt=True),
    "skip_zero_advantage": dict(skip_zero_advantage=True),
    "both": dict(share_prompt=True, skip_zero_advantage=True),
}


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo", "dr_grpo", "luspo"])
@pytest.mark.parametrize("options", OPTIONS)
def test_the_options_train_the_same_weights_for_each_loss_type(loss_type, options):
    base = _train(loss_type=loss_type)
    other = _train(loss_type=loss_type, **OPTIONS[options])
    _assert_same_training(base, other)
    if "skip_zero_advantage" in OPTIONS[options]:
        skipped = [e["efficiency/skipped_rows_frac"] for e in other[0].state.log_history if "reward" in e]
        assert max(skipped) > 0  # rows were left out, so the equality is a real test of the skip
    if "share_prompt" in OPTIONS[options]:
        saved = [e["efficiency/prompt_tokens_saved_frac"] for e in other[0].state.log_history if "reward" in e]
        assert max(saved) > 0.5  # 4 completions a prompt: 3 of 4 prompts (less the last token) not recomputed


SETTINGS = {
    "lora": dict(peft=True),
    "ladder_rank": dict(temperature_schedule="linear", advantage_estimator="rank"),
    "iterations_and_accumulation": dict(num_iterations=2, gradient_accumulation_steps=2, steps_per_generation=2),
    "cispo": dict(loss_type="cispo"),
    "sapo": dict(loss_type="sapo"),
}


@pytest.mark.parametrize("setting", SETTINGS)
def test_the_options_train_the_same_weights_with_other_settings(setting):
    overrides = SETTINGS[setting]
    _assert_same_training(_train(**overrides), _train(**overrides, **OPTIONS["both"]))


COMPOSED = {
    "closed_loop_and_objectives": dict(
        reward=None,
        reward_objectives={"accuracy": 0.7, "readability": 0.2, "novelty": 0.1},
        temperature_schedule="linear",
        temperature_control="zero_std",
    ),
    "principles_and_online_reward_model": dict(
        reward=None,
        reward_objectives={"accuracy": 0.4, "principles": 0.3, "learned_preference": 0.3},
        principles=["Is the answer a number?"],
        judge={"model": "tiny:tiny", "batch_size": 8},
        online_reward_model={
            "model": "tiny:tiny",
            "pairs_per_update": 2,
            "learning_rate": 1e-3,
            "heldout_fraction": 0.0,
            "labeler": {"type": "gold", "objective": "accuracy"},
        },
    ),
}


@pytest.mark.parametrize("setting", COMPOSED)
def test_the_options_compose_with_the_reward_side_features(setting):
    """The closed-loop ladder, named objectives, a judged principles objective and an online reward model all read
    rewards, never the loss's log-probs: with the options on, the same rewards, completions and weights."""
    overrides = COMPOSED[setting]
    _assert_same_training(_train(**overrides), _train(**overrides, **OPTIONS["both"]))


def test_share_prompt_with_a_reference_model_gives_the_same_weights():
    """beta > 0 (LoRA: the reference is the adapter switched off): the reference forward shares prompts too."""
    base = _train(peft=True, beta=0.1, reward=digit_reward)
    _assert_same_training(base, _train(peft=True, beta=0.1, reward=digit_reward, share_prompt=True))


def test_skip_zero_advantage_logs_the_entropy_of_the_rows_it_computed():
    trainer, _, _ = _train(skip_zero_advantage=True, max_steps=2)
    logged = [e for e in trainer.state.log_history if "reward" in e]
    assert all(0 < e["entropy"] < 10 for e in logged)  # a mean over computed rows, not diluted by placeholders


def test_a_micro_batch_with_every_advantage_zero_trains_like_trl():
    """A constant reward ties every group: TRL's gradient is exactly 0, and so is ours from the one row kept."""
    constant = lambda completions, **kwargs: [1.0] * len(completions)  # noqa: E731
    trainer, start, end = _train(reward=constant, skip_zero_advantage=True, share_prompt=True)
    assert all(torch.equal(start[n], end[n]) for n in start)
    assert [e["efficiency/skipped_rows_frac"] for e in trainer.state.log_history if "reward" in e] == [0.75] * 3


# -------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(share_prompt=True, gradient_checkpointing=True), "`share_prompt=True` cannot be combined with activ"),
        (dict(skip_zero_advantage=True, beta=0.04), "needs `beta=0.0`, got `beta=0.04`"),
        (dict(skip_zero_advantage=True, entropy_coef=0.01), "needs `entropy_coef=0.0`, got `entropy_coef=0.01`"),
        (dict(skip_zero_advantage=True, top_entropy_quantile=0.2), "needs `top_entropy_quantile=1.0`, got"),
        (dict(skip_zero_advantage=True, loss_type="vespo"), "got 'vespo'"),
        (dict(share_prompt="yes"), "`share_prompt` must be true or false, got 'yes'"),
    ],
)
def test_the_options_refuse_what_they_cannot_keep_exact(tmp_path, overrides, message):
    """Each option refuses the settings under which it would change the numbers. Checkpointing is given by the name
    every transformers 5.x takes, `gradient_checkpointing`; its new name is checked below where it exists."""
    with pytest.raises(ValueError, match=re.escape(message)):
        GRPOExtConfig(str(tmp_path), use_cpu=True, bf16=False, **overrides)


def test_share_prompt_refuses_a_model_whose_backbone_takes_no_cache(tmp_path):
    class NoCache(torch.nn.Module):
        def forward(self, input_ids=None, attention_mask=None):
            raise AssertionError("not called")

    model = AutoModelForCausalLM.from_config(tiny_model().config)
    model.model.forward = NoCache().forward
    with pytest.raises(ValueError, match="takes no `cache` argument"):
        GRPOExtTrainer(
            model,
            reward_funcs=digit_reward,
            args=tiny_args(tmp_path, gradient_checkpointing=False, share_prompt=True),
            train_dataset=prompt_dataset(),
            processing_class=tiny_tokenizer_cached(),
        )


# --------------------------------------------------------------------------------------------- two processes
def _launch_fsdp2(script: str, *args: str, env: dict[str, str]) -> None:
    """`accelerate launch` with tests/dist/fsdp2_cpu.yaml: FSDP2 on 2 CPU processes (gloo)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "tests/dist/fsdp2_cpu.yaml"]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **env}
    result = subprocess.run([*command, script, *map(str, args)], cwd=REPO_ROOT, env=full_env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("launcher", ["ddp", "fsdp2"])
def test_two_processes_with_the_options_train_the_same_weights(tmp_path, monkeypatch, launcher):
    """2 CPU processes (DDP under torchrun, FSDP2 under accelerate launch), a group straddling them, some process's
    micro-batch entirely skipped: no hang, and the weights equal the run without the options."""
    from tests.dist import train_efficiency as run

    monkeypatch.setenv("TRL_GRPO_EXT_CACHE", str(tmp_path / "cache"))
    model_path = resolve_model_path("tiny:tiny")  # materialised once, here, not by two racing processes
    launch = run_torchrun if launcher == "ddp" else _launch_fsdp2
    weights, computed = {}, {}
    for name, flags in (("off", []), ("on", ["--options"])):
        output_dir = tmp_path / name
        output_dir.mkdir()
        launch(
            "tests/dist/train_efficiency.py",
            output_dir,
            model_path,
            *flags,
            env={"TRL_GRPO_EXT_CACHE": str(tmp_path / "cache")},
        )
        weights[name] = torch.load(output_dir / "weights.pt")
        computed[name] = [json.loads((output_dir / f"rows{rank}.json").read_text()) for rank in range(2)]
    start = dict(AutoModelForCausalLM.from_pretrained(model_path).named_parameters())
    moved = max((weights["off"][n] - start[n]).abs().max().item() for n in start)
    assert moved > 1e-4, moved
    worst = max((weights["on"][n] - weights["off"][n]).abs().max().item() for n in start)
    assert worst <= 1e-6, worst
    passes = [entry for rank in computed["on"] for entry in rank]
    assert len(passes) == 2 * run.MAX_STEPS
    assert any(signal == 0 for _, signal, _ in passes), passes  # a process whose rows were all skipped: no hang
    assert any(kept < total for kept, _, total in passes), passes


# ------------------------------------------------------------------------------------------- the real model
def half_dense_reward(completions, answer, **kwargs):
    """The reply's length for even sums (every group varies), pass / fail for odd ones (most groups tie): the weights
    move, and rows are skipped."""
    texts = [c[-1]["content"] for c in completions]
    return [len(t) / 10 if int(a) % 2 == 0 else float(a in t) for t, a in zip(texts, answer)]


def _train_real(tmp_path, name, quantized=False, **overrides):
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    from trl_grpo_ext.kit.tasks import chat_addition_dataset

    args = GRPOExtConfig(
        str(tmp_path / name),
        max_steps=2,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        learning_rate=0.05,
        optim="sgd",
        beta=0.0,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        **overrides,
    )
    quantization = None
    if quantized:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
    trainer = GRPOExtTrainer(
        "smollm2:135m-instruct",
        reward_funcs=half_dense_reward,
        args=args,
        train_dataset=chat_addition_dataset(16, seed=0),
        peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"),
        quantization_config=quantization,
    )
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    end = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return trainer, start, end


@pytest.mark.slow
@pytest.mark.parametrize("loss_type, quantized", [("dapo", False), ("grpo", False), ("dapo", True)])
def test_the_options_train_the_same_lora_weights_on_the_real_model(tmp_path, loss_type, quantized):
    """SmolLM2-135M-Instruct, LoRA (and QLoRA), chat prompts of ~47 tokens: the options change no weight."""
    base = _train_real(tmp_path, "off", quantized, loss_type=loss_type)
    other = _train_real(tmp_path, "on", quantized, loss_type=loss_type, share_prompt=True, skip_zero_advantage=True)
    _assert_same_training(base, other, atol=1e-5)
    logged = [e for e in other[0].state.log_history if "reward" in e]
    assert max(e["efficiency/prompt_tokens_saved_frac"] for e in logged) > 0.3
    assert max(e["efficiency/skipped_rows_frac"] for e in logged) > 0


def test_share_prompt_refuses_activation_checkpointing_by_its_new_name(tmp_path):
    if "activation_checkpointing" not in GRPOExtConfig.__dataclass_fields__:
        pytest.skip("this transformers has only `gradient_checkpointing` (tested above)")
    with pytest.raises(ValueError, match="`share_prompt=True` cannot be combined with activation checkpointing"):
        GRPOExtConfig(str(tmp_path), use_cpu=True, bf16=False, share_prompt=True, activation_checkpointing=True)
