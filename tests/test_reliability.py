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
