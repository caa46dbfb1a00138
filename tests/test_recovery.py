import numpy as np
import pandas as pd
import pytest

from analysis.recovery import profile_rank_corr, score_recovery, selection_recovery


def test_selection_recovery_hand_case():
    population = pd.DataFrame({
        "portrait_id": ["1001"] * 4 + ["1002"] * 4,
        "option_id": [1] * 4 + [2] * 4,
        "dimension": ["Power", "Security", "Hedonism", "Tradition"] * 2,
        "population_rho": [0.45, 0.05, 0.12, 0.35, 0.0, 0.31, -0.2, 0.02],
    })
    keyed = pd.DataFrame({"portrait_id": [1001, 1001, 1002], "option_id": [1, 1, 2],
                          "dimension": ["Power", "Security", "Security"]})
    r = selection_recovery(keyed, population)
    # keyed: (1001,Power) 0.45 real, (1001,Security) 0.05 not real, (1002,Security) 0.31 real -> 2/3
    assert r["precision"] == pytest.approx(2 / 3)
    # strong (>= .3): (1001,Power), (1001,Tradition), (1002,Security); keyed 2 of them -> 2/3
    assert r["recall"] == pytest.approx(2 / 3)
    assert (r["keyed"], r["strong_pairs"]) == (3, 3)


def test_selection_recovery_rejects_unknown_pairs():
    population = pd.DataFrame({"portrait_id": ["1"], "option_id": [1], "dimension": ["Power"], "population_rho": [0.5]})
    with pytest.raises(ValueError, match="1 keyed pairs"):
        selection_recovery(pd.DataFrame({"portrait_id": ["1"], "option_id": [2], "dimension": ["Power"]}), population)


def test_score_recovery_matches_numpy():
    rng = np.random.default_rng(0)
    true = pd.DataFrame(rng.normal(size=(50, 2)), columns=["Power", "Security"], index=[f"P{i}" for i in range(50)])
    est = true + rng.normal(scale=0.5, size=(50, 2))
    r = score_recovery(est.iloc[::-1], true)
    assert r["Power"] == pytest.approx(np.corrcoef(est["Power"], true["Power"])[0, 1], abs=1e-12)


def test_profile_rank_corr():
    true = pd.Series({"A": 1.0, "B": 0.5, "C": -0.2, "D": -1.0})
    assert profile_rank_corr(pd.Series({"D": -3, "C": 0, "B": 1, "A": 2}), true) == pytest.approx(1.0)
    assert profile_rank_corr(pd.Series({"A": 0.0, "B": 1.0, "C": -1.0, "D": -2.0}), true) == pytest.approx(0.8)
