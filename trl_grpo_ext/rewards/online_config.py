"""The `learned_preference` objective of a config: `online_reward_model` (and `judge`) -> an `OnlineRewardModel`.

A recipe names the objective in `reward_objectives` (`{accuracy: 0.5, learned_preference: 0.5}`) and configures it in
one dict field, `online_reward_model`: the `OnlineRewardModel` arguments (`model`, `update_every`, `label_budget`,
...) plus a `labeler` block:

- `{type: gold, objective: accuracy}`: `GoldLabeler` of a registered objective (or `"package.module:function"`);
- `{type: judge[, principles: [...], template: ...]}`: `JudgeLabeler` of the config's `judge` block;
- `{type: queue, path: labels.jsonl[, requests_path, timeout, poll_interval]}`: `QueueLabeler`, a person.

`check_online_reward_model_config` validates the block at config construction (nothing is loaded); the trainer calls
`bind_learned_preference`, which builds the model (`online_reward_model_from_config`) in place of the registered
placeholder `learned_preference`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .guard import REWARD_ERROR_POLICIES, _required_columns
from .objectives import is_group_objective

__all__ = [
    "LABELER_KEYS",
    "OBJECTIVE_NAME",
    "ONLINE_REWARD_MODEL_KEYS",
    "bind_learned_preference",
    "check_online_reward_model_config",
    "learned_preference",
    "online_reward_model_from_config",
]

FIELD = "online_reward_model"
OBJECTIVE_NAME = "learned_preference"
LABELER_KEYS: dict[str, tuple[str, ...]] = {
    "gold": ("type", "objective"),
    "judge": ("type", "principles", "template"),
    "queue": ("type", "path", "requests_path", "timeout", "poll_interval", "max_outstanding"),
}


def _online_keys() -> tuple[str, ...]:
    from .online import SETTINGS

    own = ("model", "name", "selector", "seed_pairs", "seed_pairs_file", "error_policy", "device", "labeler")
    return own + tuple(key for key in SETTINGS if key != "num_generations")


ONLINE_REWARD_MODEL_KEYS = _online_keys()


def learned_preference(prompts=None, completions=None, **kwargs):
    """The registered `learned_preference` objective before it is configured: set `online_reward_model`.

    GRPOExtTrainer replaces it by the `OnlineRewardModel` of the config's `online_reward_model` field; in Python,
    build an `OnlineRewardModel` yourself.
    """
    raise ValueError(
        "The `learned_preference` objective is an online reward model: set `online_reward_model` in the config (see "
        "docs/objectives.md#online-reward-model) and let GRPOExtTrainer build it, or use OnlineRewardModel(...) in "
        "Python."
    )


learned_preference.required_columns = []


def _unknown_key(field: str, key: Any, allowed, what: str = "it") -> ValueError:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"`{field}` has unknown key {key!r}{hint}; {what} takes {sorted(allowed)}.")


def _read_seed_pairs(path: str) -> list[dict[str, Any]]:
    """The `{prompt, chosen, rejected[, margin]}` lines of a JSONL file (blank lines skipped)."""
    field = f"{FIELD}.seed_pairs_file"
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


def _check_gold_objective(name: Any) -> Callable:
    from .registry import get_objective

    field = f"{FIELD}.labeler.objective"
    if not isinstance(name, str) or not name:
        raise ValueError(f"`{field}` must name a registered objective or 'package.module:function', got {name!r}.")
    if name in (OBJECTIVE_NAME, "principles"):
        raise ValueError(
            f"`{field}` must be a plain reward function, got {name!r}"
            + (" (for the principles judge use the labeler {'type': 'judge'})" if name == "principles" else "")
            + "."
        )
    try:
        fn = get_objective(name)
    except ValueError as err:
        raise ValueError(f"`{field}` names {name!r}: {err}") from None
    if is_group_objective(fn):
        raise ValueError(
            f"`{field}` names the group objective {name!r}, whose reward depends on the other completions of the "
            "batch; a gold labeler scores the two sides of a pair on their own. Use a per-completion objective such "
            "as 'accuracy'."
        )
    return fn


def _check_labeler(value: Any, judge: Mapping | None) -> dict[str, Any] | None:
    field = f"{FIELD}.labeler"
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("type"), str) or value["type"] not in LABELER_KEYS:
        got = value.get("type") if isinstance(value, Mapping) else value
        raise ValueError(
            f"`{field}` must be a mapping whose `type` is one of {list(LABELER_KEYS)} (e.g. {{'type': 'gold', "
            f"'objective': 'accuracy'}}), got {got!r}."
        )
    kind = value["type"]
    for key in value:
        if key not in LABELER_KEYS[kind]:
            raise _unknown_key(field, key, LABELER_KEYS[kind], what=f"a {kind} labeler")
    spec = dict(value)
    if kind == "gold":
        if "objective" not in spec:
            raise ValueError(f"`{field}.objective` is required for a gold labeler (e.g. 'accuracy'), got {spec!r}.")
        _check_gold_objective(spec["objective"])
    elif kind == "judge":
        from .judges import check_template
        from .principles import check_principles

        if judge is None:
            raise ValueError(
                f"`{field}` of type 'judge' labels with the config's `judge` block, which is not set; add e.g. "
                "judge: {model: tiny:tiny} (or an endpoint: judge: {base_url: ..., model: ...})."
            )
        if "principles" in spec:
            spec["principles"] = [vars(p).copy() for p in check_principles(spec["principles"], f"{field}.principles")]
        if "template" in spec:
            spec["template"] = check_template(spec["template"], f"{field}.template")
    else:
        if not isinstance(spec.get("path"), str) or not spec["path"]:
            raise ValueError(
                f"`{field}.path` must be the labels file (JSONL) for a queue labeler, got {spec.get('path')!r}."
            )
        if spec.get("requests_path") is not None and not isinstance(spec["requests_path"], str):
            raise ValueError(f"`{field}.requests_path` must be a file path or None, got {spec['requests_path']!r}.")
        from .labelers import check_queue_settings

        check_queue_settings(**{k: v for k, v in spec.items() if k != "type"}, prefix=f"{field}.")
    return spec


def _check_kit_reward_model(model: str) -> None:
    """A kit name must be one whose directory has a reward model: `tiny:<size>[@seed]` (its `reward/`)."""
    from ..kit import is_kit_name
    from ..kit.tiny import MODEL_SIZES, parse_tiny_spec

    if not is_kit_name(model):
        return
    try:
        if not model.startswith("tiny:"):
            raise ValueError(model)
        parse_tiny_spec(model.removeprefix("tiny:"))  # the kit's own rule: a size, an optional ASCII-digit seed
    except ValueError:
        raise ValueError(
            f"`{FIELD}.model` {model!r} is not a kit reward model: the kit's reward models are "
            f"{[f'tiny:{s}' for s in sorted(MODEL_SIZES)]} (optionally '@seed'); other kit models are causal LMs "
            "without a reward head. Give a sequence classifier's path or Hub id instead."
        ) from None


def check_online_reward_model_config(value: Any, judge: Mapping | None = None) -> dict[str, Any]:
    """The `online_reward_model` block, validated (every key, its range, the labeler); nothing is loaded.

    `judge` is the config's `judge` block, which a `{type: judge}` labeler needs.

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
    from .online import SELECTORS, _check_seed_pairs, check_device, check_name, check_settings

    if not isinstance(value, Mapping) or not value:
        raise ValueError(
            f"`{FIELD}` must be a mapping such as {{'model': 'tiny:tiny', 'labeler': {{'type': 'gold', 'objective': "
            f"'accuracy'}}}}, got {value!r}."
        )
    for key in value:
        if key == "num_generations":
            raise ValueError(f"`{FIELD}.num_generations` is set by the trainer (the config's `num_generations`).")
        if key not in ONLINE_REWARD_MODEL_KEYS:
            raise _unknown_key(FIELD, key, ONLINE_REWARD_MODEL_KEYS)
    config = dict(value)
    if not isinstance(config.get("model"), str) or not config["model"]:
        raise ValueError(
            f"`{FIELD}.model` is required: a sequence-classification reward model (a path, a Hub id or a kit name "
            f"such as 'tiny:tiny'), got {config.get('model')!r}."
        )
    _check_kit_reward_model(config["model"])
    check_name(config.get("name", "rm"), f"{FIELD}.name")
    if "selector" in config and (not isinstance(config["selector"], str) or config["selector"] not in SELECTORS):
        raise ValueError(f"`{FIELD}.selector` must be one of {sorted(SELECTORS)}, got {config['selector']!r}.")
    if config.get("error_policy") is not None and config["error_policy"] not in REWARD_ERROR_POLICIES:
        raise ValueError(
            f"`{FIELD}.error_policy` must be one of {list(REWARD_ERROR_POLICIES)} or None (the config's "
            f"`reward_error_policy`), got {config['error_policy']!r}."
        )
    if config.get("device") is not None:
        if not isinstance(config["device"], str):
            raise ValueError(
                f"`{FIELD}.device` must be a torch device name such as 'cpu' or 'cuda:0', got {config['device']!r}."
            )
        check_device(config["device"], f"{FIELD}.device")
    config.update(check_settings(config, prefix=f"{FIELD}."))
    if config.get("seed_pairs") is not None and config.get("seed_pairs_file") is not None:
        raise ValueError(f"`{FIELD}` sets both `seed_pairs` and `seed_pairs_file`; give the seed pairs one way.")
    _check_seed_pairs(config.get("seed_pairs"), f"{FIELD}.seed_pairs")
    if config.get("seed_pairs_file") is not None:
        if not isinstance(config["seed_pairs_file"], str):
            raise ValueError(
                f"`{FIELD}.seed_pairs_file` must be a JSONL file path, got {config['seed_pairs_file']!r}."
            )
        _check_seed_pairs(_read_seed_pairs(config["seed_pairs_file"]), f"{FIELD}.seed_pairs_file")
    if "labeler" in config:
        config["labeler"] = _check_labeler(config["labeler"], judge)
    if config.get("labeler") is None:
        needs = [key for key in ("label_budget", "seed_pairs", "seed_pairs_file") if config.get(key) is not None]
        if needs:
            raise ValueError(
                f"`{FIELD}` sets {needs[0]!r} but no `labeler`: without one the reward model is frozen (it never "
                "learns). Add a labeler, e.g. {'type': 'gold', 'objective': 'accuracy'}, or drop it."
            )
    return config


