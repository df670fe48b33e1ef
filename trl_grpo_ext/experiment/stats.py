r"""Statistics over seeds: mean and standard error, and paired differences with a t interval.

    mean = (1/n) sum_s x_s;   se = sd / sqrt(n), sd with the n - 1 denominator
    paired difference of arms a and b: d_s = x_{a,s} - x_{b,s} over the seeds s both finished (same warm start)
    95 % interval: mean(d) +- t_{0.975, n-1} * se(d)

A difference is called detectable only when its 95 % interval excludes 0; with 3 seeds t = 4.30, so only large and
consistent differences are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

# Two-sided 95 % quantiles of Student's t, t_{0.975, df}, df = 1 .. 10 (standard tables); beyond: 1.96 + 2.4 / df.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t975(df: int) -> float:
    """Two-sided 95 % quantile of Student's t with `df` degrees of freedom.

    Example:
    >>> t975(2), t975(4)
    (4.303, 2.776)
    """
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (NaN standard error for fewer than two values).

    Example:
    >>> tuple(round(x, 4) for x in mean_se([0.5, 0.6, 0.7]))
    (0.6, 0.0577)
    """
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> dict:
    """Paired difference a - b over the seeds both have: n, mean, se, 95 % interval, per-seed values, wins.

    Example:
    >>> d = paired_difference({0: 0.7, 1: 0.6, 2: 0.8}, {0: 0.6, 1: 0.55, 2: 0.7})
    >>> round(d["mean"], 4), round(d["se"], 4), d["n"], d["wins"]
    (0.0833, 0.0167, 3, 3)
    """
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    mean, se = mean_se(diffs)
    half = t975(len(diffs) - 1) * se if len(diffs) > 1 else math.nan
    return {
        "n": len(diffs),
        "seeds": seeds,
        "diffs": diffs,
        "mean": mean,
        "se": se,
        "ci95": [mean - half, mean + half],
        "wins": sum(d > 0 for d in diffs),
        "detectable": bool(len(diffs) > 1 and (mean - half > 0 or mean + half < 0)),
    }


def verdict(name: str, reference: str, diff: dict, unit: float = 100.0, what: str = "points", digits: int = 1) -> str:
    """One sentence for a paired difference, in points (x 100), naming the seeds and whether it is detectable.

    Example:
    >>> verdict("rank", "trl", paired_difference({0: 0.7, 1: 0.6, 2: 0.8}, {0: 0.6, 1: 0.55, 2: 0.7}))
    'rank beats trl by 8.3 +- 1.7 points (95% CI [1.2, 15.5], 3 seeds, 3/3 wins)'
    """
    if diff["n"] < 2:
        return f"{name} vs {reference}: fewer than 2 paired seeds"
    m, se = diff["mean"] * unit, diff["se"] * unit
    low, high = (x * unit for x in diff["ci95"])
    d = digits
    tail = f"(95% CI [{low:.{d}f}, {high:.{d}f}], {diff['n']} seeds, {diff['wins']}/{diff['n']} wins)"
    if not diff["detectable"]:
        return f"{name} vs {reference}: no detectable difference, {m:+.{d}f} +- {se:.{d}f} {what} {tail}"
    word = "beats" if m > 0 else "trails"
    return f"{name} {word} {reference} by {abs(m):.{d}f} +- {se:.{d}f} {what} {tail}"
