"""The `learned_preference` objective of a config: `online_reward_model` (and `judge`) -> an `OnlineRewardModel`.

A recipe names the objective in `reward_objectives` (`{accuracy: 0.5, learned_preference: 0.5}`) and configures it in
one dict field, `online_reward_model`: the `OnlineRewardModel` settings (`model`, `update_every`, `label_budget`,
...) plus a `labeler` block:

- `{type: gold, objective: accuracy}`: `GoldLabeler` of a registered objective (or `"package.module:function"`);
- `{type: judge[, principles: [...], template: ...]}`: `JudgeLabeler` of the config's `judge` block;
- `{type: queue, path: labels.jsonl[, requests_path, timeout, poll_interval]}`: `QueueLabeler`, a person.

`OnlineRewardModelConfig.from_dict` validates the block at config construction (nothing is loaded; `GRPOExtConfig`
keeps it as `online_reward_model_config`); the trainer calls `bind_learned_preference`, which builds the model
(`OnlineRewardModelConfig.build`) in place of the registered `learned_preference` placeholder. This module registers
that placeholder (`register_objective`): the registry cannot import it, since the gold labeler looks objectives up
there.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..checks import Choice, setting
from .bradley_terry import SELECTORS
from .configured import ConfiguredObjective
from .guard import required_columns_of
from .labelers import JudgeLabelerConfig, LabelerConfig, labeler_config_from_dict
from .online import OnlineRewardModel
from .online_settings import OnlineRewardModelSettings, check_device, seed_pairs_as_labelled
from .registry import register_objective
from .weighted import WeightedReward

__all__ = [
    "OBJECTIVE_NAME",
    "ONLINE_REWARD_MODEL_KEYS",
    "OnlineRewardModelConfig",
    "bind_learned_preference",
    "check_online_reward_model_config",
    "learned_preference",
    "online_reward_model_from_config",
    "read_seed_pairs",
]

FIELD = "online_reward_model"
OBJECTIVE_NAME = "learned_preference"


def read_seed_pairs(path: str, field: str = f"{FIELD}.seed_pairs_file") -> list[dict[str, Any]]:
    """The `{prompt, chosen, rejected[, margin]}` lines of a JSONL file (blank lines skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ValueError(f"`{field}` must be a readable JSONL file, got {path!r} ({err.strerror or err}).") from None
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            pairs.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"`{field}` line {number} of {path!r} is not JSON: {err}.") from None
    if not pairs:
        raise ValueError(f"`{field}` {path!r} holds no pairs.")
    return pairs


def check_reward_model_name(model: Any, field: str = f"{FIELD}.model") -> str:
    """A sequence-classification reward model's path or Hub id, or a kit name whose directory has one
    (`tiny:<size>[@seed]`: its `reward/`)."""
    from ..kit import is_kit_name
    from ..kit.tiny import MODEL_SIZES, parse_tiny_spec

    if not isinstance(model, str) or not model:
        raise ValueError(
            f"`{field}` is required: a sequence-classification reward model (a path, a Hub id or a kit name such as "
            f"'tiny:tiny'), got {model!r}."
        )
    if not is_kit_name(model):
        return model
    try:
        if not model.startswith("tiny:"):
            raise ValueError(model)
        parse_tiny_spec(model.removeprefix("tiny:"))  # the kit's own rule: a size, an optional ASCII-digit seed
    except ValueError:
        raise ValueError(
            f"`{field}` {model!r} is not a kit reward model: the kit's reward models are "
            f"{[f'tiny:{s}' for s in sorted(MODEL_SIZES)]} (optionally '@seed'); other kit models are causal LMs "
            "without a reward head. Give a sequence classifier's path or Hub id instead."
        ) from None
    return model


def check_device_name(device: Any, field: str = f"{FIELD}.device") -> str | None:
    """A torch device name (or None), kept as the string: a config is plain data."""
    check_device(device, field, names_only=True)
    return device


def check_seed_pairs_file(path: Any, field: str = f"{FIELD}.seed_pairs_file") -> str | None:
    """A readable JSONL file of valid seed pairs (or None), kept as the path."""
    if path is None:
        return None
    if not isinstance(path, str):
        raise ValueError(f"`{field}` must be a JSONL file path, got {path!r}.")
    seed_pairs_as_labelled(read_seed_pairs(path, field), field)
    return path


