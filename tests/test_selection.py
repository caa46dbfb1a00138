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
