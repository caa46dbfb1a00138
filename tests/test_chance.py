"""The chance baseline: keyed pairs under permutation of the scores within groups.

Outside figures: scipy's spearmanr on every permuted pair (the counts, the histograms),
numpy's least squares (the circle fit's R^2), and the public release with its scores
shuffled within groups (no item can relate to any value there), where the rule still keys
93-100 PVQ pairs per shuffle (issue 14) and random ratings give a median circle-fit R^2 of
about .38 with 11 % of items at R^2 >= .70 against the real data's .46 and 19 % (issue 14).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import instruments as inst
from analysis.chance import (
    CHANCE_COLUMNS, RHO_EDGES, chance_baseline, permutation_rows, study_groups,
)  # fmt: skip
from analysis.circumplex import CIRCLE, cosine_r_squared, structural_summary, value_angles
from analysis.quality import quality_control
from analysis.correlations import correlation_table
from analysis.replication import split_half_replication
from analysis.selection import item_verdicts, select

DIMS = pd.MultiIndex.from_tuples([("pvq", "Power"), ("pvq", "Benevolence"), ("bfi", "Openness")],
                                 names=["family", "dimension"])


def _groups(seed=0, n=14, items=5, missing=False):
    """Two small groups with tied ratings; item 0 of each tracks Power."""
    rng = np.random.default_rng(seed)
    out = []
    for g in range(2):
        scores = pd.DataFrame(rng.normal(size=(n, 3)), columns=DIMS)
        latent = rng.normal(size=(n, items))
        latent[:, 0] += 1.5 * scores.iloc[:, 0].to_numpy()
        ratings = pd.DataFrame(np.clip(np.round(3.5 + latent), 1, 6))
        if missing:
            ratings.iloc[2, 1] = np.nan        # a rater who skipped an item
            scores.iloc[5, :] = np.nan         # a rater with no scores: left out
        out.append((f"g{g}", ratings, scores))
    return out


def _scipy_rho(x, y):
    """Spearman rho and p of every column pair by scipy, dropping missing raters pair by pair."""
    rho = np.full((x.shape[1], y.shape[1]), np.nan)
    p = rho.copy()
    for i in range(x.shape[1]):
        for d in range(y.shape[1]):
            ok = ~(np.isnan(x[:, i]) | np.isnan(y[:, d]))
            r = stats.spearmanr(x[ok, i], y[ok, d])
            rho[i, d], p[i, d] = r.statistic, r.pvalue
    return rho, p


def _brute_force(groups, permutations, seed, threshold=0.3, alpha=0.05):
    """Keyed counts (permutations x dims) and rho histograms per family, pair by pair with scipy."""
    counts = np.zeros((permutations, len(DIMS)))
    hist = {f: np.zeros((permutations, len(RHO_EDGES) - 1)) for f in ("pvq", "bfi")}
    observed = np.zeros(len(DIMS))
    fam = DIMS.get_level_values(0)
    for k, (_, ratings, scores) in enumerate(groups):
        x, y = ratings.to_numpy(float), scores.to_numpy(float)
        keep = ~np.isnan(y).all(axis=1)
        x, y = x[keep], y[keep]
        rho, p = _scipy_rho(x, y)
        observed += ((rho >= threshold) & (p < alpha)).sum(axis=0)
        orders = permutation_rows(len(x), permutations, np.random.default_rng([seed, k, 1]))
        for b, order in enumerate(orders):
            rho, p = _scipy_rho(x, y[order])
            counts[b] += ((rho >= threshold) & (p < alpha)).sum(axis=0)
            for f in hist:
                hist[f][b] += np.histogram(np.round(rho[:, fam == f], 10), bins=RHO_EDGES)[0]  # edges as documented
    return observed, counts, hist


@pytest.mark.parametrize("missing", [False, True])
def test_counts_and_histograms_equal_scipy_pair_by_pair(missing):
    groups = _groups(missing=missing)
    res = chance_baseline(groups, permutations=12, seed=4, threshold=0.3, alpha=0.05)
    observed, counts, hist = _brute_force(groups, 12, seed=4)
    t = res.table.set_index(["family", "dimension"])
    assert list(res.table.columns[: len(CHANCE_COLUMNS)]) == CHANCE_COLUMNS
    for j, (fam, dim) in enumerate(DIMS):
        row = t.loc[(fam, dim)]
        assert row["observed"] == observed[j]
        assert row["expected_mean"] == pytest.approx(counts[:, j].mean())
        assert row["expected_low"] == pytest.approx(np.quantile(counts[:, j], 0.025))
        assert row["expected_high"] == pytest.approx(np.quantile(counts[:, j], 0.975))
        assert row["perm_p"] == pytest.approx((1 + (counts[:, j] >= observed[j]).sum()) / 13)
    pvq_total = counts[:, :2].sum(axis=1)
    assert t.loc[("pvq", "all"), "expected_mean"] == pytest.approx(pvq_total.mean())
    assert t.loc[("pvq", "all"), "observed"] == observed[:2].sum()
    share = t.loc[("pvq", "all"), "false_key_share"]
    assert share == pytest.approx(min(pvq_total.mean() / observed[:2].sum(), 1.0))
    dist = res.distributions[res.distributions["statistic"] == "rho"]
    for f in ("pvq", "bfi"):
        d = dist[dist["family"] == f]
        np.testing.assert_allclose(d["expected_mean"], hist[f].mean(axis=0))
        np.testing.assert_allclose(d["expected_high"], np.quantile(hist[f], 0.975, axis=0))


def test_nothing_keyed_gives_no_share_and_says_why():
    groups = _groups()
    res = chance_baseline(groups, permutations=5, threshold=0.99)
    row = res.table.set_index(["family", "dimension"]).loc[("bfi", "Openness")]
    assert row["observed"] == 0 and np.isnan(row["false_key_share"]) and "no pair keyed" in row["note"]
    with pytest.raises(ValueError, match="permutations"):
        chance_baseline(groups, permutations=0)


def test_permutations_are_permutations_and_seeded():
    rows = permutation_rows(9, 50, np.random.default_rng(1))
    assert (np.sort(rows, axis=1) == np.arange(9)).all() and len({r.tobytes() for r in rows}) > 45
    a = chance_baseline(_groups(), permutations=20, seed=3).table
    b = chance_baseline(_groups(), permutations=20, seed=3).table
    c = chance_baseline(_groups(), permutations=20, seed=4).table
    pd.testing.assert_frame_equal(a, b)
    assert not a["expected_mean"].equals(c["expected_mean"])


def test_circle_r_squared_equals_least_squares():
    rng = np.random.default_rng(2)
    r = rng.normal(0, 0.2, size=(30, 10))
    frame = pd.DataFrame(r, columns=list(CIRCLE))
    angles = value_angles()[list(CIRCLE)].to_numpy()
    np.testing.assert_allclose(cosine_r_squared(r, angles), structural_summary(frame)["r_squared"], atol=1e-12)
    # by hand: numpy's least squares on one row, R^2 = 1 - SS_res / SS_tot
    design = np.column_stack([np.ones(10), np.cos(np.deg2rad(angles)), np.sin(np.deg2rad(angles))])
    fitted = design @ np.linalg.lstsq(design, r[0], rcond=None)[0]
    hand = 1 - ((r[0] - fitted) ** 2).sum() / ((r[0] - r[0].mean()) ** 2).sum()
    assert cosine_r_squared(r[None, :1], angles)[0, 0] == pytest.approx(hand, abs=1e-12)
    assert np.isnan(cosine_r_squared(np.full(10, 0.2), angles))  # no variation: no R^2


# -- the release ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def release(release_analysis):
    study, _ = release_analysis
    return study, quality_control(study).included


def shuffled_within_groups(study, included, seed):
    """The study with its scores permuted among the included raters of each group."""
    rng = np.random.default_rng(seed)
    scores = study.scores.copy()
    for _, part in included.groupby("group_id"):
        ids = [p for p in part["participant_id"] if p in scores.index]
        scores.loc[ids] = scores.loc[ids].to_numpy()[rng.permutation(len(ids))]
    return dataclasses.replace(study, scores=scores)


def _included_ratings(study, included):
    keys = pd.MultiIndex.from_frame(included[["participant_id", "group_id"]])
    r = study.ratings
    return r[pd.MultiIndex.from_frame(r[["participant_id", "group_id"]]).isin(keys)]


def test_release_real_keys_exceed_chance_and_circle_baseline(release):
    study, included = release
    res = chance_baseline(study_groups(study, included), permutations=200, seed=0)
    t = res.table.set_index(["family", "dimension"])
    pvq = t.loc[("pvq", "all")]
    assert pvq["observed"] == 287 and pvq["pairs"] == 5200            # issue 4's figure
    assert pvq["expected_low"] <= 97 <= pvq["expected_high"]            # one shuffle keyed 93-100 (issue 14)
    assert pvq["observed"] > pvq["expected_high"] and pvq["perm_p"] < 0.01
    assert 0.25 < pvq["false_key_share"] < 0.5
    c = res.circumplex.set_index("statistic")
    assert c.loc["median_r_squared", "observed"] == pytest.approx(0.46, abs=0.01)
    assert c.loc["median_r_squared", "expected_mean"] == pytest.approx(0.38, abs=0.03)
    assert c.loc["share_r_squared_at_least_0.70", "observed"] == pytest.approx(0.19, abs=0.01)
    assert c.loc["share_r_squared_at_least_0.70", "expected_mean"] == pytest.approx(0.11, abs=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("shuffle", [1, 2])
def test_release_with_scores_shuffled_within_groups(release, shuffle):
    """No item relates to any value: the keys fall inside chance's range, and held-out rho is about 0.

    A 95 % range leaves out one shuffle in twenty by construction: shuffles 1-4 key 120, 108,
    105 and 141 PVQ pairs against ranges of about [84-135]; the fourth is above. Pooled held-out
    rho over those shuffles: +0.014, -0.005, +0.000, +0.016 (the circular figure: .21 each time).
    """
    study, included = release
    fake = shuffled_within_groups(study, included, shuffle)
    res = chance_baseline(study_groups(fake, included), permutations=200, seed=shuffle)
    pvq = res.table.set_index(["family", "dimension"]).loc[("pvq", "all")]
    assert pvq["expected_low"] <= pvq["observed"] <= pvq["expected_high"]
    assert pvq["false_key_share"] > 0.6
    scores = fake.scores.copy()
    scores.columns = scores.columns.get_level_values("dimension")
    rep = split_half_replication(_included_ratings(fake, included), scores, dict(inst.FAMILY_OF), splits=100,
                                 seed=shuffle)
    pooled = rep["shrinkage"].set_index(["family", "dimension"]).loc[("pvq", "all")]
    assert abs(pooled["heldout_rho_mean"]) < 0.03
    assert pooled["selected_rho_mean"] > 0.45   # what the selecting halves saw
    # The figure the issue found misleading: keyed on all raters, "held out" on a half of them.
    pairs = rep["pairs"]
    keyed = pairs[(pairs["family"] == "pvq") & pairs["keyed_full"]]
    assert keyed["heldout_rho_mean"].mean() > 0.15
    # Every key is false here: few are called "replicates" (2-3 %; 8 % on the real release), hardly any survive FDR.
    corr = correlation_table(fake, included)
    verdicts = item_verdicts(select(corr), corr, pairs)
    assert len(verdicts) > 150 and verdicts["replicates"].mean() < 0.05 and verdicts["survives_fdr"].sum() <= 2
