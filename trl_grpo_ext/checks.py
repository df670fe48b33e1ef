"""One way to validate a setting: a check per setting, declared once, next to the setting.

A check is a callable `check(value, field)` that returns the value (a number as a float) or raises `ValueError`
naming the field, showing the value and saying what is allowed:

    `online_reward_model.learning_rate` must be a finite number > 0 and <= 1, got 1e+30.

The blocks of settings a config holds (`judge`, `online_reward_model` and its `labeler`) and the settings of
`OnlineRewardModel` are `SubConfig` dataclasses, as PEFT's configs are: each field is declared with
`setting(default, check, help=...)`, and `__post_init__` runs the checks in field order, then the rules between fields
(`validate`). `from_dict` builds one from the mapping a recipe gives (an unknown key is refused with a did-you-mean)
and `to_dict` gives the plain, JSON-ready mapping back. A sub-config nested in a block names its fields with the
block's prefix (`online_reward_model.labeler.timeout`); built directly in Python it names them bare (`timeout`).

Example:
```python
>>> from dataclasses import dataclass
>>> @dataclass(kw_only=True)
... class Retry(SubConfig):
...     attempts: int = setting(3, Integer(1), help="Tries in all.")
...     backoff: float = setting(0.5, Number(0), help="Seconds before the first retry.")
>>> Retry.from_dict({"attempts": 2, "backoff": 1}, prefix="retry.")
Retry(attempts=2, backoff=1.0)
>>> Retry.from_dict({"attempts": 0}, prefix="retry.")
Traceback (most recent call last):
...
ValueError: `retry.attempts` must be an integer >= 1, got 0.
>>> Retry.from_dict({"attemps": 2}, prefix="retry.")
Traceback (most recent call last):
...
ValueError: `retry` has unknown key 'attemps' (did you mean 'attempts'?); it takes ['attempts', 'backoff'].

```
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, InitVar, dataclass
from typing import Any, ClassVar

__all__ = [
    "Choice",
    "FilePath",
    "Flag",
    "Integer",
    "Number",
    "SubConfig",
    "TemperatureList",
    "TemperaturePair",
    "Text",
    "Weights",
    "check_not_all_zero",
    "describe_settings",
    "optional",
    "parse_json",
    "setting",
    "unknown_key",
]

Check = Callable[[Any, str], Any]


# ------------------------------------------------------------------------------------------------------ the checks
def _or_none(optional: bool) -> str:
    return " or None" if optional else ""


def optional(check: Check) -> Check:
    """`check`, with None allowed (and kept)."""

    def check_or_none(value: Any, field: str) -> Any:
        return None if value is None else check(value, field)

    return check_or_none


class Integer:
    """An integer (not a bool) >= `minimum`, and <= `maximum` when given (shown in the message once exceeded).

    Example:
    ```python
    >>> Integer(1, maximum=10)(3, "batch_size")
    3
    >>> Integer(1, maximum=10)(11, "batch_size")
    Traceback (most recent call last):
    ...
    ValueError: `batch_size` must be an integer >= 1 and <= 10, got 11.

    ```
    """

    def __init__(self, minimum: int, maximum: int | None = None, optional: bool = False):
        self.minimum, self.maximum, self.optional = minimum, maximum, optional

    def __call__(self, value: Any, field: str) -> int | None:
        if value is None and self.optional:
            return None
        exceeded = self.maximum is not None and isinstance(value, int) and value > self.maximum
        if isinstance(value, bool) or not isinstance(value, int) or value < self.minimum or exceeded:
            allowed = f"an integer >= {self.minimum}" + (f" and <= {self.maximum}" if exceeded else "")
            raise ValueError(f"`{field}` must be {allowed}{_or_none(self.optional)}, got {value!r}.")
        return value


class Number:
    """A finite number (not a bool), as a float: > `minimum` when `strict`, else >=; <= `maximum` (shown in the message
    once exceeded, or always with `show_maximum`); < `below` (the message then reads "in [minimum, below)"). `why`, when
    given, follows what is allowed in the message, in parentheses.

    Example:
    ```python
    >>> Number(0, strict=True, maximum=1)(1, "learning_rate")
    1.0
    >>> Number(0, strict=True, maximum=1)(0.0, "learning_rate")
    Traceback (most recent call last):
    ...
    ValueError: `learning_rate` must be a finite number > 0, got 0.0.
    >>> Number(0, below=1)(1.0, "heldout_fraction")
    Traceback (most recent call last):
    ...
    ValueError: `heldout_fraction` must be in [0, 1), got 1.0.

    ```
    """

    def __init__(
        self,
        minimum: float,
        *,
        strict: bool = False,
        maximum: float | None = None,
        below: float | None = None,
        optional: bool = False,
        unit: str = "a finite number",
        show_maximum: bool = False,
        why: str = "",
    ):
        self.minimum, self.strict, self.maximum, self.below = minimum, strict, maximum, below
        self.optional, self.unit, self.show_maximum, self.why = optional, unit, show_maximum, why

    def __call__(self, value: Any, field: str) -> float | None:
        if value is None and self.optional:
            return None
        number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        exceeded = number and self.maximum is not None and value > self.maximum
        low = number and (value > self.minimum if self.strict else value >= self.minimum)
        if not low or exceeded or (number and self.below is not None and value >= self.below):
            raise ValueError(f"`{field}` must be {self._allowed(exceeded)}{_or_none(self.optional)}, got {value!r}.")
        return float(value)

    def _allowed(self, exceeded: bool) -> str:
        if self.below is not None:
            return f"in [{self.minimum:g}, {self.below:g})"
        text = f"{self.unit} {'>' if self.strict else '>='} {self.minimum:g}"
        if self.maximum is not None and (exceeded or self.show_maximum):
            text += f" and <= {self.maximum:g}"
        return text + (f" ({self.why})" if self.why else "")


class Choice:
    """One of `choices` (compared with ==, so an unhashable value is refused, not a crash); or None with `optional`;
    or any callable with `or_callable`.

    Example:
    ```python
    >>> Choice(["raise", "skip"], optional=True)("ignore", "error_policy")
    Traceback (most recent call last):
    ...
    ValueError: `error_policy` must be one of ['raise', 'skip'] or None, got 'ignore'.

    ```
    """

    def __init__(self, choices: Iterable[Any], optional: bool = False, or_callable: bool = False):
        self.choices, self.optional, self.or_callable = tuple(choices), optional, or_callable

    def __call__(self, value: Any, field: str) -> Any:
        if (value is None and self.optional) or (self.or_callable and callable(value)):
            return value
        if not any(type(value) is type(choice) and value == choice for choice in self.choices):
            extra = _or_none(self.optional) + (" or a callable" if self.or_callable else "")
            raise ValueError(f"`{field}` must be one of {list(self.choices)}{extra}, got {value!r}.")
        return value


class Flag:
    """`True` or `False` (not 1, not "yes")."""

    def __call__(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"`{field}` must be true or false, got {value!r}.")
        return value


class Text:
    """A string with something other than white space in it; or None with `optional`."""

    def __init__(self, optional: bool = False):
        self.optional = optional

    def __call__(self, value: Any, field: str) -> str | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"`{field}` must be a non-empty string{_or_none(self.optional)}, got {value!r}.")
        return value


class FilePath:
    """A path (`str` or `os.PathLike`) that is not a directory nor, where it exists, another non-regular file; kept as
    given (a recipe's string stays a string). `what` says what the file is for, e.g. "the labels file (JSONL)"."""

    def __init__(self, what: str, optional: bool = False):
        self.what, self.optional = what, optional

    def __call__(self, value: Any, field: str) -> Any:
        from pathlib import Path

        if value is None and self.optional:
            return None
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise ValueError(f"`{field}` must be {self.what} (a file path), got {value!r}.")
        path = Path(value)
        if path.is_dir():
            raise ValueError(f"`{field}` must be {self.what}, got {str(path)!r}, which is a directory.")
        if path.exists() and not path.is_file():
            raise ValueError(f"`{field}` must be {self.what}, got {str(path)!r}, which is not a regular file.")
        return value


class Weights:
    """A non-empty mapping name -> finite weight (numbers or number strings, from a recipe or the command line), as
    floats; not all zero unless `allow_all_zero`.

    Example:
    ```python
    >>> Weights()({"accuracy": 1, "novelty": "0.25"}, "reward_objectives")
    {'accuracy': 1.0, 'novelty': 0.25}
    >>> Weights()({"accuracy": float("nan")}, "reward_objectives")
    Traceback (most recent call last):
    ...
    ValueError: `reward_objectives['accuracy']` must be finite, got nan.

    ```
    """

    def __init__(self, allow_all_zero: bool = False):
        self.allow_all_zero = allow_all_zero

    def __call__(self, value: Any, field: str) -> dict[str, float] | None:
        if value is None:
            return None
        value = parse_json(value, field)
        if not isinstance(value, dict) or not value:
            raise ValueError(f"`{field}` must be a non-empty mapping objective name -> weight, got {value!r}.")
        weights = {}
        for key, weight in value.items():
            try:
                weight = float(weight)
            except (TypeError, ValueError):
                raise ValueError(f"`{field}[{key!r}]` must be a number, got {weight!r}.") from None
            if not math.isfinite(weight):
                raise ValueError(f"`{field}[{key!r}]` must be finite, got {weight}.")
            weights[str(key)] = weight
        if not self.allow_all_zero:
            check_not_all_zero(weights, field)
        return weights


def _numbers(value: Any, field: str) -> list[float]:
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"`{field}` must hold numbers, got {value!r}.") from None


