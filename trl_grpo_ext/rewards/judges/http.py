"""Any OpenAI-compatible endpoint as the judge (vLLM, SGLang, TGI, llama.cpp, OpenAI, ...), over HTTP with httpx.

Requests ask for one greedy answer token with its top-k log-probs: `POST {base_url}/completions` with up to
`batch_size` prompts per request (`"prompt": [...]`, `"logprobs": k`), or, with `chat=True`,
`POST {base_url}/chat/completions` with one user message per request (`"logprobs": true, "top_logprobs": k`).
Requests run concurrently on `max_concurrency` threads. Each attempt ends `timeout` seconds after it starts, whatever
the server does: connecting, sending and reading the whole answer (its headers and its body) included, so a server
that drips its answer a byte at a time cannot hold a call. An answer is read as it arrives and refused past
`max_response_bytes` (16 MiB by default) without reading the rest; it is asked for uncompressed and refused if it comes
compressed, so what is read is what is kept. An attempt is retried `max_retries` times on a timeout, a connection
error, HTTP 408, 429 or 5xx, after `backoff * 2**attempt` seconds. Any other HTTP error, an answer over the cap, a
body that is not the expected JSON (NaN and Infinity included: JSON has neither, and a log-prob must be a finite
number), or a wrong number of choices fails the texts of that request at once with a `JudgeError` naming the cause (a
server bug does not get better by asking again). Scores of identical requests are cached (`Judge`); errors are not.

The API key is read from the environment variable `api_key_env` names, without the whitespace around it (the newline
of a key file or a mounted secret), sent as `Authorization: Bearer ...`, and never logged, pickled or shown in a repr
or an error message: a key that holds anything but printable ASCII is refused when it is read, a transport error is
named by its class and the URL (its text can repeat the request's headers), a request that cannot be sent at all
(`LocalProtocolError`) fails at once without retries, and a server's text that echoes the key, raw or escaped (JSON,
HTML, URL encoding, a Python repr, once or more), shows `***` instead. `base_url` may not hold a user name or password
(`user:password@`), and `api_key_env` must be a variable name: both are refused at construction without being echoed.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .base import Judge, JudgeError, parse_yes_no, yes_probability
from .config import OpenAIJudgeConfig, check_base_url, check_env_name

try:  # huggingface_hub >= 1.x depends on httpx2 (same API); older stacks ship httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the environment
    import httpx

__all__ = ["OpenAIJudge"]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0


class _Retryable(Exception):
    pass


class _NotFinite(ValueError):
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
            Seconds one attempt may take in all: connecting, sending, and reading the whole answer.
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
        max_response_bytes (`int`, *optional*, defaults to `16 * 2**20`):
            The largest answer read; a longer one fails its request (and is not read to its end).
    """

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = OpenAIJudgeConfig.api_key_env,
        chat: bool = OpenAIJudgeConfig.chat,
        timeout: float = OpenAIJudgeConfig.timeout,
        max_retries: int = OpenAIJudgeConfig.max_retries,
        backoff: float = OpenAIJudgeConfig.backoff,
        max_concurrency: int = OpenAIJudgeConfig.max_concurrency,
        batch_size: int = OpenAIJudgeConfig.batch_size,
        top_logprobs: int = OpenAIJudgeConfig.top_logprobs,
        max_tokens: int = OpenAIJudgeConfig.max_tokens,
        cache_size: int = OpenAIJudgeConfig.cache_size,
        max_response_bytes: int = OpenAIJudgeConfig.max_response_bytes,
    ):
        super().__init__(cache_size)
        self.base_url = check_base_url(base_url).rstrip("/")
        self.model = model
        self.api_key_env = None if api_key_env is None else check_env_name(api_key_env)
        self.chat = chat
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_concurrency = max_concurrency
        self.batch_size = 1 if chat else batch_size
        self.top_logprobs = top_logprobs
        self.max_tokens = max_tokens
        self.max_response_bytes = max_response_bytes
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
                headers = {"Accept-Encoding": "identity"}  # what is read is what is kept: no decompression
                if self._api_key:
                    headers["Authorization"] = f"Bearer {self._api_key}"
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
                if isinstance(result, JudgeError) and self._redact(str(result)) != str(result):
                    result = JudgeError(self._redact(str(result)))  # a message that quotes the server's text
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
        """One attempt, which is over `timeout` seconds after it starts, whatever the server does. httpx's timeouts
        bound each read, not the exchange (a server that drips its headers a byte at a time never trips them), so the
        exchange runs on a worker thread that this one stops waiting for at the deadline; the worker stops reading
        then (at once if the body is arriving, else at its next read)."""
        outcome: list[tuple[bool, Any]] = []
        over = threading.Event()
        deadline = time.monotonic() + self.timeout
        worker = threading.Thread(
            target=self._exchange, args=(payload, deadline, over, outcome), name="judge-request", daemon=True
        )
        worker.start()
        worker.join(self.timeout)
        over.set()
        if not outcome:
            raise _Retryable(self._timed_out("no complete answer"))
        answered, value = outcome[0]
        if not answered:
            raise value
        return value

    def _exchange(self, payload: dict[str, Any], deadline: float, over: threading.Event, outcome: list) -> None:
        try:
            outcome.append((True, self._send(payload, deadline, over)))
        except Exception as err:  # raised again by the thread that waits for it
            outcome.append((False, err))

    def _timed_out(self, what: str) -> str:
        return f"timed out after {self.timeout:g} s ({what})"

    def _send(self, payload: dict[str, Any], deadline: float, over: threading.Event) -> Any:
        # Transport errors are named by their class only, and raised outside the `except` so that no exception
        # chains them: their text can repeat the request's headers (httpx: "Illegal header value b'Bearer ...'").
        failure = None
        try:
            with self._http().stream("POST", self.url, json=payload) as response:
                body = self._read(response, deadline, over)
        except httpx.TimeoutException as err:
            failure = _Retryable(self._timed_out(type(err).__name__))
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
            raise _Retryable(f"HTTP {response.status_code}: {self._snippet(body)}")
        if response.status_code != 200:
            raise JudgeError(f"{self.describe()} answered HTTP {response.status_code}: {self._snippet(body)}")
        try:
            return json.loads(body, parse_constant=_not_finite, parse_float=_finite_float)
        except _NotFinite as err:
            raise JudgeError(
                f"{self.describe()} answered {err}, which is not a finite number (JSON has no NaN or Infinity, and a "
                f"log-prob must be finite): {self._snippet(body)}"
            ) from None
        except ValueError:
            raise JudgeError(f"{self.describe()} answered malformed JSON: {self._snippet(body)}") from None

    def _read(self, response, deadline: float, over: threading.Event) -> bytes:
        """The answer's body as it arrives: at most `max_response_bytes`, and only until the attempt is over."""
        cap = self.max_response_bytes
        too_long = f"{self.describe()} answered more than {cap} bytes (`max_response_bytes`); the rest was not read"
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise JudgeError(
                f"{self.describe()} answered a body compressed with {_snippet(encoding, 40)!r} although the request "
                "asked for none (Accept-Encoding: identity)"
            )
        length = response.headers.get("Content-Length", "").strip()
        if length.isdigit() and int(length) > cap:
            raise JudgeError(too_long)
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise JudgeError(too_long)
            chunks.append(chunk)
            if over.is_set() or time.monotonic() > deadline:
                raise _Retryable(self._timed_out("the answer was still arriving"))
        return b"".join(chunks)

    def _redact(self, text: str) -> str:
        """`text` with the API key, raw or escaped, shown as `***` (a proxy may echo the request's headers)."""
        return _secret_pattern(self._api_key).sub("***", text) if self._api_key else text

    def _snippet(self, text: str | bytes) -> str:
        """The start of a server's answer for an error message, with the API key hidden."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return _snippet(self._redact(str(text)))

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
            except (TypeError, ValueError, OverflowError) as err:
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


def _not_finite(name: str) -> float:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # a literal too large for a float, such as 1e999
        raise _NotFinite(text)
    return value


_HTML_NAMES = {'"': "quot", "&": "amp", "<": "lt", ">": "gt", "'": "apos"}


@functools.lru_cache(maxsize=4)
def _secret_pattern(secret: str) -> re.Pattern:
    """`secret` as it reads raw or escaped, once or more, by JSON, HTML, URL encoding or a Python repr: each character
    but a letter or digit may be written as itself, `&quot;`/`&#34;`/`&#x22;`, `%22`, `\\u0022`, behind backslashes."""
    parts = []
    for char in secret:
        if char.isalnum():
            parts.append(re.escape(char))
            continue
        code = ord(char)
        entity = f"#0*{code}|#x0*{code:x}" + (f"|{_HTML_NAMES[char]}" if char in _HTML_NAMES else "")
        forms = [re.escape(char), f"&(?:amp;)*(?:{entity});", f"%(?:25)*{code:02x}", f"u0*{code:x}"]
        if char == " ":
            forms.append(r"\+")
        parts.append(r"\\*(?:" + "|".join(forms) + ")")
    return re.compile("".join(parts), re.IGNORECASE)
