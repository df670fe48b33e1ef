"""Labelers: who decides which of two completions of one prompt is better, for the online reward model.

One protocol, `(prompts, completions_a, completions_b, **columns) -> list[label]`, one entry per pair:

- `1.0`: a wins, `0.0`: b wins, `0.5`: a tie, `None`: abstain (the pair is not labelled this round);
- an `Exception` instance: the labeler failed on that pair (a judge error). The online reward model applies the
  reward error policy to it, as to a labeler that raises or returns anything else: `raise` stops with
  `ObjectiveError`, `skip` drops the pair with a warning and counts it. Never a silent label.

`columns` are the dataset columns of the pair's prompt (`answer`, ...), one entry per pair.

- `GoldLabeler(fn)`: a reward function scored on both sides; the higher reward wins, equal rewards tie.
- `JudgeLabeler(judge)`: the principles judge's P(yes) on both sides (`PrinciplesObjective`); higher wins.
- `QueueLabeler(path)`: a person. Requests go to a JSONL file; labels are read back by id from another JSONL file
  while training runs; an unanswered pair abstains and stays queued (`collect()` hands over late answers).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .guard import PartialRewardsError
from .judges import Judge, JudgeError

__all__ = ["GoldLabeler", "JudgeLabeler", "QueueLabeler", "check_queue_settings", "pair_id"]


def _check_lengths(name: str, completions_a: Sequence, completions_b: Sequence) -> int:
    if len(completions_a) != len(completions_b):
        raise ValueError(f"{name} got {len(completions_a)} completions a for {len(completions_b)} completions b.")
    return len(completions_a)


def _compare(a: Any, b: Any) -> float | None | Exception:
    if a is None or b is None:
        return None
    a, b = float(a), float(b)
    if not (math.isfinite(a) and math.isfinite(b)):
        return ValueError(f"non-finite gold reward ({a!r}, {b!r})")
    return 1.0 if a > b else 0.0 if a < b else 0.5


class GoldLabeler:
    """Label a pair by a gold reward function: 1.0 when a scores higher, 0.0 when b does, 0.5 on equal rewards.

    A pair where the function gives either side `None` abstains; a NaN/inf reward is a fault on that pair.

    Args:
        fn (`Callable`):
            A reward function `(prompts, completions, **columns) -> list[float | None]`, e.g. `accuracy`, called
            with keyword arguments as TRL calls it.

    Example:
    ```python
    >>> from trl_grpo_ext.rewards import accuracy
    >>> GoldLabeler(accuracy)(["2+2="] * 3, ["4", "5", "4"], ["5", "4", "4"], answer=["4"] * 3)
    [1.0, 0.0, 0.5]

    ```
    """

    def __init__(self, fn: Callable):
        if not callable(fn):
            raise TypeError(f"`fn` must be a reward function, got {type(fn).__name__}.")
        self.fn = fn

    def __repr__(self) -> str:
        return f"GoldLabeler({getattr(self.fn, '__name__', type(self.fn).__name__)})"

    def __call__(self, prompts, completions_a, completions_b, **columns) -> list[float | None | Exception]:
        n = _check_lengths("GoldLabeler", completions_a, completions_b)
        # By keyword, as TRL calls a reward function (`def reward(completions, **kwargs)` is a valid one).
        rewards_a = list(self.fn(prompts=prompts, completions=list(completions_a), **columns))
        rewards_b = list(self.fn(prompts=prompts, completions=list(completions_b), **columns))
        if len(rewards_a) != n or len(rewards_b) != n:
            raise ValueError(f"The gold reward returned {len(rewards_a)} and {len(rewards_b)} rewards for {n} pairs.")
        return [_compare(a, b) for a, b in zip(rewards_a, rewards_b)]


class JudgeLabeler:
    """Label a pair by the principles judge: each side's weighted P(yes), the higher wins, equal scores tie.

    A side the judge cannot score makes that pair a fault (`JudgeError`), which the reward error policy handles.

    Args:
        judge (`Judge` or `Mapping`):
            A `LocalJudge`, an `OpenAIJudge`, or a `judge` config block.
        principles (`list`, *optional*):
            The yes/no questions (see `check_principles`); defaults to one question about correctness.
        template (`str`, *optional*):
            The judge prompt (`judges.DEFAULT_TEMPLATE` by default).

    Example:
    ```python
    >>> from trl_grpo_ext.rewards import LocalJudge
    >>> labels = JudgeLabeler(LocalJudge("tiny:tiny"))(["2+2="], ["4"], ["five"])
    >>> labels[0] in (0.0, 0.5, 1.0)
    True

    ```
    """

    def __init__(
        self,
        judge: Judge | Mapping[str, Any],
        principles: Sequence[Any] = ("Is the response a correct answer to the request?",),
        template: str | None = None,
    ):
        from .principles import PrinciplesObjective

        self.objective = PrinciplesObjective(list(principles), judge, template=template, name="judge_labeler")

    def __repr__(self) -> str:
        return f"JudgeLabeler({self.objective.judge!r})"

    def __call__(self, prompts, completions_a, completions_b, **columns) -> list[float | None | Exception]:
        n = _check_lengths("JudgeLabeler", completions_a, completions_b)
        prompts = list(prompts) if prompts is not None else [None] * n
        try:
            scores = self.objective(prompts=prompts + prompts, completions=list(completions_a) + list(completions_b))
            errors: dict[int, Exception] = {}
        except PartialRewardsError as exc:
            scores = exc.rewards
            errors = {i: JudgeError(str(exc)) for i in exc.failed}
        labels: list[float | None | Exception] = []
        for i in range(n):
            failed = errors.get(i) or errors.get(n + i)
            labels.append(failed if failed is not None else _compare(scores[i], scores[n + i]))
        return labels


def pair_id(prompt: Any, completion_a: Any, completion_b: Any) -> str:
    """A stable id of a pair (the same on every machine and run): 16 hex digits of a SHA-256 of its JSON.

    Example:
    ```python
    >>> pair_id("2+2=", "4", "5")
    '52220644e25a3685'

    ```
    """
    text = json.dumps([prompt, completion_a, completion_b], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


MAX_QUEUE_TIMEOUT = 86400.0  # a day
MAX_POLL_INTERVAL = 3600.0  # an hour
DEFAULT_MAX_OUTSTANDING = 256
_QUOTED_LINES, _QUOTED_CHARS = 3, 100


def _seconds(field: str, value: Any, high: float, zero: bool) -> float:
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if not (number and (0 <= value if zero else 0 < value) and value <= high):
        raise ValueError(
            f"`{field}` must be a number of seconds {'>=' if zero else '>'} 0 and <= {high:g}, got {value!r}."
        )
    return float(value)


def _file_path(field: str, value: Any, what: str) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"`{field}` must be {what} (a file path), got {value!r}.")
    path = Path(value)
    if path.is_dir():
        raise ValueError(f"`{field}` must be {what}, got {str(path)!r}, which is a directory.")
    if path.exists() and not path.is_file():
        raise ValueError(f"`{field}` must be {what}, got {str(path)!r}, which is not a regular file.")
    return path


def check_queue_settings(
    path: Any,
    requests_path: Any = None,
    timeout: Any = 0.0,
    poll_interval: Any = 0.2,
    max_outstanding: Any = DEFAULT_MAX_OUTSTANDING,
    *,
    prefix: str = "",
) -> dict[str, Any]:
    """The settings of a `QueueLabeler`, validated: the one rule of `QueueLabeler(...)` and of a config's
    `{type: queue}` labeler block (`prefix` names the block in the error, e.g. `"online_reward_model.labeler."`).

    `path` and `requests_path` must be two different files (compared resolved), neither a directory nor another
    non-regular file where it exists; `timeout` in [0, 86400] seconds (a day), `poll_interval` in (0, 3600] (an hour),
    `max_outstanding` an integer >= 1. Returns them normalised: paths, seconds as floats, `requests_path` defaulted.

    Example:
    ```python
    >>> str(check_queue_settings("labels.jsonl", timeout=60)["requests_path"])
    'labels.requests.jsonl'
    >>> check_queue_settings("labels.jsonl", poll_interval=1e300)
    Traceback (most recent call last):
    ...
    ValueError: `poll_interval` must be a number of seconds > 0 and <= 3600, got 1e+300.

    ```
    """
    labels = _file_path(f"{prefix}path", path, "the labels file (JSONL)")
    requests = (
        labels.with_suffix(".requests.jsonl")
        if requests_path is None
        else _file_path(f"{prefix}requests_path", requests_path, "the requests file (JSONL)")
    )
    if requests.resolve() == labels.resolve():
        raise ValueError(
            f"`{prefix}requests_path` must differ from `{prefix}path` (the run appends its requests to one file, the "
            f"person their labels to the other), got {str(requests)!r} for both."
        )
    if isinstance(max_outstanding, bool) or not isinstance(max_outstanding, int) or max_outstanding < 1:
        raise ValueError(f"`{prefix}max_outstanding` must be an integer >= 1, got {max_outstanding!r}.")
    return {
        "path": labels,
        "requests_path": requests,
        "timeout": _seconds(f"{prefix}timeout", timeout, MAX_QUEUE_TIMEOUT, zero=True),
        "poll_interval": _seconds(f"{prefix}poll_interval", poll_interval, MAX_POLL_INTERVAL, zero=False),
        "max_outstanding": max_outstanding,
    }


class QueueLabeler:
    """A person labels while training runs: requests are appended to a JSONL file, labels read back by id.

    Each request is one line `{"id", "prompt", "a", "b"}` in `requests_path`; the person appends lines
    `{"id": ..., "label": 1 | 0 | 0.5 | null}` to `path` (1: a is better, 0: b, 0.5: tie, null: cannot say).
    A call writes the requests of its new pairs, then polls `path` for up to `timeout` seconds (every
    `poll_interval` seconds) until all of them are answered; an unanswered pair abstains (`None`) and stays queued.
    `collect()` returns the queued pairs answered since (the online reward model calls it every update). At most
    `max_outstanding` pairs are queued: once that many wait for an answer, the new pairs of a call are not requested
    and abstain, until answers come in.

    The labels file is read as UTF-8 line by line (a byte order mark is ignored). A line that is not a JSON object
    with `id` and `label` (or not UTF-8) is a fault, reported once (by its content, so a new typo on an edited line is
    reported too); the other lines are read. The fault names the first few bad lines, each quoted up to 100
    characters only when the file holds label lines (the content of a file that is not a labels file is never
    quoted), and counts the rest. The last line is read without its newline once it is a JSON object; otherwise it is
    still being written and is read at the next poll. A label value outside {0, 0.5, 1, null} is passed on, and the
    online reward model refuses it under the reward error policy.

    One writer: under GRPOExtTrainer only process 0 asks the labeler (`OnlineRewardModel` broadcasts the labels).

    Args:
        path (`str | Path`):
            The labels file (JSONL), appended to by the person; not a directory.
        requests_path (`str | Path`, *optional*):
            The requests file (JSONL), another file than `path`; defaults to `path` with the suffix
            `.requests.jsonl`.
        timeout (`float`, *optional*, defaults to `0.0`):
            Seconds a call waits for the labels of its pairs (0: look once), at most 86400 (a day).
        poll_interval (`float`, *optional*, defaults to `0.2`):
            Seconds between two reads of `path` while waiting, > 0 and at most 3600 (an hour).
        max_outstanding (`int`, *optional*, defaults to `256`):
            The most pairs requested and not answered yet (they are kept in every checkpoint).
    """

    def __init__(
        self,
        path: str | Path,
        requests_path: str | Path | None = None,
        timeout: float = 0.0,
        poll_interval: float = 0.2,
        max_outstanding: int = DEFAULT_MAX_OUTSTANDING,
    ):
        settings = check_queue_settings(path, requests_path, timeout, poll_interval, max_outstanding)
        self.path, self.requests_path = settings["path"], settings["requests_path"]
        self.timeout, self.poll_interval = settings["timeout"], settings["poll_interval"]
        self.max_outstanding = settings["max_outstanding"]
        self._pending: dict[str, dict[str, Any]] = {}  # id -> {"prompt", "a", "b"}: requested, not yet answered
        self._reported: set[bytes] = set()  # digests of the bad lines reported

    def __repr__(self) -> str:
        return f"QueueLabeler({str(self.path)!r})"

    @property
    def outstanding(self) -> int:
        """Pairs requested and not answered yet (the online reward model keeps them within its budget)."""
        return len(self._pending)

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any]:
        entry = json.loads(raw.decode("utf-8-sig"))
        if not isinstance(entry, dict) or "id" not in entry or "label" not in entry:
            raise ValueError("not a JSON object with 'id' and 'label'")
        return entry

    @staticmethod
    def _is_object(raw: bytes) -> bool:
        try:
            return isinstance(json.loads(raw.decode("utf-8-sig")), dict)
        except ValueError:
            return False

    def _read_labels(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        if not self.path.is_file():
            raise ValueError(f"The labels file {str(self.path)!r} is no longer a regular file.")
        *lines, last = self.path.read_bytes().split(b"\n")
        if last.strip() and self._is_object(last):  # no newline yet: complete once a JSON object, else being written
            lines.append(last)
        labels: dict[str, Any] = {}
        bad: list[tuple[int, bytes, ValueError]] = []
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                entry = self._parse(raw)
            except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError included
                digest = hashlib.sha256(raw.strip()).digest()
                if digest not in self._reported:
                    self._reported.add(digest)
                    bad.append((number, raw, exc))
                continue
            labels[str(entry["id"])] = entry["label"]
        if bad:
            raise ValueError(self._malformed(bad, quote=bool(labels)))
        return labels

    def _malformed(self, bad: list[tuple[int, bytes, ValueError]], quote: bool) -> str:
        """The fault of the bad lines: the first few, quoted (cut) only from a file that holds label lines."""
        shown = []
        for number, raw, exc in bad[:_QUOTED_LINES]:
            reason = f"not UTF-8 (byte {exc.start})" if isinstance(exc, UnicodeDecodeError) else str(exc)
            text = f"{self.path}:{number}: {reason}"
            if quote:
                line = raw.strip().decode("utf-8-sig", errors="replace")
                text += f": {line[:_QUOTED_CHARS]!r}" + ("..." if len(line) > _QUOTED_CHARS else "")
            shown.append(text)
        message = "Malformed label lines: " + "; ".join(shown)
        if len(bad) > _QUOTED_LINES:
            message += f"; and {len(bad) - _QUOTED_LINES} more"
        if not quote:
            message += " (the file holds no label line, so its content is not quoted: is `path` the labels file?)"
        return message

    def _request(self, ids: list[str], pairs: list[dict[str, Any]]) -> None:
        """Append the requests of the pairs not queued yet, within `max_outstanding` (the others are not requested)."""
        new: dict[str, dict[str, Any]] = {}
        for request_id, pair in zip(ids, pairs):
            if request_id in self._pending or request_id in new:
                continue
            if len(self._pending) + len(new) >= self.max_outstanding:
                break
            new[request_id] = pair
        if not new:
            return
        self.requests_path.parent.mkdir(parents=True, exist_ok=True)
        with self.requests_path.open("a", encoding="utf-8") as f:
            for request_id, pair in new.items():
                f.write(json.dumps({"id": request_id, **pair}, ensure_ascii=False, default=str) + "\n")
                self._pending[request_id] = pair

    def __call__(self, prompts, completions_a, completions_b, **columns) -> list[Any]:
        n = _check_lengths("QueueLabeler", completions_a, completions_b)
        prompts = list(prompts) if prompts is not None else [None] * n
        pairs = [{"prompt": p, "a": a, "b": b} for p, a, b in zip(prompts, completions_a, completions_b)]
        ids = [pair_id(p["prompt"], p["a"], p["b"]) for p in pairs]
        self._request(ids, pairs)
        queued = [i for i in ids if i in self._pending]  # a pair over `max_outstanding` is not waited for
        deadline = time.monotonic() + self.timeout
        while True:
            labels = self._read_labels()
            left = deadline - time.monotonic()
            if all(i in labels for i in queued) or left <= 0:
                break
            time.sleep(min(self.poll_interval, left))
        for i in ids:
            if i in labels:
                self._pending.pop(i, None)
        return [labels.get(i) for i in ids]

    def collect(self) -> list[tuple[dict[str, Any], Any]]:
        """Queued pairs answered since they were requested: `[(pair, label)]`, each handed over once."""
        if not self._pending:
            return []
        labels = self._read_labels()
        answered = [(request_id, pair) for request_id, pair in self._pending.items() if request_id in labels]
        for request_id, _ in answered:
            del self._pending[request_id]
        return [(pair, labels[request_id]) for request_id, pair in answered]

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the queued pairs."""
        return {"pending": dict(self._pending)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._pending = dict(state.get("pending", {}))
