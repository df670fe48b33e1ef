"""Judges: models that answer "does this response satisfy the principle?" with P(yes) in [0, 1].

- `LocalJudge` (`local.py`): a transformers causal LM in this process.
- `OpenAIJudge` (`http.py`): any OpenAI-compatible completions or chat endpoint (`vllm serve`, ...).

`check_judge_config` validates the `judge` block of a recipe (no model loaded, no request sent) and `build_judge`
turns it into a judge. The block is a local judge unless it has a `base_url`:

    judge: {model: tiny:tiny, batch_size: 16}                                   # LocalJudge
    judge: {base_url: "http://127.0.0.1:8000/v1", model: judge, api_key_env: JUDGE_API_KEY, timeout: 30}

A credential never goes in the block: `base_url` may not hold `user:password@`, and `api_key_env` must be a variable
*name* (a value that is not one, such as a pasted key, is refused without being echoed).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from typing import Any

from .base import Judge, JudgeError, answer_of_token, parse_yes_no, yes_probability

__all__ = [
    "DEFAULT_TEMPLATE",
    "Judge",
    "JudgeError",
    "LocalJudge",
    "OpenAIJudge",
    "answer_of_token",
    "build_judge",
    "check_base_url",
    "check_env_name",
    "check_judge_config",
    "check_template",
    "parse_yes_no",
    "yes_probability",
]

DEFAULT_TEMPLATE = (
    "Read the request and the response, then answer the question about the response with yes or no.\n\n"
    "Request: {prompt}\n\nResponse: {completion}\n\nQuestion: {principle}\nAnswer:"
)
TEMPLATE_FIELDS = ("prompt", "completion", "principle")

# key -> (kind, default); kind: "str", "bool", "int>=0", "int>=1", "int>=1|None", "float>0", "float>=0", or a tuple of choices
_COMMON = {
    "model": ("str", None),
    "chat": ("bool", False),
    "cache_size": ("int>=0", 65536),
    "template": ("template", DEFAULT_TEMPLATE),
}
LOCAL_KEYS = {
    **_COMMON,
    "batch_size": ("int>=1", 16),
    "max_length": ("int>=1|None", None),
    "device": ("str|None", None),
    "dtype": (("auto", "float32", "bfloat16", "float16"), "auto"),
}
OPENAI_KEYS = {
    **_COMMON,
    "base_url": ("url", None),
    "api_key_env": ("env|None", None),
    "timeout": ("float>0", 60.0),
    "max_retries": ("int>=0", 3),
    "backoff": ("float>=0", 0.5),
    "max_concurrency": ("int>=1", 8),
    "batch_size": ("int>=1", 16),
    "top_logprobs": ("int>=1", 20),
    "max_tokens": ("int>=1", 1),
    "max_response_bytes": ("int>=1", 16 * 2**20),
}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def __getattr__(name: str):
    # The judge classes import torch / httpx: load them on first use, so validating a config stays cheap.
    if name == "LocalJudge":
        from .local import LocalJudge

        return LocalJudge
    if name == "OpenAIJudge":
        from .http import OpenAIJudge

        return OpenAIJudge
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_template(template: Any, field: str = "judge.template") -> str:
    """A judge prompt template: a `str.format` string with `{completion}` and `{principle}`, optionally `{prompt}`.

    Example:
    ```python
    >>> check_template("Q: {principle}\\nA: {completion}\\nyes or no?")
    'Q: {principle}\\nA: {completion}\\nyes or no?'
    >>> check_template("{completion} {rubric}")
    Traceback (most recent call last):
    ...
    ValueError: `judge.template` may only use the fields ['prompt', 'completion', 'principle'], got {rubric} in '{completion} {rubric}'.

    ```
    """
    if not isinstance(template, str) or not template.strip():
        raise ValueError(f"`{field}` must be a non-empty string, got {template!r}.")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ValueError(f"`{field}` is not a valid format string ({err}): {template!r}.") from None
    for name in fields:
        if name not in TEMPLATE_FIELDS:
            raise ValueError(
                f"`{field}` may only use the fields {list(TEMPLATE_FIELDS)}, got {{{name}}} in {template!r}."
            )
    missing = [name for name in ("completion", "principle") if name not in fields]
    if missing:
        raise ValueError(
            f"`{field}` must contain {{completion}} and {{principle}}; {missing} missing in {template!r}."
        )
    return template


def check_base_url(value: Any, field: str = "judge.base_url") -> str:
    """An http(s) API root without credentials: a user name or password in it would show in every repr, error
    message and saved config, so it is refused (without echoing it).

    Example:
    ```python
    >>> check_base_url("http://127.0.0.1:8000/v1")
    'http://127.0.0.1:8000/v1'
    >>> check_base_url("https://judge:hunter2@example.com/v1")
    Traceback (most recent call last):
    ...
    ValueError: `judge.base_url` must not hold a user name or password ('user:password@'): put the credential in an environment variable and name it in `judge.api_key_env` (sent as a bearer token), got 'https://***@example.com/v1'.

    ```
    """
    if isinstance(value, str) and "@" in value:
        scheme, _, rest = value.partition("://")
        shown = f"{scheme}://***@{rest.rpartition('@')[2]}" if re.fullmatch(r"https?", scheme) else "***"
        raise ValueError(
            f"`{field}` must not hold a user name or password ('user:password@'): put the credential in an "
            f"environment variable and name it in `judge.api_key_env` (sent as a bearer token), got {shown!r}."
        )
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"`{field}` must be an http(s) URL such as 'http://127.0.0.1:8000/v1', got {value!r}.")
    return value


def check_env_name(value: Any, field: str = "judge.api_key_env") -> str:
    """The *name* of an environment variable; anything else is refused without echoing it (it may be the key).

    Example:
    ```python
    >>> check_env_name("JUDGE_API_KEY")
    'JUDGE_API_KEY'
    >>> check_env_name("sk-0123456789abcdef")
    Traceback (most recent call last):
    ...
    ValueError: `judge.api_key_env` must be the *name* of an environment variable (letters, digits and '_', not starting with a digit), such as 'JUDGE_API_KEY', got a 19-character string that is not one (not shown: it may be the key itself). Export the key in a variable and name that variable here.

    ```
    """
    if isinstance(value, str) and ENV_NAME.fullmatch(value):
        return value
    got = f"a {len(value)}-character string" if isinstance(value, str) else f"a value of type {type(value).__name__}"
    raise ValueError(
        f"`{field}` must be the *name* of an environment variable (letters, digits and '_', not starting with a "
        f"digit), such as 'JUDGE_API_KEY', got {got} that is not one (not shown: it may be the key itself). Export "
        "the key in a variable and name that variable here."
    )


def _check_value(key: str, kind: Any, value: Any) -> Any:
    field = f"judge.{key}"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(kind, tuple):
        if value not in kind:
            raise ValueError(f"`{field}` must be one of {list(kind)}, got {value!r}.")
        return value
    if kind.endswith("|None") and value is None:
        return None
    kind = kind.removesuffix("|None")
    if kind == "str":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"`{field}` must be a non-empty string, got {value!r}.")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"`{field}` must be true or false, got {value!r}.")
    elif kind in ("int>=0", "int>=1"):
        low = int(kind[-1])
        if not is_int or value < low:
            raise ValueError(f"`{field}` must be an integer >= {low}, got {value!r}.")
    elif kind in ("float>0", "float>=0"):
        if not is_number or not math.isfinite(value) or value < 0 or (kind == "float>0" and value == 0):
            raise ValueError(f"`{field}` must be a finite number {kind[5:]}, got {value!r}.")
        value = float(value)
    elif kind == "url":
        check_base_url(value, field)
    elif kind == "env":
        check_env_name(value, field)
    elif kind == "template":
        check_template(value, field)
    return value


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
    if not isinstance(value, Mapping) or not value:
        raise ValueError(
            "`judge` must be a mapping such as {'model': 'tiny:tiny'} (a local judge) or {'base_url': "
            f"'http://127.0.0.1:8000/v1', 'model': 'name'}} (an endpoint), got {value!r}."
        )
    kind = "openai" if "base_url" in value else "local"
    keys = OPENAI_KEYS if kind == "openai" else LOCAL_KEYS
    for key in value:
        if key not in keys:
            import difflib

            close = difflib.get_close_matches(str(key), list(keys), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            what = "an endpoint judge" if kind == "openai" else "a local judge"
            raise ValueError(f"`judge` has unknown key {key!r}{hint}; {what} takes {sorted(keys)}.")
    if "model" not in value:
        raise ValueError(
            f"`judge.model` is required (a path or Hub id, or the endpoint's model name), got {dict(value)!r}."
        )
    config: dict[str, Any] = {"kind": kind}
    for key, (kind_of_value, default) in keys.items():
        config[key] = _check_value(key, kind_of_value, value[key]) if key in value else default
    return config


def build_judge(config: Mapping[str, Any]) -> Judge:
    """The judge of a `judge` block (validated by `check_judge_config`); nothing is loaded or sent yet."""
    config = check_judge_config({k: v for k, v in config.items() if k != "kind"})
    settings = {k: v for k, v in config.items() if k not in ("kind", "template")}
    if config["kind"] == "openai":
        from .http import OpenAIJudge

        return OpenAIJudge(**settings)
    from .local import LocalJudge

    return LocalJudge(**settings)
