r"""Group-relative advantage estimators: pure torch functions of the rewards, no trainer state.

Rewards arrive as one flat tensor of shape `(N,)`, laid out in contiguous groups of `group_size` = K completions of
the same prompt (TRL's layout: completion i belongs to group i // K). A NaN reward marks an unscorable completion:
it is left out of every group statistic and its advantage is exactly 0.

    zscore:  A_i = (r_i - mean_G) / (std_G + eps)                        (TRL's group scaling, the default)
    rank:    A_i = 1 / (n - 1) * sum_{j in G} sign(r_i - r_j)            (n = scorable members of the group)
    *_rung_centred:  A'_i = A_i - mean over the batch's groups of the advantages in slot i mod K (per-rung baseline)

Estimators are looked up by name with `get_advantage_estimator` ("zscore", "rank", anything added with
`register_advantage_estimator`, or an import path "package.module:function"). A user estimator has the signature
`(rewards, group_size) -> advantages`, both tensors of shape `(N,)`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from trl.trainer.utils import nanstd

from .loading import load_callable

AdvantageEstimator = Callable[[torch.Tensor, int], torch.Tensor]

AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
_STD_MODES = ("population", "sample")
_ESTIMATORS: dict[str, AdvantageEstimator] = {}


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """View `(N,)` rewards as `(N // K, K)`, one row per group; validates the layout."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"`group_size` must be a positive integer, got {group_size!r}.")
    if rewards.dim() != 1:
        raise ValueError(f"`rewards` must be 1-D of shape (N,), got shape {tuple(rewards.shape)}.")
    if rewards.numel() % group_size != 0:
        raise ValueError(
            f"`group_size` must divide the number of rewards, got group_size={group_size} for {rewards.numel()} rewards."
        )
    if not rewards.is_floating_point():
        rewards = rewards.float()
    return rewards.reshape(-1, group_size)


def zscore_advantages(
    rewards: torch.Tensor, group_size: int, *, std: str = "sample", eps: float = 1e-4
) -> torch.Tensor:
    r"""
    Z-score of each reward within its group: A_i = (r_i - mean_G) / (std_G + eps), NaN-aware.

    The defaults are TRL's group scaling, bit for bit: `std="sample"` is `trl.trainer.utils.nanstd` (Bessel-corrected,
    so a group with one scorable member has no std and gets advantage 0) and `eps=1e-4`. `std="population"` divides
    by n instead of n - 1, as numpy's `np.std` does. A group whose rewards are all equal has r_i - mean_G = 0 up to
    float rounding, so with `eps > 0` its advantages are 0 up to rounding / eps (TRL's behaviour, kept exactly);
    with `eps=0` they are exactly 0.

    Args:
        rewards (`torch.Tensor`):
            Rewards of shape `(N,)` in contiguous groups of `group_size`; NaN marks an unscorable completion.
        group_size (`int`):
            Completions per prompt, K; must divide N.
        std (`str`, *optional*, defaults to `"sample"`):
            `"sample"` (n - 1 denominator, TRL) or `"population"` (n denominator, numpy).
        eps (`float`, *optional*, defaults to `1e-4`):
            Added to the std before dividing; TRL uses 1e-4.

    Returns:
        `torch.Tensor`: advantages of shape `(N,)`, 0 where the reward is NaN.

    Example:
    ```python
    >>> zscore_advantages(torch.tensor([0.9, 0.7, 0.4]), group_size=3)  # TRL: sample std 0.2517
    tensor([ 0.9268,  0.1324, -1.0592])
    >>> zscore_advantages(torch.tensor([0.9, 0.7, 0.4]), group_size=3, std="population", eps=0.0)  # numpy std 0.2055
    tensor([ 1.1356,  0.1622, -1.2978])
    >>> zscore_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, float("nan")]), group_size=3)
    tensor([ 1.1545, -0.5773, -0.5773,  0.0000,  0.0000,  0.0000])
    ```
    """
    if std not in _STD_MODES:
        raise ValueError(f"`std` must be one of {list(_STD_MODES)}, got {std!r}.")
    if not eps >= 0:
        raise ValueError(f"`eps` must be >= 0, got {eps}.")
    grouped = _grouped(rewards, group_size)

    # TRL's own `nanstd` and the operations of its `_generate_and_score_completions`: bitwise equal.
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    if std == "sample":
        spread = nanstd(grouped, dim=1, keepdim=True)
    else:
        spread = torch.sqrt(torch.nanmean((grouped - mean) ** 2, dim=1, keepdim=True))
    advantages = (grouped - mean) / (spread + eps)

    if eps == 0:
        # Without eps a constant group would divide rounding noise by rounding noise; its advantage is 0.
        scorable = ~torch.isnan(grouped)
        low = torch.where(scorable, grouped, torch.inf).amin(dim=1, keepdim=True)
        high = torch.where(scorable, grouped, -torch.inf).amax(dim=1, keepdim=True)
        advantages = advantages.masked_fill(low == high, 0.0)
    return torch.nan_to_num(advantages, nan=0.0).reshape(-1)


