"""Named reward objectives, their weighted sum, and the guard that applies the reward error policy.

See `docs/objectives.md`. Modules by job: `objectives` (the built-ins), `registry` (names), `configured` (objectives a
config builds), `weighted`, `guard`, `group`; `judges/` and `principles` (a judge model scores principles);
`labelers`, `bradley_terry`, `online_settings`, `online_checkpoint`, `reward_model`, `online` (the online reward model)
and `online_config` (its config block and the `learned_preference` objective).
"""

from .configured import ConfiguredObjective
from .group import global_group_objective
from .guard import (
    REWARD_ERROR_POLICIES,
    ObjectiveError,
    PartialRewardsError,
    check_required_columns,
    guard_objective,
)
from .judges import Judge, JudgeConfig, JudgeError, LocalJudge, OpenAIJudge
from .labelers import GoldLabeler, JudgeLabeler, LabelerConfig, QueueLabeler
from .objectives import (
    THINK_ANSWER_PATTERN,
    accuracy,
    completion_text,
    format_objective,
    group_objective,
    is_group_objective,
    length_objective,
    novelty,
    readability,
)
from .online import OnlineRewardModel, bradley_terry_loss
from .online_config import OnlineRewardModelConfig, bind_learned_preference, online_reward_model_from_config
from .online_settings import OnlineRewardModelSettings
from .principles import Principle, PrinciplesObjective
from .registry import get_objective, list_objectives, register_objective, weighted_reward_from_spec
from .weighted import WeightedReward

__all__ = [
    "REWARD_ERROR_POLICIES",
    "THINK_ANSWER_PATTERN",
    "ConfiguredObjective",
    "GoldLabeler",
    "Judge",
    "JudgeConfig",
    "JudgeError",
    "JudgeLabeler",
    "LabelerConfig",
    "LocalJudge",
    "ObjectiveError",
    "OnlineRewardModel",
    "OnlineRewardModelConfig",
    "OnlineRewardModelSettings",
    "OpenAIJudge",
    "PartialRewardsError",
    "Principle",
    "QueueLabeler",
    "PrinciplesObjective",
    "WeightedReward",
    "accuracy",
    "bind_learned_preference",
    "bradley_terry_loss",
    "check_required_columns",
    "completion_text",
    "format_objective",
    "get_objective",
    "global_group_objective",
    "group_objective",
    "guard_objective",
    "is_group_objective",
    "length_objective",
    "list_objectives",
    "novelty",
    "online_reward_model_from_config",
    "readability",
    "register_objective",
    "weighted_reward_from_spec",
]