@dataclass(kw_only=True)
class OnlineRewardModelConfig(OnlineRewardModelSettings):
    """The `online_reward_model` block: the `OnlineRewardModel` settings (but `num_generations`, which the trainer
    sets), the reward `model`, `seed_pairs_file` and the `labeler` (a `LabelerConfig`).

    From a config the block is plain data: `selector` is a name, `device` a device name.

    Example:
    ```python
    >>> config = OnlineRewardModelConfig.from_dict(
    ...     {"model": "tiny:tiny", "label_budget": 64, "labeler": {"type": "gold", "objective": "accuracy"}})
    >>> config.label_budget, config.labeler, config.to_dict()["labeler"]
    (64, GoldLabelerConfig(objective='accuracy'), {'type': 'gold', 'objective': 'accuracy'})
    >>> OnlineRewardModelConfig.from_dict({"model": "tiny:tiny", "heldout_fraction": 1.5})
    Traceback (most recent call last):
    ...
    ValueError: `online_reward_model.heldout_fraction` must be in [0, 1), got 1.5.

    ```
    """

    example: ClassVar[str] = "{'model': 'tiny:tiny', 'labeler': {'type': 'gold', 'objective': 'accuracy'}}"

    selector: str = setting(
        OnlineRewardModelSettings.selector,
        Choice(sorted(SELECTORS)),
        help="`'random'` or `'uncertain'`.",
    )
    device: str | None = setting(None, check_device_name, help="A torch device name; defaults to the trainer's.")
    model: str | None = setting(
        None,
        check_reward_model_name,
        help="A sequence-classification reward model: a path, a Hub id or a kit name such as `tiny:tiny`.",
    )
    seed_pairs_file: str | None = setting(
        None, check_seed_pairs_file, help="A JSONL file of seed pairs (in place of `seed_pairs`)."
    )
    labeler: LabelerConfig | None = setting(None, help="The labeler block; without one the model is frozen.")

    @classmethod
    def from_dict(
        cls, value: Any, prefix: str = f"{FIELD}.", judge: Mapping[str, Any] | None = None
    ) -> OnlineRewardModelConfig:
        """The block, validated; `judge` is the config's `judge` block, which a `{type: judge}` labeler needs."""
        block = prefix.rstrip(".")
        if isinstance(value, Mapping) and "num_generations" in value:
            raise ValueError(f"`{block}.num_generations` is set by the trainer (the config's `num_generations`).")
        settings = dict(cls.check_keys(value, prefix))
        labeler = labeler_config_from_dict(settings.pop("labeler", None), f"{prefix}labeler.")
        if isinstance(labeler, JudgeLabelerConfig) and judge is None:
            raise ValueError(
                f"`{prefix}labeler` of type 'judge' labels with the config's `judge` block, which is not set; add e.g. "
                "judge: {model: tiny:tiny} (or an endpoint: judge: {base_url: ..., model: ...})."
            )
        return cls(**settings, labeler=labeler, prefix=prefix)

    def validate(self, prefix: str) -> None:
        block = prefix.rstrip(".")
        if self.seed_pairs is not None and self.seed_pairs_file is not None:
            raise ValueError(f"`{block}` sets both `seed_pairs` and `seed_pairs_file`; give the seed pairs one way.")
        if self.labeler is None:
            needs = [
                key for key in ("label_budget", "seed_pairs", "seed_pairs_file") if getattr(self, key) is not None
            ]
            if needs:
                raise ValueError(
                    f"`{block}` sets {needs[0]!r} but no `labeler`: without one the reward model is frozen (it never "
                    "learns). Add a labeler, e.g. {'type': 'gold', 'objective': 'accuracy'}, or drop it."
                )

    def build(self, judge: Mapping[str, Any] | None = None) -> OnlineRewardModel:
        """The `OnlineRewardModel` (its reward model loaded); `judge` is the config's `judge` block.

        With a gold labeler the objective takes over the gold function's `required_columns` (the dataset check).
        """
        labeler = self.labeler.build(judge) if self.labeler is not None else None
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(OnlineRewardModelSettings)}
        if self.seed_pairs_file is not None:
            settings["seed_pairs"] = read_seed_pairs(self.seed_pairs_file)
        rm = OnlineRewardModel(self.model, labeler=labeler, **settings)
        gold = getattr(labeler, "fn", None)
        if gold is not None:
            rm.required_columns = list(required_columns_of(gold))
        return rm


ONLINE_REWARD_MODEL_KEYS = OnlineRewardModelConfig.keys()


