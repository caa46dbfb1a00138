"""The two-stage design end to end on simulated waves: equal cost, fresh raters, BH over candidates, the funnel."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.pipeline import OPTIONAL_STEPS, analyze
from analysis.simulate import SimulationConfig, simulate_study, simulate_two_stage, simulate_wave
from valueportrait.cli import main
from valueportrait.storage import open_db

from test_report import browser  # noqa: F401  (the Chromium fixture)

PAIR = ["portrait_id", "option_id", "family", "dimension"]
CONFIG = SimulationConfig(seed=5, n_groups=4, population_n=0)


@pytest.fixture(scope="module")
def waves(tmp_path_factory):
    """A 4-group study run as two waves (7,680 ratings), one screening rater slipped into the confirmation wave."""
    folder = tmp_path_factory.mktemp("two_stage")
    db = folder / "study.db"
    ts = simulate_two_stage(CONFIG, db, screen_raters=20, study_id="vals", permutations=50)
    with open_db(db) as con:
        # Someone who rated in the screening wave turns up again in the confirmation wave (the app refuses
        # this; imported data need not): they must not count as a fresh rater.
        old = "SIM0003"
        new = con.query("SELECT participant_id FROM participations WHERE study_id = 'vals-w2' ORDER BY participant_id")[5][0]
        with con.transaction():
            for table in ("participants", "participations", "ratings", "instrument_answers", "attention_checks"):
                con.conn.execute(f"UPDATE {table} SET participant_id = ? WHERE study_id = 'vals-w2' AND participant_id = ?",
                                 (old, new))
    out = folder / "out"
    manifest = analyze(db, out, design="two-stage", screen="vals", confirm="vals-w2", skip=tuple(OPTIONAL_STEPS), jobs=1,
                       log=lambda line: None)
    return ts, db, out, manifest, old


def _csv(path):
    return pd.read_csv(path, dtype={"portrait_id": str, "participant_id": str, "group_id": str})


def test_the_waves_cost_what_the_one_stage_study_costs(waves):
    ts, db, *_ = waves
    assert ts.ratings == CONFIG.n_groups * CONFIG.participants_per_group * CONFIG.items_per_group == 7680
    assert len(ts.screen.ratings) == 4 * 20 * 40
    layout = ts.plan.layout()
    assert ts.confirm.participations.groupby("group_id").size().to_dict() == layout.groupby("group_id")["raters"].first().to_dict()
    assert set(ts.screen.participants["participant_id"]).isdisjoint(ts.confirm.participants["participant_id"])
    assert ts.confirm.participants["participant_id"].str.startswith("W2SIM").all()
    with open_db(db, readonly=True) as con:
        rows = {r["study_id"]: json.loads(r["config_json"]) for r in con.query("SELECT study_id, config_json FROM studies")}
    assert rows["vals"]["project"] == rows["vals-w2"]["project"] == "vals"


def test_a_wave_rates_the_same_items_with_the_same_truth():
    """Fresh raters in new groups for some items recover the population rho the first study's truth gives."""
    config = SimulationConfig(seed=1, n_groups=2, population_n=40_000)
    sim = simulate_study(config)
    pop = sim.truth.population
    best = pop.loc[pop.groupby(["portrait_id", "option_id"])["rho"].idxmax()].nlargest(6, "rho")
    layout = best[["portrait_id", "option_id"]].assign(group_id=["A", "A", "A", "B", "B", "B"], raters=400)
    wave = simulate_wave(config, layout, raters_seed=77)
    assert wave.participations.groupby("group_id").size().to_dict() == {"A": 400, "B": 400}
    from analysis.scoring import score_instruments
    good = wave.truth.participants.index[wave.truth.participants["kind"] == "good"]
    scores, _ = score_instruments(wave.answers_wide().loc[good])
    for row in best.itertuples():
        r = wave.ratings[(wave.ratings["portrait_id"] == row.portrait_id) & (wave.ratings["option_id"] == row.option_id)]
        r = r.set_index("participant_id")["rating"].reindex(good).dropna()
        rho = stats.spearmanr(r.to_numpy(), scores.loc[r.index, row.dimension].to_numpy()).statistic
        assert abs(rho - row.rho) < 0.12, (row.portrait_id, row.option_id, row.dimension, rho, row.rho)  # ~2.5 SE at 400


