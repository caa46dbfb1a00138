"""Psychometric checks on simulated data with a known truth (issue 5)."""

import numpy as np
import pandas as pd
import pytest

from analysis.pipeline import analyze
from analysis.simulate import SimulationConfig, simulate_study, write_to_db

SKIP = ("reliability", "power", "efa", "cfa", "replication")


@pytest.fixture(scope="module")
def default_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    sim = simulate_study(SimulationConfig(seed=5, population_n=20_000))
    write_to_db(sim, root / "study.db", study_id="demo")
    analyze(root / "study.db", root / "out", skip=SKIP + ("circumplex",), log=lambda line: None)
    return sim, root / "out"


def test_quality_rules_catch_the_planted_respondents(default_study):
    sim, out = default_study
    quality = pd.read_csv(out / "quality.csv", keep_default_na=False)
    truth = sim.truth.participants
    expected_rule = {"straight_liner": "straightlining", "speeder": "speeder", "attention_failer": "attention"}
    excluded = quality[~quality["included"]]
    for kind, rule in expected_rule.items():
        planted = set(truth.index[truth["kind"] == kind])
        assert planted, kind
        caught = set(excluded.loc[excluded["reasons"].str.contains(rule), "participant_id"])
        assert caught == planted, (kind, caught ^ planted)
    # The one person in two groups: their second participation is excluded as a duplicate, nothing else is.
    two = truth.index[truth["two_groups"]]
    assert len(two) == 1
    dup = excluded[excluded["reasons"] == "duplicate"]
    assert list(dup["participant_id"]) == list(two)
    good = set(truth.index[truth["kind"] == "good"])
    assert not (set(excluded["participant_id"]) - set(two)) & good  # no honest respondent lost


def test_structural_summary_recovers_item_angles(tmp_path):
    """With many raters, every valid item's place on the value circle is found within 20 degrees.

    The truth is the angle of the item's population correlations with the observed value
    scores (`rho_angle_deg`), the quantity the structural summary estimates.
    """
    sim = simulate_study(SimulationConfig(seed=2, n_groups=2, participants_per_group=700, population_n=100_000,
                                          straight_liner_share=0, speeder_share=0, attention_failer_share=0))
    write_to_db(sim, tmp_path / "big.db", study_id="demo")
    analyze(tmp_path / "big.db", tmp_path / "out", skip=SKIP, log=lambda line: None)
    fit = pd.read_csv(tmp_path / "out/circumplex.csv", dtype={"portrait_id": str})
    items = sim.truth.items.reset_index(drop=True)
    valid = items[items["kind"].isin(["single", "double"])]
    merged = valid.merge(fit, on=["portrait_id", "option_id"], suffixes=("_true", ""))
    assert len(merged) == len(valid) >= 10
    error = np.abs((merged["displacement"] - merged["rho_angle_deg"] + 180) % 360 - 180)
    assert error.max() < 20, merged.loc[error.idxmax(), ["portrait_id", "option_id", "displacement", "rho_angle_deg"]]
    # and the fitted amplitude is clearly above the items with no value content
    none = items[items["kind"] == "none"].merge(fit, on=["portrait_id", "option_id"], suffixes=("_true", ""))
    assert merged["amplitude"].median() > 2 * none["amplitude"].median()
