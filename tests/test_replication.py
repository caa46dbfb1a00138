"""Split-half replication on synthetic groups with a planted true pair and null pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.replication import PAIR_COLUMNS, SHRINKAGE_COLUMNS, draw_halves, split_half_replication

FAMILIES = {"Power": "pvq", "Benevolence": "pvq", "Openness": "bfi"}


def synthetic(n_per_group=80, n_items=12, seed=0):
    """Two groups; in each, item option 1 of the first query tracks Power strongly (rho ~ .7);
    every other item is pure noise."""
    rng = np.random.default_rng(seed)
    rows, score_rows = [], []
    for g in range(2):
        for i in range(n_per_group):
            pid = f"P{g}_{i}"
            s = rng.normal(size=3)
            score_rows.append({"participant_id": pid, "Power": s[0], "Benevolence": s[1], "Openness": s[2]})
            for item in range(n_items):
                latent = s[0] + 0.6 * rng.normal() if item == 0 else rng.normal()
                rating = float(np.clip(np.round(3.5 + 1.2 * latent), 1, 6))
                rows.append({"participant_id": pid, "group_id": f"g{g}", "portrait_id": f"{g}00{item // 5}",
                             "option_id": item % 5 + 1, "rating": rating})
    return pd.DataFrame(rows), pd.DataFrame(score_rows)


@pytest.fixture(scope="module")
def result():
    ratings, scores = synthetic()
    return split_half_replication(ratings, scores, FAMILIES, splits=100, seed=0)


def test_true_pair_replicates(result):
    pairs = result["pairs"]
    assert list(pairs.columns) == PAIR_COLUMNS
    true = pairs[(pairs.portrait_id.str.endswith("000")) & (pairs.option_id == 1) & (pairs.dimension == "Power")]
    assert len(true) == 2  # one per group
    assert (true.times_selected >= 190).all()  # of 200 selections: 100 splits, each used both ways
    assert (true.replication_rate > 0.8).all()
    assert (true.heldout_rho_mean > 0.5).all() and true.keyed_full.all()


def test_null_pairs_shrink_to_zero(result):
    pairs = result["pairs"]
    null = pairs[~((pairs.option_id == 1) & pairs.portrait_id.str.endswith("000") & (pairs.dimension == "Power"))]
    assert len(null) > 10  # noise does get selected in some half
    # selected on A they look like >= .3; on B they are about 0
    assert (null.selected_rho_mean >= 0.3).all()
    weighted = np.average(null.heldout_rho_mean, weights=null.times_selected)
    assert abs(weighted) < 0.08
    shrink = result["shrinkage"].set_index("dimension")
    assert list(result["shrinkage"].columns) == SHRINKAGE_COLUMNS
    for dim in ("Benevolence", "Openness"):  # only null pairs there (one Openness pair has rho .31 by chance)
        assert shrink.loc[dim, "shrinkage"] > 0.25
    # Power mixes the true pair with noise: shrinks less
    assert shrink.loc["Power", "shrinkage"] < shrink.loc["Benevolence", "shrinkage"]


def test_one_split_against_scipy():
    """One split used both ways: a half that keys a pair is scored on the other half (scipy on each half)."""
    ratings, scores = synthetic(n_per_group=30, n_items=5, seed=5)
    ratings = ratings[ratings.group_id == "g0"]
    # the same halves the function draws: group 0 (sorted), rng [seed, 0]
    wide = ratings.pivot_table(index="participant_id", columns=["portrait_id", "option_id"], values="rating")
    half_a = draw_halves(len(wide), 1, np.random.default_rng([3, 0]))[0]
    power = scores.set_index("participant_id").reindex(wide.index)["Power"].to_numpy()
    halves = {item: (stats.spearmanr(wide[item].to_numpy()[half_a], power[half_a])[0],
                     stats.spearmanr(wide[item].to_numpy()[~half_a], power[~half_a])[0]) for item in wide.columns}
    threshold = float(np.median([r for pair in halves.values() for r in pair]))  # some halves pass, some not
    out = split_half_replication(ratings, scores, {"Power": "pvq"}, splits=1, threshold=threshold, alpha=1.01, seed=3)
    pairs = out["pairs"].set_index(["portrait_id", "option_id"])
    n_one_way = 0
    for item, (rho_a, rho_b) in halves.items():
        events = [(sel, held) for sel, held in ((rho_a, rho_b), (rho_b, rho_a)) if sel >= threshold]
        if not events:
            assert item not in pairs.index
            continue
        n_one_way += len(events) == 1
        row = pairs.loc[item]
        assert row["times_selected"] == len(events)
        assert row["selected_rho_mean"] == pytest.approx(np.mean([e[0] for e in events]), abs=1e-12)
        assert row["heldout_rho_mean"] == pytest.approx(np.mean([e[1] for e in events]), abs=1e-12)
        assert row["replication_rate"] == pytest.approx(np.mean([e[1] >= threshold for e in events]))
        assert row["full_rho"] == pytest.approx(stats.spearmanr(wide[item].to_numpy(), power)[0], abs=1e-12)
    assert n_one_way >= 1  # the direction of a selection is really tested
    shrink = out["shrinkage"].set_index(["family", "dimension"])
    events = [(s, h) for a, b in halves.values() for s, h in ((a, b), (b, a)) if s >= threshold]
    for key in (("pvq", "Power"), ("pvq", "all")):
        assert shrink.loc[key, "n_selections"] == len(events)
        assert shrink.loc[key, "heldout_rho_mean"] == pytest.approx(np.mean([h for _, h in events]), abs=1e-12)


def test_halves_and_abs_keying():
    masks = draw_halves(9, 50, np.random.default_rng(0))
    assert masks.shape == (50, 9) and (masks.sum(axis=1) == 4).all()
    assert len({m.tobytes() for m in masks}) > 40  # they differ
    ratings, scores = synthetic(n_per_group=60, n_items=3, seed=2)
    scores["Power"] = -scores["Power"]  # the true pair is now negative
    pos = split_half_replication(ratings, scores, {"Power": "pvq"}, splits=30)["pairs"]
    assert not ((pos.option_id == 1) & pos.portrait_id.str.endswith("000")).any()
    keyed = split_half_replication(ratings, scores, {"Power": "pvq"}, splits=30, keying="abs")["pairs"]
    true = keyed[(keyed.option_id == 1) & keyed.portrait_id.str.endswith("000")]
    assert len(true) == 2 and (true.heldout_rho_mean > 0.5).all() and (true.replication_rate > 0.8).all()
    assert (true.full_rho < -0.5).all()


def test_batched_splits_against_scipy():
    """Every split of every batch (batch boundaries included) equals scipy on that half."""
    from analysis.replication import _split_correlations

    rng = np.random.default_rng(11)
    x = rng.integers(1, 7, size=(21, 4)).astype(float)   # ties, as real ratings have
    y = rng.normal(size=(21, 2))
    halves = draw_halves(21, 7, rng)
    got = [part for batch in _split_correlations(x, y, halves, batch=3) for part in zip(*batch)]
    assert len(got) == 7
    for mask, (rho_a, p_a, rho_b, p_b) in zip(halves, got):
        for i in range(4):
            for d in range(2):
                for rows, rho, p in ((mask, rho_a, p_a), (~mask, rho_b, p_b)):
                    ref = stats.spearmanr(x[rows, i], y[rows, d])
                    assert rho[i, d] == pytest.approx(ref[0], abs=1e-12)
                    assert p[i, d] == pytest.approx(ref[1], abs=1e-12)
