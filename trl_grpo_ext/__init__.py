"""trl-grpo-ext: drop-in GRPO extensions for Hugging Face TRL.

    from trl_grpo_ext import GRPOExtConfig as GRPOConfig, GRPOExtTrainer as GRPOTrainer

With no new option set the trainer is exactly `trl.GRPOTrainer`. The options add a temperature ladder inside each
group (`temperature_schedule`), other advantage estimators (`advantage_estimator`) and named, weighted objectives
(`WeightedReward`, `reward_objectives`).
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> submodule. Loaded on first use, so `trl-grpo-ext --help` does not import TRL.
_EXPORTS = {
    "GRPOExtConfig": "config",
    "GRPOExtTrainer": "trainer",
    "WeightedReward": "rewards",
    "get_objective": "rewards",
    "register_objective": "rewards",
    "get_advantage_estimator": "advantages",
    "register_advantage_estimator": "advantages",
    "temperature_ladder": "sampling",
}

__all__ = [
    "GRPOExtConfig",
    "GRPOExtTrainer",
    "WeightedReward",
    "get_advantage_estimator",
    "get_objective",
    "register_advantage_estimator",
    "register_objective",
    "temperature_ladder",
]

if TYPE_CHECKING:
    from .advantages import get_advantage_estimator, register_advantage_estimator
    from .config import GRPOExtConfig
    from .rewards import WeightedReward, get_objective, register_objective
    from .sampling import temperature_ladder
    from .trainer import GRPOExtTrainer


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
