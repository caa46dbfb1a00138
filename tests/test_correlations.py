"""Vectorised Spearman table against scipy.stats.spearmanr; BH against a hand computation; bootstrap against a plain loop."""

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from analysis.correlations import (CONTRACT_COLUMNS, _bootstrap_complete, bh_q_values, bootstrap_ci,
                                   correlation_table, spearman_matrix)
from analysis.dataset import load_study
from analysis.release import import_release
from valueportrait.storage import open_db


@pytest.fixture(scope="module")
def study(release_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("corr") / "study.db"
    with open_db(path) as db:
        import_release(release_dir, db)
        return load_study(db)


def test_every_release_correlation_equals_scipy(study):
    included = study.participations[["participant_id", "group_id"]]
    table = correlation_table(study, included)
    assert list(table.columns) == CONTRACT_COLUMNS
    assert len(table) == 520 * 19
    refs = []
    for gid in study.groups["group_id"]:
        # Independently of the library: the raters of each item straight from the long table.
        ratings = study.ratings[study.ratings["group_id"] == gid]
        for (pid, oid), item in ratings.groupby(["portrait_id", "option_id"]):
            people = item["participant_id"].to_numpy()
            x = item["rating"].to_numpy(float)
            scores = study.scores.loc[people].to_numpy(float)
            for j, (fam, dim) in enumerate(study.scores.columns):
                ref = spearmanr(x, scores[:, j])
                refs.append((pid, oid, fam, dim, ref.statistic, ref.pvalue, len(x)))
    refs = pd.DataFrame(refs, columns=["portrait_id", "option_id", "family", "dimension", "ref_rho", "ref_p", "ref_n"])
    both = table.merge(refs, on=["portrait_id", "option_id", "family", "dimension"], validate="one_to_one")
    assert len(both) == 9880
    assert (both["n"] == both["ref_n"]).all()
    assert (both["rho"] - both["ref_rho"]).abs().max() < 1e-12
    assert (both["p_value"] - both["ref_p"]).abs().max() < 1e-12


def test_missing_ratings_use_each_pairs_raters():
    rng = np.random.default_rng(3)
    x = rng.integers(1, 7, size=(40, 6)).astype(float)
    y = rng.normal(size=(40, 3))
    x[rng.random(x.shape) < 0.2] = np.nan
    y[[2, 7], 1] = np.nan
    res = spearman_matrix(x, y)
    for i in range(x.shape[1]):
        for d in range(y.shape[1]):
            ok = ~np.isnan(x[:, i]) & ~np.isnan(y[:, d])
            ref = spearmanr(x[ok, i], y[ok, d])
            assert res.n.iat[i, d] == ok.sum()
            assert res.rho.iat[i, d] == pytest.approx(ref.statistic, abs=1e-12)
            assert res.p_value.iat[i, d] == pytest.approx(ref.pvalue, abs=1e-12)


def test_constant_column_has_no_rho():
    x = np.array([[3.0, 1], [3, 2], [3, 3], [3, 5]])
    y = np.array([[1.0], [2], [4], [3]])
    res = spearman_matrix(x, y)
    assert np.isnan(res.rho.iat[0, 0]) and np.isnan(res.p_value.iat[0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert res.rho.iat[1, 0] == pytest.approx(spearmanr(x[:, 1], y[:, 0]).statistic, abs=1e-12)


def test_bh_matches_a_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.20, np.nan])
    # Sorted: 0.01, 0.03, 0.04, 0.20 with m = 4: p * m / rank = 0.04, 0.06, 0.0533, 0.20;
    # step-up minimum from the top: 0.04, 0.0533, 0.0533, 0.20.
    q = bh_q_values(p)
    np.testing.assert_allclose(q[:4], [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.20], rtol=1e-12)
    assert np.isnan(q[4])


def test_q_values_are_within_family(study):
    table = correlation_table(study, study.participations[["participant_id", "group_id"]])
    bfi = table[table["family"] == "bfi"]
    np.testing.assert_allclose(bfi["q_value"], bh_q_values(bfi["p_value"]), rtol=1e-12)
    assert not np.allclose(table["q_value"], bh_q_values(table["p_value"]))


def test_bootstrap_equals_a_plain_loop_and_batches_do_not_matter():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 7, size=(30, 4)).astype(float)
    y = np.round(rng.normal(size=(30, 2)), 1)
    indices = rng.integers(0, 30, size=(200, 30))
    low, high = _bootstrap_complete(x, y, indices, 0.95, batch=37)
    low2, high2 = _bootstrap_complete(x, y, indices, 0.95, batch=200)
    np.testing.assert_array_equal(low, low2)
    np.testing.assert_array_equal(high, high2)
    for i in range(4):
        for d in range(2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rhos = np.array([spearmanr(x[idx, i], y[idx, d]).statistic for idx in indices])
            rhos = rhos[~np.isnan(rhos)]
            assert low[i, d] == pytest.approx(np.percentile(rhos, 2.5), abs=1e-12)
            assert high[i, d] == pytest.approx(np.percentile(rhos, 97.5), abs=1e-12)


def test_bootstrap_is_seeded_and_brackets_rho(study):
    included = study.participations[["participant_id", "group_id"]]
    small = study.groups.iloc[:2]
    sub = dataclasses.replace(study, groups=small)
    a = correlation_table(sub, included, bootstrap=300, seed=5)
    b = correlation_table(sub, included, bootstrap=300, seed=5)
    c = correlation_table(sub, included, bootstrap=300, seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["ci_low"], c["ci_low"])
    assert (a["ci_low"] < a["ci_high"]).all()
    inside = ((a["ci_low"] <= a["rho"]) & (a["rho"] <= a["ci_high"])).mean()
    assert inside > 0.97


def test_bootstrap_with_missing_ratings_resamples_each_items_raters():
    rng = np.random.default_rng(1)
    x = rng.integers(1, 7, size=(25, 3)).astype(float)
    x[:5, 0] = np.nan
    y = rng.normal(size=(25, 2))
    low, high = bootstrap_ci(x, y, 400, np.random.default_rng(0))
    res = spearman_matrix(x, y)
    assert np.isfinite(low).all() and np.isfinite(high).all()
    assert ((low <= res.rho.to_numpy()) & (res.rho.to_numpy() <= high)).all()


def test_bh_refuses_values_that_are_not_p_values():

    with pytest.raises(ValueError, match=r"p-value 1.5 at position 1: a p-value lies in \[0, 1\]"):
        bh_q_values([0.01, 1.5, 0.2])
    with pytest.raises(ValueError, match="-0.1"):
        bh_q_values([-0.1])
    q = bh_q_values([0.01, np.nan, 1.0, 0.0])  # the edges are p-values; NaN stays NaN
    assert np.isnan(q[1]) and q[3] == 0.0 and q[2] == 1.0


def test_average_ranks_equal_scipys_rankdata_with_ties():
    from scipy.stats import rankdata

    from analysis.correlations import average_ranks

    rng = np.random.default_rng(3)
    a = rng.integers(1, 7, size=(47, 30)).astype(float)  # six-point ratings: many ties
    a[:, 0] = 4.0                                         # one constant column
    for axis in (0, 1):
        np.testing.assert_array_equal(average_ranks(a, axis=axis), rankdata(a, axis=axis))        # by counting
    b = np.round(rng.normal(size=(47, 30)), 1) * 10.5                                          # by sorting
    for axis in (0, 1):
        np.testing.assert_array_equal(average_ranks(b, axis=axis), rankdata(b, axis=axis))


def test_groups_ranked_together_equal_scipy_group_by_group():
    # The table ranks complete groups of different sizes in one NaN-padded array; each
    # group's rho must still be scipy's on that group's own raters.
    from analysis.correlations import _spearman_complete_many

    rng = np.random.default_rng(5)
    pairs = [(rng.integers(1, 7, size=(n, k)).astype(float), rng.normal(size=(n, 3)).round(1))
             for n, k in [(41, 5), (48, 7), (44, 6)]]
    for (x, y), rho in zip(pairs, _spearman_complete_many(pairs)):
        assert rho.shape == (x.shape[1], 3)
        for i in range(x.shape[1]):
            for j in range(3):
                assert rho[i, j] == pytest.approx(spearmanr(x[:, i], y[:, j]).statistic, abs=1e-12)


def test_bh_equals_statsmodels_fdr_bh():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(4)
    p = np.concatenate([rng.uniform(size=500), rng.uniform(0, 1e-4, size=50), [0.0, 1.0, 0.5, 0.5]])
    np.testing.assert_allclose(bh_q_values(p), multipletests(p, method="fdr_bh")[1], rtol=0, atol=1e-15)
    with_nan = np.where(np.arange(len(p)) % 7 == 0, np.nan, p)
    q = bh_q_values(with_nan)
    ok = ~np.isnan(with_nan)
    assert np.isnan(q[~ok]).all()
    np.testing.assert_allclose(q[ok], multipletests(with_nan[ok], method="fdr_bh")[1], rtol=0, atol=1e-15)


def test_significant_is_p_below_alpha_also_at_the_critical_rho():
    from analysis.correlations import critical_rho, significant, spearman_p

    rng = np.random.default_rng(6)
    n = rng.integers(3, 60, size=20000).astype(float)
    rho = rng.uniform(-1, 1, size=20000)
    crit = critical_rho(n[:300], 0.05)
    # Right at the critical rho and a few ulps either side: decided by p itself.
    near = np.concatenate([crit, np.nextafter(crit, 2), np.nextafter(crit, -2), -crit])
    rho = np.concatenate([rho, near, [np.nan]])
    n = np.concatenate([n, np.tile(n[:300], 4), [30]])
    for alpha in (0.05, 0.01):
        np.testing.assert_array_equal(significant(rho, n, alpha), np.nan_to_num(spearman_p(rho, n), nan=1) < alpha)
    # scipy's p for the critical rho at n = 46 is alpha itself.
    from scipy import stats
    r = float(critical_rho(46, 0.05))
    t = r * np.sqrt(44 / (1 - r * r))
    assert 2 * stats.t.sf(t, 44) == pytest.approx(0.05, abs=1e-12)