def test_screening_raters_never_enter_the_confirmation(waves):
    ts, db, out, manifest, old = waves
    quality = _csv(out / "quality.csv")
    again = quality[(quality["wave"] == "vals-w2") & (quality["participant_id"] == old)]
    assert len(again) == 1 and not again["included"].iloc[0] and "earlier_wave" in again["reasons"].iloc[0]
    assert manifest["design"]["raters"]["confirm_excluded_earlier_wave"] == 1
    assert manifest["design"]["raters"]["shared_included"] == 0
    # The confirmation estimates are scipy's Spearman over the included confirmation raters, without them.
    from analysis.dataset import load_study
    with open_db(db, readonly=True) as con:
        w2 = load_study(con, "vals-w2")
    corr = _csv(out / "correlations.csv")
    confirm = corr[corr["stage"] == "confirm"]
    included = set(quality.loc[(quality["wave"] == "vals-w2") & quality["included"], "participant_id"])
    assert old not in included
    for (pid, opt), rows in list(confirm.groupby(["portrait_id", "option_id"]))[:4]:
        r = w2.ratings[(w2.ratings["portrait_id"] == pid) & (w2.ratings["option_id"] == opt)].set_index("participant_id")
        r = r.loc[r.index.isin(included), "rating"]
        for row in rows.head(6).itertuples():
            s = w2.scores.loc[r.index, (row.family, row.dimension)]
            expected = stats.spearmanr(r.to_numpy(), s.to_numpy())
            assert row.n == len(r)
            assert row.rho == pytest.approx(expected.statistic, abs=1e-9)
            assert row.p_value == pytest.approx(expected.pvalue, rel=1e-6)


def test_keying_uses_bh_over_the_candidate_pairs_only(waves):
    ts, db, out, manifest, _ = waves
    corr = _csv(out / "correlations.csv")
    assert list(corr.columns[:11]) == ["group_id", "portrait_id", "option_id", "family", "dimension", "rho", "p_value",
                                       "q_value", "n", "ci_low", "ci_high"]
    assert list(corr.columns[-4:]) == ["wave", "stage", "screen_rho", "screen_n"]
    assert len(corr) == 160 * 19 and not corr.duplicated(PAIR).any()   # one row per item x dimension
    confirm, screen = corr[corr["stage"] == "confirm"], corr[corr["stage"] == "screen"]
    assert (confirm["wave"] == "vals-w2").all() and (screen["wave"] == "vals").all()
    assert screen["q_value"].isna().all() and (screen["screen_rho"] == screen["rho"]).all()
    assert len(confirm) == ts.plan.figures["candidates"] * 19
    for family, rows in confirm.groupby("family"):
        expected = multipletests(rows["p_value"], method="fdr_bh")[1]
        np.testing.assert_allclose(rows["q_value"], expected, rtol=1e-10)
    sel = _csv(out / "selection.csv")
    keyed = confirm[(confirm["rho"] >= 0.3) & (confirm["p_value"] < 0.05) & (confirm["q_value"] < 0.05)]
    assert set(map(tuple, sel[PAIR].to_numpy())) == set(map(tuple, keyed[PAIR].to_numpy()))
    assert len(sel) > 0 and (sel["wave"] == "vals-w2").all()
    assert list(sel.columns[:6]) == ["portrait_id", "option_id", "family", "dimension", "rho", "p_value"]
    # The one-stage rule would have keyed some of these pairs without the q-value: the FDR step matters.
    assert len(keyed) <= ((confirm["rho"] >= 0.3) & (confirm["p_value"] < 0.05)).sum()


def test_bh_rows_is_statsmodels_row_by_row():
    from analysis.two_stage import bh_rows

    rng = np.random.default_rng(3)
    p = rng.uniform(size=(7, 50)) ** 3
    p[2, [4, 9]] = np.nan
    p[5, :] = np.nan
    q = bh_rows(p)
    for row, got in zip(p, q):
        ok = ~np.isnan(row)
        assert np.isnan(got[~ok]).all()
        if ok.any():
            np.testing.assert_allclose(got[ok], multipletests(row[ok], method="fdr_bh")[1], rtol=1e-12)


def test_keys_stand_beside_what_chance_keys_among_the_candidates(waves):
    ts, db, out, manifest, _ = waves
    chance = manifest["design"]["chance"]
    sel = _csv(out / "selection.csv")
    assert set(chance) == {"pvq", "higher_pvq", "bfi"}
    for family, c in chance.items():
        assert c["observed"] == (sel["family"] == family).sum()
        assert 0 <= c["expected_low"] <= c["expected_mean"] <= c["expected_high"]
    # BH over the candidates: chance keys about nothing, the data key many more
    assert chance["pvq"]["expected_mean"] < 1 and chance["pvq"]["observed"] > chance["pvq"]["expected_high"]


