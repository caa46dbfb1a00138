"""Plan the confirmation wave of a two-stage study from its screening wave.

A two-stage design screens every candidate item on a first wave of raters, then spends the
rest of the budget on the items that look promising, confirmed on fresh raters. True
item-value relations are sparse (in the simulated study under 1 % of pairs reach rho 0.3),
so the one-stage design pays most of its ratings to items that relate to nothing.

``vp plan-wave`` reads the screening wave from the database, scores every item's promise,
picks as many candidates as the remaining budget confirms with the power `vp power` says
is needed, and writes the next wave as a study file for ``vp app --study``: candidate items
packed into groups of ``--items-per-participant`` (a query's candidates stay together), each
group with the raters it needs. The confirmation analysis is ``vp analyze --design
two-stage`` (:mod:`analysis.two_stage`).

The pieces, each a function:

* :func:`promise_scores`: how promising each screened item is (see its docstring for why
  this score).
* :func:`strong_pair_probability`: the empirical-Bayes probability that a pair's population
  correlation reaches the threshold, given its screening estimate; summed over the
  candidates it is the number of relations the confirmation can expect to find.
* :func:`fdr_alpha`: the per-test level at which Benjamini-Hochberg rejects, for the power
  calculation (Jung 2005).
* :func:`plan_wave`: candidates, groups and raters for a budget.
* :func:`wave_study`: the study file and items file of the planned wave.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

import instruments as inst
from analysis.chance import study_groups
from analysis.circumplex import CIRCLE, structural_summary
from analysis.correlations import spearman_matrix
from analysis.power import achieved_power, raters_needed
from valueportrait import DEFAULT_DB
from valueportrait.errors import InputError

ITEM = ["portrait_id", "option_id"]
#: Columns of the plan table (``<out>_plan.csv``) and of the promise table before it.
PROMISE_COLUMNS = ["group_id", "portrait_id", "option_id", "n", "peak_rho", "peak_value", "best_rho",
                   "best_dimension", "z_circle", "z_single", "promise", "basis", "expected_strong_pairs"]


# --------------------------------------------------------------------------- permutation null
def permuted_rho(ratings, scores, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """Spearman's rho of every item with every dimension after shuffling the raters' scores.

    Parameters
    ----------
    ratings : DataFrame or array, raters x items (NaN = not rated).
    scores : DataFrame or array, the same raters x dimensions.
    n_perm : number of permutations.
    rng : numpy Generator.

    Returns
    -------
    ndarray (n_perm, items, dimensions): rho under the null that an item's ratings have
    nothing to do with the raters' scores, by the chance baseline's machinery
    (:func:`analysis.chance.permuted_correlations`): a permutation moves whole score rows,
    so the ratings' and the scores' own structure (ties, the correlations among the values)
    is kept and only their link is broken; with complete data each batch of permutations is
    one product of ranks computed once.
    """
    from analysis.chance import permutation_rows, permuted_correlations

    x = np.asarray(ratings, dtype=float)
    y = np.asarray(scores, dtype=float)
    orders = permutation_rows(x.shape[0], n_perm, rng)
    return np.concatenate([rho for rho, _ in permuted_correlations(x, y, orders)], axis=0)


def _item_statistics(rho: np.ndarray, dims: list[str], keying: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``rho`` (rows x dims): the circle peak, its nearest value, the best single rho and its column."""
    values = [d for d in CIRCLE if d in dims]
    frame = pd.DataFrame(rho[:, [dims.index(v) for v in values]], columns=values)
    fit = structural_summary(frame)
    elevation, amplitude = fit["elevation"].to_numpy(), fit["amplitude"].to_numpy()
    if keying == "abs":
        peak = amplitude + np.abs(elevation)
        strength = np.abs(rho)
    else:
        peak = elevation + amplitude
        strength = rho
    with np.errstate(invalid="ignore"):
        filled = np.where(np.isnan(strength), -np.inf, strength)
    best = filled.argmax(axis=1)
    best_rho = np.take_along_axis(rho, best[:, None], axis=1)[:, 0]
    best_strength = np.take_along_axis(filled, best[:, None], axis=1)[:, 0]
    best_strength = np.where(np.isinf(best_strength), np.nan, best_strength)
    return peak, fit["nearest_value"].to_numpy(object), best_strength, np.where(np.isnan(best_strength), -1, best)


