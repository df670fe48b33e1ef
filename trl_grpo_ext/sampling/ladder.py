r"""The ladder's numbers: the K temperatures of a group, their schedule over training, and each row's temperature.

See the package docstring (`trl_grpo_ext.sampling`) and docs/ladder.md for the layout and formulas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

LADDER_KINDS = ("linear", "geometric")
SCHEDULES = ("constant",) + LADDER_KINDS


def _check_temperature(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite temperature > 0, got {value}.")
    return value


def temperature_ladder(num_generations: int, t_min: float, t_max: float, kind: str = "linear") -> list[float]:
    r"""The K temperatures of one group, slot 0 coldest.

    linear: T_i = t_min + (t_max - t_min) * i / (K - 1); geometric: T_i = t_min * (t_max / t_min) ** (i / (K - 1)),
    for i = 0 .. K-1 (K = 1 gives [t_min]). Values are rounded to 12 decimals so that 0.7 + 0.1 reads 0.8; sampling
    runs in float32, whose resolution is far coarser.

    Args:
        num_generations (`int`):
            Group size K (>= 1).
        t_min (`float`):
            Temperature of slot 0 (> 0).
        t_max (`float`):
            Temperature of slot K-1 (>= t_min).
        kind (`str`, *optional*, defaults to `"linear"`):
            `"linear"` (evenly spaced) or `"geometric"` (evenly spaced in log-temperature).

    Returns:
        `list[float]`: the K temperatures.

    Example:
    >>> temperature_ladder(4, 0.7, 1.0)
    [0.7, 0.8, 0.9, 1.0]
    >>> temperature_ladder(3, 0.5, 2.0, kind="geometric")
    [0.5, 1.0, 2.0]
    """
    if isinstance(num_generations, bool) or not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"`num_generations` must be an integer >= 1, got {num_generations!r}.")
    if kind not in LADDER_KINDS:
        raise ValueError(f"`kind` must be one of {list(LADDER_KINDS)}, got {kind!r}.")
    t_min = _check_temperature("t_min", t_min)
    t_max = _check_temperature("t_max", t_max)
    if t_min > t_max:
        raise ValueError(f"`t_min` must be <= `t_max`, got t_min={t_min}, t_max={t_max}.")
    if num_generations == 1:
        return [t_min]
    fractions = [i / (num_generations - 1) for i in range(num_generations)]
    if kind == "linear":
        ladder = [t_min + (t_max - t_min) * f for f in fractions]
    else:
        ladder = [t_min * (t_max / t_min) ** f for f in fractions]
    return [round(t, 12) for t in ladder]


def scheduled_range(
    start: Sequence[float], final: Sequence[float] | None, step: int, max_steps: int
) -> tuple[float, float]:
    r"""The ladder's ends `(t_min, t_max)` at training step `step`.

    ends(step) = start + (final - start) * clamp(step / max_steps, 0, 1), end by end; `final=None` or
    `max_steps <= 0` keeps `start`. Rounded to 12 decimals like `temperature_ladder`.

    Args:
        start (`Sequence[float]`):
            `[t_min, t_max]` at step 0 (`temperature_range`).
        final (`Sequence[float]` or `None`):
            `[t_min, t_max]` at step `max_steps` (`temperature_range_final`).
        step (`int`):
            Current global step.
        max_steps (`int`):
            Step at which `final` is reached.

    Returns:
        `tuple[float, float]`: `(t_min, t_max)`.

    Example:
    >>> scheduled_range([0.7, 1.0], [0.5, 0.9], step=50, max_steps=100)
    (0.6, 0.95)
    """
    if len(start) != 2 or (final is not None and len(final) != 2):
        raise ValueError(f"`start` and `final` must be pairs [t_min, t_max], got start={start!r}, final={final!r}.")
    if final is None or max_steps <= 0:
        return float(start[0]), float(start[1])
    fraction = min(max(step / max_steps, 0.0), 1.0)
    t_min, t_max = (round(s + (f - s) * fraction, 12) for s, f in zip(start, final))
    return t_min, t_max


def group_ladder(
    num_generations: int,
    *,
    schedule: str,
    temperature: float,
    temperature_range: Sequence[float],
    group_temperatures: Sequence[float] | None = None,
    temperature_range_final: Sequence[float] | None = None,
    step: int = 0,
    max_steps: int = 0,
) -> list[float]:
    r"""The K temperatures of a group at training step `step`, from the fields of `GRPOExtConfig`.

    Explicit `group_temperatures` win; else `"constant"` gives [temperature] * K (TRL); else a group of one (K = 1,
    only in evaluation with `num_generations_eval=1`) gives [temperature]: one completion has no spread to diversify,
    so it is sampled, and scored, as TRL does; else
    temperature_ladder(K, *scheduled_range(temperature_range, temperature_range_final, step, max_steps), kind=schedule).

    Args:
        num_generations (`int`):
            Group size K.
        schedule (`str`):
            `"constant"`, `"linear"` or `"geometric"` (`temperature_schedule`).
        temperature (`float`):
            TRL's `temperature`, used by `"constant"`.
        temperature_range (`Sequence[float]`):
            `[t_min, t_max]` at step 0.
        group_temperatures (`Sequence[float]`, *optional*):
            Explicit K temperatures, one per slot.
        temperature_range_final (`Sequence[float]`, *optional*):
            `[t_min, t_max]` at step `max_steps`.
        step (`int`, *optional*, defaults to `0`):
            Current global step.
        max_steps (`int`, *optional*, defaults to `0`):
            Total training steps.

    Returns:
        `list[float]`: the K temperatures.

    Example:
    >>> group_ladder(4, schedule="linear", temperature=1.0, temperature_range=[0.7, 1.0])
    [0.7, 0.8, 0.9, 1.0]
    >>> group_ladder(2, schedule="constant", temperature=0.9, temperature_range=[0.7, 1.0])
    [0.9, 0.9]
    >>> group_ladder(1, schedule="linear", temperature=0.9, temperature_range=[0.7, 1.0])
    [0.9]
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {list(SCHEDULES)}, got {schedule!r}.")
    if group_temperatures is not None:
        ladder = [_check_temperature("group_temperatures", t) for t in group_temperatures]
        if len(ladder) != num_generations:
            raise ValueError(
                f"`group_temperatures` must hold num_generations={num_generations} temperatures, got {len(ladder)}."
            )
        return ladder
    if schedule == "constant" or num_generations == 1:
        return [_check_temperature("temperature", temperature)] * num_generations
    t_min, t_max = scheduled_range(temperature_range, temperature_range_final, step, max_steps)
    return temperature_ladder(num_generations, t_min, t_max, kind=schedule)


