"""Alpha, Spearman-Brown and omega against pingouin's documented figures and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import reliability as rel

pg = pytest.importorskip("pingouin")


def numpy_alpha(x: np.ndarray) -> float:
    """Cronbach's alpha the textbook way: k/(k-1) * (1 - sum of item variances / variance of the sum)."""
    k = x.shape[1]
    return k / (k - 1) * (1 - x.var(axis=0, ddof=1).sum() / x.sum(axis=1).var(ddof=1))


def test_alpha_matches_pingouin_documented_example():
    # pingouin docs: pg.cronbach_alpha(data, items="Items", scores="Scores", subject="Subj")
    # -> (0.5917188485995826, array([0.195, 0.84 ])), tested there against R's psych.
    long = pg.read_dataset("cronbach_alpha")
    wide = long.pivot(index="Subj", columns="Items", values="Scores")
    alpha, low, high = rel.cronbach_alpha(wide)
    assert alpha == pytest.approx(0.5917188485995826, abs=1e-12)
    assert round(low, 3) == 0.195 and round(high, 3) == 0.840
    assert alpha == pytest.approx(numpy_alpha(wide.to_numpy(float)), abs=1e-12)


def test_alpha_listwise_matches_psych_complete_obs():
    # pingouin docs: psych::alpha(data, use="complete.obs") -> 0.8016949152542373.
    data = pg.read_dataset("cronbach_wide_missing")
    alpha, low, high = rel.cronbach_alpha(data)
    assert alpha == pytest.approx(0.8016949152542373, abs=1e-12)
    complete = data.dropna().to_numpy(float)
    assert alpha == pytest.approx(numpy_alpha(complete), abs=1e-12)
    # Feldt's interval on the rows actually used (pingouin keeps n of the rows before deletion).
    n, k = complete.shape
    assert low == pytest.approx(1 - (1 - alpha) * stats.f.ppf(0.975, n - 1, (n - 1) * (k - 1)))
    assert high == pytest.approx(1 - (1 - alpha) * stats.f.ppf(0.025, n - 1, (n - 1) * (k - 1)))


def test_alpha_random_data_against_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 1)) + rng.normal(size=(80, 5))
    assert rel.cronbach_alpha(pd.DataFrame(x))[0] == pytest.approx(numpy_alpha(x), abs=1e-12)
    assert math.isnan(rel.cronbach_alpha(pd.DataFrame(x[:, :1]))[0])


def test_spearman_brown_hand_cases():
    assert rel.spearman_brown(0.5) == pytest.approx(2 / 3)  # 2 * .5 / 1.5
    assert rel.spearman_brown(0.6, k=3) == pytest.approx(1.8 / 2.2)
    assert np.allclose(rel.spearman_brown(np.array([0.0, 1.0])), [0.0, 1.0])
    # For two standardised items the Spearman-Brown of r equals standardised alpha.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1)) + rng.normal(size=(200, 2))
    z = (x - x.mean(0)) / x.std(0, ddof=1)
    assert rel.spearman_brown(np.corrcoef(x.T)[0, 1]) == pytest.approx(numpy_alpha(z))


def test_omega_on_holzinger_swineford_against_semopy_loadings():
    semopy = pytest.importorskip("semopy")
    from semopy.examples import holzinger39

    data = holzinger39.get_data()
    items = ["x1", "x2", "x3"]
    # A different route to the loadings: semopy's ML on the covariances, standardised.
    model = semopy.Model("visual =~ x1 + x2 + x3")
    model.fit(data[items])
    std = model.inspect(std_est=True)
    lam = np.array([std.loc[(std.lval == i) & (std.rval == "visual"), "Est. Std"].item() for i in items])
    by_hand = lam.sum() ** 2 / (lam.sum() ** 2 + (1 - lam**2).sum())
    assert rel.mcdonald_omega(data[items]) == pytest.approx(by_hand, abs=1e-4)
    # Alpha assumes equal loadings; with unequal ones it falls below omega.
    assert rel.mcdonald_omega(data[items]) >= rel.cronbach_alpha(data[items])[0] - 1e-9