def promise_scores(study, included: pd.DataFrame, *, keying: str = "pos", permutations: int = 200,
                   seed: int = 0) -> pd.DataFrame:
    """How promising every item of a screening wave is: evidence that it reaches a value somewhere.

    Parameters
    ----------
    study : analysis.dataset.Study, the screening wave.
    included : DataFrame ``participant_id, group_id``: the raters quality control kept.
    keying : 'pos' (look for strong positive correlations) or 'abs' (either sign).
    permutations : shuffles of the raters' scores per group, for the null distributions.
    seed : seed of the permutations (group k uses ``default_rng([seed, k])``).

    Returns
    -------
    DataFrame, one row per item: ``group_id, portrait_id, option_id, n`` (raters),
    ``peak_rho`` and ``peak_value`` (the top of the cosine fitted to its ten value
    correlations, and the value nearest it), ``best_rho`` and ``best_dimension`` (its largest
    correlation over the 19 dimensions), ``z_circle``, ``z_single`` (each of the two in
    standard deviations of its own permutation null), ``promise`` (their weighted sum) and
    ``basis`` ('circle' or 'single': which one contributes more).

    Notes
    -----
    Why this score. A screening wave has few raters per item (16-24), so any single
    correlation is mostly noise (standard error about 0.2), and the item's largest of 19
    correlations mostly measures how lucky its noise was. But items that measure a
    motivation relate to the whole value circle at once: high on their value, lower on its
    neighbours, negative opposite (Schwartz; the structural summary of
    :mod:`analysis.circumplex`). Fitting ``e + a cos(theta - delta)`` to the ten value
    correlations pools them into three numbers, and its peak ``e + a`` (the strongest
    correlation the item has with any direction around the circle, higher-order values
    included) is estimated with far less noise than any one of them. On the simulated
    study (seed 0, 20 screening raters per item, the 120 most promising of 480 kept, six
    samples of raters; `benchmarks/promise.py`) the candidates held 60.5 of the 95 pairs
    with population rho >= 0.3 when ranked by the peak and 48.5 when ranked by the largest
    correlation.

    An item tied to one value only (a spike, not a cosine) or to a personality trait is
    diluted by the circle fit, so the score also looks at the largest single correlation.
    The two statistics live on different scales, so each is standardised by its own null
    distribution: the same statistic after shuffling the raters' scores within the group
    (:func:`permuted_rho`; mean and SD over items and shuffles), which also accounts for the
    number of raters and for the correlations among the dimensions. The promise combines
    the two with the weights the screening data give them (:func:`evidence_weights`: the
    factor score of what they share beyond the null), in null standard deviations: "this
    far above what an item with no relation would show". On the simulated study this keeps
    the circle's advantage (recall after confirmation with candidates chosen by the circle
    alone 0.402, by this score 0.400, by the larger of the two z's 0.368, by the largest
    correlation 0.323; same benchmark) while the bots' one-value items, which the circle
    misses, are found by the single correlation. ``table.attrs["weights"]`` holds the
    weights.
    """
    if keying not in ("pos", "abs"):
        raise InputError(f"--keying: {keying!r} is not one of pos, abs")
    dims_index = study.scores.columns
    dims = list(dims_index.get_level_values("dimension"))
    frames, nulls = [], []
    for k, (gid, ratings, scores) in enumerate(study_groups(study, included)):
        if ratings.shape[1] == 0:
            continue
        observed = spearman_matrix(ratings, scores)
        null = permuted_rho(ratings, scores, permutations, np.random.default_rng([seed, k]))
        peak, peak_value, best, best_col = _item_statistics(observed.rho.to_numpy(), dims, keying)
        null_peak, _, null_best, _ = _item_statistics(null.reshape(-1, len(dims)), dims, keying)
        with np.errstate(invalid="ignore", divide="ignore"):
            standard = lambda x, ref: (x - np.nanmean(ref)) / np.nanstd(ref)  # noqa: E731
            z_circle, z_single = standard(peak, null_peak), standard(best, null_best)
            nulls.append(np.column_stack([standard(null_peak, null_peak), standard(null_best, null_best)]))
        frames.append(pd.DataFrame({
            "group_id": gid,
            "portrait_id": ratings.columns.get_level_values(0).to_numpy(),
            "option_id": ratings.columns.get_level_values(1).to_numpy().astype(int),
            "n": observed.n.min(axis=1).to_numpy(),
            "peak_rho": peak, "peak_value": peak_value,
            "best_rho": best, "best_dimension": np.where(best_col >= 0, np.array(dims, dtype=object)[best_col], None),
            "z_circle": z_circle, "z_single": z_single,
        }))
    if not frames:
        return pd.DataFrame(columns=PROMISE_COLUMNS[:-1])
    table = pd.concat(frames, ignore_index=True)
    z = table[["z_circle", "z_single"]].to_numpy()
    weights = evidence_weights(z, np.vstack(nulls))
    parts = np.where(np.isnan(z), 0.0, z * weights)
    table["promise"] = np.where(np.isnan(z).all(axis=1), np.nan, parts.sum(axis=1))
    table["basis"] = np.where(table["promise"].isna(), None, np.where(parts[:, 0] >= parts[:, 1], "circle", "single"))
    table.attrs["weights"] = {"z_circle": float(weights[0]), "z_single": float(weights[1])}
    return table


