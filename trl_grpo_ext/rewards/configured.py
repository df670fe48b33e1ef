"""Objectives a config builds: registered under a name, built from config fields.

Some objectives are not a fixed function but one built from the config: `principles` (from the `principles` and
`judge` fields) and `learned_preference` (from `online_reward_model`, and `judge` for a judge labeler). Each is
registered as a `ConfiguredObjective`, a placeholder that names the fields it is built from and how; called unbuilt it
raises, saying what to set. `weighted_reward_from_spec` builds those whose fields it is given (`principles`, `judge`);
the trainer builds the rest from its config (`bind_learned_preference`: building the online reward model loads it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ConfiguredObjective"]


class ConfiguredObjective:
    """A registered objective that a config builds: `build(name=..., **fields) -> reward function`.

    Args:
        name (`str`):
            The name it is registered under.
        fields (`tuple[str, ...]`):
            The config fields it is built from, in the order `build` takes them.
        build (`Callable`):
            `build(name=..., **{field: value})`: the reward function.
        message (`str`):
            The error of a call before it is built: what to set.
        module (`str`):
            The module that defines it (its `__module__`, so that it is named like a function).
        optional (`tuple[str, ...]`, *optional*):
            The fields it can be built without.

    Example:
    ```python
    >>> double = ConfiguredObjective(
    ...     "double", ("factor",), lambda name, factor: lambda completions, **kw: [factor] * len(completions),
    ...     "set `factor`", __name__)
    >>> double.builds_from({"factor": 2.0}), double.builds_from({"judge": None})
    (True, False)
    >>> double.build_from("double", {"factor": 2.0})(completions=["a", "b"])
    [2.0, 2.0]
    >>> double.build_from("double", {"factor": None})
    Traceback (most recent call last):
    ...
    ValueError: `reward_objectives` names 'double', which needs the `factor` field; got factor=None.

    ```
    """

    def __init__(
        self,
        name: str,
        fields: tuple[str, ...],
        build: Callable[..., Callable],
        message: str,
        module: str,
        optional: tuple[str, ...] = (),
    ):
        self.name = self.__name__ = self.__qualname__ = name
        self.__module__ = module
        self.fields = tuple(fields)
        self.optional = tuple(optional)
        self.message = message
        self.required_columns: list = []
        self._build = build

    def __repr__(self) -> str:
        return f"ConfiguredObjective({self.name!r}, fields={list(self.fields)})"

    def __call__(self, prompts=None, completions=None, **kwargs):
        raise ValueError(self.message)

    def builds_from(self, values: Mapping[str, Any]) -> bool:
        """Whether `values` (config fields by name) holds every field it is built from (set or not)."""
        return set(self.fields) <= set(values)

    def build_from(self, name: str, values: Mapping[str, Any]) -> Callable:
        """The reward function built from `values`, as the objective `name`; an error naming the missing fields."""
        missing = [f for f in self.fields if f not in self.optional and values.get(f) is None]
        if missing:
            needs = " and ".join(f"`{f}`" for f in missing)
            got = ", ".join(f"{f}={values.get(f)!r}" for f in missing)
            raise ValueError(
                f"`reward_objectives` names {name!r}, which needs the {needs} field{'s' if len(missing) > 1 else ''}; "
                f"got {got}."
            )
        return self._build(name=name, **{f: values.get(f) for f in self.fields})