def rank_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    r"""
    Rank advantage: A_i = 1 / (n - 1) * sum_j sign(r_i - r_j) over the n scorable (non-NaN) members j of i's group.

    Equivalently (#members below r_i - #members above r_i) / (n - 1). With distinct rewards and n = K this is
    (K + 1 - 2 * rank_i) / (K - 1), rank_i = |{j : r_j > r_i}| + 1: the best completion gets +1, the worst -1, evenly
    spaced in between. Ties get equal advantages, every group sums to 0, values lie in [-1, 1], and any strictly
    increasing transform of the rewards leaves the advantages unchanged. A group with all rewards equal, or with
    fewer than two scorable members, gets 0; so do NaN rewards.

    Computed by sorting each group once (O(K log K) per group, O(N) memory): in the sorted row, the members below
    position p are those before the first copy of its value, the members above those after the last copy.

    Args:
        rewards (`torch.Tensor`):
            Rewards of shape `(N,)` in contiguous groups of `group_size`; NaN marks an unscorable completion.
        group_size (`int`):
            Completions per prompt, K; must divide N.

    Returns:
        `torch.Tensor`: advantages of shape `(N,)`, 0 where the reward is NaN.

    Example:
    ```python
    >>> rank_advantages(torch.tensor([0.9, 0.7, 0.4]), group_size=3)
    tensor([ 1.,  0., -1.])
    >>> rank_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.9, float("nan"), 0.4, 0.7]), group_size=4)
    tensor([ 0.6667, -0.6667, -0.6667,  0.6667,  1.0000,  0.0000, -1.0000,  0.0000])
    ```
    """
    grouped = _grouped(rewards, group_size)
    k = grouped.shape[1]
    n = (~torch.isnan(grouped)).sum(dim=1, keepdim=True, dtype=torch.int32)  # int32: a third less time than int64

    # Ascending sort puts NaN last, so the scorable values fill sorted positions 0 .. n-1.
    sorted_rewards, order = torch.sort(grouped, dim=1)
    position = torch.arange(k, device=grouped.device, dtype=torch.int32)
    starts_run = torch.ones_like(sorted_rewards, dtype=torch.bool)
    starts_run[:, 1:] = sorted_rewards[:, 1:] != sorted_rewards[:, :-1]
    ends_run = torch.ones_like(starts_run)
    ends_run[:, :-1] = starts_run[:, 1:]
    first = torch.where(starts_run, position, 0).cummax(dim=1).values  # = #members below
    last = torch.where(ends_run, position, k - 1).flip(1).cummin(dim=1).values.flip(1)  # = n - 1 - #members above

    below_minus_above = first + last + 1 - n
    sorted_advantages = below_minus_above.to(grouped.dtype) / (n - 1).clamp(min=1).to(grouped.dtype)
    sorted_advantages = sorted_advantages.masked_fill(position >= n, 0.0)
    return torch.empty_like(sorted_advantages).scatter_(1, order, sorted_advantages).reshape(-1)


def center_by_rung(advantages: torch.Tensor, group_size: int, scorable: torch.Tensor | None = None) -> torch.Tensor:
    r"""
    Per-rung baseline: subtract from each advantage the mean advantage of its slot (rung) over the batch's groups.

        A'_{g,i} = A_{g,i} - mean_{g' : r_{g',i} scorable} A_{g',i}        (slot i = position mod K, TRL's layout)

    With a temperature ladder, slot i is always sampled at the same temperature, and colder slots score higher on
    average, so a group baseline gives the cold slots a positive advantage on average ("being sampled cold" is
    rewarded). Centring each slot over the batch removes that systematic part and keeps the within-slot comparison.
    Unscorable rows (`scorable` False) stay at 0 and are left out of the means.

    Args:
        advantages (`torch.Tensor`):
            Advantages of shape `(N,)`, in contiguous groups of `group_size`.
        group_size (`int`):
            Completions per prompt, K; must divide N.
        scorable (`torch.BoolTensor`, *optional*):
            Shape `(N,)`; rows to use (default: all).

    Returns:
        `torch.Tensor`: shape `(N,)`.

    Example:
    ```python
    >>> center_by_rung(torch.tensor([1.0, -1.0, 0.0, 0.0]), group_size=2)  # slot 0 mean 0.5, slot 1 mean -0.5
    tensor([ 0.5000, -0.5000, -0.5000,  0.5000])
    ```
    """
    grouped = _grouped(advantages, group_size)
    mask = torch.ones_like(grouped, dtype=torch.bool) if scorable is None else scorable.reshape(grouped.shape)
    count = mask.sum(dim=0, keepdim=True).clamp(min=1)
    rung_mean = torch.where(mask, grouped, 0.0).sum(dim=0, keepdim=True) / count
    return torch.where(mask, grouped - rung_mean, 0.0).reshape(-1)


