"""meta_rl.stats: the Student-t quantile and interval against closed forms, tables, integration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meta_rl.stats import confidence_interval, student_t_cdf, student_t_quantile


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_closed_forms(p):
    # df = 1 (Cauchy) and df = 2 have closed-form quantiles
    assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    closed_df2 = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    assert student_t_quantile(p, 2) == pytest.approx(closed_df2, rel=1e-9)
    assert student_t_quantile(1 - p, 2) == pytest.approx(-closed_df2, rel=1e-9)


def test_t_quantile_table_values():
    # standard two-sided 95 % table values, and the normal limit
    assert student_t_quantile(0.975, 4) == pytest.approx(2.7764451052, rel=1e-9)
    assert student_t_quantile(0.975, 39) == pytest.approx(2.022691, rel=1e-6)
    assert student_t_quantile(0.975, 1e7) == pytest.approx(1.9599640, rel=1e-6)


def test_confidence_interval_on_a_known_sample():
    # mean 3, sample std sqrt(2.5), sem sqrt(2.5 / 5) = sqrt(0.5), t(0.975, 4) = 2.7764451052
    mean, half = confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    assert half == pytest.approx(2.7764451052 * math.sqrt(0.5), rel=1e-9)
    _, half90 = confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0], level=0.9)
    assert half90 == pytest.approx(2.1318467863 * math.sqrt(0.5), rel=1e-9)
    assert confidence_interval([7.0, 7.0, 7.0]) == (7.0, 0.0)
    single = confidence_interval([4.0])
    assert single[0] == 4.0 and math.isnan(single[1])


def _t_cdf_by_integration(t: float, df: int) -> float:
    """P(T <= t) by Simpson's rule on the density over [0, |t|] (independent of the beta path)."""
    x = np.linspace(0.0, abs(t), 20_001)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))
    h = x[1] - x[0]
    area = (
        h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())
    )
    return 0.5 + math.copysign(area, t)


@pytest.mark.parametrize("df", [1, 3, 7, 19, 39, 120])
@pytest.mark.parametrize("p", [0.55, 0.8, 0.95, 0.975, 0.995])
def test_t_quantile_inverts_the_integrated_density(df, p):
    q = student_t_quantile(p, df)
    assert _t_cdf_by_integration(q, df) == pytest.approx(p, abs=1e-9)
    assert student_t_cdf(q, df) == pytest.approx(p, abs=1e-12)
    assert student_t_quantile(1 - p, df) == pytest.approx(-q, rel=1e-12)


def test_t_quantile_refuses_probabilities_outside_the_open_interval():
    for p in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="p must be in"):
            student_t_quantile(p, 3)
