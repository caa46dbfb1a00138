"""The two-stage design's planning: promise, empirical Bayes, power under FDR, packing, `vp plan-wave`."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from analysis import design
from analysis.power import achieved_power, raters_needed


# -- power under FDR ------------------------------------------------------------------------------
def test_fdr_alpha_is_jungs_formula_by_hand():
    # Jung (2005), eq. 4, worked by hand: m = 4000 genes, m1 = 40 true, power 0.6 (r1 = 24), FDR 1%:
    # a* = 24 * 0.01 / (3960 * 0.99) = 6.1218e-05.
    assert design.fdr_alpha(40, 3960, power=0.6, fdr=0.01) == pytest.approx(24 * 0.01 / (3960 * 0.99), rel=1e-12)
    assert design.fdr_alpha(40, 3960, power=0.6, fdr=0.01) == pytest.approx(6.1218e-05, abs=5e-10)
    # With no nulls there is nothing to control: the level is the FDR itself; it never exceeds it.
    assert design.fdr_alpha(10, 0) == 0.05
    assert design.fdr_alpha(1000, 1) == 0.05


def test_bh_at_jungs_level_keeps_the_fdr_and_the_power():
    """Simulated z-tests sized by fdr_alpha: BH's realised FDR is about f and its power about the target."""
    rng = np.random.default_rng(5)
    m1, m0, f, power = 60, 1940, 0.05, 0.8
    a = design.fdr_alpha(m1, m0, power, f)
    shift = stats.norm.isf(a / 2) + stats.norm.ppf(power)  # the effect a two-sided z-test at level a detects with `power`
    from statsmodels.stats.multitest import multipletests
    fdp, tpr = [], []
    for _ in range(200):
        z = np.r_[rng.normal(shift, 1, m1), rng.normal(0, 1, m0)]
        reject = multipletests(2 * stats.norm.sf(np.abs(z)), f, "fdr_bh")[0]
        fdp.append(reject[m1:].sum() / max(reject.sum(), 1))
        tpr.append(reject[:m1].mean())
    assert np.mean(fdp) < f * 1.2
    assert abs(np.mean(tpr) - power) < 0.05


# -- empirical Bayes --------------------------------------------------------------------------------
def _two_point(rng, m=6000, share=0.05, mu=0.5, sd=0.2):
    truth = np.where(rng.random(m) < share, mu, 0.0)
    return truth, truth + rng.normal(0, sd, m)


def test_npmle_meets_lindsays_gradient_condition():
    rng = np.random.default_rng(1)
    _, x = _two_point(rng)
    grid = np.linspace(-0.6, 1.0, 81)
    sd = np.full((len(x), 1), 0.2)
    w, _ = design.npmle_prior(x, sd, grid)
    like = stats.norm.pdf((x[:, None] - grid[None, :]) / sd) / sd
    gradient = (like / (like @ w)[:, None]).mean(axis=0)
    # Lindsay (1983): at the NPMLE, mean_i L_ik / f_i <= 1 everywhere, = 1 on the support.
    assert gradient.max() < 1 + 2e-3
    assert np.all(np.abs(gradient[w > 1e-3] - 1) < 2e-3)
    assert w.sum() == pytest.approx(1)


def test_npmle_posterior_matches_bayes_with_the_true_prior():
    """With a known two-point prior, the posterior P(mu >= 0.3 | x) is Bayes' rule by hand; the NPMLE's comes close."""
    rng = np.random.default_rng(2)
    truth, x = _two_point(rng)
    like1, like0 = 0.05 * stats.norm.pdf(x, 0.5, 0.2), 0.95 * stats.norm.pdf(x, 0.0, 0.2)
    exact = like1 / (like1 + like0)
    grid = np.linspace(-0.6, 1.0, 161)
    sd = np.full((len(x), 1), 0.2)
    w, _ = design.npmle_prior(x, sd, grid)
    post = stats.norm.pdf((x[:, None] - grid[None, :]) / 0.2) * w
    estimate = post[:, grid >= 0.3].sum(axis=1) / post.sum(axis=1)
    assert np.abs(estimate - exact).mean() < 0.02
    assert estimate.sum() == pytest.approx((truth > 0).sum(), rel=0.15)   # the expected count of real effects


