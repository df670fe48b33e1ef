r"""Temperature-ladder group sampling: slot i of every group of K completions is sampled at its own temperature.

TRL lays the generation batch out as groups: each prompt repeated K = `num_generations` times contiguously, over the
global batch (process p holds rows p*B .. p*B+B-1, so a group may straddle two processes). The ladder gives slot i of
every group the temperature T_i:

    linear:     T_i = t_min + (t_max - t_min) * i / (K - 1)          i = 0 .. K-1, both ends used; K = 1 -> [t_min]
    geometric:  T_i = t_min * (t_max / t_min) ** (i / (K - 1))
    schedule:   [t_min, t_max] moves linearly from `temperature_range` (step 0) to `temperature_range_final`
                (last step)

A common form samples slot i at 0.7 + 0.3 * i / K, which never reaches 1.0 (K = 8: 0.7 .. 0.9625); ours uses both ends.

All K rungs are sampled in ONE `generate` call: `RowTemperatureLogitsProcessor` divides row j's logits by its
temperature, and the generation config keeps `temperature=1.0` so transformers adds no second temperature warper. The
completions can then be scored at the temperature each was drawn at, exactly, by scaling the backbone's last hidden
state of row j by T_base / T_j before TRL's fused LM head (`scale_hidden_states`, `check_exact_temperature_scoring`).
See docs/ladder.md.

Modules: `ladder` (the numbers), `processors` (transformers `generate`), `scoring` (log-probs at each row's
temperature), `metrics` (ladder metrics), `control` (the closed-loop ladder: `temperature_control`), `dynamic` (dynamic sampling: tied groups replaced by
new prompts' groups).
"""

from .control import CONTROL_SIGNALS, LadderController, next_scale, zero_std_fraction
from .dynamic import (
    RefillSampler,
    check_dynamic_sampling,
    fill_batch,
    gather_batch,
    local_rows,
    teaching_groups,
    tie_ends,
    tied_groups,
)
from .ladder import (
    LADDER_KINDS,
    SCHEDULES,
    check_ladder_generation,
    group_ladder,
    row_temperatures,
    scheduled_range,
    temperature_ladder,
)
from .metrics import distinct_fraction, reward_by_rung
from .processors import RowTemperatureLogitsProcessor, row_temperature_generation, wrapped_generate
from .scoring import check_exact_temperature_scoring, scale_hidden_states

__all__ = [
    "check_ladder_generation",
    "row_temperature_generation",
    "RefillSampler",
    "check_dynamic_sampling",
    "fill_batch",
    "gather_batch",
    "local_rows",
    "teaching_groups",
    "tie_ends",
    "tied_groups",
    "wrapped_generate",
    "CONTROL_SIGNALS",
    "LadderController",
    "LADDER_KINDS",
    "SCHEDULES",
    "RowTemperatureLogitsProcessor",
    "check_exact_temperature_scoring",
    "distinct_fraction",
    "group_ladder",
    "next_scale",
    "reward_by_rung",
    "row_temperatures",
    "scale_hidden_states",
    "scheduled_range",
    "temperature_ladder",
    "zero_std_fraction",
]
