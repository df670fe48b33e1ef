"""Recipes, dataset presets and training runs through the real command line.

The subprocess runs (marked slow) use the tiny offline recipe with `--max_steps 2`, so nothing is downloaded.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets import Dataset

from trl_grpo_ext import cli
from trl_grpo_ext.cli.data import apply_preset, format_prompt, generated_splits, gsm8k_final_answer

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.relative_to(ROOT).parts)
ACCELERATE_CONFIGS = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))
TINY_RECIPE = "recipes/tiny/cpu-offline.yaml"
CPU_RECIPE_DIRS = {"tiny", "smollm2-135m-instruct"}  # offline CPU recipes, their figures measured here
GPU_RECIPES = [p for p in RECIPES if not CPU_RECIPE_DIRS & set(p.parts)]
TIMEOUT = 600


def recipe_id(path: Path) -> str:
    return str(path.relative_to(ROOT / "recipes"))


# ------------------------------------------------------------------------------------------------- recipes
def test_the_expected_recipes_exist():
    names = {recipe_id(p) for p in RECIPES}
    assert {
        "tiny/cpu-offline.yaml",
        "qwen2.5-0.5b-instruct/gsm8k-lora.yaml",
        "qwen2.5-1.5b-instruct/gsm8k-qlora.yaml",
        "llama-3.1-8b-instruct/gsm8k-qlora.yaml",
        "smollm2-135m-instruct/addition-lora-cpu.yaml",
    } <= names
    assert {p.name for p in ACCELERATE_CONFIGS} == {"single_gpu.yaml", "multi_gpu.yaml", "deepspeed_zero2.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=recipe_id)
def test_recipe_passes_dry_run(recipe, capsys, monkeypatch):
    import datasets
    import transformers

    def forbidden(*args, **kwargs):
        raise AssertionError("a dry run must not load a model or a dataset")

    monkeypatch.setattr(datasets, "load_dataset", forbidden)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)
    code = cli.main(["train", "--config", str(recipe), "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "dry run OK" in out


@pytest.mark.parametrize("recipe", RECIPES, ids=recipe_id)
def test_recipe_header(recipe):
    text = recipe.read_text()
    header = text.split("\n\n", 1)[0]
    assert all(line.startswith("#") for line in header.splitlines()), "a recipe starts with its comment block"
    for word in ("Hardware:", "Peak memory:", "Time per step:", "Run it:"):
        assert word in header, f"{recipe_id(recipe)}: header lacks {word!r}"
    assert f"--config recipes/{recipe_id(recipe)}" in header, "the header gives the exact command"
    if recipe in GPU_RECIPES:
        assert "estimated" in header, "figures not measured must say so"
    else:
        assert "measured" in header.lower(), "a CPU recipe's figures are measured here"


@pytest.mark.parametrize("recipe", GPU_RECIPES, ids=recipe_id)
def test_gpu_recipes_use_our_features(recipe):
    config = yaml.safe_load(recipe.read_text())
    assert config["temperature_schedule"] in ("linear", "geometric")
    assert config["advantage_estimator"] == "rank"
    assert {"accuracy", "novelty"} <= set(config["reward_objectives"])
    assert config["use_peft"] is True and config["bf16"] is True
    assert config["dataset_name"] == "openai/gsm8k" and config["dataset_config"] == "main"
    if "qlora" in recipe.name:
        assert config["load_in_4bit"] is True and config["bnb_4bit_quant_type"] == "nf4"
        assert config["gradient_checkpointing"] is True


@pytest.mark.parametrize("config", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads(config):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(config))
    expected = {"single_gpu.yaml": "NO", "multi_gpu.yaml": "MULTI_GPU", "deepspeed_zero2.yaml": "DEEPSPEED"}
    assert loaded.distributed_type.value == expected[config.name]
    if config.name == "deepspeed_zero2.yaml":
        assert loaded.deepspeed_config["zero_stage"] == 2


# ------------------------------------------------------------------------------------------------- presets
def test_gsm8k_final_answer():
    assert gsm8k_final_answer("Natalia sold 48/2 = 24 clips.\n#### 72") == "72"
    assert gsm8k_final_answer("... #### 1,234 ") == "1234"
    with pytest.raises(ValueError, match="####"):
        gsm8k_final_answer("no final answer")


def test_gsm8k_preset():
    raw = Dataset.from_list([{"question": "What is 2+3?", "answer": "2+3=5\n#### 5"}])
    row = apply_preset(raw, "gsm8k", system_prompt="Be brief.")[0]
    assert row["prompt"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+3?"},
    ]
    assert row["answer"] == "5" and row["solution"] == "2+3=5\n#### 5"
    assert "question" not in row
    plain = apply_preset(raw, "gsm8k", conversational=False)[0]
    assert plain["prompt"] == "What is 2+3?"


def test_prompt_answer_preset_with_custom_columns():
    raw = Dataset.from_list([{"problem": "1+1=", "target": 2, "id": 7}])
    row = apply_preset(raw, "prompt_answer", prompt_column="problem", answer_column="target", conversational=False)[0]
    assert row == {"prompt": "1+1=", "answer": "2", "id": 7}


def test_prompt_answer_keeps_conversations():
    messages = [{"role": "system", "content": "Mine."}, {"role": "user", "content": "1+1="}]
    raw = Dataset.from_list([{"prompt": messages, "answer": "2"}])
    row = apply_preset(raw, "prompt_answer", system_prompt="Ignored: the prompt has one.")[0]
    assert row["prompt"] == messages


def test_preset_missing_columns():
    with pytest.raises(ValueError, match="missing: \\['question'\\]"):
        apply_preset(Dataset.from_list([{"prompt": "x", "answer": "1"}]), "gsm8k")
    with pytest.raises(ValueError, match="dataset_preset"):
        apply_preset(Dataset.from_list([{"prompt": "x", "answer": "1"}]), "mnist")


def test_format_prompt():
    assert format_prompt("1+1=") == [{"role": "user", "content": "1+1="}]
    assert format_prompt("1+1=", "Sys.", conversational=False) == "Sys.\n1+1="
    with pytest.raises(ValueError, match="string or a list"):
        format_prompt(3)


def test_arithmetic_preset():
    splits = generated_splits("arithmetic", 8, seed=0, with_test=True)
    train = apply_preset(splits["train"], "arithmetic", system_prompt="Add.")
    assert len(train) == 8 and len(splits["test"]) == 2
    assert train[0]["prompt"][0] == {"role": "system", "content": "Add."}
    a, b = train[0]["prompt"][1]["content"].rstrip("=").split("+")
    assert int(a) + int(b) == int(train[0]["answer"])
    assert not set(splits["train"]["prompt"]) & set(splits["test"]["prompt"])


# ------------------------------------------------------------------------------------------------- training runs
def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _run(command: list[str]) -> subprocess.CompletedProcess:
    # The tiny model is written to the cache once here, not by several launched processes at the same time.
    from trl_grpo_ext.kit import resolve_model_path

    resolve_model_path("tiny:small")
    result = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def _assert_trained(output_dir: Path, steps: int = 2) -> dict:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == steps
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(logged) == steps
    assert all("ladder/t_min" in entry and "rewards/accuracy/mean" in entry for entry in logged)
    return state


@pytest.mark.slow
def test_tiny_recipe_trains_through_the_cli(tmp_path):
    out = tmp_path / "run"
    _run([sys.executable, "-m", "trl_grpo_ext", "train", "--config", TINY_RECIPE, "--max_steps", "2",
          "--output_dir", str(out)])  # fmt: skip
    state = _assert_trained(out)
    assert state["log_history"][0]["epoch"] == pytest.approx(1 / 64)  # one process: one prompt of 4 rows per step
    assert (out / "model.safetensors").exists()


@pytest.mark.slow
def test_qlora_tiny_run_through_the_cli(tmp_path, monkeypatch, capsys):
    """`--load_in_4bit --use_peft` on the tiny model: bitsandbytes Linear4bit layers under LoRA, 2 real steps."""
    import bitsandbytes as bnb

    from trl_grpo_ext.trainer import GRPOExtTrainer

    seen = {}
    original_train = GRPOExtTrainer.train

    def inspecting_train(self, *args, **kwargs):
        modules = list(self.model.modules())
        seen["linear4bit"] = [m for m in modules if isinstance(m, bnb.nn.Linear4bit)]
        seen["lora"] = [m for m in modules if hasattr(m, "lora_A") and isinstance(m.base_layer, bnb.nn.Linear4bit)]
        seen["trainable"] = [n for n, p in self.model.named_parameters() if p.requires_grad]
        return original_train(self, *args, **kwargs)

    monkeypatch.setattr(GRPOExtTrainer, "train", inspecting_train)
    out = tmp_path / "qlora"
    code = cli.main(["train", "--config", str(ROOT / TINY_RECIPE), "--model_name_or_path", "tiny:tiny",
                     "--load_in_4bit", "--use_peft", "--lora_target_modules", "all-linear", "--max_steps", "2",
                     "--output_dir", str(out), "--disable_tqdm", "true"])  # fmt: skip
    assert code == 0, capsys.readouterr().err[-4000:]
    layers, heads = 2, 7  # tiny: 2 decoder layers of q, k, v, o, gate, up, down projections
    assert len(seen["linear4bit"]) == layers * heads
    assert len(seen["lora"]) == layers * heads
    assert seen["trainable"] and all("lora_" in name for name in seen["trainable"])
    _assert_trained(out)
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()


@pytest.mark.slow
def test_tiny_recipe_under_accelerate_launch_with_tensorboard(tmp_path):
    out = tmp_path / "accelerate"
    _run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu",
          "-m", "trl_grpo_ext", "train", "--config", TINY_RECIPE, "--max_steps", "2", "--output_dir", str(out),
          "--report_to", "tensorboard"])  # fmt: skip
    _assert_trained(out)
    assert list(out.glob("runs/*/events.out.tfevents.*")), "tensorboard wrote no event file"


@pytest.mark.slow
@pytest.mark.distributed
def test_tiny_recipe_under_torchrun_two_processes(tmp_path):
    out = tmp_path / "torchrun"
    result = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "trl_grpo_ext",
                   "train", "--config", TINY_RECIPE, "--max_steps", "2", "--output_dir", str(out)])  # fmt: skip
    state = _assert_trained(out)
    # The recipe's 64 prompts, 4 completions each; 4 rows per process: each step uses one prompt per process.
    assert state["log_history"][0]["epoch"] == pytest.approx(2 / 64)
    assert "Model and trainer state saved" in result.stdout + result.stderr


@pytest.mark.slow
def test_principles_recipe_trains_through_the_cli(tmp_path):
    out = tmp_path / "run"
    _run([sys.executable, "-m", "trl_grpo_ext", "train", "--config", "recipes/tiny/principles.yaml",
          "--max_steps", "2", "--output_dir", str(out)])  # fmt: skip
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert state["global_step"] == 2 and len(logged) == 2
    for entry in logged:
        assert 0.0 < entry["rewards/principles/mean"] < 1.0
        assert entry["rewards/principles/judge_calls"] + entry["rewards/principles/judge_cache_hits"] == 8  # 4 x 2
        assert entry["rewards/principles/errors"] == 0.0
        assert "rewards/principles/number/mean" in entry and "rewards/accuracy/mean" in entry