def test_strong_pair_probability_on_fisher_z_with_binning():
    """Correlations drawn around a known mixture: probabilities in [0, 1], the count near the truth, higher for higher rho."""
    rng = np.random.default_rng(3)
    m, n = 5000, 60
    true = np.where(rng.random(m) < 0.04, 0.45, 0.0)
    z = np.arctanh(true) + rng.normal(0, 1, m) * np.sqrt((1 + true ** 2 / 2) / (n - 3))
    table = pd.DataFrame({"family": "pvq", "rho": np.tanh(z), "n": n})
    table.loc[::997, "rho"] = np.nan
    prob = design.strong_pair_probability(table, threshold=0.3)
    assert prob.isna().sum() == table["rho"].isna().sum()
    ok = prob.notna()
    assert prob[ok].between(0, 1).all()
    assert prob[ok].sum() == pytest.approx((true[ok.to_numpy()] >= 0.3).sum(), rel=0.15)
    order = np.argsort(table.loc[ok, "rho"].to_numpy())
    assert np.all(np.diff(prob[ok].to_numpy()[order]) >= -1e-9)  # monotone in the estimate


# -- permutation null ----------------------------------------------------------------------------------
def test_permuted_rho_is_spearman_of_the_shuffled_scores():
    rng = np.random.default_rng(4)
    ratings = rng.integers(1, 7, (30, 5)).astype(float)
    scores = rng.normal(size=(30, 3))
    null = design.permuted_rho(ratings, scores, 4, np.random.default_rng(9))
    order = np.random.default_rng(9).permuted(np.broadcast_to(np.arange(30), (4, 30)), axis=1)
    for b in range(4):
        expected = stats.spearmanr(ratings, scores[order[b]]).statistic[:5, 5:]
        np.testing.assert_allclose(null[b], expected, atol=1e-12)


def test_permuted_rho_with_missing_ratings_uses_the_raters_who_rated():
    rng = np.random.default_rng(6)
    ratings = rng.integers(1, 7, (40, 4)).astype(float)
    ratings[:10, 0] = np.nan   # item 0 rated by the last 30 raters only
    scores = rng.normal(size=(40, 2))
    null = design.permuted_rho(ratings, scores, 50, np.random.default_rng(1))
    order = np.random.default_rng(1).permuted(np.tile(np.arange(40), (50, 1)), axis=1)
    ok = ~np.isnan(ratings[:, 0])
    expected = stats.spearmanr(ratings[ok, 0], scores[order[7]][ok, 1]).statistic
    assert null[7, 0, 1] == pytest.approx(expected, abs=1e-12)
    assert np.isfinite(null).all() and abs(null.mean()) < 0.05


# -- packing and the plan ------------------------------------------------------------------------------------
def _items(promise, expected, portraits=None):
    n = len(promise)
    portraits = portraits or [f"{1000 + i}" for i in range(n)]
    return pd.DataFrame({"portrait_id": portraits, "option_id": [1 + i % 5 for i in range(n)], "promise": promise,
                         "expected_strong_pairs": expected})


def test_pack_groups_keeps_queries_together_and_takes_the_best():
    ordered = pd.DataFrame({"portrait_id": ["A", "B", "A", "C", "B", "A", "D", "E"],
                            "option_id": [1, 1, 2, 1, 2, 3, 1, 1]})
    groups = design.pack_groups(ordered, 2, 3)
    # A goes to group 1, B to group 2 (most room), A2 follows A, C to group 2, B2 fills group 2, A3 fills group 1.
    assert groups == [[("A", 1), ("A", 2), ("A", 3)], [("B", 1), ("B", 2), ("C", 1)]]
    assert design.pack_groups(ordered, 1, 10) == [sorted(zip(ordered["portrait_id"], ordered["option_id"]))]


def test_plan_sizes_groups_by_vp_power_at_the_bh_level():
    # 200 items: the first 20 expect 2 strong pairs each, the rest none (a sparse truth).
    items = _items(list(range(200, 0, -1)), [2.0] * 20 + [0.0] * 180)
    plan = design.plan_wave(items, budget_participants=300, items_per_participant=10, rho=0.4, alpha=0.05, power=0.8)
    f = plan.figures
    g = f["groups"]
    # By hand: g groups hold 10 g items, 19 pairs each; m1 = 2 per item among the first 20.
    m = 10 * g * 19
    m1 = 2.0 * min(20, 10 * g)
    a = 0.8 * m1 * 0.05 / ((m - m1) * 0.95)
    assert f["alpha_per_test"] == pytest.approx(a)
    need = raters_needed(0.4, a, 0.8)
    assert f["raters_needed_included"] == pytest.approx(need)
    assert g * math.ceil(need) <= 300                                   # this many groups can be powered ...
    nxt = 10 * (g + 1)
    a_next = 0.8 * 2.0 * min(20, nxt) * 0.05 / ((nxt * 19 - 2.0 * min(20, nxt)) * 0.95)
    assert (g + 1) * math.ceil(raters_needed(0.4, a_next, 0.8)) > 300  # ... one more cannot
    assert sum(f["raters_per_group"]) == 300 and max(f["raters_per_group"]) - min(f["raters_per_group"]) <= 1
    assert f["expected_power"][0] == pytest.approx(achieved_power(0.4, f["raters_per_group"][0], a))
    assert min(f["expected_power"]) >= 0.8
    assert plan.candidates["promise"].min() > plan.table.loc[~plan.table["candidate"], "promise"].max()
    layout = plan.layout()
    assert len(layout) == f["candidates"] == 10 * g and layout.groupby("group_id")["raters"].first().sum() == 300


