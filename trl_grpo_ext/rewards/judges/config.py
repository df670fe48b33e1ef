"""The `judge` block of a config as a dataclass: `LocalJudgeConfig` or `OpenAIJudgeConfig`, each validating itself.

`JudgeConfig.from_dict(block)` picks the kind (an endpoint when the block has a `base_url`), refuses unknown keys and
checks every value; `build_judge(config)` (in `judges/__init__.py`) gives the judge (nothing is loaded or sent yet). The defaults written here are the
defaults of `LocalJudge(...)` and `OpenAIJudge(...)` too, whose docstrings say what each setting does. Cheap to import:
no torch, no httpx.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ...checks import Choice, Flag, Integer, Number, SubConfig, Text, optional, setting

__all__ = [
    "DEFAULT_TEMPLATE",
    "JudgeConfig",
    "LocalJudgeConfig",
    "OpenAIJudgeConfig",
    "check_base_url",
    "check_env_name",
    "check_template",
]

DEFAULT_TEMPLATE = (
    "Read the request and the response, then answer the question about the response with yes or no.\n\n"
    "Request: {prompt}\n\nResponse: {completion}\n\nQuestion: {principle}\nAnswer:"
)
TEMPLATE_FIELDS = ("prompt", "completion", "principle")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LOCAL_DTYPES = ("auto", "float32", "bfloat16", "float16")
DEFAULT_MAX_RESPONSE_BYTES = 16 * 2**20


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


@dataclass(kw_only=True)
class JudgeConfig(SubConfig):
    """The settings every judge has; `JudgeConfig.from_dict(block)` gives a `LocalJudgeConfig` or an
    `OpenAIJudgeConfig` (when the block has a `base_url`).

    Example:
    ```python
    >>> config = JudgeConfig.from_dict({"model": "tiny:tiny", "batch_size": 8})
    >>> type(config).__name__, config.batch_size, config.dtype
    ('LocalJudgeConfig', 8, 'auto')
    >>> JudgeConfig.from_dict({"base_url": "http://127.0.0.1:8000/v1", "model": "m", "timeout": 0})
    Traceback (most recent call last):
    ...
    ValueError: `judge.timeout` must be a finite number > 0, got 0.

    ```
    """

    kind: ClassVar[str] = "judge"
    example: ClassVar[str] = (
        "{'model': 'tiny:tiny'} (a local judge) or {'base_url': 'http://127.0.0.1:8000/v1', 'model': 'name'} (an "
        "endpoint)"
    )

    model: str = setting(check=Text())
    chat: bool = setting(False, Flag())
    cache_size: int = setting(65536, Integer(0))
    template: str = setting(DEFAULT_TEMPLATE, check_template)

    @classmethod
    def from_dict(cls, value: Any, prefix: str = "judge.") -> JudgeConfig:
        kind = OpenAIJudgeConfig if isinstance(value, Mapping) and "base_url" in value else LocalJudgeConfig
        kind.check_keys(value, prefix)
        if "model" not in value:
            raise ValueError(
                f"`{prefix}model` is required (a path or Hub id, or the endpoint's model name), got {dict(value)!r}."
            )
        return kind(**value, prefix=prefix)


@dataclass(kw_only=True)
class LocalJudgeConfig(JudgeConfig):
    """A transformers causal LM in this process (`LocalJudge`)."""

    kind: ClassVar[str] = "local"
    described_as: ClassVar[str] = "a local judge"

    batch_size: int = setting(16, Integer(1))
    max_length: int | None = setting(None, Integer(1, optional=True))
    device: str | None = setting(None, Text(optional=True))
    dtype: str = setting("auto", Choice(LOCAL_DTYPES))


@dataclass(kw_only=True)
class OpenAIJudgeConfig(JudgeConfig):
    """An OpenAI-compatible completions or chat endpoint (`OpenAIJudge`)."""

    kind: ClassVar[str] = "openai"
    described_as: ClassVar[str] = "an endpoint judge"

    base_url: str = setting(check=check_base_url)
    api_key_env: str | None = setting(None, optional(check_env_name))
    timeout: float = setting(60.0, Number(0, strict=True))
    max_retries: int = setting(3, Integer(0))
    backoff: float = setting(0.5, Number(0))
    max_concurrency: int = setting(8, Integer(1))
    batch_size: int = setting(16, Integer(1))
    top_logprobs: int = setting(20, Integer(1))
    max_tokens: int = setting(1, Integer(1))
    max_response_bytes: int = setting(DEFAULT_MAX_RESPONSE_BYTES, Integer(1))