def test_omega_equal_loadings_is_alpha_of_standardised_items():
    # Hand case: with equal loadings l, omega = k^2 l^2 / (k^2 l^2 + k (1 - l^2)), which is the
    # population standardised alpha. l = .7, k = 4: 7.84 / (7.84 + 2.04) = 0.7935.
    assert rel.omega_from_loadings([0.7] * 4) == pytest.approx(7.84 / 9.88)
    rng = np.random.default_rng(11)
    f = rng.normal(size=(4000, 1))
    x = 0.7 * f + math.sqrt(1 - 0.49) * rng.normal(size=(4000, 4))
    assert rel.mcdonald_omega(pd.DataFrame(x)) == pytest.approx(7.84 / 9.88, abs=0.02)


def test_instrument_reliability_reverses_bfi_and_uses_spearman_brown():
    rng = np.random.default_rng(5)
    n = 300
    trait = rng.normal(size=n)
    answers = pd.DataFrame({f"pvq{i}": rng.integers(1, 7, n) for i in range(1, 22)})
    for i in range(1, 11):
        answers[f"bfi{i}"] = rng.integers(1, 6, n)
    # Extraversion: bfi1 reversed, bfi6 straight; make both track the same trait.
    answers["bfi6"] = np.clip(np.round(3 + trait + 0.5 * rng.normal(size=n)), 1, 5)
    answers["bfi1"] = 6 - np.clip(np.round(3 + trait + 0.5 * rng.normal(size=n)), 1, 5)
    table = rel.instrument_reliability(answers)
    assert list(table.columns) == rel.COLUMNS
    assert len(table) == 10 + 4 + 5
    extra = table.set_index("dimension").loc["Extraversion"]
    r = np.corrcoef(6 - answers["bfi1"], answers["bfi6"])[0, 1]
    assert r > 0.6
    assert extra.spearman_brown == pytest.approx(2 * r / (1 + r))
    assert extra.alpha == pytest.approx(numpy_alpha(np.column_stack([6 - answers.bfi1, answers.bfi6])))
    assert math.isnan(extra.omega) and "Spearman-Brown" in extra.note
    universalism = table.set_index("dimension").loc["Universalism"]  # the one three-item value
    assert universalism.n_items == 3 and not math.isnan(universalism.omega)
    assert table.set_index("dimension").loc["Conservation", "n_items"] == 6


def test_group_reliability_reverses_negative_keys():
    rng = np.random.default_rng(8)
    n = 120
    latent = rng.normal(size=n)
    rows = []
    for item, sign in [(1, 1), (2, 1), (3, -1), (4, 0)]:
        raw = 3.5 + sign * 1.2 * latent + rng.normal(size=n) if sign else rng.normal(3.5, 1.2, n)
        for pid, r in enumerate(np.clip(np.round(raw), 1, 6)):
            rows.append({"participant_id": f"P{pid}", "group_id": "g1", "portrait_id": "1001", "option_id": item, "rating": r})
    ratings = pd.DataFrame(rows)
    selection = pd.DataFrame(
        {
            "portrait_id": ["1001"] * 3 + ["1001"],
            "option_id": [1, 2, 3, 4],
            "family": ["pvq"] * 3 + ["bfi"],
            "dimension": ["Power"] * 3 + ["Openness"],
            "rho": [0.5, 0.45, -0.4, 0.35],
        }
    )
    table = rel.reliability_table(ratings=ratings, selection=selection)
    assert len(table) == 1  # Openness has a single keyed item: no row
    row = table.iloc[0]
    assert row.scope == "g1" and row.n_items == 3 and row.n == n
    wide = ratings.pivot(index="participant_id", columns="option_id", values="rating")
    expected = numpy_alpha(np.column_stack([wide[1], wide[2], 7 - wide[3]]))
    assert row.alpha == pytest.approx(expected)
    assert row.alpha > 0.7 and row.omega > 0.7


# --------------------------------------------------------------------------- psych's alpha() and its warnings

HS_ITEMS = [f"x{i}" for i in range(1, 10)]