class TemperaturePair:
    """A pair of finite temperatures > 0 in order (a list or a JSON string), as floats; `ends` names the pair in the
    message; or None with `optional`.

    Example:
    ```python
    >>> TemperaturePair()("[0.7, 1]", "temperature_range")
    [0.7, 1.0]
    >>> TemperaturePair(ends=("t_floor", "t_ceiling"))([2.0, 1.0], "temperature_bounds")
    Traceback (most recent call last):
    ...
    ValueError: `temperature_bounds` must satisfy t_floor <= t_ceiling, got [2.0, 1.0].

    ```
    """

    def __init__(self, ends: tuple[str, str] = ("t_min", "t_max"), optional: bool = False):
        self.ends, self.optional = ends, optional

    def __call__(self, value: Any, field: str) -> list[float] | None:
        if value is None and self.optional:
            return None
        low, high = self.ends
        value = parse_json(value, field)
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"`{field}` must be a pair [{low}, {high}]{_or_none(self.optional)}, got {value!r}.")
        t_min, t_max = _numbers(value, field)
        if not (math.isfinite(t_min) and math.isfinite(t_max)) or t_min <= 0 or t_max <= 0:
            raise ValueError(f"`{field}` must hold two finite temperatures > 0, got {value!r}.")
        if t_min > t_max:
            raise ValueError(f"`{field}` must satisfy {low} <= {high}, got {value!r}.")
        return [t_min, t_max]


