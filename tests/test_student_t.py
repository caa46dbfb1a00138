"""analysis.student_t (the report's t quantile and p-value without scipy) against scipy.stats."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from analysis.reporting.sections import _spearman_over_values, t_ci
from analysis.student_t import central, quantile, two_sided_p

DFS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 17, 29, 30, 31, 100, 549, 1000, 4999, 5000]


@pytest.mark.parametrize("df", DFS)
def test_quantile_is_scipys(df):
    for q in (0.5, 0.55, 0.6, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995, 0.99999, 0.025, 0.001):
        ours, theirs = quantile(q, df), stats.t.ppf(q, df)
        assert ours == pytest.approx(theirs, rel=1e-10, abs=1e-12), (q, df)


@pytest.mark.parametrize("df", DFS)
def test_two_sided_p_is_scipys(df):
    for t in (0.0, 1e-6, 0.1, 0.5, 1.0, 1.96, 2.5, 4.0, 8.0, 30.0, -2.0, math.inf):
        ours, theirs = two_sided_p(t, df), 2 * stats.t.sf(abs(t), df)
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-13), (t, df)
        assert central(t, df) == pytest.approx(1 - theirs, abs=1e-10)  # scipy itself is off by ~3e-11 near t = 0, df = 1


def test_hand_figures_and_refusals():
    # df = 1 is Cauchy: P(|T| < 1) = 1/2; df = 2 has the closed form t / sqrt(2 + t^2).
    assert central(1.0, 1) == pytest.approx(0.5, abs=1e-15)
    assert central(3.0, 2) == pytest.approx(3 / math.sqrt(11), abs=1e-15)
    assert central(1e-6, 1) == pytest.approx(2 / math.pi * math.atan(1e-6), rel=1e-14)
    assert quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-12)
    assert quantile(0.5, 7) == 0.0 and quantile(0.3, 7) == pytest.approx(-quantile(0.7, 7), rel=1e-14)
    assert math.isnan(quantile(1.5, 3)) and quantile(1.0, 3) == math.inf and math.isnan(central(math.nan, 3))
    for bad in (0, 2.5, -1):
        with pytest.raises(ValueError, match="whole number"):
            quantile(0.9, bad)


def test_t_ci_is_scipys_interval():
    rng = np.random.default_rng(3)
    for n in (2, 3, 12, 550):
        x = rng.normal(0.3, 1.2, n)
        m, lo, hi, k = t_ci(np.append(x, np.nan))
        want = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
        assert k == n and m == pytest.approx(x.mean())
        assert (lo, hi) == pytest.approx(want, rel=1e-10)


def test_spearman_over_values_is_scipys():
    rng = np.random.default_rng(5)
    for _ in range(50):
        a = rng.integers(0, 5, 10).astype(float)  # ties
        b = rng.normal(size=10)
        if np.ptp(a) == 0:
            continue
        rho, p = _spearman_over_values(a, b)
        want = stats.spearmanr(a, b)
        assert rho == pytest.approx(want.statistic, abs=1e-12)
        assert p == pytest.approx(want.pvalue, rel=1e-9, abs=1e-13)
    assert _spearman_over_values(np.arange(10.0), np.arange(10.0)) == (1.0, 0.0)
    assert all(math.isnan(v) for v in _spearman_over_values(np.ones(10), np.arange(10.0)))


def test_the_reports_main_process_imports_no_scipy(tmp_path):
    """Scores and LLM profiles but no demographics: the t figures need no scipy (nor pydantic, nor matplotlib,
    which the drawing workers import)."""
    from tests.test_report import synthetic_processed

    processed = synthetic_processed(tmp_path)
    for name in ("demographics.csv", "personas.json"):  # group comparisons do use scipy.stats
        (processed / name).unlink(missing_ok=True)
    code = ("import sys, json; from pathlib import Path; from analysis.report import build_report; "
            f"text = build_report(Path({str(processed)!r})); "
            "print(json.dumps([sorted({m.split('.')[0] for m in sys.modules} & "
            "{'scipy', 'pydantic', 'matplotlib'}), 'rank correlation with the participants' in text]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy, has_spearman = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == [] and has_spearman
