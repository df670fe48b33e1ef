r"""Statistics over seeds: mean and standard error, and paired differences with a t interval.

    mean = (1/n) sum_s x_s;   se = sd / sqrt(n), sd with the n - 1 denominator
    paired difference of arms a and b: d_s = x_{a,s} - x_{b,s} over the seeds s both finished (same warm start)
    95 % interval: mean(d) +- t_{0.975, n-1} * se(d)

A difference is called detectable only when its 95 % interval excludes 0; with 3 seeds t = 4.30, so only large and
consistent differences are.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence


def _t_cdf(t: float, df: float) -> float:
    r"""P(T <= t) for Student's t with `df` degrees of freedom.

    P(T <= t) = 1 - I_x(df / 2, 1 / 2) / 2 for t >= 0, x = df / (df + t^2).

    I_x(a, b) is the regularized incomplete beta function, from its continued fraction (Lentz's method), evaluated
    where it converges fast: at x < (a + 1) / (a + b + 2) directly, else as 1 - I_{1-x}(b, a).
    """
    if t < 0:
        return 1.0 - _t_cdf(-t, df)
    a, b = df / 2, 0.5
    x, y = df / (df + t * t), t * t / (df + t * t)  # y = 1 - x without the cancellation
    if x < (a + 1) / (a + b + 2):
        upper_tail = _beta_fraction(a, b, x, y) / 2  # I_x(a, b) / 2 = P(T > t)
    else:
        upper_tail = (1.0 - _beta_fraction(b, a, y, x)) / 2
    return 1.0 - upper_tail


def _beta_fraction(a: float, b: float, x: float, y: float) -> float:
    """I_x(a, b) = x^a y^b / (a B(a, b)) * continued fraction (y = 1 - x); converges for x < (a + 1) / (a + b + 2)."""
    if x <= 0.0:
        return 0.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    tiny, eps = 1e-300, 1e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 100_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # even step d_{2m}
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),  # odd step d_{2m+1}
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return math.exp(log_front) * fraction / a


@functools.lru_cache(maxsize=1024)
def t975(df: int) -> float:
    """Two-sided 95 % quantile of Student's t with `df` degrees of freedom: the t with P(T <= t) = 0.975, exactly.

    Found by bisection on the t distribution's CDF (`_t_cdf`) to full float precision; NaN for `df < 1`.

    Example:
    >>> round(t975(2), 4), round(t975(11), 4), round(t975(1000), 4)
    (4.3027, 2.201, 1.9623)
    """
    if df < 1:
        return math.nan
    low, high = 0.0, 2.0
    while _t_cdf(high, df) < 0.975:
        low, high = high, 2 * high
    for _ in range(200):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        low, high = (middle, high) if _t_cdf(middle, df) < 0.975 else (low, middle)
    return (low + high) / 2


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
