"""`GRPOExtConfig`: TRL's `GRPOConfig` plus the fields of trl-grpo-ext, validated at construction.

Every new field defaults to TRL's behaviour: a config with none of them set trains exactly like `trl.GRPOConfig`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from .checks import (
    Choice,
    Flag,
    Integer,
    Number,
    TemperatureList,
    TemperaturePair,
    Text,
    Weights,
    check_not_all_zero,
    parse_json,
)
from .sampling.vllm_backend import VLLM_IS_RELIABLE_TEMPERATURE, VLLM_MAX_TEMPERATURE, VLLM_MIN_TEMPERATURE

TEMPERATURE_SCHEDULES = ("constant", "linear", "geometric")
LADDER_LOGPROB_TEMPERATURES = ("sampled", "base")
REWARD_ERROR_POLICIES = ("raise", "skip")
TEMPERATURE_CONTROLS = ("none", "zero_std")
# Loss types whose per-token loss is exactly 0 for a row with advantage 0, whatever its log-probs (TRL 1.16's
# `_compute_loss`); "vespo" weights a row by its own log-ratio through `get_gamma_weights` and is left out.
MAX_DYNAMIC_ROUNDS = 100  # extra generation rounds per batch: each one generates a whole generation batch
SKIP_EXACT_LOSS_TYPES = (
    "grpo",
    "bnpo",
    "dr_grpo",
    "dapo",
    "luspo",
    "cispo",
    "sapo",
)  # = sampling.control.CONTROL_SIGNALS, without importing torch here


# The check of each field GRPOExtConfig adds that can be checked on its own (`checks.py`: the error names the field,
# the value and what is allowed), run in this order before the rules between fields (the `_validate_*` methods).
# The checks normalise: a JSON string from the command line becomes its list or mapping, a number a float.
FIELD_CHECKS = {
    "temperature_schedule": Choice(TEMPERATURE_SCHEDULES),
    "temperature_range": TemperaturePair(optional=True),
    "temperature_range_final": TemperaturePair(optional=True),
    "group_temperatures": TemperatureList(optional=True),
    "ladder_logprob_temperature": Choice(LADDER_LOGPROB_TEMPERATURES),
    "temperature_control": Choice(TEMPERATURE_CONTROLS),
    "temperature_bounds": TemperaturePair(ends=("t_floor", "t_ceiling")),
    "temperature_control_target": Number(0, below=1),
    "temperature_control_rate": Number(  # the bound = sampling.control.MAX_CONTROL_RATE, without importing torch here
        0,
        strict=True,
        maximum=10.0,
        show_maximum=True,
        why="the error is in [-1, 1], so 10 already moves the ladder up to exp(10) ~ 22000x per batch",
    ),
    "temperature_control_tolerance": Number(0, below=1),
    "advantage_estimator": Text(),
    "reward_error_policy": Choice(REWARD_ERROR_POLICIES),
    "novelty_ngram": Integer(1),
    "reward_objectives": Weights(),
    # Overrides of some objectives: a single zero is fine; the combined vector is checked where it is known (with
    # `reward_objectives` below, by the trainer for a WeightedReward).
    "objective_weights": Weights(allow_all_zero=True),
    "objective_weights_final": Weights(allow_all_zero=True),
    "share_prompt": Flag(),
    "skip_zero_advantage": Flag(),
    "dynamic_sampling": Flag(),
    "dynamic_sampling_max_rounds": Integer(1, maximum=MAX_DYNAMIC_ROUNDS),
    "log_tied_groups": Flag(),
}


@dataclass
class GRPOExtConfig(GRPOConfig):
    r"""
    Configuration for [`GRPOExtTrainer`]: every field of `trl.GRPOConfig`, plus the ones below. With the new fields at
    their defaults, training is exactly TRL's.

    Parameters:
        > Parameters that control the temperature ladder

        temperature_schedule (`str`, *optional*, defaults to `"constant"`):
            How the `num_generations` completions of one prompt are spread over temperatures. `"constant"`: every
            completion at `temperature` (TRL). `"linear"`: slot i of K at t_min + (t_max - t_min) * i / (K - 1).
            `"geometric"`: log-spaced between t_min and t_max.
        temperature_range (`list[float]`, *optional*, defaults to `[0.7, 1.0]`):
            `[t_min, t_max]` of the ladder.
        group_temperatures (`list[float]`, *optional*):
            Explicit K temperatures, one per slot; overrides `temperature_schedule` and `temperature_range`.
        temperature_range_final (`list[float]`, *optional*):
            `[t_min, t_max]` reached at the last training step; the ends move linearly from `temperature_range`.
        ladder_logprob_temperature (`str`, *optional*, defaults to `"sampled"`):
            Temperature at which the loss, old-policy and reference log-probs of a completion are computed:
            `"sampled"` (the temperature it was sampled at) or `"base"` (`temperature` for every row, as TRL).
            TRL's entropies follow the log-probs: with a ladder and `"sampled"`, the `entropy` metric is each row's
            entropy at its own temperature, and `top_entropy_quantile < 1`, `entropy_coef != 0` and
            `use_adaptive_entropy` are refused (docs/ladder.md). A ladder also refuses a `temperature` in
            `generation_kwargs`; a group of one (`num_generations_eval=1`) is sampled at `temperature`.

        > Parameters that control the closed-loop ladder

        temperature_control (`str`, *optional*, defaults to `"none"`):
            `"none"`: the ladder follows `temperature_range` (and its schedule). `"zero_std"`: after every training
            generation batch, the fraction z of groups whose rewards are all equal (TRL's `frac_reward_zero_std`, on
            the global batch) moves the ladder: every rung is multiplied by c, with
            c <- clip(c * exp(rate * e), t_floor / t_min, t_ceiling / t_max), e = z - target outside the band
            target +- tolerance (0 inside). Hotter when too many groups teach nothing, colder when few do. Needs a
            `"linear"` or `"geometric"` schedule; evaluation keeps the ladder of `temperature_range`.
        temperature_control_target (`float`, *optional*, defaults to `0.5`):
            Target fraction of groups without signal, in [0, 1). 0.5: the ladder cools while most groups teach and
            heats once more than half stall; on the demo it did less harm than 0.2, which heated the ladder to
            T > 1.2 (measurements in docs/ladder.md).
        temperature_control_rate (`float`, *optional*, defaults to `0.5`):
            Gain: log c moves by rate * e per generation batch (> 0).
        temperature_control_tolerance (`float`, *optional*, defaults to `0.05`):
            Half-width of the band around the target inside which the ladder does not move (>= 0).
        temperature_bounds (`list[float]`, *optional*, defaults to `[0.1, 2.0]`):
            `[t_floor, t_ceiling]`: the controlled ladder stays inside, with its shape; must contain
            `temperature_range`. With `use_vllm=True` the ceiling must be <= 2 (vLLM's limit).

        > Parameters that control the advantages

        advantage_estimator (`str`, *optional*, defaults to `"zscore"`):
            A registered estimator (`"zscore"`, `"rank"`, or one added with `register_advantage_estimator`) or an
            import path `"package.module:function"`. `"zscore"` is TRL's own code path.

        > Parameters that control the objectives

        reward_objectives (`dict[str, float]`, *optional*):
            Objectives by name (registered or `"package.module:function"`) with their weights, e.g.
            `{"accuracy": 0.7, "readability": 0.2, "novelty": 0.1}`. Used when the trainer gets no `reward_funcs`.
        objective_weights (`dict[str, float]`, *optional*):
            Weights by objective name, overriding the weights of the `WeightedReward` objectives. Some may be 0; the
            combined weights may not all be.
        objective_weights_final (`dict[str, float]`, *optional*):
            Weights reached at the last training step; each weight moves linearly from its initial value.
        novelty_ngram (`int`, *optional*, defaults to `3`):
            Word n-gram size of the `novelty` objective.
        reward_error_policy (`str`, *optional*, defaults to `"raise"`):
            What an objective that raises, returns NaN/inf or a list of the wrong length does: `"raise"` stops with
            an error naming the objective and the completion; `"skip"` gives `None` for the affected completions
            (TRL excludes all-None rows) and counts them in `rewards/{name}/errors`. Under `sum_then_normalize`,
            TRL's weighted `nansum` then adds nothing for a skipped objective: the same total as a reward of 0.

        > Parameters that control the principles objective (a judge model scores principles)

        principles (`list`, *optional*):
            The questions of the `principles` objective (named in `reward_objectives`), each a yes/no question about
            the response or a mapping `{question, weight, name}` (weight >= 0, default 1; name for the metrics,
            default the question in snake case). The reward is the weighted mean of the judge's P(yes).
        judge (`dict`, *optional*):
            The judge of the `principles` objective. A local causal LM: `{model, chat, batch_size, max_length,
            device, dtype, cache_size, template}`; an OpenAI-compatible endpoint when `base_url` is set: `{base_url,
            model, api_key_env, chat, timeout, max_retries, backoff, max_concurrency, batch_size, top_logprobs,
            max_tokens, cache_size, template}`. Validated here; the model is loaded (or the endpoint called) only
            when training scores completions. See docs/objectives.md. Also the judge of a `{type: judge}` labeler of
            `online_reward_model`.

        > Parameters that control the online reward model (the `learned_preference` objective)

        online_reward_model (`dict`, *optional*):
            The `learned_preference` objective (named in `reward_objectives`): a sequence-classification reward
            model that scores completions and keeps learning from pairwise labels of within-group pairs
            (Bradley-Terry). Keys: `model` (required: a path, a Hub id or a kit name such as `tiny:tiny`), `labeler`
            (`{type: gold, objective: accuracy}`, `{type: judge[, principles, template]}` with the `judge` field,
            or `{type: queue, path: labels.jsonl[, requests_path, timeout, poll_interval]}`: a person), and the
            `OnlineRewardModel` arguments `name` (metric prefix, default `rm`), `update_every`, `label_budget`,
            `pairs_per_update`, `selector` (`random`, `uncertain`), `buffer_size`, `replay_pairs`,
            `heldout_fraction`, `heldout_size`, `seed_pairs` or `seed_pairs_file` (JSONL), `seed_epochs`,
            `update_steps`, `learning_rate`, `weight_decay`, `margin`, `max_grad_norm`, `batch_size`, `max_length`,
            `error_policy`, `seed`, `device`. Validated here; the model is loaded when the trainer is built. See
            docs/objectives.md#online-reward-model.

        > Parameters that save compute with the same math (docs/speed.md)

        share_prompt (`bool`, *optional*, defaults to `False`):
            Compute each distinct prompt of a micro-batch once in the log-prob forwards (loss, old policy,
            reference) and in `generate`'s prefill: its keys and values are expanded to the completions of its group,
            which run on top with TRL's positions and masks. The same log-probs to float32 rounding. Needs
            `activation_checkpointing=False` (transformers drops the key/value cache under checkpointing) and a
            text-only model; vLLM shares prompts by its own prefix caching.
        skip_zero_advantage (`bool`, *optional*, defaults to `False`):
            Leave rows whose advantage is exactly 0 (tied groups) out of the loss's forward and backward; their
            per-token loss is 0 either way, and TRL's loss and normaliser are unchanged. Exact with `beta=0`, no
            entropy bonus, `top_entropy_quantile=1` and no MoE auxiliary loss, which it requires. The logged
            `entropy` then averages the rows computed.

        > Parameters that change which groups are trained on (docs/dynamic-sampling.md)

        dynamic_sampling (`bool`, *optional*, defaults to `False`):
            DAPO's dynamic sampling: after the rewards, every group whose rewards are all equal (it gives no
            gradient) is replaced by a group of a new prompt, generated and scored by TRL's own
            `_generate_and_score_completions` again, until every group of the batch teaches or
            `dynamic_sampling_max_rounds` extra rounds are spent (the tied groups left keep their places). New prompts
            come from the training set in an order of their own (seeded, the same on every process, checkpointed).
            The decision is taken on the global batch, so every process generates the same number of rounds. Each
            round generates a whole generation batch, so a step can generate up to `1 + max_rounds` times TRL's.
            Training only; map-style datasets and text-only models.
        dynamic_sampling_max_rounds (`int`, *optional*, defaults to `3`):
            Extra generation rounds per generation batch at most, in [1, 100].
        log_tied_groups (`bool`, *optional*, defaults to `False`):
            Log TRL's `frac_reward_zero_std` split by where the tied groups sit in the batch's reward range:
            `tied_groups/top_frac` (tied at the batch's highest reward: too easy) and `tied_groups/bottom_frac` (at
            its lowest: too hard). On with `dynamic_sampling`; off by default so that the logged keys are TRL's.
    """

    # Temperature ladder
    temperature_schedule: str = field(
        default="constant",
        metadata={
            "help": "How the completions of one prompt are spread over temperatures: 'constant' (TRL: all at "
            "`temperature`), 'linear' (slot i of K at t_min + (t_max - t_min) * i / (K - 1)) or 'geometric' "
            "(log-spaced).",
            "choices": list(TEMPERATURE_SCHEDULES),
        },
    )
    temperature_range: list[float] = field(
        default_factory=lambda: [0.7, 1.0],
        metadata={"help": "[t_min, t_max] of the temperature ladder."},
    )
    group_temperatures: list[float] | None = field(
        default=None,
        metadata={
            "help": "Explicit temperatures, one per slot of a group (length num_generations, each > 0); overrides "
            "temperature_schedule and temperature_range."
        },
    )
    temperature_range_final: list[float] | None = field(
        default=None,
        metadata={
            "help": "[t_min, t_max] at the last training step: the ladder's ends move linearly from "
            "temperature_range (derived from the global step, so it survives resume)."
        },
    )
    ladder_logprob_temperature: str = field(
        default="sampled",
        metadata={
            "help": "Temperature of the loss, old-policy and reference log-probs of each completion: 'sampled' (the "
            "temperature it was sampled at: on-policy for every rung) or 'base' (`temperature` for all rows).",
            "choices": list(LADDER_LOGPROB_TEMPERATURES),
        },
    )
    # Closed-loop ladder
    temperature_control: str = field(
        default="none",
        metadata={
            "help": "'none' (the ladder follows temperature_range) or 'zero_std': after every generation batch, "
            "scale the ladder by exp(rate * (z - target)) where z is the fraction of groups whose rewards are all "
            "equal (TRL's frac_reward_zero_std, global batch), within temperature_bounds.",
            "choices": list(TEMPERATURE_CONTROLS),
        },
    )
    temperature_control_target: float = field(
        default=0.5,
        metadata={
            "help": "Target fraction of groups whose rewards are all equal, in [0, 1) (0.5: cool while most groups "
            "teach, heat once more than half stall)."
        },
    )
    temperature_control_rate: float = field(
        default=0.5,
        metadata={
            "help": "Gain of the controller: the log of the ladder's scale moves by rate * error per batch (> 0)."
        },
    )
    temperature_control_tolerance: float = field(
        default=0.05,
        metadata={"help": "No move while the fraction is within target +- tolerance (>= 0)."},
    )
    temperature_bounds: list[float] = field(
        default_factory=lambda: [0.1, 2.0],
        metadata={
            "help": "[t_floor, t_ceiling] of the closed-loop ladder; must contain temperature_range. The ceiling "
            "must be <= 2 with use_vllm=True."
        },
    )
    # Advantages
    advantage_estimator: str = field(
        default="zscore",
        metadata={
            "help": "Advantage estimator: a registered name ('zscore' = TRL's group normalisation, 'rank' = mean of "
            "pairwise comparisons in the group) or an import path 'package.module:function'."
        },
    )
    # Objectives
    reward_objectives: dict[str, float] | str | None = field(
        default=None,
        metadata={
            "help": "Objectives by name with weights, e.g. {'accuracy': 0.7, 'readability': 0.2, 'novelty': 0.1}. "
            "Names are registered objectives or 'package.module:function'. Used when no reward_funcs are passed."
        },
    )
    objective_weights: dict[str, float] | str | None = field(
        default=None,
        metadata={"help": "Weights by objective name, overriding those of the WeightedReward objectives."},
    )
    objective_weights_final: dict[str, float] | str | None = field(
        default=None,
        metadata={
            "help": "Weights by objective name at the last training step; each moves linearly from its initial "
            "weight (derived from the global step, so it survives resume)."
        },
    )
    novelty_ngram: int = field(
        default=3,
        metadata={"help": "Word n-gram size used by the `novelty` objective (>= 1)."},
    )
    reward_error_policy: str = field(
        default="raise",
        metadata={
            "help": "What an objective that raises, returns NaN/inf or the wrong number of rewards does: 'raise' "
            "(stop, naming objective and completion) or 'skip' (None for those completions, counted in "
            "rewards/{name}/errors; under sum_then_normalize TRL's nansum then adds nothing for it, as for a 0 "
            "reward: docs/objectives.md). Never a silent 0: always an error or a counted None.",
            "choices": list(REWARD_ERROR_POLICIES),
        },
    )

    # Principles objective
    principles: list[Any] | str | None = field(
        default=None,
        metadata={
            "help": "Questions of the 'principles' objective: a list of yes/no questions about the response, or of "
            "{question, weight, name} mappings (JSON on the command line). Needs `judge` and 'principles' in "
            "reward_objectives."
        },
    )
    judge: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Judge of the 'principles' objective (JSON on the command line): a local causal LM, e.g. "
            "{'model': 'tiny:tiny', 'batch_size': 16}, or an OpenAI-compatible endpoint, e.g. {'base_url': "
            "'http://127.0.0.1:8000/v1', 'model': 'judge', 'api_key_env': 'JUDGE_API_KEY', 'timeout': 30}."
        },
    )

    # Online reward model
    online_reward_model: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "The 'learned_preference' objective (JSON on the command line): a reward model trained online "
            "with Bradley-Terry on within-group pairs, e.g. {'model': 'tiny:tiny', 'label_budget': 256, "
            "'pairs_per_update': 8, 'labeler': {'type': 'gold', 'objective': 'accuracy'}}. Labelers: gold "
            "(a registered objective), judge (the `judge` field) or queue ({'type': 'queue', 'path': "
            "'labels.jsonl'}: a person). Needs 'learned_preference' in reward_objectives."
        },
    )

    # Same math, less compute
    share_prompt: bool = field(
        default=False,
        metadata={
            "help": "Compute each distinct prompt once per micro-batch in the log-prob forwards and in generate's "
            "prefill (keys/values expanded to its completions): the same log-probs to float32 rounding, less time. "
            "Needs activation_checkpointing=False and a text-only model."
        },
    )
    skip_zero_advantage: bool = field(
        default=False,
        metadata={
            "help": "Leave rows with advantage exactly 0 (tied groups) out of the loss's forward and backward; the "
            "loss and its gradient are unchanged. Needs beta=0, entropy_coef=0, top_entropy_quantile=1 and no MoE "
            "auxiliary loss."
        },
    )

    # Which groups are trained on
    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "Replace groups whose rewards are all equal by groups of new prompts, generated and scored again, "
            "until every group teaches or dynamic_sampling_max_rounds extra rounds are spent (DAPO's dynamic "
            "sampling). Training only."
        },
    )
    dynamic_sampling_max_rounds: int = field(
        default=3,
        metadata={"help": "Extra generation rounds per generation batch at most, in [1, 100]."},
    )
    log_tied_groups: bool = field(
        default=False,
        metadata={
            "help": "Log tied_groups/top_frac and tied_groups/bottom_frac: groups tied at the batch's highest "
            "reward (too easy) and at its lowest (too hard). On with dynamic_sampling."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self._validate_extension()

    @classmethod
    def from_trl(cls, args: GRPOConfig, **extension_fields: Any) -> GRPOExtConfig:
        """A `GRPOExtConfig` holding every field of the `trl.GRPOConfig` `args`, plus extension fields.

        TRL's fields are copied as `args` holds them (after TRL's `__post_init__`, which is not run again: it would
        refuse its own derived values, e.g. `generation_batch_size` with `steps_per_generation`). The extension fields
        take their defaults unless given, and are validated. `GRPOExtTrainer` converts `args=trl.GRPOConfig(...)` so.

        Example:
            >>> from trl import GRPOConfig
            >>> trl_args = GRPOConfig("out", beta=0.05, use_cpu=True, bf16=False)
            >>> args = GRPOExtConfig.from_trl(trl_args, temperature_schedule="linear")
            >>> args.beta, args.temperature_schedule, args.advantage_estimator
            (0.05, 'linear', 'zscore')
        """
        if not isinstance(args, GRPOConfig):
            raise TypeError(f"`args` must be a trl.GRPOConfig to convert, got {type(args).__name__}.")
        own = {f.name: f for f in dataclasses.fields(cls) if f.name not in GRPOConfig.__dataclass_fields__}
        unknown = sorted(set(extension_fields) - set(own))
        if unknown:
            raise TypeError(f"{unknown} are not fields of GRPOExtConfig; valid extension fields: {sorted(own)}.")
        config = cls.__new__(cls)
        config.__dict__.update(copy.copy(vars(args)))
        for name, spec in own.items():
            if name in extension_fields:
                value = extension_fields[name]
            elif spec.default_factory is not dataclasses.MISSING:
                value = spec.default_factory()
            else:
                value = spec.default
            setattr(config, name, value)
        config._validate_extension()
        return config

    # ------------------------------------------------------------------ the blocks of settings, validated
    @property
    def judge_config(self):
        """The `judge` block as a validated `JudgeConfig` (a `LocalJudgeConfig` or an `OpenAIJudgeConfig`), or None.

        The field keeps the plain mapping (for `to_dict`, JSON, pickling and the command line); this object is built
        in `__post_init__`, and again only if the field was changed since.
        """
        return self._sub_config("judge")

    @property
    def online_reward_model_config(self):
        """The `online_reward_model` block as a validated `OnlineRewardModelConfig` (its `labeler` a
        `LabelerConfig`), or None; built in `__post_init__` (again only if the field or `judge` changed since)."""
        return self._sub_config("online_reward_model")

    def _sub_config(self, name: str):
        cache = self.__dict__.setdefault("_sub_configs", {})
        key = self._sub_config_key(name)
        if name not in cache or cache[name][0] != key:
            cache[name] = (key, self._build_sub_config(name))
        return cache[name][1]

    def _sub_config_key(self, name: str) -> str:
        """What the sub-config `name` is built from, as JSON (a change makes it stale)."""
        inputs = [getattr(self, name), self.judge if name == "online_reward_model" else None]
        return json.dumps(inputs, sort_keys=True, default=repr)

    def _build_sub_config(self, name: str):
        value = getattr(self, name)
        if value is None:
            return None
        if name == "judge":
            from .rewards.judges import JudgeConfig

            return JudgeConfig.from_dict(parse_json(value, name))
        from .rewards.online_config import OnlineRewardModelConfig

        return OnlineRewardModelConfig.from_dict(parse_json(value, name), judge=parse_json(self.judge, "judge"))

    def __getstate__(self) -> dict[str, Any]:
        # Pickled (`training_args.bin`, deepcopy) as plain fields: the sub-configs are rebuilt from them when read.
        state = dict(self.__dict__)
        state.pop("_sub_configs", None)
        return state

    def _validate_extension(self) -> None:
        """The checks of every field GRPOExtConfig adds (TRL's `__post_init__` checks TRL's)."""
        for name, check in FIELD_CHECKS.items():
            setattr(self, name, check(getattr(self, name), name))
        self._sub_configs: dict[str, Any] = {}  # name -> the block's sub-config, built by its validation below
        self._validate_temperature_control()  # first: it names vLLM's temperature limit before the backend check
        self._validate_ladder()
        self._validate_ladder_interactions()
        self._validate_advantages()
        self._validate_objectives()
        self._validate_online_reward_model()  # before principles: a judge labeler is a second use of `judge`
        self._validate_principles()
        self._validate_efficiency()
        self._validate_dynamic_sampling()
        self._sub_configs = {name: (self._sub_config_key(name), config) for name, config in self._sub_configs.items()}

    # Validation, one method per feature so each error is easy to find.
    def _validate_ladder(self) -> None:
        temps = self.group_temperatures
        if temps is not None:
            if len(temps) != self.num_generations:
                raise ValueError(
                    f"`group_temperatures` must have one temperature per generation (num_generations="
                    f"{self.num_generations}), got {len(temps)}: {temps}."
                )
            if self.num_generations_eval is not None and self.num_generations_eval != len(temps):
                raise ValueError(
                    f"`group_temperatures` has {len(temps)} temperatures but evaluation groups have "
                    f"`num_generations_eval`={self.num_generations_eval}; use a computed ladder "
                    "(temperature_schedule + temperature_range) or the same group size."
                )
            if self.temperature_range_final is not None:
                raise ValueError(
                    "`temperature_range_final` moves the ends of a computed ladder; it cannot be combined with "
                    f"explicit `group_temperatures` ({temps})."
                )
        if self.temperature_schedule != "constant" and self.group_temperatures is None and not self.temperature_range:
            raise ValueError(
                f"`temperature_range` must be a pair [t_min, t_max] for temperature_schedule="
                f"{self.temperature_schedule!r}, got {self.temperature_range!r}."
            )
        if self.temperature_range_final is not None and self.temperature_schedule == "constant":
            raise ValueError(
                "`temperature_range_final` needs a ladder: set `temperature_schedule` to 'linear' or 'geometric' "
                f"(got temperature_schedule={self.temperature_schedule!r})."
            )
        if self.uses_ladder:
            self._validate_ladder_backend()

    def _validate_ladder_backend(self) -> None:
        """The ladder runs on transformers `generate` and on vLLM (colocate and server), within vLLM's range."""
        # TRL's __post_init__ has already mapped the deprecated `use_transformers_paged` onto this flag.
        if getattr(self, "use_transformers_continuous_batching", False):
            raise ValueError(
                f"The temperature ladder (temperature_schedule={self.temperature_schedule!r}, "
                f"group_temperatures={self.group_temperatures}) is not supported with "
                "`use_transformers_continuous_batching=True`: transformers' `generate_batch` applies one set of "
                "sampling parameters to every request. Use transformers `generate` (the default) or `use_vllm=True`, "
                "or set temperature_schedule='constant'."
            )
        if not self.use_vllm:
            return
        ends = {"group_temperatures": self.group_temperatures}
        if self.group_temperatures is None:
            ends = {
                "temperature_range": self.temperature_range,
                "temperature_range_final": self.temperature_range_final,
            }
        for name, temps in ends.items():
            if temps is not None and not all(VLLM_MIN_TEMPERATURE <= t <= VLLM_MAX_TEMPERATURE for t in temps):
                raise ValueError(
                    f"`{name}`={temps} is outside vLLM's temperature range [{VLLM_MIN_TEMPERATURE}, "
                    f"{VLLM_MAX_TEMPERATURE}] (vLLM refuses temperatures above {VLLM_MAX_TEMPERATURE} and raises those "
                    f"below {VLLM_MIN_TEMPERATURE} to it) with `use_vllm=True`."
                )
        coldest = min(min(t) for t in ends.values() if t is not None)
        if self.vllm_importance_sampling_correction and coldest < VLLM_IS_RELIABLE_TEMPERATURE:
            warnings.warn(
                f"The ladder's coldest rung is {coldest} (`{'`/`'.join(k for k, v in ends.items() if v)}`) with "
                f"`use_vllm=True` and `vllm_importance_sampling_correction=True`: below {VLLM_IS_RELIABLE_TEMPERATURE} "
                "the importance-sampling ratio turns to noise (log-probs divided by a small T amplify the tiny kernel "
                "differences between vLLM and torch: measured ratio means 0.96-1.04 at T 0.01-0.1, within 1e-2 from "
                "0.2 up; docs/ladder.md). Keep the ladder at >= 0.2 or accept a noisier correction.",
                UserWarning,
                stacklevel=3,
            )

    def _validate_ladder_interactions(self) -> None:
        """TRL options whose meaning the ladder changes: refused by name where the result would not be TRL's."""
        if not self.uses_ladder:
            return
        ladder = f"a temperature ladder (temperature_schedule={self.temperature_schedule!r}"
        ladder += f", group_temperatures={self.group_temperatures})" if self.group_temperatures else ")"
        generation_kwargs = parse_json(self.generation_kwargs, "generation_kwargs") or {}
        if isinstance(generation_kwargs, dict) and "temperature" in generation_kwargs:
            raise ValueError(
                f"`generation_kwargs` sets {{'temperature': {generation_kwargs['temperature']!r}}}, which {ladder} "
                "replaces with each row's temperature. Remove it: the ladder is set by `temperature_range` / "
                "`group_temperatures` (and `temperature` is the base temperature)."
            )
        if self.ladder_logprob_temperature != "sampled":
            return
        # TRL's per-token entropies come from the same fused LM-head pass as the log-probs, so with "sampled"
        # scoring they are each row's entropy at its own temperature: hot rows read higher. Entropies at
        # `temperature` would need a second LM-head pass with gradients; the options that act on them are refused.
        entropy_options = {
            "top_entropy_quantile": (self.top_entropy_quantile, self.top_entropy_quantile < 1.0),
            "entropy_coef": (self.entropy_coef, self.entropy_coef != 0.0),
            "use_adaptive_entropy": (self.use_adaptive_entropy, bool(self.use_adaptive_entropy)),
        }
        for name, (value, on) in entropy_options.items():
            if on:
                raise ValueError(
                    f"`{name}`={value!r} acts on per-token entropies, which with {ladder} and "
                    "`ladder_logprob_temperature='sampled'` are computed at each row's own temperature (hot rows "
                    f"have higher entropy), not at `temperature` as in TRL. Set `ladder_logprob_temperature='base'` "
                    f"(log-probs and entropies at `temperature`), a constant `temperature_schedule`, or `{name}` to "
                    "its default."
                )

    def _validate_temperature_control(self) -> None:
        if self.temperature_control == "none":
            return
        refused = f"`temperature_control={self.temperature_control!r}`"
        if self.group_temperatures is not None:
            raise ValueError(
                f"{refused} scales the ladder of `temperature_range`; it cannot be combined with explicit "
                f"`group_temperatures` ({self.group_temperatures}). Drop `group_temperatures` and set "
                "`temperature_schedule` to 'linear' or 'geometric'."
            )
        if self.temperature_schedule == "constant":
            raise ValueError(
                f"{refused} needs a ladder: set `temperature_schedule` to 'linear' or 'geometric' (got 'constant'; "
                "for one temperature per group use 'linear' with `temperature_range` [t, t])."
            )
        if self.temperature_range_final is not None:
            raise ValueError(
                f"{refused} moves the ladder itself; it cannot be combined with the step schedule "
                f"`temperature_range_final` ({self.temperature_range_final})."
            )
        if self.temperature_range is None:
            raise ValueError(f"{refused} needs `temperature_range` [t_min, t_max], got None.")
        (floor, ceiling), (t_min, t_max) = self.temperature_bounds, self.temperature_range
        if not floor <= t_min <= t_max <= ceiling:
            raise ValueError(
                f"`temperature_bounds` {self.temperature_bounds} must contain `temperature_range` "
                f"{self.temperature_range} (t_floor <= t_min and t_max <= t_ceiling)."
            )
        if self.use_vllm and not VLLM_MIN_TEMPERATURE <= floor <= ceiling <= VLLM_MAX_TEMPERATURE:
            raise ValueError(
                f"`temperature_bounds` {self.temperature_bounds} is outside vLLM's temperature range "
                f"[{VLLM_MIN_TEMPERATURE}, {VLLM_MAX_TEMPERATURE}] (use_vllm=True); the controlled ladder must stay "
                "inside it."
            )

    def _validate_advantages(self) -> None:
        from .advantages import get_advantage_estimator

        get_advantage_estimator(self.advantage_estimator)  # raises ValueError naming the field and the choices
        if self.advantage_estimator != "zscore" and self.scale_rewards == "batch":
            raise ValueError(
                f"`advantage_estimator={self.advantage_estimator!r}` replaces the group normalisation, so it cannot "
                "be combined with `scale_rewards='batch'` (batch-level scaling). Use scale_rewards='group' or 'none', "
                "or advantage_estimator='zscore'."
            )

    def _validate_objectives(self) -> None:
        if self.reward_objectives is not None:
            from .rewards import get_objective

            for name in self.reward_objectives:
                try:
                    get_objective(name)
                except ValueError as err:
                    raise ValueError(f"`reward_objectives` names {name!r}: {err}") from err
            known = set(self.reward_objectives)
            for field_name in ("objective_weights", "objective_weights_final"):
                unknown = set(getattr(self, field_name) or {}) - known
                if unknown:
                    raise ValueError(
                        f"`{field_name}` names unknown objectives {sorted(unknown)}; valid names: {sorted(known)}."
                    )
            # `{"novelty": 0.0}` anneals one objective away: only the combined vector must keep a non-zero weight.
            initial = {**self.reward_objectives, **(self.objective_weights or {})}
            check_not_all_zero(initial, "objective_weights")
            if self.objective_weights_final:
                check_not_all_zero({**initial, **self.objective_weights_final}, "objective_weights_final")

    def _validate_principles(self) -> None:
        from .rewards.judges import JudgeConfig
        from .rewards.principles import check_principles

        if self.principles is not None:
            principles = parse_json(self.principles, "principles")
            self.principles = [vars(p).copy() for p in check_principles(principles)]
        if self.judge is not None:
            judge = parse_json(self.judge, "judge")
            self._sub_configs["judge"] = JudgeConfig.from_dict(judge)
            self.judge = dict(judge)
        named = "principles" in (self.reward_objectives or {})
        if named and (self.principles is None or self.judge is None):
            missing = [f"`{name}`" for name in ("principles", "judge") if getattr(self, name) is None]
            raise ValueError(
                f"`reward_objectives` names 'principles', which needs {' and '.join(missing)}: e.g. principles: "
                "['Is the response polite?'] and judge: {model: tiny:tiny} (see docs/objectives.md)."
            )
        labeler = (self.online_reward_model or {}).get("labeler") or {}
        judge_labeler = labeler.get("type") == "judge"
        if not named and self.principles is not None:
            raise ValueError(
                f"`principles` configures the 'principles' objective, but `reward_objectives` "
                f"({self.reward_objectives!r}) does not name 'principles'; add it with a weight, e.g. "
                "{'accuracy': 0.7, 'principles': 0.3}"
                + (
                    " (the questions of the judge labeler go in `online_reward_model.labeler.principles`)."
                    if judge_labeler
                    else "."
                )
            )
        if not named and not judge_labeler and self.judge is not None:
            raise ValueError(
                f"`judge` configures the 'principles' objective or the judge labeler of `online_reward_model`, but "
                f"`reward_objectives` ({self.reward_objectives!r}) does not name 'principles' and "
                "`online_reward_model.labeler` is not {'type': 'judge'}; add one of them, e.g. "
                "{'accuracy': 0.7, 'principles': 0.3}."
            )

    def _validate_online_reward_model(self) -> None:
        from .rewards.online_config import FIELD, OBJECTIVE_NAME, OnlineRewardModelConfig

        named = OBJECTIVE_NAME in (self.reward_objectives or {})
        if self.online_reward_model is not None:
            value = parse_json(self.online_reward_model, FIELD)
            config = OnlineRewardModelConfig.from_dict(value, judge=parse_json(self.judge, "judge"))
            self.online_reward_model = config.to_dict(only=value)
            self._sub_configs[FIELD] = config
        if named and self.online_reward_model is None:
            raise ValueError(
                f"`reward_objectives` names '{OBJECTIVE_NAME}', which needs `{FIELD}`: e.g. online_reward_model: "
                "{model: tiny:tiny, labeler: {type: gold, objective: accuracy}} (see docs/objectives.md)."
            )
        if not named and self.online_reward_model is not None:
            raise ValueError(
                f"`{FIELD}` configures the '{OBJECTIVE_NAME}' objective, but `reward_objectives` "
                f"({self.reward_objectives!r}) does not name '{OBJECTIVE_NAME}'; add it with a weight, e.g. "
                f"{{'accuracy': 0.5, '{OBJECTIVE_NAME}': 0.5}}."
            )
        if named and self.restore_callback_states_from_checkpoint:
            raise ValueError(
                f"`restore_callback_states_from_checkpoint=True` cannot be combined with `{FIELD}`: the online reward "
                "model is a reward function and a callback at once and restores itself on resume; transformers would "
                "replace the callback by a new object that is not the reward function. Leave it False (the default)."
            )

    def _validate_efficiency(self) -> None:
        if self.share_prompt and self.gradient_checkpointing:  # transformers mirrors `activation_checkpointing` here
            raise ValueError(
                "`share_prompt=True` cannot be combined with activation checkpointing (`activation_checkpointing` / "
                "`gradient_checkpointing` True, TRL's default): transformers drops the key/value cache inside a "
                "checkpointed layer, and the shared prompt is passed as that cache. Set activation_checkpointing="
                "False (sharing the prompt already saves most of the prompt's activation memory)."
            )
        if not self.skip_zero_advantage:
            return
        readers = {
            "beta": (self.beta, 0.0, "the KL term reads every row's log-probs"),
            "entropy_coef": (getattr(self, "entropy_coef", 0.0) or 0.0, 0.0, "the entropy bonus reads every row"),
            "top_entropy_quantile": (self.top_entropy_quantile, 1.0, "the entropy mask is a quantile over all rows"),
        }
        for name, (value, allowed, why) in readers.items():
            if value != allowed:
                raise ValueError(
                    f"`skip_zero_advantage=True` needs `{name}={allowed}`, got `{name}={value}`: {why}, so leaving "
                    "zero-advantage rows out would change the loss. Set it, or leave skip_zero_advantage off."
                )
        if getattr(self, "use_adaptive_entropy", False):
            raise ValueError(
                "`skip_zero_advantage=True` cannot be combined with `use_adaptive_entropy=True`: the entropy bonus "
                "reads every row. Leave one of them off."
            )
        if self.loss_type not in SKIP_EXACT_LOSS_TYPES:
            raise ValueError(
                f"`skip_zero_advantage=True` is exact for `loss_type` in {list(SKIP_EXACT_LOSS_TYPES)}, got "
                f"{self.loss_type!r} (its sequence weights read the log-prob ratio of every row)."
            )

    def _validate_dynamic_sampling(self) -> None:
        if self.dynamic_sampling and self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "`dynamic_sampling=True` needs `multi_objective_aggregation='sum_then_normalize'`, got "
                f"{self.multi_objective_aggregation!r}: with 'normalize_then_sum' the advantages are normalised over "
                "the batch, so a group whose rewards are all equal still has a non-zero advantage."
            )

    @property
    def uses_ladder(self) -> bool:
        """Whether completions of a group are sampled at different temperatures."""
        return self.group_temperatures is not None or self.temperature_schedule != "constant"