def _build_labeler(spec: Mapping[str, Any] | None, judge: Mapping | None):
    from .labelers import GoldLabeler, JudgeLabeler, QueueLabeler
    from .registry import get_objective

    if spec is None:
        return None
    settings = {k: v for k, v in spec.items() if k != "type"}
    if spec["type"] == "gold":
        return GoldLabeler(get_objective(settings["objective"]))
    if spec["type"] == "judge":
        return JudgeLabeler(judge, **settings)
    return QueueLabeler(**settings)


def online_reward_model_from_config(config: Mapping[str, Any], judge: Mapping | None = None):
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
    from .online import OnlineRewardModel

    settings = check_online_reward_model_config(config, judge)
    labeler = _build_labeler(settings.pop("labeler", None), judge)
    seed_file = settings.pop("seed_pairs_file", None)
    if seed_file is not None:
        settings["seed_pairs"] = _read_seed_pairs(seed_file)
    rm = OnlineRewardModel(settings.pop("model"), labeler=labeler, **settings)
    gold = getattr(labeler, "fn", None)
    if gold is not None:
        rm.required_columns = list(_required_columns(gold))
    return rm


def bind_learned_preference(reward_funcs: Any, args: Any) -> Any:
    """`reward_funcs` with the `learned_preference` placeholder of its `WeightedReward` replaced by the
    `OnlineRewardModel` of `args.online_reward_model`; unchanged when neither is there.

    Called by GRPOExtTrainer: the placeholder comes from `reward_objectives` (through `weighted_reward_from_spec`, in
    the trainer or in `trl-grpo-ext train`); the model is built (and loaded) only here.
    """
    from .weighted import WeightedReward

    spec = getattr(args, "online_reward_model", None)
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
    rm = online_reward_model_from_config(spec, getattr(args, "judge", None))
    old = funcs[holders[0]]
    objectives = {name: rm if fn is learned_preference else fn for name, fn in old.objectives.items()}
    funcs = list(funcs)
    funcs[holders[0]] = WeightedReward(objectives, weights=old.weights)
    return funcs if isinstance(reward_funcs, list) else funcs[0]
