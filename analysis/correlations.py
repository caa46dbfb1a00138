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

CONTRACT_COLUMNS = ["group_id", "portrait_id", "option_id", "family", "dimension",
                    "rho", "p_value", "q_value", "n", "ci_low", "ci_high"]


@dataclass
class SpearmanResult:
    """Item x dimension matrices (DataFrames indexed like the ratings columns x the scores columns)."""

    rho: pd.DataFrame
    p_value: pd.DataFrame
    n: pd.DataFrame


# -- the core on complete data ------------------------------------------------------------
#
# Ranks and the Benjamini-Hochberg step-up are written out here rather than taken from
# scipy.stats and statsmodels: importing those two costs about a second, more than the
# whole correlation table, and `vp analyze` needs nothing else from them before its worker
# processes start. tests/test_correlations.py checks both against scipy's rankdata and
# statsmodels' multipletests on the same vectors.
def _tie_positions(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along the last axis: the stable sort order, and for every element the first and last
    sorted positions of its block of ties (arrays shaped like `a`, in its own order)."""
    n = a.shape[-1]
    order = np.argsort(a, axis=-1, kind="stable")
    s = np.take_along_axis(a, order, axis=-1)
    pos = np.broadcast_to(np.arange(n), s.shape)
    first = np.ones(s.shape, bool)
    first[..., 1:] = s[..., 1:] != s[..., :-1]
    last = np.ones(s.shape, bool)
    last[..., :-1] = first[..., 1:]
    start = np.empty_like(order)
    end = np.empty_like(order)
    np.put_along_axis(start, order, np.maximum.accumulate(np.where(first, pos, 0), axis=-1), axis=-1)
    np.put_along_axis(end, order, np.flip(np.minimum.accumulate(np.flip(np.where(last, pos, n), axis=-1), axis=-1),
                                          axis=-1), axis=-1)
    return order, start, end


def average_ranks(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Ranks 1..n along `axis`, ties sharing the mean of their positions (``scipy.stats.rankdata``'s "average").

    For complete data (no NaN). A value's rank is (first + last position of its block of
    ties in sorted order) / 2 + 1, exact in floating point.
    """
    a = np.moveaxis(np.asarray(a, dtype=float), axis, -1)
    ranks = _counted_ranks(a)
    if ranks is None:
        _, start, end = _tie_positions(a)
        ranks = (start + end) / 2 + 1
    return np.moveaxis(ranks, -1, axis)


def _counted_ranks(a: np.ndarray) -> np.ndarray | None:
    """Average ranks along the last axis by counting, for whole numbers in a short range (ratings); else None.

    NaN ranks above every value (a padding: the values' ranks are those without it).

    A value's rank is (values below it) + (its ties + 1) / 2: one bincount per array
    instead of a sort per column, the same numbers (whole or halves, exact).
    """
    if a.size == 0 or a.shape[-1] == 0:
        return None
    missing = np.isnan(a)
    pad = missing.any()
    with np.errstate(invalid="ignore"):
        low, high = (np.nanmin(a), np.nanmax(a)) if pad else (a.min(), a.max())
    n = a.shape[-1]
    if not (np.isfinite(low) and np.isfinite(high)) or high - low > max(n, 16):
        return None
    codes = np.where(missing, high + 1, a) - low if pad else a - low  # NaN: one level above all values
    int_codes = codes.astype(np.intp)
    if not np.array_equal(int_codes, codes):
        return None
    levels = int(high - low) + 1 + bool(pad)
    flat = int_codes.reshape(-1, n)
    rows = flat.shape[0]
    counts = np.bincount((np.arange(rows)[:, None] * levels + flat).ravel(), minlength=rows * levels)
    counts = counts.reshape(rows, levels).astype(float)
    level_rank = np.cumsum(counts, axis=1) - counts + (counts + 1) / 2
    return np.take_along_axis(level_rank, flat, axis=1).reshape(a.shape)


def _standardised_ranks(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Average ranks along `axis`, centred and scaled to unit length; NaN for a constant column."""
    r = average_ranks(x, axis=axis)
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
    from scipy import special  # here, not at the top: the report imports this module for its ranks only

    rho = np.asarray(rho, dtype=float)
    dof = np.asarray(n, dtype=float) - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = rho * np.sqrt((dof / ((rho + 1.0) * (1.0 - rho))).clip(0))
        p = 2 * special.stdtr(dof, -np.abs(t))
    return np.where((dof > 0) & ~np.isnan(rho), p, np.nan)


def critical_rho(n, alpha: float) -> np.ndarray:
    """The |rho| at which the two-sided p of :func:`spearman_p` equals `alpha` for `n` raters (NaN for n < 3).

    p < alpha exactly when |rho| > this: p = 2 T_{n-2}(-|t|) falls as |t| rises, and
    |t| = |rho| sqrt((n - 2) / (1 - rho^2)) rises with |rho|; so with t_c the t quantile,
    |rho| > t_c / sqrt(t_c^2 + n - 2).
    """
    from scipy import special

    dof = np.asarray(n, dtype=float) - 2
    with np.errstate(invalid="ignore", divide="ignore"):
        t = -special.stdtrit(dof, alpha / 2)
        return np.where(dof > 0, t / np.sqrt(t * t + dof), np.nan)


def significant(rho, n, alpha: float) -> np.ndarray:
    """``spearman_p(rho, n) < alpha``, decided without the t distribution at every rho (False for NaN).

    The permutation and split-half steps test millions of rhos against the keying rule
    and need no p-value itself: one critical rho per distinct n (:func:`critical_rho`)
    decides all rhos clearly away from it; the few within a relative 1e-9 of it get their
    p-value computed, so the answer is that of :func:`spearman_p` itself, not of the
    equivalence up to rounding.
    """
    rho = np.asarray(rho, dtype=float)
    n = np.asarray(n, dtype=float)
    if n.size > 1:
        values, inverse = np.unique(n, return_inverse=True)
        crit = np.broadcast_to(critical_rho(values, alpha)[inverse.ravel()].reshape(n.shape), rho.shape)
    else:
        crit = np.broadcast_to(critical_rho(n, alpha), rho.shape)
    size = np.abs(rho)
    with np.errstate(invalid="ignore"):
        out = size > crit * (1 + 1e-9)
        close = np.abs(size - crit) <= crit * 1e-9
    if close.any():
        out[close] = spearman_p(rho[close], np.broadcast_to(n, rho.shape)[close]) < alpha
    return out


def _spearman_complete(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """rho (columns of x) x (columns of y) for complete data: ranks once, one matrix product."""
    rho = _standardised_ranks(x).T @ _standardised_ranks(y)
    return np.clip(rho, -1.0, 1.0)


def _spearman_complete_many(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """:func:`_spearman_complete` for several complete (x, y) pairs (groups) in one go.

    The groups are stacked into NaN-padded 3-D arrays and ranked together along the rater
    axis: padding ranks above every value (NaN sorts last, in a block of its own), so each
    group's ranks are its own; centred at the exact mean rank (n + 1) / 2, padding set to
    0, one batched product. A dozen groups of ~46 raters cost what one array call costs,
    not a dozen.
    """
    if not pairs:
        return []
    sizes = np.array([len(x) for x, _ in pairs])
    width = max(x.shape[1] for x, _ in pairs)
    depth = pairs[0][1].shape[1]
    xs = np.full((len(pairs), sizes.max(), width), np.nan)
    ys = np.full((len(pairs), sizes.max(), depth), np.nan)
    for g, (x, y) in enumerate(pairs):
        xs[g, :len(x), :x.shape[1]] = x
        ys[g, :len(y)] = y
    centre = ((sizes + 1) / 2)[:, None, None]
    real = np.arange(sizes.max())[None, :, None] < sizes[:, None, None]
    z = []
    for a in (xs, ys):
        r = _padded_ranks(a) - centre
        r[~np.broadcast_to(real, r.shape)] = 0.0
        norm = np.sqrt(np.einsum("gnk,gnk->gk", r, r))[:, None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            zz = r / norm
        zz[np.broadcast_to(norm == 0, zz.shape)] = np.nan
        z.append(zz)
    rho = np.clip(np.matmul(z[0].transpose(0, 2, 1), z[1]), -1.0, 1.0)
    return [rho[g, :x.shape[1]] for g, (x, _) in enumerate(pairs)]


def _padded_ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks along axis 1 of groups x raters x columns, NaN padding ranked above every value."""
    a = np.moveaxis(a, 1, -1)
    ranks = _counted_ranks(a)
    if ranks is None:
        _, start, end = _tie_positions(a)  # NaN sorts last, each NaN a block of its own
        ranks = (start + end) / 2 + 1
    return np.moveaxis(ranks, -1, 1)


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
    rho, p, n = _spearman_arrays(np.asarray(ratings, dtype=float), np.asarray(scores, dtype=float))
    frame = lambda a: pd.DataFrame(a, index=x_index, columns=y_index)  # noqa: E731
    return SpearmanResult(frame(rho), frame(p), frame(n))


def _spearman_arrays(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`spearman_matrix` on float arrays: (rho, p, n) as items x dimensions arrays (n integer)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"ratings have {x.shape[0]} rows but scores {y.shape[0]}")
    rho = np.full((x.shape[1], y.shape[1]), np.nan)
    n = np.zeros(rho.shape, dtype=np.int64)
    for rows, ci, cd in _blocks(x, y):
        if len(ci) and len(cd):
            m = int(rows.sum())
            if len(ci) == x.shape[1] and len(cd) == y.shape[1]:  # one block: no index arrays needed
                n[:] = m
                if m >= 2:
                    rho[:] = _spearman_complete(x[rows] if m < len(rows) else x, y[rows] if m < len(rows) else y)
                continue
            n[np.ix_(ci, cd)] = m
            if m >= 2:
                rho[np.ix_(ci, cd)] = _spearman_complete(x[rows][:, ci], y[rows][:, cd])
    return rho, spearman_p(rho, n), n


# -- bootstrap ------------------------------------------------------------------------------
def _nan_quantiles(a: np.ndarray, qs, overwrite: bool = False) -> list[np.ndarray]:
    """Quantiles along the last axis ignoring NaN, by linear interpolation (numpy's default method), vectorised.

    numpy's partition-based quantile for every column; the few columns holding a NaN (a
    resample in which the item was constant) are sorted (NaN last) and interpolated over
    their non-missing values. ``overwrite``: `a` may be reordered along its last axis (no copy).
    """
    holes = np.isnan(a).any(axis=-1)
    out = list(np.quantile(a, list(qs), axis=-1, overwrite_input=overwrite))
    if holes.any():
        s = np.sort(a[holes], axis=-1)
        k = (~np.isnan(s)).sum(axis=-1)
        for o, q in zip(out, qs):
            pos = q * (k - 1)
            lo = np.clip(np.floor(pos).astype(int), 0, None)
            hi = np.clip(np.ceil(pos).astype(int), 0, None)
            a_lo = np.take_along_axis(s, lo[:, None], axis=-1)[:, 0]
            a_hi = np.take_along_axis(s, hi[:, None], axis=-1)[:, 0]
            o[holes] = np.where(k > 0, a_lo + (pos - lo) * (a_hi - a_lo), np.nan)
    return out


def _tie_blocks(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each column's sort order and, per row, where the block of ties holding its value starts and ends in it.

    Returns (order, start, end), each columns x rows: ``order[i]`` sorts column i;
    ``start[i, j]`` and ``end[i, j]`` are the first and last sorted positions holding the
    value of row j in column i.
    """
    return _tie_positions(np.asarray(a, dtype=float).T)


def _resample_ranks(blocks, weights: np.ndarray) -> np.ndarray:
    """Centred average ranks of every row and column within every resample, from the rows' multiplicities.

    ``weights`` (b x n) counts how often each row was drawn into each resample. A row's
    average rank in a resample is (draws of smaller values) + (draws of its value + 1) / 2:
    cumulative sums of the weights in each column's sort order, read at the ends of the
    row's block of ties. Exactly the ranks ``rankdata`` gives the resampled column (ties
    averaged), by a fixed gather and a cumulative sum: no sort per resample. Returns
    b x columns x n, each minus the mean rank (m + 1) / 2; every value is a multiple of 1/2.
    """
    order, start, end = blocks
    b, n = weights.shape
    k = order.shape[0]
    cum = np.zeros((b, k, n + 1))
    np.cumsum(weights[:, order.ravel()].reshape(b, k, n), axis=2, out=cum[:, :, 1:])
    flat = cum.reshape(b, k * (n + 1))
    base = np.arange(k)[:, None] * (n + 1)
    below = flat[:, (base + start).ravel()]
    through = flat[:, (base + end + 1).ravel()]
    return ((below + through + 1) / 2 - (n + 1) / 2).reshape(b, k, n)


def _level_codes(a: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(codes 0..levels-1 shaped like `a`, levels) when `a` holds whole numbers in a short range (ratings); else None."""
    if a.size == 0:
        return None
    low, high = a.min(), a.max()
    if not (np.isfinite(low) and np.isfinite(high)) or high - low > max(a.shape[0], 16):
        return None
    codes = (a - low).astype(np.intp)
    if not np.array_equal(codes, a - low):
        return None
    return codes, int(high - low) + 1


def _resample_ranker(a: np.ndarray):
    """A function of the draw counts ``weights`` (b x n) giving, for the columns of `a` (n x k) in every resample,
    (b x k x n centred average ranks of the original rows, b x k sums of weight x rank^2).

    Whole numbers in a short range (ratings) are ranked by level: one product of the
    weights with the rows' one-hot levels counts every level in every resample, a value's
    rank is (draws below its level) + (draws of its level + 1) / 2, and the sum of squares
    needs only the levels. Other columns go through :func:`_resample_ranks`. Both are the
    ranks ``rankdata`` gives the resampled column, in halves: the sums are exact.
    """
    n, k = a.shape
    coded = _level_codes(a)
    if coded is None:
        blocks = _tie_blocks(a)

        def ranker(weights):
            r = _resample_ranks(blocks, weights)
            return r, np.einsum("bkn,bkn,bn->bk", r, r, weights)
        return ranker
    codes, levels = coded
    slot = np.arange(k) * levels + codes                         # n x k: each row's level slot per column
    onehot = np.zeros((n, k * levels))
    onehot[np.arange(n)[:, None], slot] = 1.0
    gather = slot.T.ravel()                                      # k x n, flattened

    def ranker(weights):
        b = len(weights)
        counts = (weights @ onehot).reshape(b, k, levels)
        level_rank = np.cumsum(counts, axis=2) - counts + (counts + 1) / 2 - (n + 1) / 2
        ranks = level_rank.reshape(b, k * levels)[:, gather].reshape(b, k, n)
        return ranks, np.einsum("bkl,bkl,bkl->bk", counts, level_rank, level_rank)
    return ranker


def _bootstrap_complete(x, y, indices: np.ndarray, level: float, batch: int, tick=None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of rho from resampled rows `indices` (B x n) of complete data.

    Each resample's rho is the weighted Pearson correlation of the centred ranks over the
    original rows, weighted by how often each was drawn: sum w r_x r_y / sqrt(sum w r_x^2
    sum w r_y^2). With ranks in halves and integer weights the sums are exact, so a
    resample's rho does not depend on the batch it is computed in.
    """
    n_boot, n = indices.shape
    dist = np.empty((x.shape[1], y.shape[1], n_boot))
    rank_x, rank_y = _resample_ranker(np.asarray(x, dtype=float)), _resample_ranker(np.asarray(y, dtype=float))
    for begin in range(0, n_boot, batch):
        idx = indices[begin:begin + batch]
        b = len(idx)
        weights = np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n).reshape(b, n).astype(float)
        rx, sx = rank_x(weights)  # (b, items, n), (b, items)
        ry, sy = rank_y(weights)  # (b, dims, n), (b, dims)
        num = np.matmul(rx, (ry * weights[:, None, :]).transpose(0, 2, 1))
        with np.errstate(invalid="ignore", divide="ignore"):  # a column constant in a resample: no rho
            rho = num / np.sqrt(sx[:, :, None] * sy[:, None, :])
        np.clip(rho, -1, 1, out=rho)
        dist[:, :, begin:begin + b] = rho.transpose(1, 2, 0)
        if tick is not None:
            tick(b)
    tail = (1 - level) / 2
    low, high = _nan_quantiles(dist, (tail, 1 - tail), overwrite=True)
    return low, high


def bootstrap_ci(ratings, scores, n_boot: int, rng: np.random.Generator, *, level: float = 0.95,
                 batch: int = 250, tick=None) -> tuple[np.ndarray, np.ndarray]:
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
    """Benjamini-Hochberg adjusted p-values (as statsmodels' ``multipletests(method="fdr_bh")``); NaN stays NaN.

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
        q[ok] = bh_rows(p[ok][None, :])[0]
    return q


def bh_rows(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values of every row of `p` at once (rows x tests; NaN stays NaN).

    Row by row statsmodels' ``multipletests(method="fdr_bh")``; :func:`bh_q_values` is its one-row case:
    sort, ``p_(i) / (i / m)``, running minimum from the largest down, capped at 1.
    """
    p = np.asarray(p, dtype=float)
    ok = ~np.isnan(p)
    m = ok.sum(axis=1, keepdims=True)
    filled = np.where(ok, p, np.inf)
    order = np.argsort(filled, axis=1, kind="stable")
    ranked = np.take_along_axis(filled, order, axis=1)
    with np.errstate(invalid="ignore"):
        q = ranked / (np.arange(1, p.shape[1] + 1)[None, :] / m)  # statsmodels' order of operations, to the bit
    q = np.minimum(np.minimum.accumulate(q[:, ::-1], axis=1)[:, ::-1], 1.0)
    out = np.empty_like(q)
    np.put_along_axis(out, order, q, axis=1)
    return np.where(ok, out, np.nan)


def add_q_values(table: pd.DataFrame) -> pd.DataFrame:
    """q_value = BH within each family, across all items and groups of the table."""
    table = table.copy()
    table["q_value"] = _family_q_values(table["family"].to_numpy(), table["p_value"].to_numpy(float))
    return table


def _family_q_values(family: np.ndarray, p: np.ndarray) -> np.ndarray:
    """BH q-values of `p` within each value of `family` (arrays of one length)."""
    q = np.full(len(p), np.nan)
    codes, names = pd.factorize(family)
    for k in range(len(names)):
        at = np.flatnonzero(codes == k)
        q[at] = bh_q_values(p[at])
    return q


def _group_arrays(study, included: pd.DataFrame):
    """(k, group id, item columns, raters x items ratings, the same raters x dimensions scores) per group, in study order.

    Arrays, not frames: the table, its bootstrap and the scaling benchmark's 10x studies
    spend their time in the arithmetic, not in building a frame per group.
    """
    group_codes, group_names = pd.factorize(included["group_id"])
    position = {gid: g for g, gid in enumerate(group_names)}
    codes = study.participant_codes(included["participant_id"])
    for k, gid in enumerate(study.groups["group_id"]):
        mine = codes[group_codes == position.get(gid, -2)]
        mine = mine[np.sort(np.unique(mine, return_index=True)[1])]  # first appearance, without repeats
        columns, ratings, scores = study.group_arrays(gid, mine)
        yield k, gid, columns, ratings, scores


def correlation_table(study, included: pd.DataFrame, *, bootstrap: int = 0, seed: int = 0, level: float = 0.95,
                      batch: int = 250, progress: bool = False) -> pd.DataFrame:
    """One row per item x dimension over the included raters of each group.

    Parameters
    ----------
    study : analysis.dataset.Study
    included : DataFrame with ``participant_id, group_id``: the participations that count.
    bootstrap : int, resamples for the percentile interval (0: ci_low/ci_high empty; see
        :func:`add_bootstrap_ci`).
    seed : int; group k draws from ``numpy.random.default_rng([seed, k])`` so one group's
        intervals do not depend on the others.

    Returns
    -------
    DataFrame with the columns of ``correlations.csv`` (`CONTRACT_COLUMNS`), in group, item,
    family and dimension order; ``n`` is the number of raters behind the rho.
    """
    dims = study.scores.columns
    n_dims = len(dims)
    gids, sizes, portraits, options, rhos, ns = [], [], [], [], [], []
    empty = (np.array([], dtype=object), np.array([], dtype=np.int64))
    groups = list(_group_arrays(study, included))
    # Groups without missing values (the usual case) are ranked and correlated together.
    complete = [k for k, (*_, x, y) in enumerate(groups)
                if len(x) >= 2 and x.shape[1] and not (np.isnan(x).any() or np.isnan(y).any())]
    batched = dict(zip(complete, _spearman_complete_many([groups[k][3:] for k in complete])))
    for k, gid, _, ratings, scores in groups:
        if k in batched:
            rho, n = batched[k], np.full(batched[k].shape, len(ratings))
        else:
            rho, _, n = _spearman_arrays(ratings, scores)
        gids.append(gid)
        sizes.append(rho.size)
        portrait, option = study.item_levels.get(gid, empty)
        portraits.append(portrait)
        options.append(option)
        rhos.append(rho.ravel())
        ns.append(n.ravel())
    if not gids:
        return pd.DataFrame(columns=CONTRACT_COLUMNS)
    n_items = sum(len(x) for x in portraits)
    item_at = np.repeat(np.arange(n_items), n_dims)
    dim_at = np.tile(np.arange(n_dims), n_items)
    # String columns as small pandas arrays taken at integer positions: building them from
    # ~10,000 Python strings would cost more than the correlations.
    text = lambda values: pd.array(np.asarray(values, dtype=object), dtype="str")  # noqa: E731
    family = dims.get_level_values(0).to_numpy(object)
    p_value = spearman_p(np.concatenate(rhos), np.concatenate(ns))
    table = pd.DataFrame({
        "group_id": text(gids).take(np.repeat(np.arange(len(gids)), sizes)),
        "portrait_id": text(np.concatenate(portraits)).take(item_at),
        "option_id": np.concatenate(options).astype(int)[item_at],
        "family": text(family).take(dim_at),
        "dimension": text(dims.get_level_values(1).to_numpy(object)).take(dim_at),
        "rho": np.concatenate(rhos),
        "p_value": p_value,
        "q_value": _family_q_values(family[dim_at], p_value),
        "n": np.concatenate(ns).astype(int),
        "ci_low": np.nan,
        "ci_high": np.nan,
    })
    if bootstrap:
        table = add_bootstrap_ci(table, study, included, bootstrap, seed=seed, level=level, batch=batch,
                                 progress=progress)
    return table


def add_bootstrap_ci(table: pd.DataFrame, study, included: pd.DataFrame, bootstrap: int, *, seed: int = 0,
                     level: float = 0.95, batch: int = 250, progress: bool = False) -> pd.DataFrame:
    """``ci_low, ci_high`` of a :func:`correlation_table` (same study and raters): bootstrap percentile intervals.

    Group k resamples its raters with ``numpy.random.default_rng([seed, k])`` (see
    :func:`bootstrap_ci`), so the intervals are the same whether they are computed with the
    table or afterwards (``vp analyze`` computes them while its worker processes run the
    psychometric steps). Returns a copy of ``table`` with the two columns filled.
    """
    from tqdm import tqdm

    bar = tqdm(total=bootstrap * len(study.groups), desc="bootstrap", unit="resample", leave=False) if progress else None
    lows, highs = [], []
    for k, _, _, ratings, scores in _group_arrays(study, included):
        tick = None
        if bar is not None:
            # A group with missing-data blocks resamples once per block: scale to one group's share.
            blocks = max(1, sum(1 for _ in _blocks(ratings, scores)))
            tick = lambda b, _s=blocks: bar.update(b / _s)  # noqa: E731
        low, high = bootstrap_ci(ratings, scores, bootstrap, np.random.default_rng([seed, k]), level=level,
                                 batch=batch, tick=tick)
        lows.append(low.ravel())
        highs.append(high.ravel())
    if bar is not None:
        bar.close()
    low = np.concatenate(lows) if lows else np.array([])
    if len(low) != len(table):
        raise ValueError(f"bootstrap intervals for {len(low)} pairs, but the table has {len(table)} rows")
    return table.assign(ci_low=low, ci_high=np.concatenate(highs) if highs else np.array([]))


def add_fisher_z_ci(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Append Bonett-Wright Fisher-z intervals (``fz_ci_low, fz_ci_high``) after the contracted columns."""
    from analysis.intervals import bonett_wright_ci

    low, high = bonett_wright_ci(table["rho"].to_numpy(float), table["n"].to_numpy(float), alpha)
    return table.assign(fz_ci_low=low, fz_ci_high=high)