@pytest.fixture(scope="module")
def hs() -> pd.DataFrame:
    holzinger39 = pytest.importorskip("semopy.examples.holzinger39")
    return holzinger39.get_data()[HS_ITEMS]


def test_psych_alpha_on_holzinger_swineford(hs):
    # psych::alpha(HolzingerSwineford1939[, 7:15]): raw_alpha .76; alpha if each item is dropped
    # .72 .76 .75 .72 .72 .71 .77 .75 .73.
    row, items = rel.scale_item_rows(hs, "test", "hs", "all")
    assert round(row["alpha"], 2) == 0.76 and round(row["std_alpha"], 2) == 0.76
    assert items["alpha_if_dropped"].round(2).tolist() == [0.72, 0.76, 0.75, 0.72, 0.72, 0.71, 0.77, 0.75, 0.73]
    # Each alpha-if-dropped is the alpha of the other eight (pingouin), and the corrected
    # item-total correlation is the correlation of the item with the sum of the others.
    for item, r in items.set_index("item").iterrows():
        rest = hs.drop(columns=item)
        assert r.alpha_if_dropped == pytest.approx(pg.cronbach_alpha(rest)[0], abs=1e-12)
        assert r.item_rest_r == pytest.approx(np.corrcoef(hs[item], rest.sum(axis=1))[0, 1], abs=1e-12)
        assert r.sd == pytest.approx(hs[item].std(ddof=1))
    corr = np.corrcoef(hs.to_numpy().T)
    rbar = corr[np.triu_indices(9, 1)].mean()
    assert row["average_r"] == pytest.approx(rbar) and row["std_alpha"] == pytest.approx(9 * rbar / (1 + 8 * rbar))
    assert row["min_item_rest_r"] == pytest.approx(items["item_rest_r"].min())
    assert row["note"] == "" and row["warning"] is False


def test_negative_alpha_and_reversed_items_are_named():
    # Two items that move in opposite directions: alpha < 0, as psych warns (finding: -0.41
    # was shown plainly).
    rng = np.random.default_rng(2)
    t = rng.normal(size=200)
    pair = pd.DataFrame({"a": t + rng.normal(size=200), "b": -t + rng.normal(size=200)})
    row = rel.scale_row(pair, "f", "d", "g1")
    assert row["alpha"] < 0 and row["alpha"] == pytest.approx(numpy_alpha(pair.to_numpy()))
    assert row["note"].startswith(f"negative alpha ({row['alpha']:.2f})") and row["warning"]
    # One reversed item among four: the only negative item-rest correlation, named.
    block = pair.assign(c=t + rng.normal(size=200), d=t + rng.normal(size=200))
    row, items = rel.scale_item_rows(block, "f", "d", "g1")
    r_b = items.set_index("item").loc["b", "item_rest_r"]
    assert r_b == pytest.approx(np.corrcoef(block.b, block[["a", "c", "d"]].sum(axis=1))[0, 1])
    assert f"reversed? negative item-rest correlation: b ({r_b:.2f})" in row["note"]
    assert (items.set_index("item").drop(index="b")["item_rest_r"] > 0).all()
    assert "loadings of mixed sign, negative for b" in row["note"]  # omega of a sum with a reversed item


def test_zero_variance_items_are_dropped_and_named(hs):
    row, items = rel.scale_item_rows(hs[["x1", "x2", "x3"]].assign(flat=3.0), "f", "d", "g1")
    assert row["n_items"] == 3 and "zero-variance items left out: flat" in row["note"] and row["warning"]
    assert row["alpha"] == pytest.approx(numpy_alpha(hs[["x1", "x2", "x3"]].to_numpy()))
    assert "flat" not in set(items["item"])


