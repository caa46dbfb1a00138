"""Parallel analysis, EFA, KMO and Bartlett against simulated truth and hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import efa as efa_mod


def three_factor_data(n=400, seed=1):
    """9 items, three per factor, loadings .8, uncorrelated factors."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n, 3))
    loadings = np.kron(np.eye(3), np.full((1, 3), 0.8))  # 3 x 9 block structure
    x = f @ loadings + 0.6 * rng.standard_normal((n, 9))
    return pd.DataFrame(x, columns=[f"i{j}" for j in range(1, 10)])


def test_parallel_analysis_finds_three_factors():
    data = three_factor_data()
    for kind in ("components", "factors"):
        result = efa_mod.parallel_analysis(data, n_iter=100, seed=0, kind=kind)
        assert result["n_factors"] == 3, kind
        eig = result["eigenvalues"]
        assert list(eig.columns) == ["index", "observed", "random_mean", "random_quantile"]
    # Component eigenvalues of a correlation matrix sum to p; they are numpy's own.
    pca = efa_mod.parallel_analysis(data, kind="components")["eigenvalues"]
    assert np.allclose(pca.observed, np.sort(np.linalg.eigvalsh(np.corrcoef(data.T)))[::-1])
    # Pure noise has nothing to retain.
    noise = np.random.default_rng(2).standard_normal((300, 10))
    assert efa_mod.parallel_analysis(noise, seed=1)["n_factors"] == 0


def test_random_eigenvalues_match_a_loop():
    data = three_factor_data(n=60)
    table = efa_mod.parallel_analysis(data, n_iter=20, seed=7, quantile=0.5)["eigenvalues"]
    rng = np.random.default_rng(7)
    sims = rng.standard_normal((20, 60, 9))
    eig = np.array([np.sort(np.linalg.eigvalsh(np.corrcoef(s.T)))[::-1] for s in sims])
    assert np.allclose(table.random_quantile, np.median(eig, axis=0))


def test_efa_recovers_the_block_structure():
    data = three_factor_data()
    result = efa_mod.efa(data)
    assert result["n_factors"] == 3
    loadings = result["loadings"].abs()
    # each item loads mainly on one factor, and items 1-3, 4-6, 7-9 share theirs
    main = loadings.to_numpy().argmax(axis=1)
    assert len(set(main[:3])) == len(set(main[3:6])) == len(set(main[6:])) == 1
    assert len(set(main)) == 3
    assert (loadings.max(axis=1) > 0.7).all()
    # communality = row sum of squared loadings for an orthogonal fit is close to 0.64 / (0.64 + 0.36)
    assert result["communalities"].mean() == pytest.approx(0.64, abs=0.08)


def test_kmo_and_bartlett_against_hand_computation():
    data = three_factor_data(n=150, seed=4)
    result = efa_mod.efa(data, n_factors=3)
    r = np.corrcoef(data.to_numpy().T)
    inv = np.linalg.inv(r)
    partial = -inv / np.sqrt(np.outer(np.diag(inv), np.diag(inv)))
    off = ~np.eye(9, dtype=bool)
    kmo = (r[off] ** 2).sum() / ((r[off] ** 2).sum() + (partial[off] ** 2).sum())
    assert result["kmo"] == pytest.approx(kmo, abs=1e-10)
    n, p = data.shape
    chi2 = -(n - 1 - (2 * p + 5) / 6) * np.log(np.linalg.det(r))
    assert result["bartlett_chi2"] == pytest.approx(chi2, rel=1e-10)
    assert result["bartlett_df"] == 36
    assert result["bartlett_p"] == pytest.approx(stats.chi2.sf(chi2, 36))


def test_more_items_than_raters_is_reported_not_crashed():
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.integers(1, 7, size=(20, 30)).astype(float))
    result = efa_mod.efa(x, n_factors=2)
    assert np.isnan(result["kmo"]) and "singular" in result["note"]
    long = efa_mod.efa_long(result, group_id="g1")
    assert list(long.columns[:4]) == ["group_id", "item", "factor", "loading"]
    assert len(long) == 30 * 2
