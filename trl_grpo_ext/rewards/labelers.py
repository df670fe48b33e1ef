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
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .guard import PartialRewardsError
from .judges import Judge, JudgeError

__all__ = ["GoldLabeler", "JudgeLabeler", "QueueLabeler", "pair_id"]


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


class QueueLabeler:
    """A person labels while training runs: requests are appended to a JSONL file, labels read back by id.

    Each request is one line `{"id", "prompt", "a", "b"}` in `requests_path`; the person appends lines
    `{"id": ..., "label": 1 | 0 | 0.5 | null}` to `path` (1: a is better, 0: b, 0.5: tie, null: cannot say).
    A call writes the requests of its new pairs, then polls `path` for up to `timeout` seconds (every
    `poll_interval` seconds) until all of them are answered; an unanswered pair abstains (`None`) and stays queued.
    `collect()` returns the queued pairs answered since (the online reward model calls it every update). A line that
    is not a JSON object with `id` and `label` is a fault, reported once; an incomplete last line (being written) is
    read at the next poll. A label value outside {0, 0.5, 1, null} is passed on, and the online reward model refuses
    it under the reward error policy.

    One writer: under GRPOExtTrainer only process 0 asks the labeler (`OnlineRewardModel` broadcasts the labels).

    Args:
        path (`str | Path`):
            The labels file (JSONL), appended to by the person.
        requests_path (`str | Path`, *optional*):
            The requests file (JSONL); defaults to `path` with the suffix `.requests.jsonl`.
        timeout (`float`, *optional*, defaults to `0.0`):
            Seconds a call waits for the labels of its pairs (0: look once).
        poll_interval (`float`, *optional*, defaults to `0.2`):
            Seconds between two reads of `path` while waiting.
    """

    def __init__(
        self,
        path: str | Path,
        requests_path: str | Path | None = None,
        timeout: float = 0.0,
        poll_interval: float = 0.2,
    ):
        for field, value in (("timeout", timeout), ("poll_interval", poll_interval)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"`{field}` must be a number >= 0 (seconds), got {value!r}.")
        self.path = Path(path)
        self.requests_path = (
            Path(requests_path) if requests_path is not None else self.path.with_suffix(".requests.jsonl")
        )
        self.timeout, self.poll_interval = float(timeout), float(poll_interval)
        self._pending: dict[str, dict[str, Any]] = {}  # id -> {"prompt", "a", "b"}: requested, not yet answered
        self._reported_lines: set[int] = set()

    def __repr__(self) -> str:
        return f"QueueLabeler({str(self.path)!r})"

    @property
    def outstanding(self) -> int:
        """Pairs requested and not answered yet (the online reward model keeps them within its budget)."""
        return len(self._pending)

    def _read_labels(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        lines = self.path.read_text(encoding="utf-8").split("\n")
        labels, bad = {}, []
        for number, line in enumerate(lines[:-1], start=1):  # the last piece has no newline yet: not complete
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or "id" not in entry or "label" not in entry:
                    raise ValueError("not a JSON object with 'id' and 'label'")
            except ValueError as exc:
                if number not in self._reported_lines:
                    self._reported_lines.add(number)
                    bad.append(f"{self.path}:{number}: {exc}: {line[:200]!r}")
                continue
            labels[str(entry["id"])] = entry["label"]
        if bad:
            raise ValueError("Malformed label lines: " + "; ".join(bad))
        return labels

    def _request(self, ids: list[str], pairs: list[dict[str, Any]]) -> None:
        new = [(i, p) for i, p in zip(ids, pairs) if i not in self._pending]
        if not new:
            return
        self.requests_path.parent.mkdir(parents=True, exist_ok=True)
        with self.requests_path.open("a", encoding="utf-8") as f:
            for request_id, pair in new:
                f.write(json.dumps({"id": request_id, **pair}, ensure_ascii=False, default=str) + "\n")
                self._pending[request_id] = pair

    def __call__(self, prompts, completions_a, completions_b, **columns) -> list[Any]:
        n = _check_lengths("QueueLabeler", completions_a, completions_b)
        prompts = list(prompts) if prompts is not None else [None] * n
        pairs = [{"prompt": p, "a": a, "b": b} for p, a, b in zip(prompts, completions_a, completions_b)]
        ids = [pair_id(p["prompt"], p["a"], p["b"]) for p in pairs]
        self._request(ids, pairs)
        deadline = time.monotonic() + self.timeout
        while True:
            labels = self._read_labels()
            if all(i in labels for i in ids) or time.monotonic() >= deadline:
                break
            time.sleep(self.poll_interval)
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
