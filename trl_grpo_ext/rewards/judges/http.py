"""Any OpenAI-compatible endpoint as the judge (vLLM, SGLang, TGI, llama.cpp, OpenAI, ...), over HTTP with httpx.

Requests ask for one greedy answer token with its top-k log-probs: `POST {base_url}/completions` with up to
`batch_size` prompts per request (`"prompt": [...]`, `"logprobs": k`), or, with `chat=True`,
`POST {base_url}/chat/completions` with one user message per request (`"logprobs": true, "top_logprobs": k`).
Requests run concurrently on `max_concurrency` threads; each waits at most `timeout` seconds to connect, send or
receive, and is retried `max_retries` times on a timeout, a connection error, HTTP 408, 429 or 5xx, after
`backoff * 2**attempt` seconds. Any other HTTP error, a body that is not the expected JSON, or a wrong number of
choices fails the texts of that request at once with a `JudgeError` naming the cause (a server bug does not get
better by asking again). Scores of identical requests are cached (`Judge`).

The API key is read from the environment variable `api_key_env` names, without the whitespace around it (the newline
of a key file or a mounted secret), sent as `Authorization: Bearer ...`, and never logged, pickled or shown in a repr
or an error message: a key that holds anything but printable ASCII is refused when it is read, a transport error is
named by its class and the URL (its text can repeat the request's headers), a request that cannot be sent at all
(`LocalProtocolError`) fails at once without retries, and an error body that echoes the key shows `***` instead.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .base import Judge, JudgeError, parse_yes_no, yes_probability

try:  # huggingface_hub >= 1.x depends on httpx2 (same API); older stacks ship httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the environment
    import httpx

__all__ = ["OpenAIJudge"]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0


class _Retryable(Exception):
    pass


class OpenAIJudge(Judge):
    """An OpenAI-compatible completions or chat endpoint that answers yes or no; `score(texts)` gives P(yes).

    Args:
        base_url (`str`):
            The API root, e.g. `"http://127.0.0.1:8000/v1"` (`/completions` or `/chat/completions` is appended).
        model (`str`):
            The model name the server knows.
        api_key_env (`str`, *optional*):
            Name of the environment variable holding the API key (e.g. `"OPENAI_API_KEY"`); unset: no key is sent.
        chat (`bool`, *optional*, defaults to `False`):
            Use the chat endpoint (one user message per request) instead of the completions endpoint.
        timeout (`float`, *optional*, defaults to `60.0`):
            Seconds to wait to connect, to send, and for each read of the answer.
        max_retries (`int`, *optional*, defaults to `3`):
            Retries of a request after a timeout, a connection error or HTTP 408/429/5xx.
        backoff (`float`, *optional*, defaults to `0.5`):
            The first retry waits `backoff` seconds, then 2x, 4x, ... (at most 30 s).
        max_concurrency (`int`, *optional*, defaults to `8`):
            Requests in flight at once.
        batch_size (`int`, *optional*, defaults to `16`):
            Prompts per completions request (the chat endpoint takes one conversation per request).
        top_logprobs (`int`, *optional*, defaults to `20`):
            Log-probs asked for the answer token (OpenAI allows at most 20; vLLM up to its `--max-logprobs`).
        max_tokens (`int`, *optional*, defaults to `1`):
            Answer tokens generated; only the strict-parse fallback reads more than the first.
        cache_size (`int`, *optional*, defaults to `65536`):
            Scores of identical requests kept in memory; 0 turns the cache off.
    """

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        chat: bool = False,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_concurrency: int = 8,
        batch_size: int = 16,
        top_logprobs: int = 20,
        max_tokens: int = 1,
        cache_size: int = 65536,
    ):
        super().__init__(cache_size)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.chat = chat
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_concurrency = max_concurrency
        self.batch_size = 1 if chat else batch_size
        self.top_logprobs = top_logprobs
        self.max_tokens = max_tokens
        self._api_key = self._read_key()

    def _read_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ValueError(
                f"`judge.api_key_env` names the environment variable {self.api_key_env!r}, which is not set (or "
                "empty); export the API key there, or drop `api_key_env` for a server without a key."
            )
        if not all(" " <= char <= "~" for char in key):  # a header value; the key itself is never echoed
            raise ValueError(
                f"`judge.api_key_env` names the environment variable {self.api_key_env!r}, whose value holds a "
                "character other than printable ASCII (a control character such as a newline inside the key, or a "
                "non-ASCII letter); an API key must be printable ASCII: check how the variable is set."
            )
        return key

    def _init_state(self) -> None:
        super()._init_state()
        self._client = None
        self._client_lock = threading.Lock()
        if "api_key_env" in vars(self):  # unpickled: read the key from this process's environment again
            self._api_key = self._read_key()

    def describe(self) -> str:
        return f"judge {self.model!r} at {self.url}"

    def __repr__(self) -> str:
        key = f", api_key_env={self.api_key_env!r}" if self.api_key_env else ""
        return f"OpenAIJudge(base_url={self.base_url!r}, model={self.model!r}, chat={self.chat}{key})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/{'chat/completions' if self.chat else 'completions'}"

    def _sampling(self) -> dict[str, Any]:
        if self.chat:
            return {
                "max_tokens": self.max_tokens,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
            }
        return {"max_tokens": self.max_tokens, "temperature": 0.0, "logprobs": self.top_logprobs}

    def _cache_key(self, text: str):
        return json.dumps({"url": self.url, "model": self.model, "text": text, **self._sampling()}, sort_keys=True)

    def _http(self):
        with self._client_lock:
            if self._client is None:
                headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
                limits = httpx.Limits(
                    max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
                )
                self._client = httpx.Client(timeout=self.timeout, headers=headers, limits=limits)
            return self._client

    def close(self) -> None:
        """Close the HTTP connections (a later `score` opens new ones)."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # ------------------------------------------------------------------------------------------------ requests
    def _score_uncached(self, texts: Sequence[str]) -> list[float | JudgeError]:
        batches = [list(range(i, min(i + self.batch_size, len(texts)))) for i in range(0, len(texts), self.batch_size)]
        scores: list[float | JudgeError] = [JudgeError("not scored")] * len(texts)

        def run(batch: list[int]) -> None:
            try:
                results = self._request([texts[i] for i in batch])
            except JudgeError as err:
                results = [err] * len(batch)
            for index, result in zip(batch, results):
                scores[index] = result

        if len(batches) == 1:
            run(batches[0])
        else:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(batches))) as pool:
                list(pool.map(run, batches))
        return scores

    def _payload(self, texts: list[str]) -> dict[str, Any]:
        if self.chat:
            (text,) = texts
            return {"model": self.model, "messages": [{"role": "user", "content": text}], **self._sampling()}
        return {"model": self.model, "prompt": texts, **self._sampling()}

    def _request(self, texts: list[str]) -> list[float | JudgeError]:
        """POST one request, with retries; the parsed scores, or a JudgeError for the whole request."""
        payload = self._payload(texts)
        attempts = self.max_retries + 1
        cause = ""
        for attempt in range(attempts):
            if attempt:
                with self._lock:
                    self.retries += 1
                time.sleep(min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF_S))
            try:
                body = self._post(payload)
            except _Retryable as err:
                cause = str(err)
                continue
            return self._parse(body, len(texts))
        raise JudgeError(f"{self.describe()} failed after {attempts} attempt(s): {cause}")

    def _post(self, payload: dict[str, Any]) -> Any:
        # Transport errors are named by their class only, and raised outside the `except` so that no exception
        # chains them: their text can repeat the request's headers (httpx: "Illegal header value b'Bearer ...'").
        failure = None
        try:
            response = self._http().post(self.url, json=payload)
        except httpx.TimeoutException as err:
            failure = _Retryable(f"timed out after {self.timeout:g} s ({type(err).__name__})")
        except httpx.LocalProtocolError as err:  # the request cannot be sent as it is: asking again will not help
            failure = JudgeError(
                f"{self.describe()} could not send the request ({type(err).__name__}: a header value or the URL is "
                "not valid HTTP); not retried"
            )
        except httpx.TransportError as err:
            failure = _Retryable(f"cannot reach the server ({type(err).__name__})")
        if failure is not None:
            raise failure
        if response.status_code in RETRY_STATUSES:
            raise _Retryable(f"HTTP {response.status_code}: {self._snippet(response.text)}")
        if response.status_code != 200:
            raise JudgeError(f"{self.describe()} answered HTTP {response.status_code}: {self._snippet(response.text)}")
        try:
            return response.json()
        except ValueError:
            raise JudgeError(f"{self.describe()} answered malformed JSON: {self._snippet(response.text)}") from None

    def _snippet(self, text: str) -> str:
        """The start of a server's answer for an error message, with the API key hidden (a proxy may echo it)."""
        if self._api_key:
            text = str(text).replace(self._api_key, "***")
        return _snippet(text)

    # ------------------------------------------------------------------------------------------------ parsing
    def _parse(self, body: Any, n: int) -> list[float | JudgeError]:
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list):
            raise JudgeError(
                f"{self.describe()} answered JSON without a 'choices' list: {self._snippet(json.dumps(body))}"
            )
        if len(choices) != n:
            raise JudgeError(f"{self.describe()} answered {len(choices)} choices for {n} prompts")
        ordered: list[Any] = [None] * n
        for position, choice in enumerate(choices):
            index = choice.get("index", position) if isinstance(choice, dict) else None
            if not isinstance(index, int) or not 0 <= index < n or ordered[index] is not None:
                shown = self._snippet(json.dumps(choices))
                raise JudgeError(f"{self.describe()} answered choices with bad or repeated indices: {shown}")
            ordered[index] = choice
        return [self._score_choice(choice) for choice in ordered]

    def _score_choice(self, choice: dict) -> float | JudgeError:
        try:
            if self.chat:
                message = choice.get("message") or {}
                text = message.get("content") or ""
                content = (choice.get("logprobs") or {}).get("content") or []
                top = content[0].get("top_logprobs") if content else None
                pairs = [(entry["token"], entry["logprob"]) for entry in top] if top else None
            else:
                text = choice.get("text") or ""
                top = ((choice.get("logprobs") or {}).get("top_logprobs") or [None])[0]
                pairs = list(top.items()) if top else None
        except (AttributeError, KeyError, TypeError, IndexError) as err:
            return JudgeError(f"{self.describe()} answered a choice of unexpected shape ({type(err).__name__}: {err})")
        if not isinstance(text, str):
            return JudgeError(f"{self.describe()} answered a non-text answer {text!r}")
        if pairs:
            try:
                probability = yes_probability(pairs)
            except (TypeError, ValueError) as err:
                return JudgeError(f"{self.describe()} answered log-probs that are not numbers ({err})")
            if probability is not None:
                return probability
        parsed = parse_yes_no(text)
        if parsed is not None:
            return parsed
        where = f"its top-{len(pairs)} log-probs hold no yes/no token" if pairs else "it returned no log-probs"
        return JudgeError(f"{self.describe()} answered {text!r}, which is neither yes nor no, and {where}")


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."