def test_plan_pays_for_quality_control_losses_and_warns_when_it_cannot_power():
    items = _items(list(range(100, 0, -1)), [1.0] * 10 + [0.0] * 90)
    lossless = design.plan_wave(items, budget_participants=400, items_per_participant=10)
    lossy = design.plan_wave(items, budget_participants=400, items_per_participant=10, exclusion_share=0.2)
    assert lossy.figures["raters_needed_paid"] == math.ceil(lossy.figures["raters_needed_included"] / 0.8)
    assert lossy.figures["groups"] <= lossless.figures["groups"]
    poor = design.plan_wave(items, budget_participants=20, items_per_participant=10)
    assert poor.figures["groups"] == 1 and poor.warnings and "cannot power" in poor.warnings[0]
    assert poor.figures["expected_power"][0] < 0.8


def test_next_study_id():
    assert design.next_study_id("values") == "values-w2"
    assert design.next_study_id("values-w2") == "values-w3"


# -- vp plan-wave on a simulated screening wave --------------------------------------------------------------
@pytest.fixture(scope="module")
def screening_db(tmp_path_factory):
    from analysis.simulate import SimulationConfig, simulate_study, write_to_db

    config = SimulationConfig(seed=2, n_groups=3, participants_per_group=20, population_n=20_000)
    sim = simulate_study(config)
    path = tmp_path_factory.mktemp("screen") / "study.db"
    write_to_db(sim, path, study_id="pilot")
    return path, sim


