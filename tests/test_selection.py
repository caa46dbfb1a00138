"""Selection rule: on the release against an independent scipy count; keying abs on a hand-made table."""

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from analysis.selection import SELECTION_COLUMNS, keyed_counts, select


def test_release_pvq_keyed_count_matches_an_independent_scipy_count(release_analysis):
    study, table = release_analysis
    # Independent: every item's raters from the long ratings (P186 only in g01, the first
    # group they rated), scipy per pair, the study's rule rho >= .3 and p < .05.
    ratings = study.ratings[~((study.ratings["participant_id"] == "P186") & (study.ratings["group_id"] == "g06"))]
    pvq = study.scores["pvq"]
    keyed = set()
    for (pid, oid), item in ratings.groupby(["portrait_id", "option_id"]):
        scores = pvq.loc[item["participant_id"]].to_numpy(float)
        for j, dim in enumerate(pvq.columns):
            r = spearmanr(item["rating"].to_numpy(float), scores[:, j])
            if r.statistic >= 0.3 and r.pvalue < 0.05:
                keyed.add((pid, oid, dim))
    sel = select(table)
    assert list(sel.columns) == SELECTION_COLUMNS
    ours = {(p, o, d) for p, o, f, d in zip(sel.portrait_id, sel.option_id, sel.family, sel.dimension) if f == "pvq"}
    assert ours == keyed
    assert len(keyed) == 287  # 5.5% of the 5200 PVQ pairs
    counts = keyed_counts(sel, table)
    assert counts["pvq"] == {"pairs": 5200, "keyed_pairs": 287, "keyed_items": len({(p, o) for p, o, _ in keyed})}


def test_keying_abs_keys_strong_negatives_as_reversed():
    table = pd.DataFrame({
        "portrait_id": ["1", "1", "1", "2", "2"],
        "option_id": [1, 1, 1, 2, 2],
        "family": ["pvq", "pvq", "bfi", "pvq", "bfi"],
        "dimension": ["Power", "Benevolence", "Openness", "Power", "Openness"],
        "rho": [0.35, -0.42, 0.30, -0.29, np.nan],
        "p_value": [0.01, 0.004, 0.049, 0.03, np.nan],
    })
    pos = select(table)
    assert pos[["portrait_id", "dimension"]].values.tolist() == [["1", "Power"], ["1", "Openness"]]
    assert "reversed" not in pos
    ab = select(table, keying="abs")
    assert list(ab.columns) == SELECTION_COLUMNS + ["reversed"]
    assert ab[["dimension", "reversed"]].values.tolist() == [["Power", False], ["Benevolence", True], ["Openness", False]]
    # threshold and alpha are honoured: rho exactly at the threshold keys, p exactly at alpha does not
    assert len(select(table, threshold=0.35)) == 1
    assert len(select(table, alpha=0.01)) == 0


def test_item_verdicts_by_hand():
    """Four keyed pairs, one per verdict: q against alpha, replication rate against one half."""
    from analysis.selection import VERDICTS, item_verdicts

    key = pd.DataFrame({"portrait_id": ["1001", "1001", "2002", "2002"], "option_id": [1, 2, 1, 2],
                        "family": "pvq", "dimension": ["Power", "Power", "Benevolence", "Tradition"]})
    sel = key.assign(rho=[0.6, 0.5, 0.4, 0.31], p_value=[1e-5, 1e-4, 0.01, 0.04])
    corr = key.assign(q_value=[0.01, 0.049, 0.3, 0.05])
    rep = pd.concat([key.iloc[:3], key.iloc[:1].assign(dimension="Tradition", portrait_id="9999")]).assign(
        times_selected=[150, 40, 12, 7], replication_rate=[0.8, 0.45, 0.5, 1.0])
    out = item_verdicts(sel, corr, rep, alpha=0.05)
    assert out["verdict"].tolist() == [VERDICTS[0], VERDICTS[1], VERDICTS[2], VERDICTS[3]]
    # q = 0.05 is not below alpha; a pair no half keyed (2002/2 is not in replication.csv) does not replicate
    assert not out.loc[3, "survives_fdr"] and out.loc[3, "times_selected"] == 0 and not out.loc[3, "replicates"]
    assert list(out.columns[:6]) == SELECTION_COLUMNS and len(out) == len(sel)
    fdr_only = item_verdicts(sel, corr, None)
    assert fdr_only["verdict"].tolist() == ["keyed, survives FDR", "keyed, survives FDR", "keyed", "keyed"]