def row_temperatures(ladder: Sequence[float], num_rows: int, process_index: int = 0) -> torch.Tensor:
    r"""The temperature of each of this process's `num_rows` generation rows.

    Row j of process p is global row g = p * num_rows + j, which is slot g mod K of its group (K = len(ladder)):
    T_j = ladder[(p * num_rows + j) mod K]. Every process must hold the same `num_rows` (TRL's layout).

    Args:
        ladder (`Sequence[float]`):
            The K temperatures of a group (`group_ladder`).
        num_rows (`int`):
            Generation rows on this process (prompts repeated, as passed to `generate`).
        process_index (`int`, *optional*, defaults to `0`):
            `accelerator.process_index`.

    Returns:
        `torch.Tensor` of dtype float32 and shape `(num_rows,)`.

    Example:
    >>> row_temperatures([0.5, 1.0, 2.0], num_rows=4, process_index=1).tolist()  # global slots 1, 2, 0, 1
    [1.0, 2.0, 0.5, 1.0]
    """
    if len(ladder) == 0:
        raise ValueError("`ladder` must hold at least one temperature, got an empty sequence.")
    if num_rows < 0 or process_index < 0:
        raise ValueError(f"`num_rows` and `process_index` must be >= 0, got {num_rows} and {process_index}.")
    first = process_index * num_rows
    return torch.tensor([ladder[(first + j) % len(ladder)] for j in range(num_rows)], dtype=torch.float32)


def check_ladder_generation(args, **generators) -> None:
    """The ladder samples inside TRL's single-turn generation: refuse a trainer given `tools`, `rollout_func` or
    `environment_factory` (each calls generation on its own rows) with a ladder on."""
    if not args.uses_ladder:
        return
    for name, value in generators.items():
        if value is not None:
            raise ValueError(
                f"The temperature ladder (temperature_schedule={args.temperature_schedule!r}) runs inside "
                f"TRL's single-turn generation; `{name}` calls generation on its own rows and is not "
                "supported with it. Use temperature_schedule='constant'."
            )
