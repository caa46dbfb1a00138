"""Bonett-Wright interval for Spearman's rho against statpsych's ``ci.spear`` example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.intervals import bonett_wright_ci

# statpsych::ci.spear documentation example; R prints
#  Estimate         SE        LL        UL
# 0.8699639 0.08241326 0.5840951 0.9638297
Y = [21, 4, 9, 12, 35, 18, 10, 22, 24, 1, 6, 8, 13, 16, 19]
X = [67, 28, 30, 28, 52, 40, 25, 37, 44, 10, 14, 20, 28, 40, 51]


def test_statpsych_ci_spear_example():
    rho = stats.spearmanr(Y, X).statistic
    assert rho == pytest.approx(0.8699639, abs=5e-8)
    low, high = bonett_wright_ci(rho, len(Y), 0.05)
    assert low == pytest.approx(0.5840951, abs=5e-8)
    assert high == pytest.approx(0.9638297, abs=5e-8)
    # statpsych's SE is on the rho scale: se_z * (1 - rho^2)
    se_z = math.atanh(high) - math.atanh(rho)
    assert se_z / stats.norm.ppf(0.975) * (1 - rho**2) == pytest.approx(0.08241326, abs=5e-8)


def test_vectorised_and_wider_than_pearson():
    rho = np.array([[-0.5, 0.0], [0.3, 0.8699639]])
    n = np.array([[20, 46], [46, 15]])
    low, high = bonett_wright_ci(rho, n)
    assert low.shape == (2, 2)
    assert low[1, 1] == pytest.approx(0.5840951, abs=5e-8)
    # Symmetric in sign, and at rho = 0 identical to Pearson's interval.
    assert bonett_wright_ci(0.5, 20)[0] == pytest.approx(-bonett_wright_ci(-0.5, 20)[1])
    assert high[0, 1] == pytest.approx(math.tanh(1.959964 / math.sqrt(43)), abs=1e-6)
    pearson_low = math.tanh(math.atanh(0.3) - 1.959964 / math.sqrt(43))
    assert low[1, 0] < pearson_low


def test_degenerate_cases():
    low, high = bonett_wright_ci(np.array([0.3, 0.3, np.nan]), np.array([3, 2, 40]))
    assert np.isnan(low).all() and np.isnan(high).all()
