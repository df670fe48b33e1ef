"""The online reward model's network: a one-label sequence classifier, loaded from a path, a Hub id or the kit.

TRL's reward-model convention: one label, the logit of the last non-padding token of prompt + completion. A kit name
(`"tiny:tiny"`) is the `reward/` directory of that kit model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_reward_model"]


def load_reward_model(model: Any, tokenizer: Any = None) -> tuple[torch.nn.Module, Any, str]:
    """(model in float32, tokenizer, the name it was built from) of a loaded model, a path / Hub id, or a kit name.

    The tokenizer gets a pad token (its EOS) when it has none, and the model its id.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..kit import is_kit_name, resolve_model_path

    if isinstance(model, (str, os.PathLike)):
        name = path = str(model)
        if is_kit_name(path):
            path = str(Path(resolve_model_path(path)) / "reward")
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
    elif isinstance(model, torch.nn.Module):
        name = getattr(model.config, "_name_or_path", "") or type(model).__name__
    else:
        raise TypeError(f"`model` must be a path, a Hub id, a kit name or a loaded model, got {type(model).__name__}.")
    if tokenizer is None:
        raise ValueError("`tokenizer` is required with a loaded `model` (the reward model's own tokenizer).")
    if getattr(model.config, "num_labels", None) != 1:
        raise ValueError(
            f"`model` must be a sequence classifier with one label (a scalar reward), got num_labels="
            f"{getattr(model.config, 'num_labels', None)!r}."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.float(), tokenizer, name