def rank_rung_centred_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    r"""
    Rank advantages with a per-rung baseline: `center_by_rung(rank_advantages(r, K), K)` (registered as
    `"rank_rung_centred"`). NaN rewards get 0 and are left out of the rung means.

    Example:
    ```python
    >>> rank_rung_centred_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0]), group_size=2)
    tensor([ 0.6667, -0.6667,  0.6667, -0.6667, -1.3333,  1.3333])
    ```
    """
    return center_by_rung(rank_advantages(rewards, group_size), group_size, ~torch.isnan(rewards.reshape(-1)))


def zscore_rung_centred_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    r"""
    Z-score advantages (TRL's) with a per-rung baseline: `center_by_rung(zscore_advantages(r, K), K)` (registered as
    `"zscore_rung_centred"`). NaN rewards get 0 and are left out of the rung means.

    Example:
    ```python
    >>> zscore_rung_centred_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0]), group_size=2)
    tensor([ 0.4713, -0.4713,  0.4713, -0.4713, -0.9427,  0.9427])
    ```
    """
    return center_by_rung(zscore_advantages(rewards, group_size), group_size, ~torch.isnan(rewards.reshape(-1)))


def group_reward_std_is_zero(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    r"""
    Whether each row's group has zero reward std, computed as TRL computes `frac_reward_zero_std`.

    is_zero_i = isclose(nanstd_G, 0) with TRL's Bessel-corrected `nanstd`, so the metric means the same for every
    estimator. Two quirks come with TRL's definition: a group with fewer than two scorable members has a NaN std and
    counts as *not* zero-std (except group_size=1, which TRL counts as zero-std), and a constant group whose mean does
    not round exactly (e.g. all 0.7) can leave a std of ~1e-7, above `isclose`'s 1e-8 tolerance.

    Args:
        rewards (`torch.Tensor`):
            Rewards of shape `(N,)` in contiguous groups of `group_size`; NaN marks an unscorable completion.
        group_size (`int`):
            Completions per prompt, K; must divide N.

    Returns:
        `torch.BoolTensor`: shape `(N,)`, the group's flag repeated on each of its rows.

    Example:
    ```python
    >>> group_reward_std_is_zero(torch.tensor([1.0, 1.0, 0.0, 0.5, 0.5, float("nan")]), group_size=3)
    tensor([False, False, False,  True,  True,  True])
    ```
    """
    grouped = _grouped(rewards, group_size)
    if group_size == 1:
        return torch.ones(grouped.shape[0], dtype=torch.bool, device=grouped.device)
    std = nanstd(grouped, dim=1, keepdim=True)
    return torch.isclose(std, torch.zeros_like(std)).expand_as(grouped).reshape(-1)


def weighted_rewards(rewards_per_func: torch.Tensor, reward_weights: torch.Tensor) -> torch.Tensor:
    r"""r_j = sum_k w_k * rewards_per_func[j, k], NaN skipped; NaN where every objective is NaN (as TRL sums them).

    Example:
    >>> nan = float("nan")
    >>> weighted_rewards(torch.tensor([[1.0, 0.0], [nan, 1.0], [nan, nan]]), torch.tensor([0.8, 0.2])).tolist()
    [0.800000011920929, 0.20000000298023224, nan]
    """
    rewards = (rewards_per_func * reward_weights.to(rewards_per_func.device)).nansum(dim=1)
    rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    return rewards


def estimate_advantages(
    rewards_per_func: torch.Tensor,
    weights: torch.Tensor,
    group_size: int,
    estimator: AdvantageEstimator | str,
    aggregation: str = "sum_then_normalize",
) -> torch.Tensor:
    r"""
    Advantages from TRL's `(N, F)` reward matrix, with `estimator` in place of TRL's group normalisation.

    A row whose F rewards are all NaN is unscorable and gets advantage 0. The two modes mirror TRL's
    `multi_objective_aggregation`:

        sum_then_normalize:  r = nansum_k(w_k * R[:, k]);  A = estimator(r, K)
        normalize_then_sum:  r = nansum_k(w_k * estimator(R[:, k], K));  A = (r - nanmean(r)) / (nanstd(r) + 1e-4)

    With `estimator=zscore_advantages` both reproduce TRL's advantages for `scale_rewards="group"`.

    Args:
        rewards_per_func (`torch.Tensor`):
            Rewards of shape `(N, F)`, one column per reward function, NaN where the function returned None.
        weights (`torch.Tensor`):
            Reward weights of shape `(F,)`.
        group_size (`int`):
            Completions per prompt, K; must divide N.
        estimator (`Callable[[torch.Tensor, int], torch.Tensor]` or `str`):
            An estimator, or a name/import path for `get_advantage_estimator`.
        aggregation (`str`, *optional*, defaults to `"sum_then_normalize"`):
            `"sum_then_normalize"` or `"normalize_then_sum"`, as TRL's `multi_objective_aggregation`.

    Returns:
        `torch.Tensor`: advantages of shape `(N,)`.

    Example:
    ```python
    >>> rewards_per_func = torch.tensor([[1.0, 0.9], [0.0, 0.7], [0.0, 0.4], [float("nan"), float("nan")]])
    >>> estimate_advantages(rewards_per_func, torch.tensor([1.0, 1.0]), 4, rank_advantages)
    tensor([ 1.,  0., -1.,  0.])
    ```
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"`multi_objective_aggregation` must be one of {list(AGGREGATIONS)}, got {aggregation!r}.")
    if isinstance(estimator, str):
        estimator = get_advantage_estimator(estimator)
    if rewards_per_func.dim() != 2 or weights.shape != (rewards_per_func.shape[1],):
        raise ValueError(
            f"`rewards_per_func` must be (N, F) and `weights` (F,), got {tuple(rewards_per_func.shape)} and "
            f"{tuple(weights.shape)}."
        )
    weights = weights.to(rewards_per_func)
    unscorable = torch.isnan(rewards_per_func).all(dim=1)

    if aggregation == "sum_then_normalize":
        advantages = estimator(weighted_rewards(rewards_per_func, weights), group_size)
    else:
        # One call per reward function (F is small). Each column is passed as a view, not a copy: TRL reduces the
        # strided (G, K, F) layout, and the same layout keeps the float rounding, and so the z-score, equal to TRL's.
        columns = [estimator(rewards_per_func[:, k], group_size) for k in range(rewards_per_func.shape[1])]
        per_func = torch.stack(columns, dim=1)
        rewards = (per_func * weights.unsqueeze(0)).nansum(dim=1)
        rewards[unscorable] = torch.nan
        std = nanstd(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        advantages = (rewards - torch.nanmean(rewards)) / (std + 1e-4)

    advantages = torch.nan_to_num(advantages, nan=0.0)
    return advantages.masked_fill(unscorable, 0.0)


def register_advantage_estimator(name: str, fn: AdvantageEstimator, *, overwrite: bool = False) -> AdvantageEstimator:
    """
    Make `fn` available as `advantage_estimator=name`; returns `fn`.

    Args:
        name (`str`):
            Registry name; must not contain ":" (that marks an import path).
        fn (`Callable[[torch.Tensor, int], torch.Tensor]`):
            `(rewards, group_size) -> advantages`, both of shape `(N,)`; NaN rewards are unscorable.
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace an estimator already registered under `name` instead of raising.

    Example:
    ```python
    >>> _ = register_advantage_estimator("centred", lambda r, k: r - r.view(-1, k).nanmean(1).repeat_interleave(k))
    >>> get_advantage_estimator("centred")(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2)
    tensor([ 0.5000, -0.5000, -0.5000,  0.5000])
    ```
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"`name` must be a non-empty string without ':', got {name!r}.")
    if not callable(fn):
        raise ValueError(f"`fn` must be callable, got {type(fn).__name__}.")
    if name == "zscore" and name in _ESTIMATORS:
        raise ValueError(
            "`name` 'zscore' is TRL's own code path in GRPOExtTrainer and cannot be replaced; register your "
            "estimator under another name."
        )
    if name in _ESTIMATORS and not overwrite:
        raise ValueError(
            f"An advantage estimator named {name!r} is already registered; pass `overwrite=True` to replace it."
        )
    _ESTIMATORS[name] = fn
    return fn


def list_advantage_estimators() -> list[str]:
    """Registered estimator names, sorted."""
    return sorted(_ESTIMATORS)


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """
    The estimator registered as `name`, or the callable at import path `"package.module:function"`.

    Raises `ValueError` naming `advantage_estimator` when the name is unknown, the import fails or the target is not
    callable.
    """
    if isinstance(name, str) and name in _ESTIMATORS:
        return _ESTIMATORS[name]
    if not isinstance(name, str) or not (":" in name or "." in name):
        raise ValueError(
            f"`advantage_estimator` must be one of {list_advantage_estimators()} or an import path "
            f"'package.module:function', got {name!r}."
        )
    return load_callable(name, "advantage_estimator")


register_advantage_estimator("zscore", zscore_advantages)
register_advantage_estimator("rank", rank_advantages)
register_advantage_estimator("rank_rung_centred", rank_rung_centred_advantages)
register_advantage_estimator("zscore_rung_centred", zscore_rung_centred_advantages)
