"""The reward error policy, as a wrapper around one objective, and the check of the dataset columns objectives need.

`guard_objective(name, fn, policy)` returns a reward function that calls `fn` and checks what it returns:

- `"raise"`: an exception, a NaN/inf reward or a list of the wrong length raises `ObjectiveError`, which names the
  objective and the completion index (the original exception chained);
- `"skip"`: the affected completions get `None` (all of them when `fn` raises or returns the wrong number of
  rewards; only the failed ones when it raises `PartialRewardsError`), training continues, and
  `log_metric(f"rewards/{name}/errors", count)` is called on every call (0 when all is well). TRL zeroes the
  advantage of a completion that no objective scored; otherwise the `None` adds nothing to TRL's weighted `nansum`
  (under `sum_then_normalize`, the same number as a 0 reward for that objective; docs/objectives.md). Never a silent
  0: the failure is always an error or a counted, warned `None`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .objectives import is_group_objective

__all__ = [
    "REWARD_ERROR_POLICIES",
    "ObjectiveError",
    "PartialRewardsError",
    "check_required_columns",
    "copy_attributes",
    "guard_objective",
    "is_async_callable",
    "required_columns_of",
]

logger = logging.getLogger(__name__)

REWARD_ERROR_POLICIES = ("raise", "skip")
_CALLBACK_KWARGS = ("log_metric", "log_extra")


def is_async_callable(fn: Any) -> bool:
    """Whether calling `fn` returns a coroutine (as `trl.trainer.utils.is_async_callable`, without its import cost)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


class ObjectiveError(RuntimeError):
    """An objective raised, returned a NaN/inf reward, or returned the wrong number of rewards."""


class PartialRewardsError(Exception):
    """Raised by an objective that scored some completions and could not score others (a judge that failed on them).

    `rewards` has one entry per completion (`None` for the failed ones) and `failed` the failed indices; the message
    names the first failure and its cause. The guard does not re-run the objective to locate the error: with
    `"raise"` it raises `ObjectiveError` with this message, with `"skip"` it keeps `rewards` and counts `failed`.
    """

    def __init__(self, message: str, rewards: list, failed: list[int]):
        super().__init__(message)
        self.rewards = list(rewards)
        self.failed = list(failed)


def copy_attributes(wrapper: Any, fn: Callable, name: str) -> None:
    """Make `wrapper` look like `fn` named `name`: what the trainer reads (`needs_group`, `required_columns`, ...) and
    what TRL names metrics by (`__name__`)."""
    inner = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    functools.update_wrapper(wrapper, inner, updated=())
    for attr, value in vars(inner).items():
        if not attr.startswith("_") and attr not in vars(wrapper):
            setattr(wrapper, attr, value)
    wrapper.__wrapped__ = fn
    wrapper.__name__ = name
    if is_group_objective(fn):
        wrapper.needs_group = True


def _rows(kwargs: dict[str, Any], n: int, index: int) -> dict[str, Any]:
    """The keyword arguments of completion `index` alone: per-completion lists sliced, callbacks silenced."""
    sliced = {}
    for key, value in kwargs.items():
        if key in _CALLBACK_KWARGS:
            sliced[key] = lambda *args, **kw: None
        elif isinstance(value, list) and len(value) == n:
            sliced[key] = value[index : index + 1]
        else:
            sliced[key] = value
    return sliced