def check_online_reward_model_config(value: Any, judge: Mapping | None = None) -> dict[str, Any]:
    """The `online_reward_model` block, validated (`OnlineRewardModelConfig`): the keys given, their values
    normalised (numbers as floats, the principles of a judge labeler completed); nothing is loaded.

    Example:
    ```python
    >>> config = check_online_reward_model_config(
    ...     {"model": "tiny:tiny", "label_budget": 64, "labeler": {"type": "gold", "objective": "accuracy"}})
    >>> config["label_budget"], config["labeler"]
    (64, {'type': 'gold', 'objective': 'accuracy'})
    >>> check_online_reward_model_config({"model": "tiny:tiny", "budget": 64})
    Traceback (most recent call last):
    ...
    ValueError: `online_reward_model` has unknown key 'budget' (did you mean 'label_budget'?); it takes ['batch_size', 'buffer_size', 'device', 'error_policy', 'heldout_fraction', 'heldout_size', 'label_budget', 'labeler', 'learning_rate', 'margin', 'max_grad_norm', 'max_length', 'model', 'name', 'pairs_per_update', 'replay_pairs', 'seed', 'seed_epochs', 'seed_pairs', 'seed_pairs_file', 'selector', 'update_every', 'update_steps', 'weight_decay'].

    ```
    """
    return OnlineRewardModelConfig.from_dict(value, judge=judge).to_dict(only=value)


def online_reward_model_from_config(config: Mapping[str, Any], judge: Mapping | None = None) -> OnlineRewardModel:
    """The `OnlineRewardModel` of an `online_reward_model` block (validated again); the reward model is loaded.

    With a gold labeler the objective takes over the gold function's `required_columns` (the dataset check).

    Example:
    ```python
    >>> rm = online_reward_model_from_config(
    ...     {"model": "tiny:tiny", "label_budget": 8, "labeler": {"type": "gold", "objective": "accuracy"}})
    >>> rm.labeler, rm.label_budget, rm.required_columns
    (GoldLabeler(accuracy), 8, [('answer', 'solution')])

    ```
    """
    return OnlineRewardModelConfig.from_dict(config, judge=judge).build(judge)


learned_preference = ConfiguredObjective(
    OBJECTIVE_NAME,
    fields=(FIELD, "judge"),
    optional=("judge",),
    build=lambda name, online_reward_model, judge: online_reward_model_from_config(online_reward_model, judge),
    message="The `learned_preference` objective is an online reward model: set `online_reward_model` in the config "
    "(see docs/objectives.md#online-reward-model) and let GRPOExtTrainer build it, or use OnlineRewardModel(...) in "
    "Python.",
    module=__name__,
)
"""The registered `learned_preference` objective: GRPOExtTrainer builds the `OnlineRewardModel` of the config's
`online_reward_model` field in its place (`bind_learned_preference`); called unbuilt it raises."""

register_objective(OBJECTIVE_NAME, learned_preference)


def bind_learned_preference(reward_funcs: Any, args: Any) -> Any:
    """`reward_funcs` with the `learned_preference` placeholder of its `WeightedReward` replaced by the
    `OnlineRewardModel` of `args.online_reward_model`; unchanged when neither is there.

    Called by GRPOExtTrainer: the placeholder comes from `reward_objectives` (through `weighted_reward_from_spec`, in
    the trainer or in `trl-grpo-ext train`); the model is built (and loaded) only here.
    """
    spec = getattr(args, FIELD, None)
    funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
    holders = [
        i for i, f in enumerate(funcs) if isinstance(f, WeightedReward) and learned_preference in f.objectives.values()
    ]
    if not holders:
        if spec is not None:
            raise ValueError(
                f"`{FIELD}` is set, but the reward functions given to the trainer have no '{OBJECTIVE_NAME}' "
                "objective; name it in `reward_objectives` (and pass no `reward_funcs`), or pass your own "
                "OnlineRewardModel in a WeightedReward and unset the field."
            )
        return reward_funcs
    if spec is None:
        raise ValueError(
            f"The '{OBJECTIVE_NAME}' objective needs `{FIELD}` (the reward model and its labeler), which is not set."
        )
    if len(holders) > 1:
        raise ValueError(f"'{OBJECTIVE_NAME}' appears in {len(holders)} WeightedRewards; name it once.")
    values = {FIELD: spec, "judge": getattr(args, "judge", None)}
    old = funcs[holders[0]]
    objectives = {
        name: learned_preference.build_from(name, values) if fn is learned_preference else fn
        for name, fn in old.objectives.items()
    }
    funcs = list(funcs)
    funcs[holders[0]] = WeightedReward(objectives, weights=old.weights)
    return funcs if isinstance(reward_funcs, list) else funcs[0]
