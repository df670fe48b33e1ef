"""The arms of the experiment: one line each, the `GRPOExtConfig` fields that differ from TRL's defaults.

Every arm trains from the same warm start, with the same seed, data, steps, batch and learning rate; only these
fields differ. `trl` is TRL's behaviour (the extension's fields at their defaults, which tests/test_equivalence.py
checks equal to `trl.GRPOTrainer`).
"""

from __future__ import annotations

import dataclasses

LADDER = {"temperature_schedule": "linear", "temperature_range": [0.7, 1.0]}

ARMS: dict[str, dict] = {
    "trl": {},  # constant temperature 1.0, z-score: TRL's defaults
    "ladder": {**LADDER},
    "rank": {"advantage_estimator": "rank"},
    "ladder_rank": {**LADDER, "advantage_estimator": "rank"},
    # The rung-bias correction: ladder + rank with a per-rung baseline.
    "ladder_rank_rung": {**LADDER, "advantage_estimator": "rank_rung_centred"},
    # The 0.7-1.0 ladder is also colder on average than T = 1.0; this one has the same spread around T = 1.0, so
    # against `trl` it measures the spread alone, against `ladder` the mean temperature alone.
    "ladder_centred": {"temperature_schedule": "linear", "temperature_range": [0.85, 1.15]},
}

# The closed-loop ladder joins the grid once GRPOExtConfig has its fields; finished runs are skipped, so
# adding it later only trains the new arm. Targets are explicit, so a changed default never relabels finished runs:
# 0.5 is the controller's default, 0.2 its first default (which heated the demo's ladder to its ceiling).
CLOSED_LOOP = {
    "closed_loop": {
        **LADDER,
        "advantage_estimator": "rank",
        "temperature_control": "zero_std",
        "temperature_control_target": 0.5,
    },
    "closed_loop_t02": {
        **LADDER,
        "advantage_estimator": "rank",
        "temperature_control": "zero_std",
        "temperature_control_target": 0.2,
    },
}


def available_arms() -> dict[str, dict]:
    """`ARMS`, plus the `CLOSED_LOOP` arms when this installation's `GRPOExtConfig` has `temperature_control`."""
    from ..config import GRPOExtConfig

    arms = dict(ARMS)
    if "temperature_control" in {f.name for f in dataclasses.fields(GRPOExtConfig)}:
        arms.update(CLOSED_LOOP)
    return arms


# Paired comparisons reported for every condition: (arm, reference, what the difference measures).
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("rank", "trl", "rank vs z-score advantages (constant T = 1.0)"),
    ("ladder", "trl", "ladder vs constant temperature (z-score)"),
    ("ladder_rank", "rank", "ladder vs constant temperature (rank)"),
    ("ladder_rank", "trl", "ladder + rank vs TRL"),
    ("ladder_rank_rung", "ladder_rank", "per-rung baseline vs none (ladder + rank)"),
    ("ladder_centred", "trl", "ladder 0.85-1.15 vs constant 1.0 (z-score): the spread alone"),
    ("ladder", "ladder_centred", "ladder 0.7-1.0 vs 0.85-1.15 (z-score): the mean temperature alone"),
    ("closed_loop", "ladder_rank", "closed-loop (target 0.5) vs fixed ladder (rank)"),
    ("closed_loop_t02", "ladder_rank", "closed-loop (target 0.2) vs fixed ladder (rank)"),
    ("closed_loop", "trl", "closed-loop ladder (target 0.5) + rank vs TRL"),
)