class _GuardedObjective:
    def __init__(self, name: str, fn: Callable, policy: str):
        self._name = name
        self._fn = fn
        self._policy = policy
        self._warned = False
        copy_attributes(self, fn, name)

    def __call__(self, prompts=None, completions=None, **kwargs) -> list[float | None]:
        kwargs = {"prompts": prompts, "completions": completions, **kwargs}
        try:
            output = self._fn(**kwargs)
        except PartialRewardsError as exc:
            return self._on_partial(exc, kwargs)
        except Exception as exc:
            return self._on_exception(exc, kwargs)
        return self._check(output, kwargs)

    # Shared by the sync and async guards.
    def _size(self, kwargs: dict[str, Any]) -> int:
        return len(kwargs["completions"])

    def _on_exception(self, exc: Exception, kwargs: dict[str, Any]) -> list[None]:
        n = self._size(kwargs)
        if self._policy == "raise":
            where = self._locate(kwargs, n)
            raise ObjectiveError(f"Objective {self._name!r} raised {type(exc).__name__} {where}: {exc}") from exc
        self._warn(f"raised {type(exc).__name__}: {exc}")
        return self._skipped([None] * n, n, kwargs)

    def _on_partial(self, exc: PartialRewardsError, kwargs: dict[str, Any]) -> list[float | None]:
        n = self._size(kwargs)
        if self._policy == "raise" or len(exc.rewards) != n:
            raise ObjectiveError(
                f"Objective {self._name!r} could not score {len(exc.failed)} of {n} completions: {exc}"
            ) from exc
        self._warn(f"could not score {len(exc.failed)} of {n} completions: {exc}")
        rewards = [None if i in set(exc.failed) else r for i, r in enumerate(exc.rewards)]
        return self._skipped(rewards, len(exc.failed), kwargs)

    def _locate(self, kwargs: dict[str, Any], n: int) -> str:
        """Where the error happens: re-run the objective on one completion at a time, with callbacks silenced.

        Group objectives are not re-run: a single completion is not a group, and the trainer's wrapper of a group
        objective gathers across processes, which only this process would enter.
        """
        if is_async_callable(self._fn) or is_group_objective(self._fn):
            return f"on a batch of {n} completions"
        for index in range(n):
            try:
                self._fn(**_rows(kwargs, n, index))
            except Exception:
                return f"at completion index {index}"
        return f"on a batch of {n} completions (no single completion reproduces it)"

    def _check(self, output: Any, kwargs: dict[str, Any]) -> list[float | None]:
        n = self._size(kwargs)
        values = None
        if not isinstance(output, (str, bytes, Mapping)):
            try:
                values = list(output)
            except TypeError:
                pass
        if values is None or len(values) != n:
            got = f"{len(values)} rewards" if values is not None else f"a {type(output).__name__}"
            if values is not None and len(values) < n:
                where = f"completion index {len(values)} has no reward"
            elif values is not None:
                where = f"an extra reward at index {n}"
            else:
                where = "not a list"
            message = f"Objective {self._name!r} returned {got} for {n} completions ({where})."
            if self._policy == "raise":
                raise ObjectiveError(message + " Return exactly one reward (or None) per completion.")
            self._warn(message)
            return self._skipped([None] * n, n, kwargs)

        rewards: list[float | None] = []
        errors = 0
        for index, value in enumerate(values):
            if value is None:
                rewards.append(None)
            elif _is_finite_number(value):
                rewards.append(float(value))
            elif self._policy == "raise":
                raise ObjectiveError(
                    f"Objective {self._name!r} returned {value!r} for completion index {index}; rewards must be "
                    "finite numbers or None."
                )
            else:
                if not errors:
                    self._warn(f"returned {value!r} for completion index {index}")
                errors += 1
                rewards.append(None)
        return self._skipped(rewards, errors, kwargs) if self._policy == "skip" else rewards

    def _skipped(self, rewards: list[float | None], errors: int, kwargs: dict[str, Any]) -> list[float | None]:
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric(f"rewards/{self._name}/errors", float(errors))
        return rewards

    def _warn(self, what: str) -> None:
        if not self._warned:
            logger.warning(
                "Objective %r %s; reward_error_policy='skip' gives those completions None. Further errors are only "
                "counted in rewards/%s/errors.",
                self._name,
                what,
                self._name,
            )
            self._warned = True

    def __getstate__(self):
        return {"name": self._name, "fn": self._fn, "policy": self._policy}

    def __setstate__(self, state):
        self.__init__(state["name"], state["fn"], state["policy"])


