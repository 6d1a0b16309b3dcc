"""The one interval definition: mean ± Student-t half-width over independent samples.

Every table of this project (``meta-rl evaluate``, ``experiments/``) reports a mean over
held-out tasks with ``confidence_interval``: the two-sided Student-t interval of the mean with
``n - 1`` degrees of freedom, tasks as the samples. For 20 tasks its 95 % quantile is 2.093,
not the normal 1.96: small task sets get the wider interval they need.

numpy has no t quantile and scipy is not a dependency for one function, so the quantile is
computed here: the t CDF through the regularised incomplete beta function (continued fraction,
modified Lentz), inverted by bisection to 1e-13. ``tests/test_stats.py`` holds it to closed
forms (df 1, 2), table values and an independent numerical integration of the t density.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(0.5 * df, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """Inverse CDF by bisection (numpy has no t quantile and scipy is not a dependency)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def confidence_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the Student-t interval of the mean; tasks are the samples."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("confidence_interval of an empty sample")
    if x.size == 1:
        return float(x[0]), math.nan
    sem = x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), student_t_quantile(0.5 + 0.5 * level, x.size - 1) * float(sem)
