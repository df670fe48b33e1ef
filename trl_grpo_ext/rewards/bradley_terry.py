r"""The Bradley-Terry side of the online reward model: the loss, the within-group pairs, the pair selectors, labels.

A labeler says which of two completions $(y_a, y_b)$ of one prompt is better, $y \in \{1, 0.5, 0\}$ (a, tie, b), and
the reward model $r$ learns from it with TRL RewardTrainer's Bradley-Terry loss, a soft label for ties and an optional
margin $m$:

$$\mathcal{L} = -\big[\, y \log \sigma(r_a - r_b - m) + (1 - y) \log \sigma(r_b - r_a - m) \,\big]$$

Pairs are drawn within groups (the K = `num_generations` contiguous rows TRL lays out per prompt), at random or where
the model is least sure.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "LABELS",
    "SELECTORS",
    "bradley_terry_loss",
    "check_label",
    "group_pairs",
    "select_random",
    "select_uncertain",
]

LABELS = (0.0, 0.5, 1.0)


def bradley_terry_loss(
    scores_a: torch.Tensor, scores_b: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor | float = 0.0
) -> torch.Tensor:
    r"""Mean Bradley-Terry loss $-[y \log\sigma(r_a - r_b - m) + (1-y) \log\sigma(r_b - r_a - m)]$ over pairs.

    With `labels` all 1 this is TRL RewardTrainer's `-logsigmoid(chosen - rejected - margin).mean()`.

    Example:
    ```python
    >>> round(bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([1.0])).item(), 6)
    0.313262
    >>> round(bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([0.5])).item(), 6)
    0.813262

    ```
    """
    diff = scores_a - scores_b
    return -(labels * F.logsigmoid(diff - margins) + (1 - labels) * F.logsigmoid(-diff - margins)).mean()


def group_pairs(num_completions: int, num_generations: int, texts: Sequence[str] | None = None) -> list[tuple]:
    """All pairs `(i, j)`, i < j, of completions of the same group (blocks of `num_generations` contiguous rows).

    With `texts`, pairs of identical texts are left out (their label is a foregone tie).

    Example:
    ```python
    >>> group_pairs(4, 2)
    [(0, 1), (2, 3)]
    >>> group_pairs(6, 3, texts=["a", "a", "b", "c", "d", "e"])
    [(0, 2), (1, 2), (3, 4), (3, 5), (4, 5)]

    ```
    """
    if isinstance(num_generations, bool) or not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"`num_generations` must be an integer >= 1, got {num_generations!r}.")
    if num_completions % num_generations:
        raise ValueError(
            f"{num_completions} completions are not a whole number of groups of num_generations={num_generations}."
        )
    pairs = []
    for start in range(0, num_completions, num_generations):
        for i in range(start, start + num_generations):
            for j in range(i + 1, start + num_generations):
                if texts is None or texts[i] != texts[j]:
                    pairs.append((i, j))
    return pairs


def select_random(pairs: Sequence[tuple], k: int, scores: Sequence[float], rng: random.Random) -> list[tuple]:
    """`k` pairs drawn uniformly without replacement (all of them when there are fewer), in their original order.

    Example:
    ```python
    >>> select_random([(0, 1), (0, 2), (1, 2)], 2, [0.0, 0.0, 0.0], random.Random(0))
    [(0, 2), (1, 2)]

    ```
    """
    if k >= len(pairs):
        return list(pairs)
    chosen = sorted(rng.sample(range(len(pairs)), k))
    return [pairs[i] for i in chosen]


def select_uncertain(pairs: Sequence[tuple], k: int, scores: Sequence[float], rng: random.Random) -> list[tuple]:
    r"""The `k` pairs whose Bradley-Terry probability $\sigma(r_i - r_j)$ is closest to 0.5 (smallest $|r_i - r_j|$).

    Ties keep the pairs' order; `rng` is unused (the choice is deterministic).

    Example:
    ```python
    >>> select_uncertain([(0, 1), (0, 2), (1, 2)], 1, [0.0, 2.0, 0.1], random.Random(0))
    [(0, 2)]

    ```
    """
    ranked = sorted(range(len(pairs)), key=lambda n: abs(scores[pairs[n][0]] - scores[pairs[n][1]]))
    return [pairs[n] for n in sorted(ranked[:k])]


SELECTORS: dict[str, Callable] = {"random": select_random, "uncertain": select_uncertain}


def check_label(label: Any) -> float | None:
    """A label as a float in {0, 0.5, 1}, or `None` (abstain); a `ValueError` for anything else (an exception too).

    Example:
    ```python
    >>> check_label(1), check_label(0.5), check_label(None)
    (1.0, 0.5, None)
    >>> check_label(2)
    Traceback (most recent call last):
    ...
    ValueError: invalid label 2: a label must be 1 (a wins), 0 (b wins), 0.5 (tie) or None (abstain)

    ```
    """
    if label is None:
        return None
    if isinstance(label, BaseException):
        raise ValueError(f"the labeler failed on this pair: {type(label).__name__}: {label}")
    if not isinstance(label, bool) and isinstance(label, (int, float)) and float(label) in LABELS:
        return float(label)
    raise ValueError(f"invalid label {label!r}: a label must be 1 (a wins), 0 (b wins), 0.5 (tie) or None (abstain)")
