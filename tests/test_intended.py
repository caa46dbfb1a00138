"""Intended vs confirmed values, on a hand-made case and on a simulated study."""

import numpy as np
import pandas as pd

import instruments as inst
from analysis.intended import intended_value_check, intended_values, summary
from analysis.pipeline import analyze
from analysis.simulate import SimulationConfig, simulate_study, write_to_db


def _corr(item, rhos):
    return pd.DataFrame({"group_id": "g01", "portrait_id": item[0], "option_id": item[1], "family": "pvq",
                         "dimension": list(inst.PVQ_VALUES), "rho": rhos})


def test_hand_case():
    # item A: Power highest (0.5) and keyed; item B: intended Tradition is 3rd (0.2 < 0.4, 0.3); item C: no intent
    rho_a = [0.0, 0.1, 0.0, 0.0, 0.2, 0.5, 0.3, 0.0, 0.0, 0.0]
    rho_b = [0.4, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, -0.1]
    corr = pd.concat([_corr(("1001", 1), rho_a), _corr(("1001", 2), rho_b), _corr(("1001", 3), [0.0] * 10)])
    items = pd.DataFrame({"portrait_id": ["1001"] * 3, "option_id": [1, 2, 3],
                          "meta": [{"value": "Power"}, {"intended_value": "Tradition"}, {}]})
    selection = pd.DataFrame({"portrait_id": ["1001", "1001", "1001"], "option_id": [1, 1, 2],
                              "family": ["pvq", "pvq", "pvq"], "dimension": ["Power", "Achievement", "Universalism"]})
    check = intended_value_check(intended_values(items), corr, selection).set_index("option_id")
    assert list(check.index) == [1, 2]
    assert check.loc[1, "confirmed"] and check.loc[1, "points_to_intended"] and check.loc[1, "intended_rank"] == 1
    assert check.loc[1, "keyed_values"] == "Achievement;Power"
    assert not check.loc[2, "confirmed"] and check.loc[2, "intended_rank"] == 3
    assert (check.loc[2, "top_value"], check.loc[2, "top_rho"]) == ("Universalism", 0.4)
    s = summary(check.reset_index())
    assert (s["items"], s["confirmed"], s["points_to_intended"]) == (2, 1, 1) and s["chance_points_to_intended"] == 0.1


def test_simulated_items_point_to_their_value_far_above_chance(tmp_path):
    sim = simulate_study(SimulationConfig(seed=4, n_groups=2, participants_per_group=300, population_n=0,
                                          straight_liner_share=0, speeder_share=0, attention_failer_share=0))
    write_to_db(sim, tmp_path / "s.db", study_id="demo")
    manifest = analyze(tmp_path / "s.db", tmp_path / "out", skip=("reliability", "power", "efa", "cfa", "replication"),
                       log=lambda line: None)
    check = pd.read_csv(tmp_path / "out/intended_values.csv", dtype={"portrait_id": str})
    single = sim.truth.items[sim.truth.items["kind"] == "single"]
    assert len(check) == sim.truth.items["intended_value"].notna().sum() >= 5
    mine = check.merge(single[["portrait_id", "option_id"]], on=["portrait_id", "option_id"])
    # An item written for one value correlates most with that value or a neighbour on the circle.
    gap = np.abs(mine["intended_value"].map(inst.PVQ_VALUES.index) - mine["top_value"].map(inst.PVQ_VALUES.index))
    assert (np.minimum(gap, 10 - gap) <= 1).mean() >= 0.8
    assert manifest["counts"]["intended_values"]["share_points_to_intended"] > 0.3  # chance: 0.1
    # The report says the same, in words a reader can check against the table.
    from analysis.report import build_report

    text = build_report(tmp_path / "out", db=tmp_path / "s.db")
    n, confirmed = len(check), int(check["confirmed"].sum())
    assert f"{n:,} items record the value their response was written to express" in text
    assert f"keyed {confirmed:,} of them ({confirmed / n:.0%})" in text
