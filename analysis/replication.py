"""Split-half replication of item keying, against double dipping.

Choosing the items whose rho passes 0.3 and then quoting that same rho reuses the raters
twice: the chosen correlations are biased upwards (the winner's curse). Here each group's
raters are split at random into two halves, many times, and each split is used both ways:
pairs are selected on one half with the usual rule and their rho is measured on the other
half, which played no part in choosing them (Mosier's double cross-validation).

What the figures mean
---------------------
One *selection* is one half keying one pair in one split. Every figure below averages over
selections, and in each selection the measuring half is disjoint from the selecting one.

- Per dimension (``replication_shrinkage.csv``, one row per dimension and one ``all`` row
  per family): ``heldout_rho_mean`` is the honest estimate of how strongly the rule's keys
  really relate to the dimension. It describes keys chosen with half the raters, which
  include more chance picks than keys chosen with all of them, so for the study's own keys
  it errs low.
- Per pair (``replication.csv``): how often a half keyed the pair and how it did on the
  other half. These describe the pair's stability under resampling. For a pair chosen
  because it is keyed on all the raters, its ``heldout_rho_mean`` is *not* held out: the
  full sample that chose it contains both halves (on scores shuffled within groups, keyed
  pairs average about .2 there). Do not average it over the keyed pairs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.correlations import _standardised_ranks, significant, spearman_matrix, spearman_p

PAIR_COLUMNS = [
    "group_id", "portrait_id", "option_id", "family", "dimension",
    "times_selected", "replication_rate", "heldout_rho_mean",
    "selected_rho_mean", "full_rho", "keyed_full",
]  # fmt: skip
SHRINKAGE_COLUMNS = [
    "family", "dimension", "n_selections", "selected_rho_mean", "heldout_rho_mean", "shrinkage", "replication_rate",
]  # fmt: skip


def draw_halves(n: int, splits: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (splits x n) masks of half A: each row marks floor(n / 2) raters drawn without replacement."""
    order = rng.permuted(np.tile(np.arange(n), (splits, 1)), axis=1)
    mask = np.zeros((splits, n), dtype=bool)
    np.put_along_axis(mask, order[:, : n // 2], True, axis=1)
    return mask


def _split_correlations(x: np.ndarray, y: np.ndarray, halves: np.ndarray, batch: int = 50, p_values: bool = True):
    """Yield (rho_A, p_A, rho_B, p_B), each (splits x items x dimensions), a batch of splits at a time.

    With ``p_values=False``, the raters behind each rho (an array of that shape, or one
    number for complete data) instead of its p-value: the keying rule needs only
    :func:`analysis.correlations.significant`, far cheaper than a p-value per pair.

    With complete data all splits of a batch are ranked and correlated at once (ranks
    along the rater axis of a 3-D array, one batched product); with missing ratings or
    scores each half goes through :func:`spearman_matrix`, which drops raters pair by pair.
    """
    if np.isnan(x).any() or np.isnan(y).any():
        for mask in halves:
            a, b = spearman_matrix(x[mask], y[mask]), spearman_matrix(x[~mask], y[~mask])
            second = "p_value" if p_values else "n"
            yield (a.rho.to_numpy()[None], getattr(a, second).to_numpy()[None],
                   b.rho.to_numpy()[None], getattr(b, second).to_numpy()[None])
        return
    # Every mask row holds the same number of raters, so the halves stack into arrays.
    rows_a = np.nonzero(halves)[1].reshape(len(halves), -1)
    rows_b = np.nonzero(~halves)[1].reshape(len(halves), -1)
    for start in range(0, len(halves), batch):
        out = []
        for rows in (rows_a[start:start + batch], rows_b[start:start + batch]):
            zx = _standardised_ranks(x[rows], axis=1)   # splits x raters x items
            zy = _standardised_ranks(y[rows], axis=1)   # splits x raters x dimensions
            rho = np.clip(np.einsum("sri,srd->sid", zx, zy), -1.0, 1.0)
            out += [rho, spearman_p(rho, rows.shape[1]) if p_values else rows.shape[1]]
        yield tuple(out)


def _passes(rho: np.ndarray, n, threshold: float, alpha: float, keying: str) -> np.ndarray:
    """The keying rule, NaN counting as a fail: rho (or |rho| for ``abs``) >= threshold and p < alpha.

    p < alpha is decided from rho and the raters `n` by :func:`analysis.correlations.significant`
    (the same answer as computing every p-value, at a fraction of the cost).
    """
    size = np.abs(rho) if keying == "abs" else rho
    return (np.nan_to_num(size, nan=-np.inf) >= threshold) & significant(rho, n, alpha)


def split_half_replication(
    ratings: pd.DataFrame,
    scores: pd.DataFrame,
    families: dict,
    splits: int = 100,
    threshold: float = 0.3,
    alpha: float = 0.05,
    seed: int = 0,
    keying: str = "pos",
) -> dict:
    """Select item-dimension pairs on one random half of each group's raters, measure them on the other.

    Parameters
    ----------
    ratings : DataFrame
        Long ratings ``participant_id, group_id, portrait_id, option_id, rating`` of the
        included participations.
    scores : DataFrame
        One row per participant, one column per dimension; participant ids in the index
        or in a ``participant_id`` column.
    families : dict
        ``{dimension: family}`` for the dimensions to check (other score columns ignored).
    splits : int
        Random split-halves per group.
    threshold, alpha : float
        The keying rule: rho >= threshold and two-sided p < alpha (as ``vp analyze``).
    seed : int
        Group k (in sorted order) draws its splits from ``default_rng([seed, k])``.
    keying : {"pos", "abs"}
        ``abs`` keys |rho| and counts a replication only with the same sign in half B;
        held-out rho is then reported in the direction of the selection.

    Returns
    -------
    dict
        ``pairs``: one row per item and dimension selected by at least one half, with
        ``times_selected`` (selections: halves that keyed it, out of 2 x `splits`),
        ``replication_rate`` (of those, the share in which the other half passes the same
        rule), ``heldout_rho_mean`` (mean rho in the other half over those selections),
        ``selected_rho_mean`` (mean rho in the selecting halves), ``full_rho`` and
        ``keyed_full`` (the pair's rho and keying on all the group's raters).
        ``shrinkage``: per dimension, and per family (``dimension = "all"``), over all
        groups, splits and selections: ``n_selections``, the mean rho in the selecting
        halves, the mean held-out rho and their difference ``shrinkage``, and the share of
        selections that replicate.

    Notes
    -----
    A half has about half the raters, so the same p < alpha rule is harder to pass there:
    ``replication_rate`` is a strict criterion. ``heldout_rho_mean`` of the shrinkage
    table, pooled over selections, is the unbiased estimate of the correlation of the pairs
    the rule keys with half the raters; per pair it is a stability figure, biased upwards
    for pairs chosen by their full-sample rho (see the module's notes). Spearman's rho comes from
    :func:`analysis.correlations.spearman_matrix` (ranks within the half, one matrix
    product), so missing ratings or scores drop a rater from that pair only.

    References
    ----------
    Kriegeskorte, N., Simmons, W. K., Bellgowan, P. S. F., & Baker, C. I. (2009). Circular
    analysis in systems neuroscience: the dangers of double dipping. Nature Neuroscience,
    12, 535-540.
    """
    if keying not in ("pos", "abs"):
        raise ValueError(f"keying: {keying!r}: use 'pos' or 'abs'")
    if "participant_id" in scores.columns:
        scores = scores.set_index("participant_id")
    dims = [d for d in families if d in scores.columns]
    if not dims:
        raise ValueError("none of the dimensions in `families` is a column of `scores`")
    pair_frames, shrink_parts = [], []
    for k, (group_id, block) in enumerate(ratings.groupby("group_id", sort=True)):
        wide = block.pivot_table(
            index="participant_id", columns=["portrait_id", "option_id"], values="rating", aggfunc="mean"
        )
        x = wide.to_numpy(float)
        y = scores.reindex(wide.index)[dims].to_numpy(float)
        n = len(wide)
        if n < 8:
            continue  # halves of fewer than 4 raters give no usable rho
        rng = np.random.default_rng([seed, k])
        halves = draw_halves(n, splits, rng)
        shape = (x.shape[1], len(dims))
        selected_count = np.zeros(shape)
        replicated = np.zeros(shape)
        rho_a_sum = np.zeros(shape)
        rho_b_sum = np.zeros(shape)
        for rho_a, n_a, rho_b, n_b in _split_correlations(x, y, halves, p_values=False):
            # Each split both ways: A selects and B measures, then B selects and A measures.
            for sel_rho, sel_n, out_rho, out_n in ((rho_a, n_a, rho_b, n_b), (rho_b, n_b, rho_a, n_a)):
                chosen = _passes(sel_rho, sel_n, threshold, alpha, keying)
                direction = np.sign(sel_rho) if keying == "abs" else np.ones_like(sel_rho)
                again = _passes(out_rho, out_n, threshold, alpha, keying)
                if keying == "abs":
                    again &= np.sign(out_rho) == direction
                selected_count += chosen.sum(axis=0)
                replicated += (chosen & again).sum(axis=0)
                rho_a_sum += np.where(chosen, sel_rho * direction, 0.0).sum(axis=0)
                rho_b_sum += np.where(chosen, np.nan_to_num(out_rho) * direction, 0.0).sum(axis=0)
        full = spearman_matrix(x, y)
        full_rho = full.rho.to_numpy()
        keyed_full = _passes(full_rho, full.n.to_numpy(), threshold, alpha, keying)
        item_index = wide.columns.to_frame(index=False)
        with np.errstate(invalid="ignore", divide="ignore"):
            frame = pd.DataFrame(
                {
                    "group_id": group_id,
                    "portrait_id": np.repeat(item_index["portrait_id"].to_numpy(), len(dims)),
                    "option_id": np.repeat(item_index["option_id"].to_numpy(), len(dims)),
                    "family": np.tile([families[d] for d in dims], x.shape[1]),
                    "dimension": np.tile(dims, x.shape[1]),
                    "times_selected": selected_count.ravel().astype(int),
                    "replication_rate": (replicated / selected_count).ravel(),
                    "heldout_rho_mean": (rho_b_sum / selected_count).ravel(),
                    "selected_rho_mean": (rho_a_sum / selected_count).ravel(),
                    "full_rho": full_rho.ravel(),
                    "keyed_full": keyed_full.ravel(),
                }
            )
        pair_frames.append(frame[frame.times_selected > 0])
        shrink_parts.append(
            pd.DataFrame(
                {
                    "dimension": dims,
                    "n_selections": selected_count.sum(axis=0),
                    "rho_a": rho_a_sum.sum(axis=0),
                    "rho_b": rho_b_sum.sum(axis=0),
                    "replicated": replicated.sum(axis=0),
                }
            )
        )
    pairs = pd.concat(pair_frames, ignore_index=True) if pair_frames else pd.DataFrame(columns=PAIR_COLUMNS)
    if shrink_parts:
        totals = pd.concat(shrink_parts).groupby("dimension", sort=False).sum().reindex(dims)
        family_of = pd.Series([families[d] for d in dims], index=dims)
        blocks = []  # per family: its dimensions, then the family pooled (dimension "all")
        for fam in dict.fromkeys(family_of):
            part = totals[family_of == fam]
            blocks += [part.assign(family=fam), part.sum().to_frame("all").T.assign(family=fam)]
        totals = pd.concat(blocks).rename_axis("dimension").reset_index()
        totals = totals.astype({c: float for c in ("n_selections", "rho_a", "rho_b", "replicated")})
        with np.errstate(invalid="ignore", divide="ignore"):
            shrinkage = pd.DataFrame(
                {
                    "family": totals.family.to_numpy(),
                    "dimension": totals.dimension.to_numpy(),
                    "n_selections": totals.n_selections.astype(int).to_numpy(),
                    "selected_rho_mean": (totals.rho_a / totals.n_selections).to_numpy(),
                    "heldout_rho_mean": (totals.rho_b / totals.n_selections).to_numpy(),
                    "replication_rate": (totals.replicated / totals.n_selections).to_numpy(),
                }
            )
        shrinkage["shrinkage"] = shrinkage.selected_rho_mean - shrinkage.heldout_rho_mean
        shrinkage = shrinkage[SHRINKAGE_COLUMNS]
    else:
        shrinkage = pd.DataFrame(columns=SHRINKAGE_COLUMNS)
    return {"pairs": pairs[PAIR_COLUMNS], "shrinkage": shrinkage}