class TemperatureList:
    """A list of finite temperatures > 0 (a list or a JSON string), as floats; or None with `optional`.

    Example:
    ```python
    >>> TemperatureList()("[0.7, 0.8]", "group_temperatures")
    [0.7, 0.8]
    >>> TemperatureList()([0.7, 0.0], "group_temperatures")
    Traceback (most recent call last):
    ...
    ValueError: `group_temperatures` must all be finite and > 0, got [0.7, 0.0].

    ```
    """

    def __init__(self, optional: bool = False):
        self.optional = optional

    def __call__(self, value: Any, field: str) -> list[float] | None:
        if value is None and self.optional:
            return None
        value = parse_json(value, field)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"`{field}` must be a list of temperatures{_or_none(self.optional)}, got {value!r}.")
        temps = _numbers(value, field)
        if not all(math.isfinite(t) and t > 0 for t in temps):
            raise ValueError(f"`{field}` must all be finite and > 0, got {temps}.")
        return temps


def check_not_all_zero(
    weights: Mapping[str, float] | Sequence[float], field: str, hint: str = "", what: str = "objective weights"
) -> None:
    """The one rule "weights not all zero": all-zero weights make the reward a constant.

    Example:
    ```python
    >>> check_not_all_zero({"accuracy": 0.0, "novelty": 0.5}, "reward_objectives")
    >>> check_not_all_zero([0.0], "principles", what="principle weights")
    Traceback (most recent call last):
    ...
    ValueError: `principles` makes all principle weights zero, so the reward would be constant ([0.0] are all zero); keep at least one non-zero weight.

    ```
    """
    values = list(weights.values()) if isinstance(weights, Mapping) else list(weights)
    if values and all(weight == 0 for weight in values):
        raise ValueError(
            f"`{field}` makes all {what} zero, so the reward would be constant ({weights} are all zero); keep at "
            f"least one non-zero weight{hint}."
        )


