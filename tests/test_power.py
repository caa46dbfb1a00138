"""Power for a correlation against R's pwr.r.test, pingouin and the plain Fisher-z formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis import power
from valueportrait.cli import main


def test_raters_needed_matches_pwr_r_test():
    # R: pwr::pwr.r.test(r = 0.3, sig.level = 0.05, power = 0.8) -> n = 84.07364
    assert power.raters_needed(0.3, 0.05, 0.8) == pytest.approx(84.07364, abs=1e-4)
    # pwr.r.test(r = 0.5, power = 0.9) -> n = 37.0 (36.98); sign does not matter two-sided
    assert power.raters_needed(-0.5, 0.05, 0.9) == pytest.approx(power.raters_needed(0.5, 0.05, 0.9))


def test_against_pingouin_on_a_grid():
    pg = pytest.importorskip("pingouin")
    for rho, n, alpha in [(0.3, 46, 0.05), (0.1, 200, 0.01), (0.5, 20, 0.1), (0.25, 41, 0.05)]:
        assert power.achieved_power(rho, n, alpha) == pytest.approx(pg.power_corr(r=rho, n=n, alpha=alpha), abs=1e-10)
    assert power.raters_needed(0.2, 0.01, 0.95) == pytest.approx(pg.power_corr(r=0.2, power=0.95, alpha=0.01), rel=1e-6)


def test_against_the_fisher_z_approximation():
    # Textbook approximation: n = ((z_{1-a/2} + z_{power}) / atanh(rho))^2 + 3; it ignores the
    # bias term and the t critical value, so agreement is within about one rater.
    for rho, alpha, target in [(0.3, 0.05, 0.8), (0.2, 0.05, 0.9), (0.4, 0.01, 0.8)]:
        approx = ((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target)) / math.atanh(rho)) ** 2 + 3
        assert power.raters_needed(rho, alpha, target) == pytest.approx(approx, abs=1.5)


def test_power_is_vectorised_and_monotone():
    n = np.array([10, 20, 46, 100, 400])
    p = power.achieved_power(0.3, n, 0.05)
    assert p.shape == (5,) and np.all(np.diff(p) > 0) and p[-1] > 0.99
    assert math.isnan(power.achieved_power(0.3, 3, 0.05))


def test_power_table():
    table = power.power_table({"g1": 46, "g2": 41, "g3": 85})
    assert list(table.columns) == ["group_id", "n", "rho", "alpha", "achieved_power", "raters_needed", "detectable_rho"]
    assert (table["raters_needed"] == 85).all()
    assert table.loc[table.group_id == "g3", "achieved_power"].item() > 0.8
    assert table.loc[table.group_id == "g2", "achieved_power"].item() < 0.6
    # At the detectable rho the group has exactly the target power.
    row = table.iloc[0]
    assert power.achieved_power(row.detectable_rho, row.n, 0.05) == pytest.approx(0.8, abs=1e-8)


def test_cli(capsys):
    assert main(["power", "--rho", "0.3", "--alpha", "0.05", "--power", "0.8"]) == 0
    assert "84.07 -> 85 raters" in capsys.readouterr().out
    assert main(["power", "--rho", "1.5"]) == 2
    assert "--rho: 1.5" in capsys.readouterr().err
    assert main(["power", "--power", "0.01"]) == 2
    assert "--power: 0.01" in capsys.readouterr().err


def pwr_r_test_power(rho, n, alpha):
    """pwr.r.test's power written out here by hand (Cohen 1988; pwr's source formula)."""
    dof = n - 2
    t = stats.t.ppf(1 - alpha / 2, dof)
    r_crit = math.sqrt(t**2 / (t**2 + dof))
    z_rho, z_crit = math.atanh(rho) + rho / (2 * (n - 1)), math.atanh(r_crit)
    return stats.norm.cdf((z_rho - z_crit) * math.sqrt(n - 3)) + stats.norm.cdf((-z_rho - z_crit) * math.sqrt(n - 3))


def test_power_matches_pwr_formula_written_out_here():
    # analysis.power computes pwr.r.test's formula with scipy.special (pingouin's import costs a
    # second); it agrees with the formula written out by hand with scipy.stats far beyond the
    # printed precision (4 decimals), and with pingouin (test_against_pingouin_on_a_grid).
    for rho, n, alpha in [(0.3, 46, 0.05), (0.1, 200, 0.01), (0.5, 20, 0.1), (0.25, 41, 0.05), (0.3, 5, 0.05)]:
        assert power.achieved_power(rho, n, alpha) == pytest.approx(pwr_r_test_power(rho, n, alpha), abs=1e-12)
    n = power.raters_needed(0.3, 0.05, 0.8)
    assert f"{n:.2f}" == "84.07" and pwr_r_test_power(0.3, n, 0.05) == pytest.approx(0.8, abs=1e-9)
    r = power.detectable_rho(46, 0.05, 0.8)
    assert pwr_r_test_power(r, 46, 0.05) == pytest.approx(0.8, abs=1e-9)


def test_impossible_requests_say_why():
    # Was brentq's "f(a) and f(b) must have different signs".
    with pytest.raises(ValueError, match="rho = 0: no number of raters detects a zero correlation"):
        power.raters_needed(0)
    with pytest.raises(ValueError, match="rho = 1.0"):
        power.raters_needed(1.0)
    with pytest.raises(ValueError, match="power = 0.01"):
        power.raters_needed(0.3, alpha=0.05, power=0.01)
    with pytest.raises(ValueError, match="a correlation lies in"):
        power.achieved_power(1.5, 40)
    assert math.isnan(power.detectable_rho(4)) and math.isnan(power.achieved_power(0.3, 4, 0.05))
    assert main(["power", "--rho", "0"]) == 2
