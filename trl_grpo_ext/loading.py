"""Objects named by import path: `"package.module:attribute"` or `"package.module.attribute"`, one loader for both.

Advantage estimators, objectives and recipe reward functions are all named this way; the error names the setting.
"""

from __future__ import annotations

import importlib
from typing import Any


def load_object(path: str, setting: str) -> Any:
    """The object at import path `path`: `"package.module:attribute.sub"` (explicit) or `"package.module.attribute"`
    (the longest importable module prefix, then attributes). `setting` names what asked for it, for the errors.

    Example:
    >>> load_object("trl.rewards:think_format_reward", "reward_funcs").__name__
    'think_format_reward'
    >>> load_object("trl.rewards.think_format_reward", "reward_funcs").__name__
    'think_format_reward'
    >>> load_object("math.nope", "advantage_estimator")
    Traceback (most recent call last):
    ...
    ValueError: `advantage_estimator` import path 'math.nope' cannot be loaded: module 'math' has no attribute 'nope'
    """
    if not isinstance(path, str) or not path.strip(". :") or path.count(":") > 1:
        raise ValueError(
            f"`{setting}` must be an import path 'package.module:attribute' or 'package.module.attribute', got {path!r}."
        )
    if ":" in path:
        module_name, _, attributes = path.partition(":")
        candidates = [(module_name, attributes.split("."))]
    else:
        parts = path.split(".")
        candidates = [(".".join(parts[:i]), parts[i:]) for i in range(len(parts) - 1, 0, -1)]
    if any(not module or not all(attrs) for module, attrs in candidates):
        raise ValueError(
            f"`{setting}` import path {path!r} must look like 'package.module:attribute' (a part is empty)."
        )
    error: Exception | None = None
    for module_name, attributes in candidates:
        try:
            target = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and module_name.startswith(err.name):  # this prefix is not a module: shorter
                error = err
                continue
            raise _unloadable(setting, path, f"Cannot import module {module_name!r}: {err}") from err
        except ImportError as err:
            raise _unloadable(setting, path, f"Cannot import module {module_name!r}: {err}") from err
        for number, attribute in enumerate(attributes):
            if not hasattr(target, attribute):
                owner = ".".join([module_name, *attributes[:number]])
                raise _unloadable(setting, path, f"module {owner!r} has no attribute {attribute!r}")
            target = getattr(target, attribute)
        return target
    raise _unloadable(setting, path, f"Cannot import module {path.rsplit('.', 1)[0]!r}: {error}") from error


def _unloadable(setting: str, path: str, why: str) -> ValueError:
    return ValueError(f"`{setting}` import path {path!r} cannot be loaded: {why}")


def load_callable(path: str, setting: str) -> Any:
    """`load_object`, and the object must be callable.

    Example:
    >>> load_callable("math:pi", "advantage_estimator")
    Traceback (most recent call last):
    ...
    ValueError: `advantage_estimator` import path 'math:pi' must name a callable, got float.
    """
    target = load_object(path, setting)
    if not callable(target):
        raise ValueError(f"`{setting}` import path {path!r} must name a callable, got {type(target).__name__}.")
    return target
