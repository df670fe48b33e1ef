"""Offline tiny-model kit: a real Qwen2 causal LM, its tokenizer and a reward model, built locally with no download.

Tests, the demo, the benchmarks and the tiny recipe all use this kit, so nothing here ever touches the Hub.

The tokenizer is character-level (built with the `tokenizers` library): every printable ASCII character is a token,
plus `<pad>`, `<s>`, `<unk>` and the ChatML markers `<|im_start|>` / `<|im_end|>` (the end-of-sequence token). It pads
on the left, as generation wants, and carries a ChatML chat template so conversational prompts work.

Example:
    >>> from trl_grpo_ext.kit.tiny import build_tiny_model, build_tiny_tokenizer
    >>> tok = build_tiny_tokenizer()
    >>> tok("12+3=").input_ids
    [6, 7, 77, 8, 85]
    >>> model = build_tiny_model(tok)
    >>> model.config.model_type, model.num_parameters() < 200_000
    ('qwen2', True)
"""

from __future__ import annotations

import difflib
import os
import re
import string
import threading
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
)

SPECIAL_TOKENS = ["<pad>", "<s>", "<unk>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# name -> (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads)
MODEL_SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (64, 128, 2, 4, 2),  # ~0.1 M parameters: unit tests
    "small": (128, 384, 4, 4, 2),  # ~0.8 M parameters: the demo
    "50m": (512, 1536, 12, 8, 4),  # ~50 M parameters (with a 32k vocabulary in the benchmarks)
}


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer with pad/bos/eos, left padding and a ChatML chat template."""
    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    specials = "|".join(_regex_escape(t) for t in SPECIAL_TOKENS)
    # Special tokens first, so "<|im_end|>" in a text is one token, then every other character on its own.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(f"{specials}|[\\s\\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>"],
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=1024,
    )
    return tokenizer


def _regex_escape(text: str) -> str:
    """re.escape for the Oniguruma regexes of `tokenizers`."""
    return "".join("\\" + c if c in r"\^$.|?*+()[]{}" else c for c in text)


def tiny_model_config(
    tokenizer: PreTrainedTokenizerFast, size: str = "tiny", vocab_size: int | None = None
) -> Qwen2Config:
    """A Qwen2 config of one of `MODEL_SIZES`, with the tokenizer's special token ids."""
    if size not in MODEL_SIZES:
        raise ValueError(f"`size` must be one of {sorted(MODEL_SIZES)}, got {size!r}.")
    hidden, intermediate, layers, heads, kv_heads = MODEL_SIZES[size]
    return Qwen2Config(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast | None = None, size: str = "tiny", seed: int = 0, vocab_size: int | None = None
) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM; the same `seed` always gives the same weights."""
    tokenizer = tokenizer or build_tiny_tokenizer()
    config = tiny_model_config(tokenizer, size, vocab_size)
    with _seeded(seed):
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return model


def build_tiny_reward_model(
    tokenizer: PreTrainedTokenizerFast | None = None, size: str = "tiny", seed: int = 1
) -> Qwen2ForSequenceClassification:
    """A randomly initialised Qwen2 sequence classifier with one label (a scalar reward) on the same tokenizer."""
    tokenizer = tokenizer or build_tiny_tokenizer()
    config = tiny_model_config(tokenizer, size)
    config.num_labels = 1
    with _seeded(seed):
        return Qwen2ForSequenceClassification(config)


def save_tiny(output_dir: str | os.PathLike, size: str = "tiny", seed: int = 0, reward_model: bool = True) -> Path:
    """Write the tiny model and tokenizer to `output_dir` (and a reward model to `output_dir/reward`).

    Afterwards `AutoModelForCausalLM.from_pretrained(output_dir)` and recipes' `model_name_or_path` can use it.
    """
    output_dir = Path(output_dir)
    tokenizer = build_tiny_tokenizer()
    build_tiny_model(tokenizer, size=size, seed=seed).save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    if reward_model:
        build_tiny_reward_model(tokenizer, size=size, seed=seed + 1).save_pretrained(output_dir / "reward")
        tokenizer.save_pretrained(output_dir / "reward")
    return output_dir


TINY_SPEC = re.compile(r"(?P<size>[A-Za-z0-9]+)(?:@(?P<seed>[0-9]+))?")


def parse_tiny_spec(spec: str) -> tuple[str, int]:
    """`(size, seed)` of a tiny-kit spec, the part after `tiny:`: `"small@3"` -> `("small", 3)`, `""` -> `("tiny", 0)`.

    Anything else (a path, an unknown size, a seed that is not a non-negative 64-bit integer) is refused here,
    before the spec names a directory.
    """
    match = TINY_SPEC.fullmatch(spec or "tiny")
    if match is None or match["size"] not in MODEL_SIZES or int(match["seed"] or 0) >= 2**64:
        size, _, seed = spec.partition("@")
        close = [] if size in MODEL_SIZES else difflib.get_close_matches(size, list(MODEL_SIZES), n=1)
        suffix = f"@{seed}" if re.fullmatch("[0-9]+", seed) else ""
        hint = f" (did you mean 'tiny:{close[0]}{suffix}'?)" if close else ""
        raise ValueError(
            f"Unknown tiny-kit model {'tiny:' + spec!r}{hint}; the kit's tiny models are `tiny:<size>[@<seed>]` with "
            f"<size> one of {sorted(MODEL_SIZES)} and <seed> a non-negative integer below 2**64 (e.g. 'tiny:small@3')."
        )
    return match["size"], int(match["seed"] or 0)


def materialise_tiny(spec: str, target: Path) -> None:
    """Build the tiny-kit model named by `spec` (`"<size>"` or `"<size>@<seed>"`, the part after `tiny:`) in `target`."""
    size, seed = parse_tiny_spec(spec)
    save_tiny(target, size=size, seed=seed)


def tiny_cache_name(spec: str) -> str:
    """The kit cache's directory name for a tiny-kit spec: `"small@3"` -> `"tiny-small-seed3"`."""
    size, seed = parse_tiny_spec(spec)
    return f"tiny-{size}-seed{seed}"


class _seeded:
    """Context manager: fork the RNG, seed it, restore on exit (so building a model doesn't disturb the caller).

    torch's RNG is one per process: threads building kit models at once take turns, or one's seeding would land in
    the middle of another's initialisation and give it other weights than its seed's.
    """

    _lock = threading.Lock()

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self._lock.acquire()
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        try:
            return self._fork.__exit__(*exc)
        finally:
            self._lock.release()