def test_promise_ranks_items_with_real_relations_first(screening_db):
    from analysis.dataset import load_study
    from analysis.quality import quality_control
    from valueportrait.storage import open_db

    path, sim = screening_db
    with open_db(path, readonly=True) as db:
        study = load_study(db, "pilot")
    table = design.promise_scores(study, quality_control(study).included, seed=1)
    assert len(table) == len(sim.items) and table["basis"].isin(["circle", "single"]).all()
    best = sim.truth.population.groupby(["portrait_id", "option_id"])["rho"].max().rename("true_best")
    merged = table.merge(best.reset_index(), on=["portrait_id", "option_id"])
    # The promise follows the truth (20 raters per item: loosely, but clearly).
    assert stats.spearmanr(merged["promise"], merged["true_best"]).statistic > 0.3
    top = merged.nlargest(len(merged) // 4, "promise")
    assert top["true_best"].mean() > merged["true_best"].mean() + 0.02


def test_promise_is_standard_when_ratings_and_scores_are_unrelated(screening_db):
    """Scores shuffled across raters (so no item relates to anything): each standardised statistic is
    centred on 0 with SD about 1."""
    from analysis.dataset import load_study
    from analysis.quality import quality_control
    from valueportrait.storage import open_db

    path, sim = screening_db
    with open_db(path, readonly=True) as db:
        study = load_study(db, "pilot")
    included, scores, tables = quality_control(study).included, study.scores, []
    for seed in range(6):  # items of a group share one shuffle (and correlate): pool several
        study.scores = scores.iloc[np.random.default_rng(seed).permutation(len(scores))].set_axis(scores.index)
        tables.append(design.promise_scores(study, included, permutations=50, seed=seed))
    table = pd.concat(tables)
    for col in ("z_circle", "z_single", "promise"):
        assert np.isfinite(table[col]).all()
    for col in ("z_circle", "z_single"):
        assert abs(table[col].mean()) < 0.2 and 0.8 < table[col].std() < 1.2, col
    # their combination is scaled to unit null variance too
    assert abs(table["promise"].mean()) < 0.2 and 0.8 < table["promise"].std() < 1.2


def test_evidence_weights_are_bartletts_factor_score_by_hand():
    """z = lambda T + e with noise covariance S0: the weights are S0^-1 lambda (2 x 2 inverse written out), unit null variance."""
    rng = np.random.default_rng(8)
    r, lam = 0.5, np.array([0.9, 0.2])
    s0 = np.array([[1, r], [r, 1]])
    null = rng.multivariate_normal([0, 0], s0, 400_000)
    observed = rng.normal(size=(400_000, 1)) * lam + rng.multivariate_normal([0, 0], s0, 400_000)
    w = design.evidence_weights(observed, null)
    by_hand = np.array([lam[0] - r * lam[1], lam[1] - r * lam[0]]) / (1 - r ** 2)   # S0^-1 lambda for a 2 x 2
    by_hand = np.clip(by_hand, 0, None)
    by_hand /= np.sqrt(by_hand @ s0 @ by_hand)
    np.testing.assert_allclose(w, by_hand, atol=0.02)
    assert w @ s0 @ w == pytest.approx(1, abs=0.01)
    # No signal beyond the null: the two count equally.
    equal = design.evidence_weights(rng.multivariate_normal([0, 0], s0, 5000), null)  # (the null: many shuffles)
    assert equal[0] == pytest.approx(equal[1], rel=0.05) and equal @ s0 @ equal == pytest.approx(1, abs=0.05)
    # A signal in the second statistic only puts the weight there.
    spiky = np.column_stack([rng.normal(size=20_000), rng.normal(size=20_000) + 2 * (rng.random(20_000) < 0.1)])
    w = design.evidence_weights(spiky, rng.normal(size=(20_000, 2)))
    assert w[1] > 5 * w[0]


def test_vp_plan_wave_writes_a_study_the_app_loads(screening_db, tmp_path, capsys):
    from collection_app.study import load_study
    from valueportrait.cli import main

    path, sim = screening_db
    out = tmp_path / "wave.yaml"
    assert main(["plan-wave", "--db", str(path), "--screen", "pilot", "--budget-participants", "150",
                 "--items-per-participant", "20", "--out", str(out), "--permutations", "50"]) == 0
    printed = capsys.readouterr().out
    assert "keeping" in printed and "expected power" in printed and "raters" in printed
    study = load_study(out)                       # the app's own loader and validation
    spec = yaml.safe_load(out.read_text())
    assert spec["study_id"] == "pilot-w2" and spec["project"] == "pilot" and study.spec.project == "pilot"
    assert sum(g["target"] for g in spec["groups"]) == 150
    assert all(len(study.items_by_group[g.id]) <= 20 for g in study.spec.groups)
    plan = pd.read_csv(tmp_path / "wave_plan.csv", dtype={"portrait_id": str})
    assert len(plan) == len(sim.items) and plan["candidate"].sum() == len(study.items)
    kept = set(zip(plan.loc[plan["candidate"], "portrait_id"], plan.loc[plan["candidate"], "option_id"]))
    assert {(i.portrait_id, i.option_id) for i in study.items} == kept
    # queries kept together: each portrait in one group
    assert all(len({i.group_id for i in study.items if i.portrait_id == p}) == 1 for p in {i.portrait_id for i in study.items})
    # the item texts are the screening wave's, and the value a response was written for goes along
    texts = sim.items.set_index(["portrait_id", "option_id"])["response"]
    assert all(i.response == texts[(i.portrait_id, i.option_id)] for i in study.items)
    items = json.loads((tmp_path / "wave_items.json").read_text())
    assert {o.get("value") for q in items for o in q["outputs"]} - {None} <= set(sim.truth.items["intended_value"].dropna())


@pytest.mark.parametrize("argv, message", [
    (["--screen", "nope", "--budget-participants", "50"], "study_id: 'nope' is not in the database"),
    (["--screen", "pilot", "--budget-participants", "0"], "argument --budget-participants: 0 is not a whole number >= 5"),
    (["--screen", "pilot", "--budget-participants", "50", "--study-id", "pilot"], "'pilot' is already in the database"),
    (["--screen", "pilot", "--budget-participants", "50", "--power", "0.01"], "--power"),
])
def test_vp_plan_wave_refuses_bad_input_in_one_line(screening_db, tmp_path, capsys, argv, message):
    from valueportrait.cli import main

    path, _ = screening_db
    out = tmp_path / "wave.yaml"
    assert main(["plan-wave", "--db", str(path), "--out", str(out), "--permutations", "20", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written
