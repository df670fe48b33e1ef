r"""Ladder metrics on the global batch: distinct completions per group and mean reward per rung."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch


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