def test_the_funnel_reports_screened_out_items(waves):
    ts, db, out, manifest, _ = waves
    design = _csv(out / "design.csv")
    d = manifest["design"]
    assert d["screen"] == "vals" and d["confirm"] == "vals-w2" and manifest["settings"]["design"] == "two-stage"
    counts = design["status"].value_counts().to_dict()
    f = d["funnel"]
    assert f["screened"] == len(ts.screen.items) == 160 and f["candidates"] == ts.plan.figures["candidates"]
    assert counts.get("screened out") == f["screened_out"] == 160 - f["candidates"]
    sel = _csv(out / "selection.csv")
    assert counts.get("confirmed", 0) == f["confirmed"] == len(sel[["portrait_id", "option_id"]].drop_duplicates())
    assert f["confirmed"] + f["not_confirmed"] == f["candidates"]
    screened_out = design[design["status"] == "screened out"]
    assert screened_out["confirm_group"].isna().all() and (screened_out["keyed_pairs"] == 0).all()
    # the candidates are the most promising items on the screening raters
    cand = design[design["confirm_group"].notna()]
    assert cand["promise"].median() > screened_out["promise"].median()
    bank = json.loads((out / "item_bank.json").read_text())
    assert sum(len(q["outputs"]) for q in bank) == f["confirmed"]


def test_a_one_stage_run_in_the_same_folder_removes_design_csv(waves, tmp_path):
    ts, db, out, *_ = waves
    folder = tmp_path / "again"
    analyze(db, folder, design="two-stage", screen="vals", confirm="vals-w2", skip=tuple(OPTIONAL_STEPS), jobs=1,
            log=lambda line: None)
    assert (folder / "design.csv").exists()
    lines = []
    analyze(db, folder, study_id="vals", skip=tuple(OPTIONAL_STEPS), jobs=1, log=lines.append)
    assert not (folder / "design.csv").exists() and any("design.csv" in line for line in lines)
    assert "design" not in json.loads((folder / "manifest.json").read_text())


@pytest.mark.parametrize("extra, message", [
    (["--screen", "vals"], "--screen/--confirm: only with --design two-stage"),
    (["--design", "two-stage", "--screen", "vals"], "needs --screen STUDY_ID and --confirm STUDY_ID"),
    (["--design", "two-stage", "--screen", "vals", "--confirm", "vals"], "is the screening wave too"),
    (["--design", "two-stage", "--screen", "vals", "--confirm", "nope"], "study_id: 'nope' is not in the database"),
    (["--design", "two-stage", "--screen", "vals", "--confirm", "vals-w2", "--study", "vals"], "--study: not used"),
])
def test_bad_two_stage_arguments_are_one_line_errors(waves, tmp_path, capsys, extra, message):
    ts, db, *_ = waves
    out = tmp_path / "out"
    assert main(["analyze", "--db", str(db), "--out", str(out), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_the_report_explains_the_design_and_shows_the_funnel(waves, tmp_path):
    import html

    from analysis.report import build_report

    ts, db, out, manifest, _ = waves
    text = build_report(out, db=db)
    assert ">Two-stage design</h2>" in text
    section = html.unescape(text[text.index('id="design"'):text.index('id="correlations"')])
    f = manifest["design"]["funnel"]
    assert f"The funnel: {f['screened']:,} items screened, {f['candidates']:,} candidates, {f['confirmed']:,} confirmed" in section
    assert f"{f['screened_out']:,} items were screened out" in section and "<img" in section
    assert "1 who had were excluded" in section  # the screening rater who came back
    methods = html.unescape(text[text.index('id="methods"'):])
    assert "selection and confirmation used disjoint raters" in methods
    assert "candidate items' pairs only" in methods


@pytest.mark.browser
def test_the_two_stage_report_in_chromium(waves, tmp_path, browser):
    from test_report import check_page, open_in_browser

    from analysis.report import write_report

    ts, db, out, *_ = waves
    path = write_report(out, tmp_path / "two_stage.html", db=db)
    result = open_in_browser(browser, path, "two_stage")
    check_page(result, simulated=False, two_stage=True)  # every section in order, the design's included; figures load
    assert "Candidates (" in result["text"]