def parse_json(value: Any, field: str) -> Any:
    """The command line hands dict and list fields over as JSON strings; YAML and Python hand over the objects."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise ValueError(f"`{field}` must be valid JSON when given as a string, got {value!r} ({err}).") from None


def unknown_key(field: str, key: Any, allowed: Iterable[str], what: str = "it") -> ValueError:
    """The error for a key a block does not take, with the closest valid key when one is close."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"`{field}` has unknown key {key!r}{hint}; {what} takes {allowed}.")


# ------------------------------------------------------------------------------------------------ the sub-configs
def setting(
    default: Any = MISSING,
    check: Check | None = None,
    *,
    help: str = "",
    default_factory: Callable[[], Any] | Any = MISSING,
    recorded: bool = False,
    key: bool = True,
) -> Any:
    """A field of a `SubConfig`: its default, its check, its documentation. `recorded`: a checkpoint records it (a
    resumed run that changes it warns); `key=False`: set in Python only, not a key of the config block."""
    metadata = {"check": check, "help": help, "recorded": recorded, "key": key}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


@dataclass(kw_only=True)
class SubConfig:
    """Base of the settings dataclasses: checks each field (`setting(..., check)`) in `__post_init__`, then `validate`.

    `prefix` (not a field) is where the block sits in the config, e.g. `"online_reward_model."`: the errors name
    `prefix + field`.
    """

    prefix: InitVar[str] = ""

    # "`{block}` has unknown key ...; {described_as} takes [...]"
    described_as: ClassVar[str] = "it"
    # "`{block}` must be a mapping such as {example}, got ..."
    example: ClassVar[str] = "{...}"

    def __post_init__(self, prefix: str) -> None:
        for spec in dataclasses.fields(self):
            check = spec.metadata.get("check")
            if check is not None:
                setattr(self, spec.name, check(getattr(self, spec.name), prefix + spec.name))
        self.validate(prefix)

    def validate(self, prefix: str) -> None:
        """The rules between fields (each field alone is checked already); subclasses override."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The keys a config block may hold: the fields, less those set in Python only (`setting(key=False)`)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("key", True))

    @classmethod
    def check_keys(cls, value: Any, prefix: str) -> Mapping[str, Any]:
        """`value` as a non-empty mapping of known keys, else the error naming the block."""
        block = prefix.rstrip(".")
        if not isinstance(value, Mapping) or not value:
            raise ValueError(f"`{block}` must be a mapping such as {cls.example}, got {value!r}.")
        for key in value:
            if key not in cls.keys():
                raise unknown_key(block, key, cls.keys(), cls.described_as)
        return value

    @classmethod
    def from_dict(cls, value: Any, prefix: str = ""):
        """The sub-config of a config block (a mapping), validated; the errors name `prefix + key`."""
        return cls(**cls.check_keys(value, prefix), prefix=prefix)

    def to_dict(self, only: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The plain mapping: every field, or the keys of `only` (the block as given, in its order), normalised."""
        names = [f.name for f in dataclasses.fields(self)]
        if only is not None:
            names = [key for key in only if key in names]
        out = {}
        for name in names:
            value = getattr(self, name)
            if isinstance(value, SubConfig):
                nested = only.get(name) if only is not None else None
                value = value.to_dict(nested if isinstance(nested, Mapping) else None)
            out[name] = value
        return out


def describe_settings(cls: type, indent: str = "        ") -> str:
    """The `Args:` entries of a settings dataclass, rendered from its fields (name, type, default, help)."""
    lines = []
    for spec in dataclasses.fields(cls):
        if spec.default is not MISSING:
            default = spec.default
            optional = f"*optional*, defaults to `{default!r}`" if default is not None else "*optional*"
        elif spec.default_factory is not MISSING:
            optional = "*optional*"
        else:
            optional = "required"
        lines.append(f"{indent}{spec.name} (`{spec.type}`, {optional}):")
        body = f"{indent}    "
        lines.append(textwrap.fill(spec.metadata.get("help", ""), 120, initial_indent=body, subsequent_indent=body))
    return "\n".join(lines)