class _AsyncGuardedObjective(_GuardedObjective):
    async def __call__(self, prompts=None, completions=None, **kwargs) -> list[float | None]:
        kwargs = {"prompts": prompts, "completions": completions, **kwargs}
        try:
            output = await self._fn(**kwargs)
        except PartialRewardsError as exc:
            return self._on_partial(exc, kwargs)
        except Exception as exc:
            return self._on_exception(exc, kwargs)
        return self._check(output, kwargs)


def _is_finite_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def guard_objective(name: str, fn: Callable, policy: str = "raise") -> Callable:
    """Wrap the objective `fn` so that its failures follow the reward error `policy` (`"raise"` or `"skip"`).

    The wrapper is a TRL reward function named `name` (`__name__`) that keeps `fn`'s attributes (`needs_group`,
    `required_columns`, ...), is async when `fn` is, and pickles when `fn` does.

    Args:
        name (`str`):
            The objective's name, used in error messages and in the metric `rewards/{name}/errors`.
        fn (`Callable`):
            The reward function.
        policy (`str`, *optional*, defaults to `"raise"`):
            `"raise"` or `"skip"`.

    Returns:
        `Callable`: the guarded reward function.

    Example:
    ```python
    >>> def shaky(prompts, completions, **kwargs):
    ...     return [1.0, float("nan")]
    >>> logged = []
    >>> guard_objective("shaky", shaky, "skip")(None, ["a", "b"], log_metric=lambda k, v: logged.append((k, v)))
    [1.0, None]
    >>> logged
    [('rewards/shaky/errors', 1.0)]

    ```
    """
    if policy not in REWARD_ERROR_POLICIES:
        raise ValueError(f"`policy` must be one of {list(REWARD_ERROR_POLICIES)}, got {policy!r}.")
    if not callable(fn):
        raise TypeError(f"The objective {name!r} must be callable to be guarded, got {type(fn).__name__}.")
    cls = _AsyncGuardedObjective if is_async_callable(fn) else _GuardedObjective
    return cls(name, fn, policy)


def required_columns_of(fn: Any) -> list[tuple[str, ...]]:
    """The dataset columns `fn` declares (`required_columns`), each entry as a tuple of alternative names."""
    while isinstance(fn, functools.partial):
        if hasattr(fn, "required_columns"):
            break
        fn = fn.func
    required = getattr(fn, "required_columns", None) or []
    return [(entry,) if isinstance(entry, str) else tuple(entry) for entry in required]


def check_required_columns(objectives: Mapping[str, Any], column_names: Iterable[str]) -> None:
    """Raise a `ValueError` before training when the dataset lacks a column an objective needs.

    Each objective may declare `required_columns`: a list whose entries are a column name or a tuple of alternative
    names, at least one of which must be a column (`accuracy.required_columns == [("answer", "solution")]`).

    Args:
        objectives (`Mapping[str, Callable | str]`):
            Objectives by name; reward-model ids (strings) need no column.
        column_names (`Iterable[str]`):
            The dataset's columns.

    Example:
    ```python
    >>> from trl_grpo_ext.rewards import accuracy
    >>> check_required_columns({"accuracy": accuracy}, ["prompt", "question"])
    Traceback (most recent call last):
    ...
    ValueError: Objective 'accuracy' needs the dataset column 'answer' or 'solution'; the dataset has ['prompt', 'question'].

    ```
    """
    columns = list(column_names)
    problems = []
    for name, fn in objectives.items():
        if isinstance(fn, str):
            continue
        for alternatives in required_columns_of(fn):
            if not any(column in columns for column in alternatives):
                wanted = " or ".join(repr(column) for column in alternatives)
                problems.append(f"Objective {name!r} needs the dataset column {wanted}")
    if problems:
        raise ValueError("; ".join(problems) + f"; the dataset has {sorted(columns)}.")
