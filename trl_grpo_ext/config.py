"""`GRPOExtConfig`: TRL's `GRPOConfig` plus the fields of trl-grpo-ext, validated at construction.

Every new field defaults to TRL's behaviour: a config with none of them set trains exactly like `trl.GRPOConfig`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

TEMPERATURE_SCHEDULES = ("constant", "linear", "geometric")
LADDER_LOGPROB_TEMPERATURES = ("sampled", "base")
REWARD_ERROR_POLICIES = ("raise", "skip")
TEMPERATURE_CONTROLS = ("none", "zero_std")  # = sampling.control.CONTROL_SIGNALS, without importing torch here
VLLM_MAX_TEMPERATURE = 2.0  # vLLM refuses a sampling temperature above this


def _parse_json_field(name: str, value: Any) -> Any:
    """The CLI hands dict/list fields over as JSON strings; YAML and Python hand them over as objects."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise ValueError(f"`{name}` must be valid JSON when given as a string, got {value!r} ({err}).") from None


def _floats(name: str, values: Any) -> list[float]:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must hold numbers, got {values!r}.") from None


def _check_range(name: str, value: Any) -> list[float] | None:
    if value is None:
        return None
    value = _parse_json_field(name, value)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"`{name}` must be a pair [t_min, t_max], got {value!r}.")
    t_min, t_max = _floats(name, value)
    if not (math.isfinite(t_min) and math.isfinite(t_max)) or t_min <= 0 or t_max <= 0:
        raise ValueError(f"`{name}` must hold two finite temperatures > 0, got {value!r}.")
    if t_min > t_max:
        raise ValueError(f"`{name}` must satisfy t_min <= t_max, got {value!r}.")
    return [t_min, t_max]


