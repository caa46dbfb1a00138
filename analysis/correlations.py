"""Item-value correlations: Spearman's rho of every item with every value and trait.

For one group of raters, the ratings matrix (participants x items) and the scores matrix
(participants x dimensions) are each ranked once per column, standardised, and multiplied:
one matrix product gives every item x dimension rho. The p-value is the two-sided t
approximation scipy's ``spearmanr`` uses. Benjamini-Hochberg q-values are taken within each
family over all items of the study; bootstrap percentile intervals resample the raters of
each group, in batches so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special
from scipy.stats import rankdata
from statsmodels.stats.multitest import multipletests

CONTRACT_COLUMNS = ["group_id", "portrait_id", "option_id", "family", "dimension",
                    "rho", "p_value", "q_value", "n", "ci_low", "ci_high"]


@dataclass
class SpearmanResult:
    """Item x dimension matrices (DataFrames indexed like the ratings columns x the scores columns)."""

    rho: pd.DataFrame
    p_value: pd.DataFrame
    n: pd.DataFrame


# -- the core on complete data ------------------------------------------------------------
def _standardised_ranks(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Average ranks along `axis`, centred and scaled to unit length; NaN for a constant column."""
    r = rankdata(x, axis=axis)
    r -= r.mean(axis=axis, keepdims=True)
    norm = np.sqrt((r * r).sum(axis=axis, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = r / norm
    z[np.broadcast_to(norm == 0, z.shape)] = np.nan
    return z


def spearman_p(rho: np.ndarray, n) -> np.ndarray:
    """Two-sided p-value of Spearman's rho by the t approximation (as ``scipy.stats.spearmanr``).

    t = rho * sqrt((n - 2) / ((1 + rho)(1 - rho))), referred to Student's t with n - 2 df;
    p = 2 * P(T > |t|). NaN where rho is NaN or n < 3.
    """
    rho = np.asarray(rho, dtype=float)
    dof = np.asarray(n, dtype=float) - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = rho * np.sqrt((dof / ((rho + 1.0) * (1.0 - rho))).clip(0))
        p = 2 * special.stdtr(dof, -np.abs(t))
    return np.where((dof > 0) & ~np.isnan(rho), p, np.nan)


def _spearman_complete(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """rho (columns of x) x (columns of y) for complete data: ranks once, one matrix product."""
    rho = _standardised_ranks(x).T @ _standardised_ranks(y)
    return np.clip(rho, -1.0, 1.0)


def _blocks(x: np.ndarray, y: np.ndarray):
    """Split item and dimension columns by their pattern of missing rows.

    Yields (rows, item columns, dimension columns): within a block every item column and
    every dimension column is observed on exactly `rows`, so the block is complete data.
    """
    if not (np.isnan(x).any() or np.isnan(y).any()):
        yield np.ones(x.shape[0], bool), np.arange(x.shape[1]), np.arange(y.shape[1])
        return
    x_pat, x_inv = np.unique(~np.isnan(x).T, axis=0, return_inverse=True)
    y_pat, y_inv = np.unique(~np.isnan(y).T, axis=0, return_inverse=True)
    for i, xp in enumerate(x_pat):
        for j, yp in enumerate(y_pat):
            yield xp & yp, np.flatnonzero(x_inv.ravel() == i), np.flatnonzero(y_inv.ravel() == j)


def spearman_matrix(ratings, scores) -> SpearmanResult:
    """Spearman's rho, two-sided p and n between every ratings column and every scores column.

    Parameters
    ----------
    ratings : DataFrame or 2-D array, participants x items (NaN = not rated).
    scores : DataFrame or 2-D array, the same participants (same row order) x dimensions.

    Returns
    -------
    SpearmanResult with items x dimensions frames `rho`, `p_value` and `n`.

    Notes
    -----
    rho is Pearson's r of average ranks (ties share the mean of their positions):
    ranks are computed once per column, centred and scaled to unit length, and
    rho = Z_ratings^T Z_scores. Participants missing an item or a score are left out of
    that pair only: columns are grouped by their pattern of missing rows and each group is
    ranked on its own rows (with no missing data this is a single product). A constant
    column has no rho (NaN). The p-value is that of `spearman_p`. Equals
    ``scipy.stats.spearmanr`` on the same vectors to rounding error.

    Examples
    --------
    >>> r = spearman_matrix(np.array([[1.], [2.], [3.], [4.], [5.]]), np.array([[5., 1.], [6., 3.], [7., 2.], [8., 5.], [7., 4.]]))
    >>> np.round(r.rho.to_numpy(), 4)
    array([[0.9747, 0.8   ]])
    """
    x_index = ratings.columns if isinstance(ratings, pd.DataFrame) else pd.RangeIndex(np.shape(ratings)[1])
    y_index = scores.columns if isinstance(scores, pd.DataFrame) else pd.RangeIndex(np.shape(scores)[1])
    x = np.asarray(ratings, dtype=float)
    y = np.asarray(scores, dtype=float)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"ratings have {x.shape[0]} rows but scores {y.shape[0]}")
    rho = np.full((x.shape[1], y.shape[1]), np.nan)
    n = np.zeros_like(rho)
    for rows, ci, cd in _blocks(x, y):
        if len(ci) and len(cd):
            n[np.ix_(ci, cd)] = rows.sum()
            if rows.sum() >= 2:
                rho[np.ix_(ci, cd)] = _spearman_complete(x[rows][:, ci], y[rows][:, cd])
    p = spearman_p(rho, n)
    frame = lambda a: pd.DataFrame(a, index=x_index, columns=y_index)  # noqa: E731
    return SpearmanResult(frame(rho), frame(p), frame(n.astype(int)))


# -- bootstrap ------------------------------------------------------------------------------
def _nan_quantiles(a: np.ndarray, qs) -> list[np.ndarray]:
    """Quantiles along axis 0 ignoring NaN, by linear interpolation (numpy's default method), vectorised."""
    if not np.isnan(a).any():  # the usual case: numpy's partition-based quantile is faster than a sort
        return list(np.quantile(a, list(qs), axis=0))
    s = np.sort(a, axis=0)  # NaN sorts last
    k = (~np.isnan(a)).sum(axis=0)
    out = []
    for q in qs:
        pos = q * (k - 1)
        lo = np.clip(np.floor(pos).astype(int), 0, None)
        hi = np.clip(np.ceil(pos).astype(int), 0, None)
        a_lo = np.take_along_axis(s, lo[None], axis=0)[0]
        a_hi = np.take_along_axis(s, hi[None], axis=0)[0]
        out.append(np.where(k > 0, a_lo + (pos - lo) * (a_hi - a_lo), np.nan))
    return out


def _resample_ranks(codes: np.ndarray, n_levels: int, idx: np.ndarray) -> np.ndarray:
    """Standardised average ranks of every column within every resample, by counting.

    `codes` (n x k) are each column's dense ranks (0..levels-1) in the full sample; a
    resample's average rank of level v is (count below v) + (count of v + 1) / 2, so the
    ranks follow from a bincount of the resampled codes: no sort per resample, and exactly
    the ranks ``rankdata`` would give (ties averaged).
    """
    b, n = idx.shape
    k = codes.shape[1]
    c = codes[idx]                                             # (b, n, k)
    flat = (np.arange(b)[:, None, None] * k + np.arange(k)[None, None, :]) * n_levels + c
    counts = np.bincount(flat.ravel(), minlength=b * k * n_levels).reshape(b, k, n_levels).astype(float)
    level_rank = np.cumsum(counts, axis=2) - counts + (counts + 1) / 2
    ranks = np.take_along_axis(level_rank, c.transpose(0, 2, 1), axis=2)  # (b, k, n)
    ranks -= (n + 1) / 2                                        # the mean of average ranks
    norm = np.sqrt((ranks * ranks).sum(axis=2, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = ranks / norm
    z[np.broadcast_to(norm == 0, z.shape)] = np.nan             # constant in this resample
    return z


def _dense_codes(a: np.ndarray) -> tuple[np.ndarray, int]:
    codes = rankdata(a, method="dense", axis=0).astype(np.int64) - 1
    return codes, int(codes.max()) + 1 if codes.size else 1


def _bootstrap_complete(x, y, indices: np.ndarray, level: float, batch: int, tick=None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of rho from resampled rows `indices` (B x n) of complete data."""
    n_boot = indices.shape[0]
    dist = np.empty((n_boot, x.shape[1], y.shape[1]))
    cx, lx = _dense_codes(x)
    cy, ly = _dense_codes(y)
    for start in range(0, n_boot, batch):
        idx = indices[start:start + batch]
        zx = _resample_ranks(cx, lx, idx)  # (b, items, n): ranked within each resample
        zy = _resample_ranks(cy, ly, idx)  # (b, dims, n)
        dist[start:start + len(idx)] = np.matmul(zx, zy.transpose(0, 2, 1))
        if tick is not None:
            tick(len(idx))
    tail = (1 - level) / 2
    low, high = _nan_quantiles(np.clip(dist, -1, 1), (tail, 1 - tail))
    return low, high


def bootstrap_ci(ratings, scores, n_boot: int, rng: np.random.Generator, *, level: float = 0.95,
                 batch: int = 100, tick=None) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap percentile interval of every item x dimension rho (items x dimensions arrays).

    Each of `n_boot` resamples draws the group's raters with replacement (the same draws
    for every column of a missing-data block), ranks within the resample and recomputes
    every rho in one batched product; `batch` resamples are held in memory at a time. A
    resample in which a column is constant gives no rho and is left out of that pair's
    percentiles. The interval is the (1 - level)/2 and (1 + level)/2 percentiles (linear
    interpolation, as numpy's default).

    Reference: Efron & Tibshirani (1993), An Introduction to the Bootstrap, ch. 13.
    """
    x = np.asarray(ratings, dtype=float)
    y = np.asarray(scores, dtype=float)
    low = np.full((x.shape[1], y.shape[1]), np.nan)
    high = low.copy()
    for rows, ci, cd in _blocks(x, y):
        m = int(rows.sum())
        if m < 3 or not len(ci) or not len(cd):
            continue
        indices = rng.integers(0, m, size=(n_boot, m))
        lo, hi = _bootstrap_complete(x[rows][:, ci], y[rows][:, cd], indices, level, batch, tick)
        low[np.ix_(ci, cd)], high[np.ix_(ci, cd)] = lo, hi
    return low, high


# -- the study table --------------------------------------------------------------------------
def bh_q_values(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (statsmodels ``fdr_bh``); NaN stays NaN.

    q_(i) = min_{j >= i} p_(j) * m / j over the m non-missing p-values sorted ascending.
    A p-value outside [0, 1] is not a p-value: ``ValueError`` naming it and its position.
    """
    p = np.asarray(p_values, dtype=float)
    q = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    bad = ok & ((p < 0) | (p > 1))
    if bad.any():
        at = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(f"p-value {float(p.ravel()[at])!r} at position {at}: a p-value lies in [0, 1]")
    if ok.any():
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return q


def add_q_values(table: pd.DataFrame) -> pd.DataFrame:
    """q_value = BH within each family, across all items and groups of the table."""
    table = table.copy()
    table["q_value"] = np.nan
    for _, index in table.groupby("family", sort=False).groups.items():
        table.loc[index, "q_value"] = bh_q_values(table.loc[index, "p_value"])
    return table


def correlation_table(study, included: pd.DataFrame, *, bootstrap: int = 0, seed: int = 0, level: float = 0.95,
                      batch: int = 100, progress: bool = False) -> pd.DataFrame:
    """One row per item x dimension over the included raters of each group.

    Parameters
    ----------
    study : analysis.dataset.Study
    included : DataFrame with ``participant_id, group_id``: the participations that count.
    bootstrap : int, resamples for the percentile interval (0: ci_low/ci_high empty).
    seed : int; group k draws from ``numpy.random.default_rng([seed, k])`` so one group's
        intervals do not depend on the others.

    Returns
    -------
    DataFrame with the columns of ``correlations.csv`` (`CONTRACT_COLUMNS`), in group, item,
    family and dimension order; ``n`` is the number of raters behind the rho.
    """
    from tqdm import tqdm

    dims = study.scores.columns
    frames = []
    bar = None
    if bootstrap and progress:
        bar = tqdm(total=bootstrap * len(study.groups), desc="bootstrap", unit="resample", leave=False)
    for k, gid in enumerate(study.groups["group_id"]):
        people = included.loc[included["group_id"] == gid, "participant_id"].tolist()
        ratings = study.rating_matrix(gid, people)
        scores = study.scores.reindex(index=ratings.index)
        res = spearman_matrix(ratings, scores)
        n_items, n_dims = ratings.shape[1], len(dims)
        frame = pd.DataFrame({
            "group_id": gid,
            "portrait_id": np.repeat(ratings.columns.get_level_values(0).to_numpy(), n_dims),
            "option_id": np.repeat(ratings.columns.get_level_values(1).to_numpy(), n_dims),
            "family": np.tile(dims.get_level_values(0).to_numpy(), n_items),
            "dimension": np.tile(dims.get_level_values(1).to_numpy(), n_items),
            "rho": res.rho.to_numpy().ravel(),
            "p_value": res.p_value.to_numpy().ravel(),
            "q_value": np.nan,
            "n": res.n.to_numpy().ravel(),
            "ci_low": np.nan,
            "ci_high": np.nan,
        })
        if bootstrap:
            tick = None
            if bar is not None:
                # A group with missing-data blocks resamples once per block: scale to one group's share.
                blocks = max(1, sum(1 for _ in _blocks(ratings.to_numpy(float), scores.to_numpy(float))))
                tick = lambda b, _s=blocks: bar.update(b / _s)  # noqa: E731
            low, high = bootstrap_ci(ratings, scores, bootstrap, np.random.default_rng([seed, k]), level=level,
                                     batch=batch, tick=tick)
            frame["ci_low"], frame["ci_high"] = low.ravel(), high.ravel()
        frames.append(frame)
    if bar is not None:
        bar.close()
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CONTRACT_COLUMNS)
    table["option_id"] = table["option_id"].astype(int)
    table["n"] = table["n"].astype(int)
    return add_q_values(table)[CONTRACT_COLUMNS]


def add_fisher_z_ci(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Append Bonett-Wright Fisher-z intervals (``fz_ci_low, fz_ci_high``) after the contracted columns."""
    from analysis.intervals import bonett_wright_ci

    low, high = bonett_wright_ci(table["rho"].to_numpy(float), table["n"].to_numpy(float), alpha)
    return table.assign(fz_ci_low=low, fz_ci_high=high)