def test_omega_at_the_uniqueness_floor_is_named():
    # The correlation matrix with an implied squared loading of 1.28 for item a: the
    # one-factor ML fit hits factor_analyzer's floor (.005), loading .9975, and omega was
    # reported with no note.
    from tests.test_cfa import HEYWOOD, exact_sample

    row, items = rel.scale_item_rows(exact_sample(HEYWOOD, 200, names=list("abcd")), "f", "d", "g1")
    assert "one-factor model improper (Heywood case): uniqueness at its floor 0.005 for a (loading 0.9975)" in row["note"]
    lam = items["omega_loading"].to_numpy()
    assert lam[0] == pytest.approx(math.sqrt(0.995), abs=1e-4)  # 1 - lambda^2 at the floor
    # omega is still the formula of those loadings, shown with the warning beside it.
    assert row["omega"] == pytest.approx(lam.sum() ** 2 / (lam.sum() ** 2 + (1 - lam**2).sum()))


def test_omega_needs_more_respondents_than_items():
    rng = np.random.default_rng(4)
    block = pd.DataFrame(rng.normal(size=(4, 1)) + rng.normal(size=(4, 5)))
    row = rel.scale_row(block, "f", "d", "g1")
    assert math.isnan(row["omega"]) and "omega not estimable: 4 respondents for 5 items" in row["note"]
    assert not math.isnan(row["alpha"])
    assert math.isnan(rel.mcdonald_omega(block))


def test_reliability_items_table():
    rng = np.random.default_rng(9)
    answers = pd.DataFrame({f"pvq{i}": rng.integers(1, 7, 150) for i in range(1, 22)})
    scales, items = rel.instrument_reliability(answers, with_items=True)
    assert list(items.columns) == rel.ITEM_COLUMNS and list(scales.columns) == rel.COLUMNS
    universalism = items[items.dimension == "Universalism"]
    assert universalism["item"].tolist() == ["pvq3", "pvq8", "pvq19"]
    assert universalism["omega_loading"].notna().all()
    two = items[items.dimension == "Power"]
    assert two["alpha_if_dropped"].isna().all()  # one item left has no alpha
    assert scales.set_index("dimension").loc["Power", "warning"] in (True, False)


def test_mean_matrix_equals_pandas_pivot_table():
    # The raters x items matrix of group reliability, built by counting, against pandas'
    # pivot_table(aggfunc="mean") on the same long table (a repeated rating averaged, a
    # missing one NaN).
    rng = np.random.default_rng(12)
    long = pd.DataFrame({"participant_id": rng.choice([f"P{i}" for i in range(40)], 900),
                         "item": rng.choice([f"q{j}/{k}" for j in range(9) for k in range(3)], 900),
                         "rating": rng.integers(1, 7, 900)})
    expected = long.pivot_table(index="participant_id", columns="item", values="rating", aggfunc="mean")
    got = rel._mean_matrix(long)
    pd.testing.assert_frame_equal(got, expected.astype(float), check_names=False)
    assert got.isna().any().any()


@pytest.mark.parametrize("seed", range(6))
def test_one_factor_fit_in_closed_form_equals_factor_analyzer(seed):
    # A proper one-factor solution is found without factor_analyzer; it must be
    # factor_analyzer's ML solution (another optimiser, L-BFGS-B on the uniquenesses).
    fa_mod = pytest.importorskip("factor_analyzer")
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(40, 300)), int(rng.integers(3, 9))
    lam = rng.uniform(0.2, 0.85, k)
    x = rng.normal(size=(n, 1)) * lam + rng.normal(size=(n, k)) * np.sqrt(1 - lam**2)
    data = pd.DataFrame(np.round(x * 1.2 + 3.5).clip(1, 6), columns=[f"i{j}" for j in range(k)])
    from analysis.cfa import one_factor_ml_correlations

    assert one_factor_ml_correlations(data.corr().to_numpy()) is not None  # the closed-form route is taken
    loadings, uniq, converged = rel.one_factor_fit(data)
    fa = fa_mod.FactorAnalyzer(n_factors=1, rotation=None, method="ml").fit(data)
    ref = fa.loadings_.ravel() * np.sign(fa.loadings_.sum())
    assert converged
    np.testing.assert_allclose(loadings, ref, atol=2e-4)
    assert rel.omega_from_loadings(loadings) == pytest.approx(rel.omega_from_loadings(ref), abs=1e-4)
