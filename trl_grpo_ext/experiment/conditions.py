r"""Reward conditions: how the training reward is corrupted, as pure functions, and the reward function TRL calls.

Held-out accuracy is always measured against the clean exact answer (`tasks.is_correct`); only the reward the
trainer sees is corrupted. Every condition starts from one of two clean scores of a completion c for answer a:

    exact(c, a)   = 1 if c.strip() == a else 0                              (binary, the demo's accuracy)
    partial(c, a) = #{j : c_j == a_j} / max(|c|, |a|)                       (dense partial credit in [0, 1])

and applies a corruption:

    clean          r = exact
    outliers       r = V with probability p, else exact                     (a reward-model glitch or hack, V = 10)
    distorted      r = exp(s_g * partial), s_g ~ U(0, s_max) per group      (a monotone distortion, steepness per prompt)
    noisy_partial  r = partial + N(0, sigma^2)                              (a noisy dense reward)

The random draws come from a `random.Random` the caller seeds, so a run is reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

OUTLIER_VALUE = 10.0


def exact_reward(completion: str, answer: str) -> float:
    """1.0 if the completion is exactly the answer (surrounding whitespace aside), else 0.0.

    Example:
    >>> exact_reward(" 321", "321"), exact_reward("312", "321")
    (1.0, 0.0)
    """
    from ..kit.tasks import is_correct

    return 1.0 if is_correct(completion, answer) else 0.0


def partial_credit(completion: str, answer: str) -> float:
    """Fraction of positions where the completion's characters match the answer's, over the longer length.

    partial(c, a) = #{j : c_j == a_j} / max(|c|, |a|), c stripped of surrounding whitespace; 1.0 iff exact.

    Example:
    >>> partial_credit("321", "321"), partial_credit("311", "321"), partial_credit("3214", "321"), partial_credit("", "321")
    (1.0, 0.6666666666666666, 0.75, 0.0)
    """
    completion = completion.strip()
    longest = max(len(completion), len(answer))
    if longest == 0:
        return 1.0
    return sum(x == y for x, y in zip(completion, answer)) / longest


def add_outliers(rewards: Sequence[float], p: float, rng: random.Random, value: float = OUTLIER_VALUE) -> list[float]:
    """Replace each reward, independently with probability `p`, by the spurious `value`.

    Example:
    >>> add_outliers([0.0, 1.0, 0.0, 1.0], p=0.5, rng=random.Random(0))
    [0.0, 1.0, 10.0, 10.0]
    """
    return [value if rng.random() < p else float(r) for r in rewards]


def group_monotone_distortion(
    rewards: Sequence[float], group_size: int, s_max: float, rng: random.Random
) -> list[float]:
    """r' = exp(s_g * r) with one steepness s_g ~ U(0, s_max) per contiguous group of `group_size`.

    Strictly increasing within a group (ranks unchanged), but it stretches the top of the scale by a different amount
    for each prompt, as an uncalibrated reward model does.

    Example:
    >>> [round(x, 3) for x in group_monotone_distortion([0.0, 0.5, 1.0, 0.0], 2, s_max=4.0, rng=random.Random(0))]
    [1.0, 5.413, 20.735, 1.0]
    """
    if len(rewards) % group_size:
        raise ValueError(f"`rewards` must hold whole groups of {group_size}, got {len(rewards)}.")
    out = []
    for start in range(0, len(rewards), group_size):
        steepness = rng.uniform(0.0, s_max)
        out.extend(math.exp(steepness * float(r)) for r in rewards[start : start + group_size])
    return out


def add_gaussian_noise(rewards: Sequence[float], sigma: float, rng: random.Random) -> list[float]:
    """r' = r + N(0, sigma^2), independently per reward.

    Example:
    >>> [round(x, 3) for x in add_gaussian_noise([0.5, 0.5], sigma=0.1, rng=random.Random(0))]
    [0.594, 0.36]
    """
    return [float(r) + rng.gauss(0.0, sigma) for r in rewards]


def by_slot(values: Sequence[float], group_size: int) -> list[float]:
    """The mean of `values` per slot i = position mod `group_size` (the ladder's rung i), over the groups.

    Example:
    >>> by_slot([1.0, 0.0, 0.0, 0.0, 1.0, 1.0], 3)
    [0.5, 0.5, 0.5]
    """
    groups = max(len(values) // group_size, 1)
    return [sum(values[i::group_size]) / groups for i in range(group_size)]


@dataclass(frozen=True)
class Condition:
    """One reward condition: its clean score (`exact` or `partial`), its corruption and the candidate levels."""

    name: str
    score: str  # "exact" or "partial"
    level_name: str | None  # the corruption's parameter ("p", "s_max", "sigma"); None: clean
    candidate_levels: tuple[float, ...] = ()
    description: str = ""


# Candidate levels are tried with the baseline arm on the validation split (`trl-grpo-ext experiment --select-levels`);
# the grid uses the chosen one (LEVELS below, or a levels.json written by the selection).
CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        Condition("clean", "exact", None, (), "exact-match reward (1 / 0)"),
        Condition(
            "outliers", "exact", "p", (0.05, 0.1, 0.2), f"exact reward; with probability p it is {OUTLIER_VALUE:g}"
        ),
        Condition("distorted", "partial", "s_max", (4.0, 12.0), "exp(s_g * partial credit), s_g ~ U(0, s_max)"),
        Condition("noisy_partial", "partial", "sigma", (0.15, 0.4), "partial credit + N(0, sigma^2)"),
    )
}


def corrupt(condition: Condition, level: float | None, clean: list[float], group_size: int, rng: random.Random):
    """The rewards the trainer sees under `condition` at `level`, from the clean scores of one batch."""
    if condition.level_name is None:
        return list(clean)
    if condition.name == "outliers":
        return add_outliers(clean, level, rng)
    if condition.name == "distorted":
        return group_monotone_distortion(clean, group_size, level, rng)
    if condition.name == "noisy_partial":
        return add_gaussian_noise(clean, level, rng)
    raise ValueError(f"`condition` must be one of {list(CONDITIONS)}, got {condition.name!r}.")


class ConditionReward:
    """The reward function TRL calls: clean score, then the condition's corruption; records clean accuracy by slot.

    `history` holds, per call (one per generation batch), the clean exact accuracy of each slot i = position mod K
    (the ladder's rung i), so the rung effect is measured against the truth, not the corrupted reward;
    `distinct_history` the fraction of distinct completions per group (`ladder/distinct_frac`'s measure, recorded
    here for every arm: the trainer logs it only when a ladder is set).
    """

    def __init__(self, condition: str, level: float | None, group_size: int, seed: int):
        if condition not in CONDITIONS:
            raise ValueError(f"`condition` must be one of {list(CONDITIONS)}, got {condition!r}.")
        self.condition = CONDITIONS[condition]
        self.level = level
        self.group_size = group_size
        self.rng = random.Random(f"reward-{condition}-{seed}")
        self.history: list[list[float]] = []
        self.distinct_history: list[float] = []
        self.__name__ = "reward"

    def __call__(self, prompts, completions, answer, **kwargs) -> list[float]:
        from ..sampling import distinct_fraction  # torch: not at start-up

        exact = [exact_reward(c, a) for c, a in zip(completions, answer)]
        self.history.append(by_slot(exact, self.group_size))
        self.distinct_history.append(distinct_fraction(list(completions), self.group_size))
        clean = (
            exact if self.condition.score == "exact" else [partial_credit(c, a) for c, a in zip(completions, answer)]
        )
        return corrupt(self.condition, self.level, clean, self.group_size, self.rng)
