"""GRPO on the real pretrained model of the kit (SmolLM2-135M-Instruct): LoRA, QLoRA, the CLI recipe, the demo.

Each trains for real on 2 CPU cores (a 16-completion step of 8 tokens takes ~5-10 s); all are marked slow. The vLLM
colocate run on the same model is in tests/vllm/test_vllm_real_model.py.
"""

import json
import math

import pytest
import torch
from datasets import Dataset

from tests.helpers import last_logged
from trl_grpo_ext import GRPOExtConfig, GRPOExtTrainer
from trl_grpo_ext.kit.tasks import chat_addition_dataset
from trl_grpo_ext.rewards import WeightedReward, accuracy, readability

pytestmark = pytest.mark.slow
SMOLLM2 = "smollm2:135m-instruct"
RECIPE = "recipes/smollm2-135m-instruct/addition-lora-cpu.yaml"


def _args(tmp_path, **overrides) -> GRPOExtConfig:
    kwargs = dict(
        max_steps=2,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        learning_rate=1e-3,
        beta=0.0,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        temperature_schedule="linear",
        temperature_range=[0.7, 1.0],
        advantage_estimator="rank",
    )
    kwargs.update(overrides)
    return GRPOExtConfig(str(tmp_path / "run"), **kwargs)


def _reward() -> WeightedReward:
    return WeightedReward(
        {"accuracy": accuracy, "readability": readability}, weights={"accuracy": 0.9, "readability": 0.1}
    )


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")


def _lora_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_B" in k}


def _assert_trained(trainer, before: dict[str, torch.Tensor]) -> None:
    history = trainer.state.log_history
    assert trainer.state.global_step == 2
    assert last_logged(history, "ladder/t_min") == [0.7, 0.7] and last_logged(history, "ladder/t_max") == [1.0, 1.0]
    for key in ("rewards/accuracy/mean", "rewards/readability/mean", "advantages/mean", "loss"):
        assert all(math.isfinite(v) for v in last_logged(history, key)), key
    after = _lora_weights(trainer.model)
    # LoRA B starts at zero; a step with a non-zero advantage moves it
    assert max((after[k] - before[k]).abs().max().item() for k in before) > 0


def test_lora_grpo_on_the_real_model(tmp_path):
    """The kit name goes straight to the trainer; the real 49k-vocabulary model trains with ladder, rank and a
    WeightedReward through LoRA."""
    data = chat_addition_dataset(16, seed=0, split="train")
    trainer = GRPOExtTrainer(
        SMOLLM2, reward_funcs=_reward(), args=_args(tmp_path), train_dataset=data, peft_config=_lora()
    )
    assert trainer.model.config.vocab_size == 49152
    before = _lora_weights(trainer.model)
    assert before and all(v.abs().max() == 0 for v in before.values())
    trainer.train()
    _assert_trained(trainer, before)


def test_qlora_grpo_on_the_real_model(tmp_path):
    """bitsandbytes 4-bit (NF4) base weights on the CPU, LoRA on top, as TRL's QLoRA recipes do on a GPU."""
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    args = _args(tmp_path, model_init_kwargs={"quantization_config": quantization, "device_map": {"": "cpu"}})
    data = chat_addition_dataset(16, seed=0, split="train")
    trainer = GRPOExtTrainer(SMOLLM2, reward_funcs=_reward(), args=args, train_dataset=data, peft_config=_lora())
    import bitsandbytes as bnb

    linear4bit = [m for m in trainer.model.modules() if type(m) is bnb.nn.Linear4bit]
    assert len(linear4bit) == 30 * 7  # every projection of the 30 layers is 4-bit (each under a LoRA wrapper)
    assert all(m.weight.dtype == torch.uint8 for m in linear4bit)  # packed NF4
    before = _lora_weights(trainer.model)
    trainer.train()
    _assert_trained(trainer, before)


def test_recipe_trains_through_the_cli(tmp_path):
    from trl_grpo_ext.cli import main

    out = tmp_path / "recipe"
    argv = ["train", "--config", RECIPE, "--max_steps", "1", "--output_dir", str(out)]
    argv += ["--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "8"]
    argv += ["--save_strategy", "steps", "--save_steps", "1"]
    assert main(argv) == 0
    state = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["global_step"] == 1
    assert "rewards/accuracy/mean" in state["log_history"][0]
    assert (next(out.glob("checkpoint-*")) / "adapter_model.safetensors").exists()  # LoRA adapter, not the full model


def test_real_demo_quick(tmp_path):
    from trl_grpo_ext.demos.real import run_real_demo

    summary = run_real_demo(tmp_path / "demo", quick=True, compare=True)
    assert summary["model"] == SMOLLM2 and summary["heldout_size"] == 32 and summary["steps"] == 2
    assert 0.0 < summary["heldout_accuracy_before"] < 0.6  # the base model is weak at two-digit sums
    assert set(summary["runs"]) == {
        "GRPOExtTrainer (ladder 0.7-1.0, rank, LoRA)",
        "trl.GRPOTrainer (T=1.0, z-score, LoRA)",
    }
    assert any(path.endswith("rewards.png") for path in summary["report_files"])


def test_plain_chat_prompts_are_what_the_model_sees():
    """The task's prompt is one user message; the model's template adds its own system prompt."""
    from transformers import AutoTokenizer

    from trl_grpo_ext.kit import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(SMOLLM2))
    row = Dataset.from_list([chat_addition_dataset(1, seed=0, split="test")[0]])[0]
    text = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("Reply with just the number.<|im_end|>\n<|im_start|>assistant\n")