def evidence_weights(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Weights of the two standardised statistics in the promise: Bartlett's factor score of the signal they share.

    Model: each item's ``z = lambda T + e``, with ``T`` its (unit-variance) relevance and ``e``
    the noise, whose covariance ``S0`` the permutation null gives (each z has null variance 1;
    the two are correlated because both look at the same correlations). The observed
    covariance is ``S = lambda lambda' + S0``, so ``lambda`` is the leading eigenvector of
    ``S - S0`` scaled by the root of its eigenvalue, and the best linear score of ``T`` is
    Bartlett's ``w = S0^-1 lambda`` (scaled to unit null variance, so the promise reads in
    null standard deviations). The data thus decide how much each statistic carries: on the
    simulated study's circle-shaped items the circle gets nearly all the weight, on items
    tied to one value (the bots') the single correlation does. When the excess variance is
    within three standard errors of a sample variance (no signal to find), the two count
    equally.
    """
    ok_obs = ~np.isnan(observed).any(axis=1)
    ok_null = ~np.isnan(null).any(axis=1)
    if ok_obs.sum() < 3 or ok_null.sum() < 3:
        return np.array([0.5, 0.5])
    s0 = np.cov(null[ok_null], rowvar=False)
    values, vectors = np.linalg.eigh(np.cov(observed[ok_obs], rowvar=False) - s0)
    # Excess variance within sampling error of a variance (SE sqrt(2 / n) per unit) is no signal.
    noise = 3 * np.sqrt(2 / ok_obs.sum())
    lam = np.sqrt(values[-1]) * np.abs(vectors[:, -1]) if values[-1] > noise else np.ones(2)
    w = np.linalg.solve(s0, lam)
    w = np.clip(w, 0, None)  # a statistic never counts against an item
    if not w.any():
        w = np.ones(2)
    return w / np.sqrt(w @ s0 @ w)


# --------------------------------------------------------------------------- empirical Bayes
def npmle_prior(x: np.ndarray, sd: np.ndarray, grid: np.ndarray, *, counts: np.ndarray | None = None,
                max_iter: int = 3000, tol: float = 1e-10) -> tuple[np.ndarray, int]:
    """Nonparametric maximum-likelihood prior (Kiefer-Wolfowitz) on a fixed grid, by EM.

    Parameters
    ----------
    x : (m,) observed estimates, each ``x_i ~ N(mu_i, sd_ik^2)`` given ``mu_i = grid[k]``.
    sd : (m, k) noise SD of observation i if its true value is grid point k (or (m, 1)).
    grid : (k,) support points of the prior.
    counts : (m,) how many observations each row stands for (binned data); default 1 each.
    max_iter, tol : EM stops when the mean log-likelihood gains less than `tol` in a step.

    Returns
    -------
    (weights, iterations): the prior's mass on each grid point, and the EM steps taken.

    Notes
    -----
    Maximises ``sum_i c_i log sum_k w_k phi((x_i - g_k) / sd_ik) / sd_ik`` over the simplex
    (Laird 1978's EM: ``w_k <- w_k * sum_i c_i L_ik / f_i / sum_i c_i``). At the maximum the
    gradient condition of Lindsay (1983) holds: ``sum_i c_i L_ik / f_i / sum_i c_i <= 1`` for
    every k, with equality where ``w_k > 0`` (tested). Jiang & Zhang (2009) and Koenker &
    Mizera (2014) use the same estimator for empirical-Bayes selection of many small effects.
    """
    like = stats.norm.pdf((x[:, None] - grid[None, :]) / sd) / sd          # (m, k)
    c = np.ones(len(x)) if counts is None else np.asarray(counts, dtype=float)
    c = c / c.sum()
    w = np.full(len(grid), 1.0 / len(grid))
    last = -np.inf
    for it in range(1, max_iter + 1):
        f = like @ w
        loglik = float(c @ np.log(f))
        if loglik - last < tol:
            return w, it
        last = loglik
        w = w * ((c / f) @ like)
    return w, max_iter


def strong_pair_probability(correlations: pd.DataFrame, threshold: float = 0.3, keying: str = "pos") -> pd.Series:
    """P(population rho >= threshold | screening rho), per row of a correlations table.

    Parameters
    ----------
    correlations : long table with ``family, rho, n`` (``correlations.csv``'s columns).
    threshold : the keying threshold.
    keying : 'pos' (rho >= threshold) or 'abs' (|rho| >= threshold).

    Returns
    -------
    Series aligned with `correlations`; NaN where rho is missing or n <= 3.

    Notes
    -----
    Empirical Bayes on Fisher's z: ``z_hat = atanh(rho_hat)`` is about normal around
    ``atanh(rho)`` with Bonett & Wright's (2000) variance for Spearman's rho,
    ``(1 + rho^2 / 2) / (n - 3)``. The distribution of the true ``atanh(rho)`` over the
    family's pairs is estimated by :func:`npmle_prior` on a grid of 121 points (the
    estimates binned to 0.005 in z, which changes nothing visible and makes it fast), and
    the posterior follows from Bayes' rule. Because the prior is learnt from all pairs, the
    posterior already discounts a high screening estimate by how rare strong relations are
    (Efron 2011, "Tweedie's formula and selection bias"): selecting candidates on it does
    not bias it. With 20 raters per item the tail of the prior is poorly determined: on the
    simulated study the probabilities summed over all pairs come out above the true count
    (`benchmarks/designs.py` prints both), so read them as a rough, generous estimate.
    """
    out = pd.Series(np.nan, index=correlations.index, dtype=float)
    rho_grid = np.tanh(np.linspace(np.arctanh(-0.95), np.arctanh(0.95), 121))
    grid = np.arctanh(rho_grid)
    strong = (np.abs(rho_grid) if keying == "abs" else rho_grid) >= threshold - 1e-12
    for _, rows in correlations.groupby("family", sort=False):
        ok = (rows["rho"].notna() & (rows["n"] > 3)).to_numpy()
        if ok.sum() < 10:
            continue
        z = np.round(np.arctanh(rows["rho"].to_numpy(float)[ok].clip(-0.999, 0.999)) / 0.005) * 0.005
        cells, inverse, counts = np.unique(np.column_stack([z, rows["n"].to_numpy(float)[ok]]), axis=0,
                                           return_inverse=True, return_counts=True)
        x, n = cells[:, 0], cells[:, 1]
        sd = np.sqrt((1 + rho_grid[None, :] ** 2 / 2) / (n[:, None] - 3))
        w, _ = npmle_prior(x, sd, grid, counts=counts)
        post = stats.norm.pdf((x[:, None] - grid[None, :]) / sd) / sd * w[None, :]
        prob = post[:, strong].sum(axis=1) / post.sum(axis=1)
        out.loc[rows.index[ok]] = prob[inverse.ravel()]
    return out


def expected_strong_pairs(correlations: pd.DataFrame, threshold: float = 0.3, keying: str = "pos") -> pd.DataFrame:
    """Per item, the expected number of its pairs with population rho >= threshold (``expected_strong_pairs``)."""
    prob = strong_pair_probability(correlations, threshold, keying)
    return (correlations[ITEM].assign(expected_strong_pairs=prob.fillna(0.0))
            .groupby(ITEM, sort=False, as_index=False)["expected_strong_pairs"].sum())


# --------------------------------------------------------------------------- power for FDR
def fdr_alpha(m1: float, m0: float, power: float = 0.8, fdr: float = 0.05) -> float:
    """The per-test level at which Benjamini-Hochberg works, for a sample-size calculation.

    With ``m1`` true and ``m0`` null hypotheses, a test at level ``a`` rejects about
    ``r1 = power * m1`` true ones and ``a * m0`` null ones; BH at FDR ``f`` tests at the level
    where ``a m0 / (a m0 + r1) = f``, i.e.

        a* = r1 f / (m0 (1 - f))

    (Jung 2005, eq. 4). Sizing each test for level ``a*`` gives the wanted power under BH.

    References
    ----------
    Jung, S.-H. (2005). Sample size for FDR-control in microarray data analysis.
    Bioinformatics, 21(14), 3097-3104.

    Examples
    --------
    >>> round(fdr_alpha(40, 3960, power=0.6, fdr=0.01), 8)   # Jung's example: r1 = 24 of m1 = 40, m = 4000
    6.122e-05
    """
    if m0 <= 0:
        return fdr
    return float(min(fdr, power * m1 * fdr / (m0 * (1 - fdr))))


# --------------------------------------------------------------------------- the plan
@dataclass
class Plan:
    """A planned confirmation wave."""

    table: pd.DataFrame            # every screened item: promise, candidate, wave_group
    groups: list[dict]             # per group: group_id, items (portrait_id, option_id list), raters
    settings: dict
    figures: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def candidates(self) -> pd.DataFrame:
        return self.table[self.table["candidate"]]

    def layout(self) -> pd.DataFrame:
        """``group_id, portrait_id, option_id, raters``: one row per planned item, in group order."""
        rows = [(g["group_id"], p, o, g["raters"]) for g in self.groups for p, o in g["items"]]
        return pd.DataFrame(rows, columns=["group_id", "portrait_id", "option_id", "raters"])


def pack_groups(ordered: pd.DataFrame, n_groups: int, capacity: int) -> list[list[tuple[str, int]]]:
    """Fill `n_groups` groups of `capacity` items with the best items, each query's items in one group.

    `ordered` lists items best first (``portrait_id, option_id``). An item goes to the group
    that already holds its query; a new query goes to the group with the most room (the
    first such), so groups fill evenly. An item whose query's group is full is left out.
    Stops when every group is full.
    """
    groups: list[list[tuple[str, int]]] = [[] for _ in range(n_groups)]
    room = [capacity] * n_groups
    home: dict[str, int] = {}
    left = n_groups * capacity
    for pid, opt in zip(ordered["portrait_id"], ordered["option_id"]):
        g = home.get(pid)
        if g is None:
            g = max(range(n_groups), key=lambda j: room[j])
            if room[g] == 0:
                break
            home[pid] = g
        if room[g] > 0:
            groups[g].append((pid, int(opt)))
            room[g] -= 1
            left -= 1
            if left == 0:
                break
    return [sorted(g) for g in groups]


def plan_wave(items: pd.DataFrame, *, budget_participants: int, items_per_participant: int = 40,
              rho: float = 0.3, alpha: float = 0.05, power: float = 0.8, exclusion_share: float = 0.0,
              dims_per_item: int = len(inst.FAMILY_OF), group_prefix: str = "C") -> Plan:
    """Candidates, groups and raters for a confirmation wave of `budget_participants` raters.

    Parameters
    ----------
    items : the promise table (:func:`promise_scores`) with ``expected_strong_pairs``.
    budget_participants : raters the confirmation wave may pay (each rates one group).
    items_per_participant : items in a group.
    rho, alpha, power : the power calculation of `vp power` (detect ``rho`` with ``power``),
        at the level BH at FDR ``alpha`` tests at (:func:`fdr_alpha`).
    exclusion_share : share of raters quality control is expected to exclude (the
        screening wave's): paid raters = included raters / (1 - share).
    dims_per_item : hypotheses per item (19: 10 values, 4 higher-order, 5 traits).

    Returns
    -------
    Plan

    Notes
    -----
    For G = 1, 2, ... groups: the best items fill G groups (:func:`pack_groups`, by
    ``promise``); the candidates hold ``m = K * dims_per_item`` pairs, of which
    ``m1 = sum expected_strong_pairs`` are expected to be strong; the raters a group needs
    are ``raters_needed(rho, fdr_alpha(m1, m - m1, power, alpha), power)`` (as `vp power`),
    paid for quality control's losses. The plan takes the largest G whose groups the budget
    can all give those raters, then shares the whole budget evenly among the G groups. If
    not even one group can be powered, it plans one group and says so. ``m1`` counts only
    pairs expected at >= the threshold; pairs a little below it are rejected by BH too and
    raise its level, so the calculation errs towards more raters.
    """
    if budget_participants < 5:
        raise InputError(f"--budget-participants: {budget_participants} must be at least 5 (a correlation test "
                         "needs more than 4 raters)")
    if items_per_participant < 1:
        raise InputError(f"--items-per-participant: {items_per_participant} must be at least 1")
    if not 0 <= exclusion_share < 1:
        raise ValueError(f"exclusion_share {exclusion_share} outside [0, 1)")
    scored = items[items["promise"].notna()]
    if scored.empty:
        raise InputError("screening wave: no item has a promise score (no included raters with ratings and scores)")
    ordered = scored.sort_values(["promise", "portrait_id", "option_id"], ascending=[False, True, True], kind="stable")
    expected = ordered.set_index(ITEM)["expected_strong_pairs"]
    keep = 1.0 - exclusion_share
    max_groups = max(1, min(math.ceil(len(ordered) / items_per_participant), budget_participants // 4))
    options = []
    for g in range(1, max_groups + 1):
        packed = pack_groups(ordered, g, items_per_participant)
        if any(not grp for grp in packed):
            break  # more groups than candidates to fill them
        chosen = [it for grp in packed for it in grp]
        m = len(chosen) * dims_per_item
        m1 = float(expected.loc[chosen].sum())
        a_star = fdr_alpha(m1, m - m1, power, alpha)
        needed = raters_needed(rho, a_star, power) if a_star > 0 else math.inf
        paid = math.ceil(needed / keep) if math.isfinite(needed) else math.inf
        options.append({"groups": g, "packed": packed, "pairs": m, "m1": m1, "alpha_star": a_star,
                        "needed": needed, "paid": paid, "feasible": g * paid <= budget_participants})
    feasible = [o for o in options if o["feasible"]]
    warnings = []
    best = feasible[-1] if feasible else options[0]
    if not feasible:
        warnings.append(f"the budget of {budget_participants} raters cannot power even one group: it needs "
                        f"{best['paid'] if math.isfinite(best['paid']) else 'unboundedly many'} raters "
                        f"(expected strong pairs among the best items: {best['m1']:.1f}); planning one group anyway")
    g = best["groups"]
    raters = [budget_participants // g + (1 if j < budget_participants % g else 0) for j in range(g)]
    group_ids = [f"{group_prefix}{j + 1:02d}" for j in range(g)]
    groups = [{"group_id": gid, "items": items_, "raters": r} for gid, items_, r in zip(group_ids, best["packed"], raters)]
    where = {it: gid for gid, grp in zip(group_ids, best["packed"]) for it in grp}
    table = items.copy()
    keys = list(zip(table["portrait_id"], table["option_id"].astype(int)))
    table["candidate"] = [k in where for k in keys]
    table["wave_group"] = [where.get(k) for k in keys]
    powers = achieved_power(rho, np.array(raters, dtype=float) * keep, best["alpha_star"])
    figures = {
        "groups": g, "candidates": len(where), "candidate_pairs": best["pairs"],
        "expected_strong_pairs": round(best["m1"], 3), "alpha_per_test": best["alpha_star"],
        "raters_needed_included": best["needed"], "raters_needed_paid": best["paid"],
        "raters_per_group": raters, "expected_included_per_group": [round(r * keep, 1) for r in raters],
        "expected_power": [float(p) for p in np.atleast_1d(powers)],
        "ratings": int(sum(r * len(grp["items"]) for r, grp in zip(raters, groups))),
        "considered": [{k: o[k] for k in ("groups", "pairs", "m1", "alpha_star", "needed", "paid", "feasible")}
                       for o in options],
    }
    settings = {"budget_participants": budget_participants, "items_per_participant": items_per_participant,
                "rho": rho, "alpha": alpha, "power": power, "exclusion_share": exclusion_share}
    return Plan(table, groups, settings, figures, warnings)


# --------------------------------------------------------------------------- screening -> plan
def default_rho(threshold: float) -> float:
    """The correlation a confirmation is powered for by default: 0.15 above the keying threshold.

    The rule keys a pair when its estimate reaches the threshold, so a pair whose population
    correlation sits exactly at the threshold is keyed about half the time however many raters
    confirm it; power at the threshold itself cannot be bought, and raters spent chasing it are
    raters not spent on more candidates. The budget is shared between the two: powering for a
    larger correlation needs fewer raters per group and so confirms more groups of candidates,
    carrying more of the screened strong pairs into the test. On the simulated study at equal
    cost (``benchmarks/designs.py``), 0.45 for a threshold of 0.3 keys recall 0.417 (precision
    0.939) on seeds 0-7 where 0.4 keys 0.390 (0.984), and 0.466 (0.956) against 0.386 (0.986)
    on seeds 8-15, which were not used to choose it; 0.5 falls back to 0.343 (0.904) on seeds
    0-7: too few raters per group to key pairs of 0.3-0.4.
    """
    return round(threshold + 0.15, 10)


def plan_from_study(study, *, budget_participants: int, items_per_participant: int = 40, threshold: float = 0.3,
                    rho: float | None = None, alpha: float = 0.05, power: float = 0.8, keying: str = "pos",
                    permutations: int = 200, seed: int = 0, quality_options=None) -> Plan:
    """Quality control, screening correlations, promise and the plan, for a loaded screening study."""
    from analysis.correlations import correlation_table
    from analysis.quality import QualityOptions, quality_control

    quality = quality_control(study, quality_options or QualityOptions())
    included = quality.included
    share = float((~quality.table["included"]).mean()) if len(quality.table) else 0.0
    if included.empty:
        raise InputError(f"study {study.study_id}: no participation passed quality control, so nothing was screened")
    corr = correlation_table(study, included)
    table = promise_scores(study, included, keying=keying, permutations=permutations, seed=seed)
    weights = table.attrs.get("weights")
    table = table.merge(expected_strong_pairs(corr, threshold, keying), on=ITEM, how="left")
    plan = plan_wave(table, budget_participants=budget_participants, items_per_participant=items_per_participant,
                     rho=default_rho(threshold) if rho is None else rho, alpha=alpha, power=power, exclusion_share=share)
    plan.settings.update({"screen": study.study_id, "threshold": threshold, "keying": keying,
                          "promise_weights": weights,
                          "permutations": permutations, "seed": seed,
                          "screen_included": int(len(included)), "screen_participations": int(len(quality.table))})
    return plan


# --------------------------------------------------------------------------- the study file
def project_of(db, study_id: str) -> str:
    """The project a study belongs to: the studies table's ``project`` column, else the study file's
    ``project`` (kept in ``config_json``), else the study's own id."""
    columns = {r[1] for r in db.query("PRAGMA table_info(studies)")}
    if "project" in columns:
        row = db.query("SELECT project FROM studies WHERE study_id = ?", (study_id,))
        if row and row[0][0]:
            return row[0][0]
    spec = _stored_spec(db, study_id)
    return spec.get("project") or study_id


def _stored_spec(db, study_id: str) -> dict:
    """The study file the app stored for a study (``config_json``'s ``spec``), or {}."""
    row = db.query("SELECT config_json FROM studies WHERE study_id = ?", (study_id,))
    try:
        config = json.loads(row[0][0]) if row and row[0][0] else {}
    except json.JSONDecodeError:
        return {}
    spec = config.get("spec") if isinstance(config, dict) else None
    if isinstance(spec, dict):
        return spec
    return {"project": config.get("project")} if isinstance(config, dict) and config.get("project") else {}


def wave_items(study, plan: Plan) -> list[dict]:
    """The candidates in the release's tagged shape (``portrait_id, source, content, outputs``)."""
    items = study.items.set_index(ITEM)
    out = []
    for portrait in dict.fromkeys(p for g in plan.groups for p, _ in g["items"]):
        options = sorted(o for g in plan.groups for p, o in g["items"] if p == portrait)
        first = items.loc[(portrait, options[0])]
        outputs = []
        for o in options:
            row = items.loc[(portrait, o)]
            meta = row["meta"] if isinstance(row["meta"], dict) else {}
            value = meta.get("value") or meta.get("intended_value")
            outputs.append({"id": int(o), "content": row["response"], **({"value": value} if value else {})})
        content = {"text": first["query_text"], **({"title": first["title"]} if isinstance(first["title"], str) and first["title"] else {})}
        out.append({"portrait_id": portrait, "source": first["source"], "content": content, "outputs": outputs})
    return out


def wave_study(plan: Plan, items: list[dict], *, study_id: str, project: str, title: str, items_file: str,
               screen_spec: dict | None = None, completion_code: str | None = None) -> dict:
    """The confirmation wave's study file (the shape ``collection_app.study.load_study`` reads).

    Built like `vp generate-items`' study files (:func:`analysis.llm.generate.study_spec`:
    attention checks placed within the smallest group, a completion code derived from the
    study), with each group's target set to its planned raters and ``project`` naming the
    project the waves share, so the app refuses anyone who took part in an earlier wave.
    From the screening wave's own study file, when the app stored one, it keeps the block
    order, texts, time limits, instrument wording files and the completion link.
    """
    from analysis.llm.generate import study_spec

    portraits = [[p for p in dict.fromkeys(p for p, _ in g["items"])] for g in plan.groups]
    spec = study_spec(items, portraits, study_id=study_id, title=title, items_file=items_file, target=1)
    spec = {"study_id": spec.pop("study_id"), "project": project, **spec}
    spec["groups"] = [{"id": g["group_id"], "portraits": ps, "target": g["raters"]}
                      for g, ps in zip(plan.groups, portraits)]
    screen_spec = screen_spec or {}
    # The instruments must read the same in both waves: a licensed or translated wording goes along (its
    # path as the screening file gave it, which `vp app` checks when it loads the new file).
    for key in ("blocks", "texts", "time_limits", "pvq_wording_file", "bfi_wording_file"):
        if screen_spec.get(key):
            spec[key] = screen_spec[key]
    url = (screen_spec.get("completion") or {}).get("url")
    if url:
        spec["completion"]["url"] = url
    if completion_code:
        spec["completion"]["code"] = completion_code
    return spec


def _wave_paths(out: Path) -> dict[str, Path]:
    stem = out.with_suffix("") if out.suffix.lower() in (".yaml", ".yml") else out
    return {"study": out if out.suffix.lower() in (".yaml", ".yml") else out.with_name(out.name + ".yaml"),
            "items": stem.with_name(stem.name + "_items.json"),
            "plan": stem.with_name(stem.name + "_plan.csv")}


def _wave_number(study_id: str) -> int:
    match = re.fullmatch(r".*-w(\d+)", study_id)
    return int(match.group(1)) if match else 2


def next_study_id(screen: str) -> str:
    """``<screen>-w2``; a screen that is itself wave k (``...-wk``) gives wave k+1."""
    match = re.fullmatch(r"(.*)-w(\d+)", screen)
    return f"{match.group(1)}-w{int(match.group(2)) + 1}" if match else f"{screen}-w2"


# --------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from analysis.quality import add_quality_arguments
    from valueportrait import options as opt

    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="the study database")
    parser.add_argument("--screen", required=True, type=opt.non_empty("study id"),
                        help="study id of the screening wave (finished or running)")
    parser.add_argument("--budget-participants", type=opt.count(5), required=True,
                        help="raters the confirmation wave may pay (each rates one group)")
    parser.add_argument("--items-per-participant", type=opt.count(1), default=40, help="items in a confirmation group")
    parser.add_argument("--out", type=Path, default=Path("wave.yaml"),
                        help="the study file to write; NAME_items.json and NAME_plan.csv go beside it")
    parser.add_argument("--study-id", default=None, help="id of the new wave (default: SCREEN-w2)")
    parser.add_argument("--threshold", type=opt.correlation_threshold(), default=0.3, help="keying threshold on rho")
    parser.add_argument("--alpha", type=opt.probability(), default=0.05,
                        help="FDR level of the confirmation (BH within each family)")
    parser.add_argument("--power", type=opt.probability(), default=0.8, help="power wanted for each candidate pair")
    parser.add_argument("--rho", type=opt.NumberType(-1, 1, low_open=True, high_open=True, not_zero=True), default=None,
                        help="the population correlation each candidate pair should be detected at with --power "
                             "(default: --threshold + 0.15; a pair exactly at the threshold is keyed only half the time "
                             "whatever the raters, since the rule asks its estimate to reach the threshold)")
    parser.add_argument("--keying", choices=("pos", "abs"), default="pos", help="as vp analyze")
    parser.add_argument("--permutations", type=opt.count(10), default=200,
                        help="score shuffles per group for the promise's null")
    parser.add_argument("--seed", type=opt.seed(), default=0, help="seed of the permutations")
    parser.add_argument("--completion-code", default=None, help="the new wave's completion code (default: derived from its id)")
    parser.add_argument("--title", default=None, help="the new wave's title (default: the screening title + wave)")
    add_quality_arguments(parser)


def run(args) -> int:
    from analysis.dataset import load_study
    from analysis.quality import options_from_args
    from valueportrait.atomic import write_csv_atomic, write_text_atomic
    from valueportrait.storage import open_db
    import yaml

    if not args.alpha < args.power < 1:
        raise InputError(f"--power: {args.power} must lie strictly between --alpha ({args.alpha}) and 1")
    rho = default_rho(args.threshold) if args.rho is None else args.rho
    if not 0 < abs(rho) < 1:
        raise InputError(f"--rho: {rho} must lie strictly between -1 and 1 and not be 0")
    if args.completion_code is not None and not re.fullmatch(r"[A-Za-z0-9_\-]{4,40}", args.completion_code):
        raise InputError(f"--completion-code: {args.completion_code!r} must be 4-40 letters, digits, _ or -")
    if not Path(args.db).exists():
        raise InputError(f"{args.db}: no such database")
    try:
        quality_options = options_from_args(args)
    except ValueError as exc:
        raise InputError(f"quality options: {exc}") from None
    with open_db(args.db, readonly=True) as db:
        db.conn.execute("BEGIN")
        try:
            screen = db.resolve_study(args.screen)
            study = load_study(db, screen)
            project = project_of(db, screen)
            spec = _stored_spec(db, screen)
            title = db.query("SELECT title FROM studies WHERE study_id = ?", (screen,))[0][0] or screen
            existing = {r[0] for r in db.query("SELECT study_id FROM studies")}
        finally:
            db.conn.execute("COMMIT")
    study_id = args.study_id or next_study_id(screen)
    if not re.fullmatch(r"[A-Za-z0-9_\-.]{1,60}", study_id):
        raise InputError(f"--study-id: {study_id!r} must be 1-60 letters, digits, _, - or .")
    if study_id in existing:
        raise InputError(f"{args.db}: study_id: {study_id!r} is already in the database: choose another with --study-id")
    plan = plan_from_study(study, budget_participants=args.budget_participants,
                           items_per_participant=args.items_per_participant, threshold=args.threshold, rho=rho,
                           alpha=args.alpha, power=args.power, keying=args.keying, permutations=args.permutations,
                           seed=args.seed, quality_options=quality_options)
    paths = _wave_paths(Path(args.out))
    items = wave_items(study, plan)
    spec = wave_study(plan, items, study_id=study_id, project=project,
                      title=args.title or f"{title} (wave {_wave_number(study_id)}: confirmation)",
                      items_file=paths["items"].name, screen_spec=spec, completion_code=args.completion_code)
    f = plan.figures
    header = (f"# Confirmation wave of project {project!r}, planned by `vp plan-wave` from screening wave {screen!r}.\n"
              f"# {f['candidates']} candidate items in {f['groups']} group(s); targets are the raters each group needs.\n"
              "# Only fresh raters count: the app refuses anyone who took part in an earlier wave of the project.\n"
              "# Check the completion code and link against the new Prolific study before you publish it.\n")
    write_text_atomic(paths["items"], json.dumps(items, ensure_ascii=False, indent=1) + "\n")
    write_csv_atomic(plan_table(plan), paths["plan"], index=False)
    write_text_atomic(paths["study"], header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100))
    for line in plan_lines(plan):
        print(line)
    for key in ("pvq_wording_file", "bfi_wording_file"):
        if spec.get(key) and not Path(spec[key]).is_absolute():
            print(f"note: {key} {spec[key]!r} is copied from the screening study file, where it was relative to that "
                  f"file: check that it resolves from {paths['study'].parent}")
    print(f"wrote {paths['study']}, {paths['items']}, {paths['plan']}")
    print(f"run it: vp app --study {paths['study']} --db {args.db}   then: vp analyze --db {args.db} "
          f"--design two-stage --screen {screen} --confirm {study_id}")
    return 0


def plan_table(plan: Plan) -> pd.DataFrame:
    """``<out>_plan.csv``: every screened item with its promise, and the group it goes to (empty: screened out)."""
    table = plan.table.sort_values(["candidate", "promise"], ascending=[False, False], kind="stable")
    return table[[*PROMISE_COLUMNS, "candidate", "wave_group"]]


def plan_lines(plan: Plan) -> list[str]:
    """What `vp plan-wave` prints: items kept, raters per group, the power expected."""
    f, s = plan.figures, plan.settings
    screened = int(plan.table["promise"].notna().sum())
    w = s.get("promise_weights") or {}
    lines = [f"screening wave {s.get('screen', '?')}: {screened} items scored, {s.get('screen_included', '?')} of "
             f"{s.get('screen_participations', '?')} participations included ({s['exclusion_share']:.0%} excluded)"]
    if w:
        lines.append(f"promise = {w['z_circle']:.2f} x circle peak + {w['z_single']:.2f} x largest correlation "
                     "(each in null SDs; weights from the screening data)")
    lines += [f"keeping {f['candidates']} of {screened} items as candidates ({f['candidate_pairs']} item-dimension "
              f"pairs, {f['expected_strong_pairs']:.1f} expected at rho >= {s.get('threshold', s['rho'])})",
              f"BH at FDR {s['alpha']} tests each pair at about {f['alpha_per_test']:.2g} (Jung 2005); detecting rho = "
              f"{s['rho']} with power {s['power']} needs {_fmt_n(f['raters_needed_included'])} included raters per group "
              f"({_fmt_n(f['raters_needed_paid'])} paid)"]
    for g, power_ in zip(plan.groups, f["expected_power"]):
        lines.append(f"  group {g['group_id']}: {len(g['items'])} items, {g['raters']} raters "
                     f"(about {g['raters'] * (1 - s['exclusion_share']):.0f} after quality control), expected power {power_:.2f}")
    lines.append(f"{sum(g['raters'] for g in plan.groups)} raters, {f['ratings']:,} ratings in all")
    lines += [f"warning: {text}" for text in plan.warnings]
    return lines


def _fmt_n(x) -> str:
    return "unboundedly many" if not math.isfinite(x) else (f"{x:.1f}" if isinstance(x, float) and not float(x).is_integer() else f"{int(x)}")