def _check_weights(name: str, value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    value = _parse_json_field(name, value)
    if not isinstance(value, dict) or not value:
        raise ValueError(f"`{name}` must be a non-empty mapping objective name -> weight, got {value!r}.")
    weights = {}
    for key, weight in value.items():
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"`{name}[{key!r}]` must be a number, got {weight!r}.") from None
        if not math.isfinite(weight):
            raise ValueError(f"`{name}[{key!r}]` must be finite, got {weight}.")
        weights[str(key)] = weight
    if all(w == 0 for w in weights.values()):
        raise ValueError(f"`{name}` must have at least one non-zero weight, got {weights}.")
    return weights


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
            Weights by objective name, overriding the weights of the `WeightedReward` objectives.
        objective_weights_final (`dict[str, float]`, *optional*):
            Weights reached at the last training step; each weight moves linearly from its initial value.
        novelty_ngram (`int`, *optional*, defaults to `3`):
            Word n-gram size of the `novelty` objective.
        reward_error_policy (`str`, *optional*, defaults to `"raise"`):
            What an objective that raises, returns NaN/inf or a list of the wrong length does: `"raise"` stops with
            an error naming the objective and the completion; `"skip"` gives `None` for the affected completions
            (TRL excludes all-None rows) and counts them in `rewards/{name}/errors`.
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
        metadata={"help": "[t_min, t_max] of the temperature ladder (seed 001: 0.7 to 1.0)."},
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
            "rewards/{name}/errors). Never a silent 0.",
            "choices": list(REWARD_ERROR_POLICIES),
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self._validate_temperature_control()  # first: it names vLLM's temperature limit before the backend check
        self._validate_ladder()
        self._validate_advantages()
        self._validate_objectives()

    # Validation, one method per feature so each error is easy to find.
    def _validate_ladder(self) -> None:
        if self.temperature_schedule not in TEMPERATURE_SCHEDULES:
            raise ValueError(
                f"`temperature_schedule` must be one of {list(TEMPERATURE_SCHEDULES)}, got {self.temperature_schedule!r}."
            )
        if self.ladder_logprob_temperature not in LADDER_LOGPROB_TEMPERATURES:
            raise ValueError(
                f"`ladder_logprob_temperature` must be one of {list(LADDER_LOGPROB_TEMPERATURES)}, "
                f"got {self.ladder_logprob_temperature!r}."
            )
        self.temperature_range = _check_range("temperature_range", self.temperature_range)
        self.temperature_range_final = _check_range("temperature_range_final", self.temperature_range_final)
        if self.group_temperatures is not None:
            temps = _parse_json_field("group_temperatures", self.group_temperatures)
            if not isinstance(temps, (list, tuple)):
                raise ValueError(f"`group_temperatures` must be a list of temperatures, got {temps!r}.")
            temps = _floats("group_temperatures", temps)
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
            if not all(math.isfinite(t) and t > 0 for t in temps):
                raise ValueError(f"`group_temperatures` must all be finite and > 0, got {temps}.")
            if self.temperature_range_final is not None:
                raise ValueError(
                    "`temperature_range_final` moves the ends of a computed ladder; it cannot be combined with "
                    f"explicit `group_temperatures` ({temps})."
                )
            self.group_temperatures = temps
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
            backends = {
                "use_vllm": self.use_vllm,
                "use_transformers_continuous_batching": getattr(self, "use_transformers_continuous_batching", False),
                "use_transformers_paged": getattr(self, "use_transformers_paged", False),
            }
            for name, on in backends.items():
                if on:
                    raise ValueError(
                        f"The temperature ladder (temperature_schedule={self.temperature_schedule!r}, "
                        f"group_temperatures={self.group_temperatures}) needs transformers `generate`; `{name}=True` "
                        "is not supported with it. Set the schedule to 'constant' or turn the backend off."
                    )

    def _validate_temperature_control(self) -> None:
        if self.temperature_control not in TEMPERATURE_CONTROLS:
            raise ValueError(
                f"`temperature_control` must be one of {list(TEMPERATURE_CONTROLS)}, got {self.temperature_control!r}."
            )
        self.temperature_range = _check_range("temperature_range", self.temperature_range)
        self.temperature_bounds = _check_range("temperature_bounds", self.temperature_bounds)
        if self.temperature_bounds is None:
            raise ValueError("`temperature_bounds` must be a pair [t_floor, t_ceiling], got None.")
        for name in ("temperature_control_target", "temperature_control_rate", "temperature_control_tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
            setattr(self, name, float(value))
        if not 0.0 <= self.temperature_control_target < 1.0:
            raise ValueError(f"`temperature_control_target` must be in [0, 1), got {self.temperature_control_target}.")
        if self.temperature_control_rate <= 0:
            raise ValueError(f"`temperature_control_rate` must be > 0, got {self.temperature_control_rate}.")
        if not 0.0 <= self.temperature_control_tolerance < 1.0:
            raise ValueError(
                f"`temperature_control_tolerance` must be in [0, 1), got {self.temperature_control_tolerance}."
            )
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
        if self.use_vllm and ceiling > VLLM_MAX_TEMPERATURE:
            raise ValueError(
                f"`temperature_bounds` ceiling {ceiling} is above vLLM's limit of {VLLM_MAX_TEMPERATURE} "
                f"(use_vllm=True); set t_ceiling <= {VLLM_MAX_TEMPERATURE}."
            )

    def _validate_advantages(self) -> None:
        from .advantages import get_advantage_estimator

        if not isinstance(self.advantage_estimator, str) or not self.advantage_estimator:
            raise ValueError(f"`advantage_estimator` must be a non-empty string, got {self.advantage_estimator!r}.")
        get_advantage_estimator(self.advantage_estimator)  # raises ValueError naming the field and the choices
        if self.advantage_estimator != "zscore" and self.scale_rewards == "batch":
            raise ValueError(
                f"`advantage_estimator={self.advantage_estimator!r}` replaces the group normalisation, so it cannot "
                "be combined with `scale_rewards='batch'` (batch-level scaling). Use scale_rewards='group' or 'none', "
                "or advantage_estimator='zscore'."
            )

    def _validate_objectives(self) -> None:
        if self.reward_error_policy not in REWARD_ERROR_POLICIES:
            raise ValueError(
                f"`reward_error_policy` must be one of {list(REWARD_ERROR_POLICIES)}, got {self.reward_error_policy!r}."
            )
        if isinstance(self.novelty_ngram, bool) or not isinstance(self.novelty_ngram, int) or self.novelty_ngram < 1:
            raise ValueError(f"`novelty_ngram` must be an integer >= 1, got {self.novelty_ngram!r}.")
        self.reward_objectives = _check_weights("reward_objectives", self.reward_objectives)
        self.objective_weights = _check_weights("objective_weights", self.objective_weights)
        self.objective_weights_final = _check_weights("objective_weights_final", self.objective_weights_final)
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

    @property
    def uses_ladder(self) -> bool:
        """Whether completions of a group are sampled at different temperatures."""
        return self.group_temperatures is not None or self.temperature_schedule != "constant"
