"""Tests of `trl_grpo_ext.advantages`: golden numbers, equality with TRL's own advantage code, properties of the rank
and z-score estimators (hypothesis), the registry, and `estimate_advantages` in both aggregation modes."""

import doctest
import itertools
import math
import re
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from trl.trainer.utils import nanstd

from trl_grpo_ext import advantages
from trl_grpo_ext.advantages import (
    center_by_rung,
    estimate_advantages,
    get_advantage_estimator,
    group_reward_std_is_zero,
    list_advantage_estimators,
    rank_advantages,
    rank_rung_centred_advantages,
    register_advantage_estimator,
    zscore_advantages,
    zscore_rung_centred_advantages,
)

NAN = float("nan")
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)


# TRL's reference: the lines of trl 1.16.0 `GRPOTrainer._generate_and_score_completions` (grpo_trainer.py ~2756-2810)
# that turn the gathered reward matrix into advantages, with `scale_rewards="group"` and `device` dropped. Copied here,
# never into the library, so the library is checked against TRL's code and not against itself.
def trl_advantages(rewards_per_func, reward_weights, num_generations, multi_objective_aggregation):
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    if multi_objective_aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * reward_weights.unsqueeze(0)).nansum(dim=1)
        rewards[unscorable_mask] = torch.nan
        mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
        mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
        if num_generations > 1:
            std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
            std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
        else:
            std_rewards = torch.zeros_like(rewards)
        advantages = rewards - mean_grouped_rewards
        advantages = advantages / (std_rewards + 1e-4)
        is_std_zero = torch.isclose(std_rewards, torch.zeros_like(std_rewards))
    elif multi_objective_aggregation == "normalize_then_sum":
        grouped = rewards_per_func.view(-1, num_generations, rewards_per_func.shape[1])
        mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
        std_k = nanstd(grouped, dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(mean_k)
        reward_k = (grouped - mean_k) / (std_k + 1e-4)
        reward_k = reward_k.view(-1, rewards_per_func.shape[1])
        rewards = (reward_k * reward_weights.unsqueeze(0)).nansum(dim=1)
        rewards[unscorable_mask] = torch.nan
        std_rewards = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        advantages = (rewards - torch.nanmean(rewards)) / (std_rewards + 1e-4)
        is_std_zero = torch.isclose(std_rewards, torch.zeros_like(std_rewards))
    advantages = torch.nan_to_num(advantages, nan=0.0)
    return advantages, is_std_zero


def naive_rank(rewards, group_size):
    """The definition, one pair at a time: A_i = sum_j sign(r_i - r_j) / (n - 1) over scorable j."""
    values = rewards.tolist()
    out = []
    for start in range(0, len(values), group_size):
        group = [v for v in values[start : start + group_size] if not math.isnan(v)]
        for r_i in values[start : start + group_size]:
            if math.isnan(r_i) or len(group) < 2:
                out.append(0.0)
            else:
                out.append(sum((r_i > r_j) - (r_i < r_j) for r_j in group) / (len(group) - 1))
    return torch.tensor(out)


def messy_rewards(num_groups, group_size, seed):
    """Random rewards with everything TRL's code meets: ties, constant groups, NaN rows, all-NaN and 1-scorable groups."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.rand(num_groups, group_size, generator=g)
    rewards[::5] = torch.round(rewards[::5] * 3) / 3  # ties, non-dyadic
    rewards[1::5] = torch.round(rewards[1::5])  # binary
    rewards[2::7] = rewards[2::7, :1]  # constant groups, e.g. all 0.37
    rewards[torch.rand(num_groups, group_size, generator=g) < 0.15] = NAN
    rewards[3::11] = NAN  # all-NaN groups
    if group_size > 1:
        rewards[4::13, 1:] = NAN  # one scorable member
    return rewards.reshape(-1)


SMALL_INTEGERS = st.integers(-5, 5).map(float)


@st.composite
def grouped_rewards(draw, values=SMALL_INTEGERS, max_group_size=16, max_groups=5, nan=True):
    group_size = draw(st.integers(1, max_group_size))
    num_groups = draw(st.integers(1, max_groups))
    element = st.one_of(values, values, values, st.just(NAN)) if nan else values
    rewards = draw(st.lists(element, min_size=num_groups * group_size, max_size=num_groups * group_size))
    return torch.tensor(rewards, dtype=torch.float32), group_size


@st.composite
def permuted_within_groups(draw, rewards_and_k):
    rewards, group_size = draw(rewards_and_k)
    num_groups = rewards.numel() // group_size
    perm = draw(st.permutations(range(group_size)))
    index = (torch.arange(num_groups)[:, None] * group_size + torch.tensor(perm)[None, :]).reshape(-1)
    return rewards, group_size, index


@pytest.fixture
def clean_registry():
    saved = dict(advantages._ESTIMATORS)
    yield
    advantages._ESTIMATORS.clear()
    advantages._ESTIMATORS.update(saved)


class _FencedDocTestParser(doctest.DocTestParser):
    """Our docstrings fence examples in ```python ... ``` (TRL's style); the closing fence is not expected output."""

    def parse(self, string, name="<string>"):
        return super().parse(re.sub(r"^[ \t]*```.*$", "", string, flags=re.MULTILINE), name)


def test_docstring_examples_are_exact(clean_registry):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder(parser=_FencedDocTestParser()).find(advantages):
        runner.run(test)
    assert runner.summarize(verbose=False).attempted >= 8
    assert runner.failures == 0


def test_docs_examples_are_exact():
    text = (Path(__file__).parents[1] / "docs" / "advantages.md").read_text()
    test = _FencedDocTestParser().get_doctest(text, {}, "docs/advantages.md", None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert test.examples and runner.failures == 0


# 1. Golden numbers
def test_seed_example_population_zscore():
    # Seed 004: [0.9, 0.7, 0.4] -> mean 0.6667, population std 0.20548 -> [1.1356, 0.1622, -1.2978].
    adv = zscore_advantages(torch.tensor([0.9, 0.7, 0.4]), 3, std="population", eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([1.1356, 0.1622, -1.2978]), atol=5e-5, rtol=0)


def test_seed_example_trl_zscore_and_rank():
    rewards = torch.tensor([0.9, 0.7, 0.4])
    expected = (rewards - 2 / 3) / (math.sqrt(0.0633333) + 1e-4)  # sample std 0.25166
    torch.testing.assert_close(zscore_advantages(rewards, 3), expected, atol=1e-4, rtol=0)
    assert rank_advantages(rewards, 3).tolist() == [1.0, 0.0, -1.0]


def test_constant_groups_get_zero():
    binary = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    assert zscore_advantages(binary, 3).tolist() == [0.0] * 6  # (r - mean) / (0 + eps), exactly 0
    # 0.7 * 3 / 3 != 0.7 in float32: the mean misses by one ulp; with eps=0 that must not become +-1 or NaN.
    sevenths = torch.full((6,), 0.7)
    assert zscore_advantages(sevenths, 3, std="population", eps=0.0).tolist() == [0.0] * 6
    assert zscore_advantages(sevenths, 3, std="sample", eps=0.0).tolist() == [0.0] * 6
    assert zscore_advantages(sevenths, 3).abs().max() < 2e-3  # TRL: rounding noise / 1e-4
    assert rank_advantages(sevenths, 3).tolist() == [0.0] * 6


@pytest.mark.parametrize("group_size", [2, 3, 5, 8, 16])
def test_rank_distinct_rewards_formula(group_size):
    g = torch.Generator().manual_seed(group_size)
    rewards = torch.randn(32 * group_size, generator=g)
    grouped = rewards.view(-1, group_size)
    rank = (grouped[:, None, :] > grouped[:, :, None]).sum(-1) + 1  # |{j : r_j > r_i}| + 1
    expected = (group_size + 1 - 2 * rank).float() / (group_size - 1)
    torch.testing.assert_close(rank_advantages(rewards, group_size), expected.reshape(-1), atol=1e-6, rtol=0)


def test_rank_counts_the_28_pairwise_comparisons_of_k8():
    # Seed 001: a group of K = 8 gives C(8, 2) = 28 comparisons; (K - 1)(1 + A_i) / 2 is the number i wins.
    rewards = torch.randperm(8).float()
    wins = (7 * (1 + rank_advantages(rewards, 8)) / 2).round()
    assert wins.sum().item() == 28 == math.comb(8, 2)
    assert sorted(wins.tolist()) == list(range(8))


def test_rank_edge_cases():
    inf = float("inf")
    rewards = torch.tensor([NAN, -inf, inf, 1.0, inf, -0.0, 0.0, NAN, NAN, NAN, NAN, 2.0, 5.0, 5.0, 5.0, 5.0])
    adv = rank_advantages(rewards, 4)
    assert adv.tolist() == naive_rank(rewards, 4).tolist()
    assert adv[8:12].tolist() == [0.0] * 4  # one scorable member
    assert adv[12:].tolist() == [0.0] * 4  # all equal
    assert rank_advantages(torch.tensor([NAN] * 4), 2).tolist() == [0.0] * 4


@pytest.mark.parametrize("group_size", [1, 2, 3, 7, 16, 64])
def test_rank_matches_pairwise_definition(group_size):
    rewards = messy_rewards(40, group_size, seed=group_size)
    torch.testing.assert_close(
        rank_advantages(rewards, group_size), naive_rank(rewards, group_size), atol=1e-6, rtol=0
    )


# 2. The z-score equals TRL's group scaling, bit for bit
@pytest.mark.parametrize("group_size", [1, 2, 3, 4, 8, 16, 64])
@pytest.mark.parametrize("seed", [0, 1])
def test_zscore_defaults_equal_trl_bitwise(group_size, seed):
    rewards = messy_rewards(64, group_size, seed)
    expected, _ = trl_advantages(rewards[:, None], torch.ones(1), group_size, "sum_then_normalize")
    assert torch.equal(zscore_advantages(rewards, group_size), expected)
    assert torch.equal(get_advantage_estimator("zscore")(rewards, group_size), expected)


@pytest.mark.parametrize("group_size", [1, 2, 3, 8, 16])
def test_group_reward_std_is_zero_equals_trl(group_size):
    rewards = messy_rewards(64, group_size, seed=3)
    _, expected = trl_advantages(rewards[:, None], torch.ones(1), group_size, "sum_then_normalize")
    assert torch.equal(group_reward_std_is_zero(rewards, group_size), expected)
    assert group_reward_std_is_zero(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2).tolist() == [True, True, False, False]


def test_population_std_matches_numpy_convention():
    rewards = torch.tensor([0.9, 0.7, 0.4, 0.1, 0.5, NAN])
    adv = zscore_advantages(rewards, 3, std="population", eps=1e-8)
    for start in (0, 3):
        group = rewards[start : start + 3]
        kept = group[~group.isnan()].double()
        expected = (kept - kept.mean()) / (kept.std(unbiased=False) + 1e-8)
        torch.testing.assert_close(adv[start : start + 3][~group.isnan()].double(), expected, atol=1e-5, rtol=0)
    assert adv[5] == 0


# 3. Properties
@PROPERTY_SETTINGS
@given(grouped_rewards())
def test_nan_rows_are_exactly_zero_and_outputs_finite(rewards_and_k):
    rewards, k = rewards_and_k
    for adv in (rank_advantages(rewards, k), zscore_advantages(rewards, k)):
        assert adv.shape == rewards.shape and torch.isfinite(adv).all()
        assert (adv[rewards.isnan()] == 0).all()


@PROPERTY_SETTINGS
@given(grouped_rewards())
def test_zero_sum_per_group(rewards_and_k):
    rewards, k = rewards_and_k
    for adv in (rank_advantages(rewards, k), zscore_advantages(rewards, k), zscore_advantages(rewards, k, eps=0.0)):
        torch.testing.assert_close(adv.view(-1, k).sum(1), torch.zeros(rewards.numel() // k), atol=1e-4, rtol=0)


@PROPERTY_SETTINGS
@given(grouped_rewards(values=st.floats(-1e3, 1e3, width=32)))
def test_rank_bounds_and_pairwise_definition(rewards_and_k):
    rewards, k = rewards_and_k
    adv = rank_advantages(rewards, k)
    assert adv.min() >= -1 and adv.max() <= 1
    torch.testing.assert_close(adv, naive_rank(rewards, k), atol=1e-6, rtol=0)


@PROPERTY_SETTINGS
@given(grouped_rewards(values=st.integers(-20, 20).map(float)), st.sampled_from(["affine", "cube", "exp2", "recip"]))
def test_rank_invariant_under_increasing_transforms(rewards_and_k, transform):
    rewards, k = rewards_and_k
    transformed = {
        "affine": lambda r: 3 * r + 7,
        "cube": lambda r: r**3,
        "exp2": lambda r: torch.exp2(r),
        "recip": lambda r: -1 / (r + 100),
    }[transform](rewards)
    assert torch.equal(rank_advantages(transformed, k), rank_advantages(rewards, k))


@PROPERTY_SETTINGS
@given(grouped_rewards(), st.sampled_from([0.5, 2.0, 10.0, 123.0]), st.sampled_from([-50.0, -1.0, 0.0, 3.0, 1e3]))
def test_zscore_scale_and_shift_invariance(rewards_and_k, scale, shift):
    rewards, k = rewards_and_k
    moved = rewards * scale + shift
    for std in ("sample", "population"):
        torch.testing.assert_close(
            zscore_advantages(moved, k, std=std, eps=0.0),
            zscore_advantages(rewards, k, std=std, eps=0.0),
            atol=1e-4,
            rtol=0,
        )
    # With TRL's eps a shift changes nothing, and a scale only through eps / std (std >= 0.25 here, scale >= 0.5).
    torch.testing.assert_close(zscore_advantages(rewards + shift, k), zscore_advantages(rewards, k), atol=1e-4, rtol=0)
    torch.testing.assert_close(zscore_advantages(moved, k), zscore_advantages(rewards, k), atol=2e-3, rtol=1e-3)


@PROPERTY_SETTINGS
@given(permuted_within_groups(grouped_rewards()))
def test_permutation_equivariance_within_groups(case):
    rewards, k, index = case
    assert torch.equal(rank_advantages(rewards[index], k), rank_advantages(rewards, k)[index])
    torch.testing.assert_close(
        zscore_advantages(rewards[index], k), zscore_advantages(rewards, k)[index], atol=1e-5, rtol=0
    )


@PROPERTY_SETTINGS
@given(grouped_rewards(values=st.integers(0, 2).map(float)))
def test_ties_get_equal_advantages(rewards_and_k):
    rewards, k = rewards_and_k
    for adv in (rank_advantages(rewards, k), zscore_advantages(rewards, k)):
        for group, group_adv in zip(rewards.view(-1, k), adv.view(-1, k)):
            for i, j in itertools.combinations(range(k), 2):
                if group[i] == group[j]:
                    assert group_adv[i] == group_adv[j]


@PROPERTY_SETTINGS
@given(grouped_rewards(values=st.integers(0, 1).map(float), nan=False))
def test_binary_rank_is_mean_centring_up_to_scale(rewards_and_k):
    # docs/advantages.md: with p of n rewards equal to 1, A = (r - p/n) * n / (n - 1).
    rewards, k = rewards_and_k
    assume(k > 1)
    grouped = rewards.view(-1, k)
    centred = (grouped - grouped.mean(1, keepdim=True)) * k / (k - 1)
    torch.testing.assert_close(rank_advantages(rewards, k), centred.reshape(-1), atol=1e-6, rtol=0)


# 4. Input validation
def test_group_size_must_divide_rewards():
    with pytest.raises(ValueError, match="`group_size`.*group_size=3 for 10 rewards"):
        rank_advantages(torch.zeros(10), 3)
    with pytest.raises(ValueError, match="`group_size`"):
        zscore_advantages(torch.zeros(10), 3)
    with pytest.raises(ValueError, match="`group_size` must be a positive integer, got 0"):
        zscore_advantages(torch.zeros(10), 0)
    with pytest.raises(ValueError, match="1-D"):
        rank_advantages(torch.zeros(2, 4), 4)
    with pytest.raises(ValueError, match="`std` must be one of"):
        zscore_advantages(torch.zeros(4), 2, std="biased")
    with pytest.raises(ValueError, match="`eps` must be >= 0"):
        zscore_advantages(torch.zeros(4), 2, eps=-1.0)


def test_integer_rewards_are_accepted():
    assert rank_advantages(torch.tensor([3, 1, 2]), 3).tolist() == [1.0, -1.0, 0.0]


# 5. Registry
def test_builtins_are_registered():
    assert list_advantage_estimators() == ["rank", "rank_rung_centred", "zscore", "zscore_rung_centred"]
    assert get_advantage_estimator("rank") is rank_advantages
    assert get_advantage_estimator("zscore") is zscore_advantages


def test_register_and_duplicate(clean_registry):
    def centred(rewards, group_size):
        return rewards - rewards.view(-1, group_size).nanmean(1).repeat_interleave(group_size)

    assert register_advantage_estimator("centred", centred) is centred
    assert get_advantage_estimator("centred") is centred
    assert list_advantage_estimators() == ["centred", "rank", "rank_rung_centred", "zscore", "zscore_rung_centred"]
    with pytest.raises(ValueError, match="'centred' is already registered"):
        register_advantage_estimator("centred", rank_advantages)
    register_advantage_estimator("centred", rank_advantages, overwrite=True)
    assert get_advantage_estimator("centred") is rank_advantages
    with pytest.raises(ValueError, match="without ':'"):
        register_advantage_estimator("a:b", centred)
    with pytest.raises(ValueError, match="callable"):
        register_advantage_estimator("nope", 3)


def test_import_path():
    assert get_advantage_estimator("trl_grpo_ext.advantages:rank_advantages") is rank_advantages
    with pytest.raises(ValueError, match="must name a callable"):
        get_advantage_estimator("trl_grpo_ext.advantages:AGGREGATIONS")
    with pytest.raises(ValueError, match="cannot be loaded"):
        get_advantage_estimator("no_such_package_xyz.adv:fn")
    with pytest.raises(ValueError, match="cannot be loaded"):
        get_advantage_estimator("trl_grpo_ext.advantages:no_such_function")
    with pytest.raises(ValueError, match="must look like"):
        get_advantage_estimator("trl_grpo_ext.advantages:")


def test_unknown_name_message():
    with pytest.raises(ValueError) as err:
        get_advantage_estimator("foo")
    assert str(err.value) == (
        "`advantage_estimator` must be one of ['rank', 'rank_rung_centred', 'zscore', 'zscore_rung_centred'] or an "
        "import path 'package.module:function', got 'foo'."
    )
    with pytest.raises(ValueError, match="advantage_estimator.*got \\['rank'\\]"):
        get_advantage_estimator(["rank"])


# 6. estimate_advantages: TRL's two aggregation modes with the estimator swapped in
@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum"])
@pytest.mark.parametrize("group_size", [1, 2, 4, 8])
@pytest.mark.parametrize("num_funcs", [1, 3])
def test_estimate_advantages_zscore_reproduces_trl(aggregation, group_size, num_funcs):
    g = torch.Generator().manual_seed(group_size * 10 + num_funcs)
    rewards_per_func = torch.stack([messy_rewards(24, group_size, seed=s) for s in range(num_funcs)], dim=1)
    rewards_per_func[torch.rand(rewards_per_func.shape, generator=g) < 0.1] = NAN  # some functions return None
    weights = torch.tensor([1.0, 0.5, -2.0][:num_funcs])
    expected, _ = trl_advantages(rewards_per_func, weights, group_size, aggregation)
    for estimator in (zscore_advantages, "zscore"):
        adv = estimate_advantages(rewards_per_func, weights, group_size, estimator, aggregation)
        torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
    if aggregation == "sum_then_normalize":
        assert torch.equal(adv, expected)


def test_estimate_advantages_rank_and_unscorable_rows():
    rewards_per_func = torch.tensor([[1.0, 0.9], [0.0, 0.7], [0.0, 0.4], [NAN, NAN], [1.0, NAN], [NAN, 0.0]])
    weights = torch.tensor([1.0, 1.0])
    assert estimate_advantages(rewards_per_func, weights, 3, rank_advantages).tolist() == [1.0, 0.0, -1.0, 0, 1, -1]
    per_func = estimate_advantages(rewards_per_func, weights, 3, "rank", "normalize_then_sum")
    assert per_func[3] == 0 and torch.isfinite(per_func).all()
    # Group 1: column ranks [1, -1/2, -1/2] + [1, 0, -1]. Group 2: each column has one scorable member, so 0.
    column_sum = torch.tensor([2.0, -0.5, -1.5, NAN, 0.0, 0.0])
    expected = (column_sum - column_sum.nanmean()) / (nanstd(column_sum) + 1e-4)
    torch.testing.assert_close(per_func, expected.nan_to_num(nan=0.0), atol=1e-6, rtol=0)


def test_estimate_advantages_zeroes_unscorable_rows_of_any_estimator():
    rewards_per_func = torch.tensor([[1.0], [NAN], [0.0], [2.0]])
    adv = estimate_advantages(rewards_per_func, torch.ones(1), 2, lambda r, k: torch.full_like(r, 5.0))
    assert adv.tolist() == [5.0, 0.0, 5.0, 5.0]


def test_seed_weighted_sum_is_0_95():
    # Seed 004's multi-objective reward: 0.7 * 1.0 + 0.2 * 0.9 + 0.1 * 0.7 = 0.95 (the seed prints 0.93).
    seen = []

    def spy(rewards, group_size):
        seen.append(rewards.clone())
        return torch.zeros_like(rewards)

    estimate_advantages(torch.tensor([[1.0, 0.9, 0.7]]), torch.tensor([0.7, 0.2, 0.1]), 1, spy)
    assert seen[0].item() == pytest.approx(0.95, abs=1e-6)


def test_estimate_advantages_validates_inputs():
    with pytest.raises(ValueError, match="`multi_objective_aggregation` must be one of"):
        estimate_advantages(torch.zeros(4, 1), torch.ones(1), 2, rank_advantages, "sum")
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        estimate_advantages(torch.zeros(4, 2), torch.ones(3), 2, rank_advantages)


def test_large_batch_runs_vectorised():
    rewards = torch.rand(4096 * 64)
    rewards[::9] = NAN
    adv = rank_advantages(rewards, 64)
    assert adv.abs().max() <= 1 and (adv[::9] == 0).all()
    torch.testing.assert_close(adv.view(-1, 64).sum(1), torch.zeros(4096), atol=1e-4, rtol=0)


def test_zscore_cannot_be_replaced():
    with pytest.raises(ValueError, match="zscore"):
        register_advantage_estimator("zscore", rank_advantages, overwrite=True)


# 7. Per-rung baseline (rung-centred estimators)
def test_center_by_rung_zeroes_every_slot_mean_and_keeps_within_slot_differences():
    g = torch.Generator().manual_seed(0)
    advantages = torch.randn(6 * 4, generator=g)
    centred = center_by_rung(advantages, 4)
    assert torch.allclose(centred.view(6, 4).mean(dim=0), torch.zeros(4), atol=1e-6)
    # Within one slot, differences between groups are unchanged.
    assert torch.allclose(centred.view(6, 4) - centred.view(6, 4)[0], advantages.view(6, 4) - advantages.view(6, 4)[0])


def test_rung_centred_removes_a_cold_slot_bias():
    # Slot 0 (the coldest rung) wins every group: plain rank advantages give it +1 on average, centred give it 0.
    rewards = torch.tensor([1.0, 0.0, 0.0] * 5)
    assert rank_advantages(rewards, 3).view(5, 3)[:, 0].mean().item() == 1.0
    centred = rank_rung_centred_advantages(rewards, 3)
    assert torch.equal(centred, torch.zeros(15))
    assert get_advantage_estimator("rank_rung_centred") is rank_rung_centred_advantages
    assert get_advantage_estimator("zscore_rung_centred") is zscore_rung_centred_advantages


def test_rung_centred_leaves_nan_rows_at_zero_and_out_of_the_means():
    rewards = torch.tensor([1.0, 0.0, NAN, 1.0, 0.0, 1.0])
    centred = rank_rung_centred_advantages(rewards, 2)
    # Slot 0: groups 0 and 2 are scorable (advantages +1 and -1, mean 0); group 1 is unscorable.
    assert centred.tolist() == [1.0, -1.0, 0.0, 0.0, -1.0, 1.0]
    assert torch.equal(zscore_rung_centred_advantages(rewards, 2)[2:4], torch.zeros(2))
