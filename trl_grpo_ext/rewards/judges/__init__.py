"""Judges: models that answer "does this response satisfy the principle?" with P(yes) in [0, 1].

- `LocalJudge` (`local.py`): a transformers causal LM in this process.
- `OpenAIJudge` (`http.py`): any OpenAI-compatible completions or chat endpoint (`vllm serve`, ...).

`JudgeConfig.from_dict` validates the `judge` block of a recipe (no model loaded, no request sent: `config.py`) and
`build_judge` turns it into a judge; `check_judge_config` gives the block completed with its defaults. The block is a
local judge unless it has a `base_url`:

    judge: {model: tiny:tiny, batch_size: 16}                                   # LocalJudge
    judge: {base_url: "http://127.0.0.1:8000/v1", model: judge, api_key_env: JUDGE_API_KEY, timeout: 30}

A credential never goes in the block: `base_url` may not hold `user:password@`, and `api_key_env` must be a variable
*name* (a value that is not one, such as a pasted key, is refused without being echoed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Judge, JudgeError, answer_of_token, parse_yes_no, yes_probability
from .config import (
    DEFAULT_TEMPLATE,
    JudgeConfig,
    LocalJudgeConfig,
    OpenAIJudgeConfig,
    check_base_url,
    check_env_name,
    check_template,
)

__all__ = [
    "DEFAULT_TEMPLATE",
    "Judge",
    "JudgeConfig",
    "JudgeError",
    "LocalJudge",
    "LocalJudgeConfig",
    "OpenAIJudge",
    "OpenAIJudgeConfig",
    "answer_of_token",
    "build_judge",
    "check_base_url",
    "check_env_name",
    "check_judge_config",
    "check_template",
    "parse_yes_no",
    "yes_probability",
]


def __getattr__(name: str):
    # The judge classes import torch / httpx: load them on first use, so validating a config stays cheap.
    if name == "LocalJudge":
        from .local import LocalJudge

        return LocalJudge
    if name == "OpenAIJudge":
        from .http import OpenAIJudge

        return OpenAIJudge
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_judge_config(value: Any) -> dict[str, Any]:
    """The `judge` block, validated and completed with defaults; `kind` is `"local"` or `"openai"`.

    Example:
    ```python
    >>> config = check_judge_config({"model": "tiny:tiny", "batch_size": 8})
    >>> config["kind"], config["batch_size"], config["dtype"]
    ('local', 8, 'auto')
    >>> check_judge_config({"base_url": "http://127.0.0.1:8000/v1", "model": "m", "timout": 5})
    Traceback (most recent call last):
    ...
    ValueError: `judge` has unknown key 'timout' (did you mean 'timeout'?); an endpoint judge takes ['api_key_env', 'backoff', 'base_url', 'batch_size', 'cache_size', 'chat', 'max_concurrency', 'max_response_bytes', 'max_retries', 'max_tokens', 'model', 'template', 'timeout', 'top_logprobs'].

    ```
    """
    config = JudgeConfig.from_dict(value)
    return {"kind": config.kind, **config.to_dict()}


def build_judge(config: JudgeConfig | Mapping[str, Any]) -> Judge:
    """The judge of a `JudgeConfig` or of a `judge` block (validated again); nothing is loaded or sent yet. The
    template is not the judge's: the objective that asks the judge formats its prompts."""
    if not isinstance(config, JudgeConfig):
        config = JudgeConfig.from_dict({k: v for k, v in config.items() if k != "kind"})
    settings = {k: v for k, v in config.to_dict().items() if k != "template"}
    if config.kind == "openai":
        from .http import OpenAIJudge

        return OpenAIJudge(**settings)
    from .local import LocalJudge

    return LocalJudge(**settings)
