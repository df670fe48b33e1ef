r"""Temperature-ladder group sampling: slot i of every group of K completions is sampled at its own temperature.

TRL lays the generation batch out as groups: each prompt repeated K = `num_generations` times contiguously, over the
global batch (process p holds rows p*B .. p*B+B-1, so a group may straddle two processes). The ladder gives slot i of
every group the temperature T_i:

    linear:     T_i = t_min + (t_max - t_min) * i / (K - 1)          i = 0 .. K-1, both ends used; K = 1 -> [t_min]
    geometric:  T_i = t_min * (t_max / t_min) ** (i / (K - 1))
    schedule:   [t_min, t_max] moves linearly from `temperature_range` (step 0) to `temperature_range_final`
                (last step)

Seed 001 samples slot i at 0.7 + 0.3 * i / K, which never reaches 1.0 (K = 8: 0.7 .. 0.9625); ours uses both ends.

All K rungs are sampled in ONE `generate` call: `RowTemperatureLogitsProcessor` divides row j's logits by its
temperature, and the generation config keeps `temperature=1.0` so transformers adds no second temperature warper. The
completions can then be scored at the temperature each was drawn at, exactly, by scaling the backbone's last hidden
state of row j by T_base / T_j before TRL's fused LM head (`scale_hidden_states`, `check_exact_temperature_scoring`).
See docs/ladder.md.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch
from transformers import LogitsProcessor

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

    Explicit `group_temperatures` win; else `"constant"` gives [temperature] * K (TRL); else
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
    if schedule == "constant":
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


class RowTemperatureLogitsProcessor(LogitsProcessor):
    r"""Divide the next-token scores of row j by its own temperature T_j: scores'_j = scores_j / T_j.

    Row by row this is transformers' `TemperatureLogitsWarper(T_j)`: the same IEEE float32 division, so on CPU the
    result is bit-identical (tested). On CUDA, PyTorch computes the warper's `tensor / python_float` as a
    multiplication by the float32 reciprocal ("may lose one bit of precision", in its kernel), while dividing by a
    tensor of temperatures is a true division: the two can differ in the last bit of a logit there.

    Use it with `model.generate(..., do_sample=True, temperature=1.0, logits_processor=LogitsProcessorList([proc]))`.
    In transformers 5.23, `GenerationMixin._get_logits_processor` builds the non-sampling processors (repetition
    penalty, ...), then merges the custom `logits_processor` list after them, and only then appends the sampling
    warpers: `TemperatureLogitsWarper` (only when `temperature != 1.0`), `TopKLogitsWarper`, `TopPLogitsWarper`,
    `MinPLogitsWarper`, ... So with `temperature=1.0` the sampling pipeline is "divide by T_j, then top-k / top-p /
    min-p", the same as `generate(temperature=T_j)` for each row alone, with no second temperature warper. `_sample`
    hands the processors float32 scores; other dtypes are divided in float32 and cast back.

    Args:
        temperatures (`torch.Tensor` or `Sequence[float]`):
            One temperature per row of the generation batch (`row_temperatures`), each finite and > 0.

    Example:
    >>> proc = RowTemperatureLogitsProcessor([0.5, 2.0])
    >>> proc(None, torch.tensor([[1.0, -1.0], [1.0, -1.0]]))
    tensor([[ 2.0000, -2.0000],
            [ 0.5000, -0.5000]])
    """

    def __init__(self, temperatures: torch.Tensor | Sequence[float]):
        temperatures = torch.as_tensor(temperatures, dtype=torch.float32).detach().cpu()
        if temperatures.dim() != 1 or temperatures.numel() == 0:
            raise ValueError(
                f"`temperatures` must be a non-empty 1-D sequence, got shape {tuple(temperatures.shape)}."
            )
        if not bool(torch.isfinite(temperatures).all() and (temperatures > 0).all()):
            raise ValueError(f"`temperatures` must all be finite and > 0, got {temperatures.tolist()}.")
        self.temperatures = temperatures
        # Copied to the scores' device once, not on every generated token.
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.temperatures):
            raise ValueError(
                f"RowTemperatureLogitsProcessor holds {len(self.temperatures)} row temperatures but got scores for "
                f"{scores.shape[0]} rows. Pass one temperature per row of `input_ids` and generate with "
                "num_return_sequences=1 (repeat the prompts instead) and num_beams=1."
            )
        if scores.device not in self._on_device:
            self._on_device[scores.device] = self.temperatures.to(scores.device)[:, None]
        return (scores / self._on_device[scores.device]).to(scores.dtype)


# Of the config attributes TRL's fused LM head reads (`trl.trainer.utils.add_fused_lm_head`), `logit_scale`,
# `output_multiplier`, `lm_head_multiplier` and `logits_scaling` multiply the logits by a constant, which commutes with
# scaling the hidden state; a soft-cap, c * tanh(z / c), does not.
_NONLINEAR_HEAD_ATTRIBUTES = ("final_logit_softcapping",)


def check_exact_temperature_scoring(model: torch.nn.Module) -> None:
    r"""Raise unless scaling the last hidden state scores each row exactly at its own temperature.

    TRL's fused LM head computes log_softmax(s * (W h + b) / T_base), s a constant logit scale (`logit_scale`,
    `output_multiplier`, `lm_head_multiplier` or 1 / `logits_scaling`), softcapped first when the config sets
    `final_logit_softcapping`. Feeding it h * T_base / T_j gives log_softmax(s * W h / T_j), the log-probs at T_j,
    if and only if the head is linear: no bias b (b would not be scaled) and no soft-cap (tanh is not linear).

    Args:
        model (`torch.nn.Module`):
            A causal LM (`PreTrainedModel`, possibly wrapped by PEFT).

    Raises:
        `ValueError`: naming the architecture and the reason.

    Example:
    >>> from trl_grpo_ext.tiny import build_tiny_model
    >>> check_exact_temperature_scoring(build_tiny_model())  # Qwen2: bias-free linear head, no soft-cap
    """
    config = model.config.get_text_config()
    architecture = f"{type(model).__name__} (model_type={getattr(config, 'model_type', None)!r})"
    advice = "Set `ladder_logprob_temperature='base'` or use a constant `temperature_schedule`."
    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None:
        raise ValueError(f"{architecture}: no linear output embedding (lm_head) to score through. {advice}")
    if getattr(head, "bias", None) is not None:
        raise ValueError(
            f"{architecture}: lm_head has a bias, so scaling the hidden state does not scale the logits. {advice}"
        )
    for name in _NONLINEAR_HEAD_ATTRIBUTES:
        value = getattr(config, name, None)
        if value is not None:
            raise ValueError(f"{architecture}: {name}={value} is not linear in the logits. {advice}")


def scale_hidden_states(hidden: torch.Tensor, row_scale: torch.Tensor) -> torch.Tensor:
    r"""Scale row j of the last hidden state by row_scale_j = T_base / T_j, so that the head scores it at T_j.

    h'_j = h_j * T_base / T_j, hence log_softmax(W h'_j / T_base) = log_softmax(W h_j / T_j) for a bias-free linear head
    (`check_exact_temperature_scoring`). The product is computed in the promoted dtype and cast back to `hidden.dtype`
    (one rounding in bfloat16/float16).

    Args:
        hidden (`torch.Tensor` of shape `(B, T, H)`):
            Last hidden state of the backbone.
        row_scale (`torch.Tensor` of shape `(B,)`):
            T_base / T_j for each row.

    Returns:
        `torch.Tensor` of the shape and dtype of `hidden`.

    Example:
    >>> scale_hidden_states(torch.ones(2, 1, 2), torch.tensor([2.0, 0.5]))
    tensor([[[2.0000, 2.0000]],
    <BLANKLINE>
            [[0.5000, 0.5000]]])
    """
    if row_scale.shape != hidden.shape[:1]:
        raise ValueError(
            f"`row_scale` must have shape ({hidden.shape[0]},), one scale per row of `hidden`, got {tuple(row_scale.shape)}."
        )
    row_scale = row_scale.to(hidden.device).view(-1, *([1] * (hidden.dim() - 1)))
    return (hidden * row_scale).to(hidden.dtype)


def distinct_fraction(completions: Sequence[Hashable], num_generations: int) -> float:
    r"""Mean over groups of (number of distinct completions in the group) / K: the `ladder/distinct_frac` metric.

    Args:
        completions (`Sequence[Hashable]`):
            The global batch's completions (texts or tuples of token ids), groups of K contiguous.
        num_generations (`int`):
            Group size K; `len(completions)` must be a multiple of it.

    Returns:
        `float` in [1/K, 1].

    Example:
    >>> distinct_fraction(["a", "a", "b", "c"], num_generations=2)
    0.75
    """
    if num_generations < 1 or len(completions) % num_generations:
        raise ValueError(
            f"`completions` must hold whole groups of num_generations={num_generations}, got {len(completions)}."
        )
    groups = [completions[i : i + num_generations] for i in range(0, len(completions), num_generations)]
    if not groups:
        return float("nan")
    return sum(len(set(group)) / num_generations for group in groups) / len(groups)


def reward_by_rung(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    r"""Mean reward of each slot i over the groups of the global batch: the `ladder/reward_rung_{i}` metrics.

    reward_rung_i = nanmean_g rewards[g * K + i] (NaN marks an unscorable completion in TRL).

    Args:
        rewards (`torch.Tensor` of shape `(G * K,)`):
            Rewards of the global batch, groups of K contiguous.
        num_generations (`int`):
            Group size K.

    Returns:
        `torch.Tensor` of shape `(K,)`.

    Example:
    >>> reward_by_rung(torch.tensor([0.0, 1.0, 2.0, 3.0]), num_generations=2)
    tensor([1., 2.])
    """
    return torch.nanmean(rewards.view(-1, num_generations), dim=0)
