"""trl-grpo-ext: drop-in GRPO extensions for Hugging Face TRL.

    from trl_grpo_ext import GRPOExtConfig as GRPOConfig, GRPOExtTrainer as GRPOTrainer

With no new option set the trainer is exactly `trl.GRPOTrainer`. The options add a temperature ladder inside each
group (`temperature_schedule`), other advantage estimators (`advantage_estimator`) and named, weighted objectives
(`WeightedReward`, `reward_objectives`).
"""

from .advantages import get_advantage_estimator, register_advantage_estimator
from .config import GRPOExtConfig
from .rewards import WeightedReward, get_objective, register_objective
from .sampling import temperature_ladder
from .trainer import GRPOExtTrainer

__version__ = "0.1.0"

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
