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

The `labeler` block of a config is one of `GoldLabelerConfig`, `JudgeLabelerConfig`, `QueueLabelerConfig`
(`labeler_config_from_dict` picks it by `type`); each validates itself and `build`s its labeler.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..checks import FilePath, Integer, Number, SubConfig, optional, setting, unknown_key
from .configured import ConfiguredObjective
from .guard import PartialRewardsError
from .judges import Judge, JudgeError, check_template
from .objectives import is_group_objective
from .principles import PrinciplesObjective, check_principles
from .registry import get_objective

__all__ = [
    "GoldLabeler",
    "GoldLabelerConfig",
    "JudgeLabeler",
    "JudgeLabelerConfig",
    "LabelerConfig",
    "QueueLabeler",
    "QueueLabelerConfig",
    "check_queue_settings",
    "labeler_config_from_dict",
    "pair_id",
]


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


@dataclass(kw_only=True)
class LabelerConfig(SubConfig):
    """The `labeler` block of `online_reward_model`; `type` picks the subclass (`labeler_config_from_dict`)."""

    type: ClassVar[str] = ""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return ("type", *super().keys())

    def to_dict(self, only: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {"type": self.type, **super().to_dict(only)}

    def build(self, judge: Judge | Mapping[str, Any] | None = None):
        """The labeler; `judge` is the config's `judge` block (for a judge labeler)."""
        raise NotImplementedError


def check_gold_objective(name: Any, field: str = "objective") -> str:
    """The name of a plain, per-completion reward function (registered or `"package.module:function"`)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"`{field}` must name a registered objective or 'package.module:function', got {name!r}.")
    try:
        fn = get_objective(name)
    except ValueError as err:
        raise ValueError(f"`{field}` names {name!r}: {err}") from None
    if isinstance(fn, ConfiguredObjective):
        raise ValueError(
            f"`{field}` must be a plain reward function, got {name!r}"
            + (" (for the principles judge use the labeler {'type': 'judge'})" if name == "principles" else "")
            + "."
        )
    if is_group_objective(fn):
        raise ValueError(
            f"`{field}` names the group objective {name!r}, whose reward depends on the other completions of the "
            "batch; a gold labeler scores the two sides of a pair on their own. Use a per-completion objective such "
            "as 'accuracy'."
        )
    return name


@dataclass(kw_only=True)
class GoldLabelerConfig(LabelerConfig):
    """`{type: gold, objective: accuracy}`: `GoldLabeler` of a registered objective or an import path."""

    type: ClassVar[str] = "gold"
    described_as: ClassVar[str] = "a gold labeler"

    objective: str = setting(check=check_gold_objective)

    @classmethod
    def from_dict(cls, value: Any, prefix: str = "") -> GoldLabelerConfig:
        if "objective" not in cls.check_keys(value, prefix):
            raise ValueError(
                f"`{prefix}objective` is required for a gold labeler (e.g. 'accuracy'), got {dict(value)!r}."
            )
        return cls(**{k: v for k, v in value.items() if k != "type"}, prefix=prefix)

    def build(self, judge=None) -> GoldLabeler:
        return GoldLabeler(get_objective(self.objective))


@dataclass(kw_only=True)
class JudgeLabelerConfig(LabelerConfig):
    """`{type: judge[, principles, template]}`: `JudgeLabeler` of the config's `judge` block."""

    type: ClassVar[str] = "judge"
    described_as: ClassVar[str] = "a judge labeler"

    principles: list | None = setting(
        None, optional(lambda value, field: [vars(p).copy() for p in check_principles(value, field)])
    )
    template: str | None = setting(None, optional(check_template))

    def build(self, judge=None) -> JudgeLabeler:
        given = {k: v for k, v in self.to_dict().items() if k != "type" and v is not None}
        return JudgeLabeler(judge, **given)


MAX_QUEUE_TIMEOUT = 86400.0  # a day
MAX_POLL_INTERVAL = 3600.0  # an hour
DEFAULT_MAX_OUTSTANDING = 256


@dataclass(kw_only=True)
class QueueLabelerConfig(LabelerConfig):
    """`{type: queue, path[, requests_path, timeout, poll_interval, max_outstanding]}`: `QueueLabeler`, a person.

    `path` and `requests_path` must be two different files (compared resolved), neither a directory nor another
    non-regular file where it exists; they are kept as given (`labels_file` and `requests_file` are the paths).
    """

    type: ClassVar[str] = "queue"
    described_as: ClassVar[str] = "a queue labeler"

    path: str | os.PathLike = setting(None, FilePath("the labels file (JSONL)"))
    requests_path: str | os.PathLike | None = setting(None, FilePath("the requests file (JSONL)", optional=True))
    timeout: float = setting(0.0, Number(0, maximum=MAX_QUEUE_TIMEOUT, unit="a number of seconds", show_maximum=True))
    poll_interval: float = setting(
        0.2, Number(0, strict=True, maximum=MAX_POLL_INTERVAL, unit="a number of seconds", show_maximum=True)
    )
    max_outstanding: int = setting(DEFAULT_MAX_OUTSTANDING, Integer(1))

    def validate(self, prefix: str) -> None:
        if self.requests_file.resolve() == self.labels_file.resolve():
            raise ValueError(
                f"`{prefix}requests_path` must differ from `{prefix}path` (the run appends its requests to one file, "
                f"the person their labels to the other), got {str(self.requests_file)!r} for both."
            )

    @property
    def labels_file(self) -> Path:
        return Path(self.path)

    @property
    def requests_file(self) -> Path:
        """`requests_path`, defaulted to `path` with the suffix `.requests.jsonl`."""
        if self.requests_path is None:
            return self.labels_file.with_suffix(".requests.jsonl")
        return Path(self.requests_path)

    def build(self, judge=None) -> QueueLabeler:
        return QueueLabeler(**{k: v for k, v in self.to_dict().items() if k != "type"})


LABELER_CONFIGS: dict[str, type[LabelerConfig]] = {
    "gold": GoldLabelerConfig,
    "judge": JudgeLabelerConfig,
    "queue": QueueLabelerConfig,
}


def labeler_config_from_dict(value: Any, prefix: str = "online_reward_model.labeler.") -> LabelerConfig | None:
    """The labeler config of a `labeler` block (None for None), by its `type`.

    Example:
    ```python
    >>> labeler_config_from_dict({"type": "gold", "objective": "accuracy"})
    GoldLabelerConfig(objective='accuracy')
    >>> labeler_config_from_dict({"type": "queue", "path": "labels.jsonl", "timout": 5})
    Traceback (most recent call last):
    ...
    ValueError: `online_reward_model.labeler` has unknown key 'timout' (did you mean 'timeout'?); a queue labeler takes ['max_outstanding', 'path', 'poll_interval', 'requests_path', 'timeout', 'type'].

    ```
    """
    if value is None:
        return None
    block = prefix.rstrip(".")
    kind = value.get("type") if isinstance(value, Mapping) else None
    if not isinstance(kind, str) or kind not in LABELER_CONFIGS:
        raise ValueError(
            f"`{block}` must be a mapping whose `type` is one of {list(LABELER_CONFIGS)} (e.g. {{'type': 'gold', "
            f"'objective': 'accuracy'}}), got {kind if isinstance(value, Mapping) else value!r}."
        )
    cls = LABELER_CONFIGS[kind]
    for key in value:
        if key not in cls.keys():
            raise unknown_key(block, key, cls.keys(), cls.described_as)
    if cls is GoldLabelerConfig:
        return cls.from_dict(value, prefix)
    return cls(**{k: v for k, v in value.items() if k != "type"}, prefix=prefix)


def check_queue_settings(
    path: Any,
    requests_path: Any = QueueLabelerConfig.requests_path,
    timeout: Any = QueueLabelerConfig.timeout,
    poll_interval: Any = QueueLabelerConfig.poll_interval,
    max_outstanding: Any = QueueLabelerConfig.max_outstanding,
    *,
    prefix: str = "",
) -> dict[str, Any]:
    """The settings of a `QueueLabeler`, validated (`QueueLabelerConfig`, `prefix` names the block in the error, e.g.
    `"online_reward_model.labeler."`) and normalised: paths, seconds as floats, `requests_path` defaulted.

    `path` and `requests_path` must be two different files (compared resolved), neither a directory nor another
    non-regular file where it exists; `timeout` in [0, 86400] seconds (a day), `poll_interval` in (0, 3600] (an hour),
    `max_outstanding` an integer >= 1.

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
    config = QueueLabelerConfig(
        path=path,
        requests_path=requests_path,
        timeout=timeout,
        poll_interval=poll_interval,
        max_outstanding=max_outstanding,
        prefix=prefix,
    )
    return {
        "path": config.labels_file,
        "requests_path": config.requests_file,
        "timeout": config.timeout,
        "poll_interval": config.poll_interval,
        "max_outstanding": config.max_outstanding,
    }


_QUOTED_LINES, _QUOTED_CHARS = 3, 100


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
        requests_path: str | Path | None = QueueLabelerConfig.requests_path,
        timeout: float = QueueLabelerConfig.timeout,
        poll_interval: float = QueueLabelerConfig.poll_interval,
        max_outstanding: int = QueueLabelerConfig.max_outstanding,
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
