"""What chance alone selects: a permutation baseline for item keying.

With about 46 raters per item and an uncorrected p < .05, the study's rule (rho >= .3 and
p < .05) keys some pairs that have no relation at all. How many? Permute the value and
trait scores among the raters of each group: every item-score relation is broken, while
the ratings, the scores, the correlations among the scores and the group sizes stay as
they are. Apply the same rule and count the keyed pairs; repeated, this gives the number
of keys chance alone gives, with its spread. Set beside the observed count it estimates
the share of false keys.

The same permutations give the null distribution of every rho (the band drawn on the
report's histogram of rho) and of the circumplex fit of every item (how often an item's
ten value correlations follow a cosine by chance, given how the centred value scores
correlate among themselves).

Vectorised: permuting raters does not change a column's ranks, only which rater holds
them, so ratings and scores are ranked once per group; each batch of permutations is then
one batched matrix product (permutations x items x dimensions), with no loop over pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import instruments as inst
from analysis.circumplex import CIRCLE, cosine_r_squared, value_angles
from analysis.correlations import _standardised_ranks, significant, spearman_matrix, spearman_p
from analysis.selection import keyed_mask

#: The contracted columns of ``chance.csv``; ``perm_p`` and ``note`` follow them.
CHANCE_COLUMNS = ["family", "dimension", "pairs", "observed", "expected_mean", "expected_low", "expected_high",
                  "false_key_share"]
TRAILING_COLUMNS = ["perm_p", "note"]
DISTRIBUTION_COLUMNS = ["statistic", "family", "bin_low", "bin_high", "observed", "expected_mean", "expected_low",
                        "expected_high"]
CIRCUMPLEX_COLUMNS = ["statistic", "observed", "expected_mean", "expected_low", "expected_high", "perm_p", "items"]
RHO_EDGES = np.round(np.linspace(-1.0, 1.0, 41), 10)      # bins of 0.05
R2_EDGES = np.round(np.linspace(0.0, 1.0, 21), 10)
PROTOTYPICAL_R2 = 0.7                                       # as analysis.circumplex's min_r2


@dataclass
class ChanceResult:
    """The permutation baseline of one analysis.

    Attributes
    ----------
    table : ``chance.csv``: per family and dimension (and ``all`` per family) the keyed
        pairs observed and expected by chance.
    distributions : ``chance_distributions.csv``: histograms of rho (per family) and of the
        items' circumplex R^2, observed against the permutation mean and its range.
    circumplex : ``chance_circumplex.csv``: the median R^2 and the share of items with
        R^2 >= .70, observed against chance.
    permutations : int, how many permutations; ``level`` the range's coverage.
    """

    table: pd.DataFrame
    distributions: pd.DataFrame
    circumplex: pd.DataFrame
    permutations: int
    level: float
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict:
        """``{family: {observed, expected_mean, expected_low, expected_high, false_key_share}}`` for the manifest."""
        out = {}
        for r in self.table[self.table["dimension"] == "all"].itertuples():
            out[r.family] = {"observed": int(r.observed), "expected_mean": round(float(r.expected_mean), 2),
                             "expected_low": round(float(r.expected_low), 2),
                             "expected_high": round(float(r.expected_high), 2),
                             "false_key_share": None if pd.isna(r.false_key_share) else round(float(r.false_key_share), 4)}
        return out

    def circumplex_counts(self) -> dict:
        return {r.statistic: {"observed": _round(r.observed), "expected_mean": _round(r.expected_mean),
                              "expected_low": _round(r.expected_low), "expected_high": _round(r.expected_high)}
                for r in self.circumplex.itertuples()}

    def summary_lines(self) -> list[str]:
        """'pvq: 287 keyed, 97 [85-110] expected by chance', one line per family."""
        pct = f"{100 * self.level:g} %"
        lines = []
        for r in self.table[self.table["dimension"] == "all"].itertuples():
            share = "" if pd.isna(r.false_key_share) else f" (false-key share about {r.false_key_share:.0%})"
            lines.append(f"chance: {r.family}: {int(r.observed)} keyed, {r.expected_mean:.0f} "
                         f"[{r.expected_low:.0f}-{r.expected_high:.0f}] expected by chance{share}")
        if len(self.circumplex):
            c = self.circumplex.set_index("statistic")
            if "median_r_squared" in c.index:
                m = c.loc["median_r_squared"]
                lines.append(f"chance: circumplex median R2 {m.observed:.2f}, {m.expected_mean:.2f} "
                             f"[{m.expected_low:.2f}-{m.expected_high:.2f}] by chance")
        lines.append(f"chance: {self.permutations} permutations of the scores within groups; ranges are {pct} ranges")
        return lines


def _round(x, digits: int = 4):
    return None if x is None or pd.isna(x) else round(float(x), digits)


def permutation_rows(n: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """(permutations x n) row orders, each a uniform random permutation of 0..n-1."""
    return rng.permuted(np.tile(np.arange(n), (permutations, 1)), axis=1)


def permuted_correlations(x: np.ndarray, y: np.ndarray, orders: np.ndarray, batch: int = 50):
    """Yield (rho, n) for batches of permutations of the rows of `y` against `x`.

    Parameters
    ----------
    x : (raters, items) ratings; y : (raters, dimensions) scores; NaN = missing.
    orders : (permutations, raters) row orders; permutation b pairs rater i's ratings with
        rater ``orders[b, i]``'s scores.

    Yields
    ------
    rho : (b, items, dimensions) Spearman's rho under each permutation of the batch.
    n : (items, dimensions) or (b, items, dimensions) raters behind each rho.

    With complete data, ranks are computed once and each batch is one product
    ``Z_x^T Z_y[order]``; with missing values each permutation goes through
    :func:`analysis.correlations.spearman_matrix` (pairwise deletion, as the observed rho).
    """
    if not (np.isnan(x).any() or np.isnan(y).any()):
        zx, zy = _standardised_ranks(x), _standardised_ranks(y)
        n = np.full((x.shape[1], y.shape[1]), x.shape[0])
        for start in range(0, len(orders), batch):
            rho = np.matmul(zx.T[None], zy[orders[start:start + batch]])   # (b, items, dims)
            yield np.clip(rho, -1.0, 1.0), n
        return
    for start in range(0, len(orders), batch):
        res = [spearman_matrix(x, y[order]) for order in orders[start:start + batch]]
        yield np.stack([r.rho.to_numpy() for r in res]), np.stack([r.n.to_numpy() for r in res])


def _histograms(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin of each row of `values` (rows x anything), NaN left out; the last bin is closed.

    Values are rounded to 10 decimals first, so a rho that sits on a bin edge (small groups
    give exact values like 0 or .05) lands in the same bin whatever its last bits.
    """
    b = values.shape[0]
    flat = np.round(values.reshape(b, -1), 10)
    nbins = len(edges) - 1
    idx = np.clip(np.searchsorted(edges, flat, side="right") - 1, 0, nbins - 1)
    ok = ~np.isnan(flat)
    offsets = np.arange(b)[:, None] * nbins
    return np.bincount((idx + offsets)[ok], minlength=b * nbins).reshape(b, nbins)


def chance_baseline(groups, *, permutations: int = 200, threshold: float = 0.3, alpha: float = 0.05,
                    keying: str = "pos", seed: int = 0, level: float = 0.95, batch: int = 50) -> ChanceResult:
    """Keyed pairs expected by chance, by permuting scores among the raters of each group.

    Parameters
    ----------
    groups : iterable of (group_id, ratings, scores)
        ``ratings``: DataFrame raters x items of one group; ``scores``: DataFrame with the
        same raters in the same order x dimensions, columns a MultiIndex (family, dimension)
        as ``Study.scores``. Raters without any score are left out (they have no scores to
        permute and add nothing to the observed rho).
    permutations : int
        Permutations per group (>= 1). Group k draws them from ``default_rng([seed, k, 1])``;
        permutation b of the study is permutation b of every group, so study totals are
        sums over groups of independent within-group permutations.
    threshold, alpha, keying : the selection rule (:func:`analysis.selection.keyed_mask`).
    level : coverage of the range (0.95: the 2.5th and 97.5th percentiles, numpy's linear rule).

    Returns
    -------
    ChanceResult

    Notes
    -----
    ``expected_mean`` is the mean count of keyed pairs over permutations. Under the
    permutation every pair has no relation, so it is the number of keys to expect if no
    item measured anything; ``false_key_share = min(expected_mean / observed, 1)``
    estimates the share of the observed keys that chance alone accounts for. It is an
    upper estimate for pairs with exactly no relation (with real relations present fewer
    pairs are null), in the way Benjamini-Hochberg takes every hypothesis as null; pairs
    with weak real relations are not counted as false. ``perm_p`` =
    (1 + #{permutations keying at least as many}) / (1 + permutations) (Phipson & Smyth 2010).

    References
    ----------
    Phipson, B., & Smyth, G. K. (2010). Permutation p-values should never be zero.
    Statistical Applications in Genetics and Molecular Biology, 9(1), Article 39.
    Good, P. (2005). Permutation, Parametric and Bootstrap Tests of Hypotheses (3rd ed.). Springer.

    Examples
    --------
    One group of 40 raters and 30 items, of which only the first follows Power:

    >>> rng = np.random.default_rng(0)
    >>> dims = pd.MultiIndex.from_tuples([("pvq", "Power"), ("pvq", "Benevolence")], names=["family", "dimension"])
    >>> scores = pd.DataFrame(rng.normal(size=(40, 2)), columns=dims)
    >>> ratings = pd.DataFrame(rng.integers(1, 7, size=(40, 30)).astype(float))
    >>> ratings[0] = np.clip(np.round(3.5 + 1.5 * scores[("pvq", "Power")] + rng.normal(size=40)), 1, 6)
    >>> chance_baseline([("g1", ratings, scores)], permutations=100).summary_lines()[0]
    'chance: pvq: 3 keyed, 1 [0-3] expected by chance (false-key share about 46%)'
    """
    if permutations < 1:
        raise ValueError(f"permutations: {permutations} must be at least 1")
    groups = list(groups)
    if not groups:
        raise ValueError("no groups to permute")
    dims = groups[0][2].columns
    families = dims.get_level_values(0).to_numpy()
    names = dims.get_level_values(1).to_numpy()
    pvq_idx = [int(np.flatnonzero((families == "pvq") & (names == v))[0]) for v in CIRCLE
               if ((families == "pvq") & (names == v)).any()]
    circle = len(pvq_idx) == len(CIRCLE)
    angles = value_angles()[list(CIRCLE)].to_numpy(float)
    fam_list = [f for f in inst.FAMILIES if f in set(families)] + sorted(set(families) - set(inst.FAMILIES))
    fam_cols = {f: np.flatnonzero(families == f) for f in fam_list}

    n_dims = len(dims)
    null_counts = np.zeros((permutations, n_dims))
    obs_counts = np.zeros(n_dims)
    pairs = np.zeros(n_dims, dtype=int)
    rho_hist = {f: np.zeros((permutations, len(RHO_EDGES) - 1)) for f in fam_list}
    rho_obs = {f: np.zeros(len(RHO_EDGES) - 1) for f in fam_list}
    r2_null, r2_obs = [], []
    notes = []
    for k, (gid, ratings, scores) in enumerate(groups):
        if not scores.columns.equals(dims):
            raise ValueError(f"group {gid}: score columns differ from the first group's")
        x = np.asarray(ratings, dtype=float)
        y = np.asarray(scores, dtype=float)
        keep = ~np.isnan(y).all(axis=1) & ~np.isnan(x).all(axis=1)
        x, y = x[keep], y[keep]
        if len(x) < 3 or x.shape[1] == 0:
            notes.append(f"group {gid}: {len(x)} raters with scores: no correlations to permute")
            continue
        observed = spearman_matrix(x, y)
        rho0, n0 = observed.rho.to_numpy(), observed.n.to_numpy()
        pairs += (~np.isnan(rho0)).sum(axis=0)
        obs_counts += keyed_mask(rho0, spearman_p(rho0, n0), threshold=threshold, alpha=alpha, keying=keying).sum(axis=0)
        for f in fam_list:
            rho_obs[f] += _histograms(rho0[None][:, :, fam_cols[f]], RHO_EDGES)[0]
        if circle:
            r2_obs.append(cosine_r_squared(rho0[:, pvq_idx], angles))
        orders = permutation_rows(len(x), permutations, np.random.default_rng([seed, k, 1]))
        r2_group = np.empty((permutations, x.shape[1])) if circle else None
        start = 0
        for rho, n in permuted_correlations(x, y, orders, batch):
            stop = start + len(rho)
            # p < alpha from rho and n (analysis.correlations.significant): no p-value per permuted pair.
            strength = np.abs(rho) if keying == "abs" else rho
            with np.errstate(invalid="ignore"):
                keyed = (strength >= threshold) & significant(rho, n, alpha)
            null_counts[start:stop] += keyed.sum(axis=1)
            for f in fam_list:
                rho_hist[f][start:stop] += _histograms(rho[:, :, fam_cols[f]], RHO_EDGES)
            if circle:
                r2_group[start:stop] = cosine_r_squared(rho[:, :, pvq_idx], angles)
            start = stop
        if circle:
            r2_null.append(r2_group)

    tail = (1 - level) / 2
    rows = []
    for f in fam_list:
        cols = fam_cols[f]
        for label, idx in [*((names[c], [c]) for c in cols), ("all", list(cols))]:
            null = null_counts[:, idx].sum(axis=1)
            obs = int(obs_counts[idx].sum())
            mean = float(null.mean())
            low, high = np.quantile(null, [tail, 1 - tail])
            share, note = np.nan, ""
            if obs == 0:
                note = "no pair keyed: a share of false keys does not exist"
            else:
                share = min(mean / obs, 1.0)
                if mean >= obs:
                    note = "capped at 1: chance alone keys as many pairs as were keyed"
            rows.append({"family": f, "dimension": label, "pairs": int(pairs[idx].sum()), "observed": obs,
                         "expected_mean": mean, "expected_low": float(low), "expected_high": float(high),
                         "false_key_share": share, "perm_p": (1 + int((null >= obs).sum())) / (1 + permutations),
                         "note": note})
    table = pd.DataFrame(rows, columns=CHANCE_COLUMNS + TRAILING_COLUMNS)

    dist = []
    for f in fam_list:
        dist.append(_distribution_rows("rho", f, RHO_EDGES, rho_obs[f], rho_hist[f], tail))
    circ = pd.DataFrame(columns=CIRCUMPLEX_COLUMNS)
    if circle and r2_obs:
        obs_r2 = np.concatenate(r2_obs)
        null_r2 = np.concatenate(r2_null, axis=1)                      # permutations x items
        dist.append(_distribution_rows("r_squared", "pvq", R2_EDGES, _histograms(obs_r2[None], R2_EDGES)[0],
                                       _histograms(null_r2, R2_EDGES), tail))
        ok = ~np.isnan(null_r2)
        with np.errstate(invalid="ignore"):
            null_median = np.nanmedian(np.where(ok, null_r2, np.nan), axis=1)
            null_share = (np.nan_to_num(null_r2, nan=-1) >= PROTOTYPICAL_R2).sum(axis=1) / ok.sum(axis=1)
        fitted = obs_r2[~np.isnan(obs_r2)]
        stats_ = [("median_r_squared", float(np.median(fitted)) if len(fitted) else np.nan, null_median),
                  (f"share_r_squared_at_least_{PROTOTYPICAL_R2:.2f}",
                   float((fitted >= PROTOTYPICAL_R2).mean()) if len(fitted) else np.nan, null_share)]
        circ = pd.DataFrame([{"statistic": name, "observed": obs, "expected_mean": float(np.nanmean(null)),
                              "expected_low": float(np.nanquantile(null, tail)),
                              "expected_high": float(np.nanquantile(null, 1 - tail)),
                              "perm_p": (1 + int((null >= obs).sum())) / (1 + permutations), "items": len(fitted)}
                             for name, obs, null in stats_], columns=CIRCUMPLEX_COLUMNS)
    distributions = pd.concat(dist, ignore_index=True) if dist else pd.DataFrame(columns=DISTRIBUTION_COLUMNS)
    return ChanceResult(table, distributions, circ, permutations, level, notes)


def _distribution_rows(statistic: str, family: str, edges: np.ndarray, observed: np.ndarray, null: np.ndarray,
                       tail: float) -> pd.DataFrame:
    low, high = np.quantile(null, [tail, 1 - tail], axis=0)
    return pd.DataFrame({"statistic": statistic, "family": family, "bin_low": edges[:-1], "bin_high": edges[1:],
                         "observed": observed.astype(int), "expected_mean": null.mean(axis=0),
                         "expected_low": low, "expected_high": high}, columns=DISTRIBUTION_COLUMNS)


def study_groups(study, included: pd.DataFrame):
    """(group_id, ratings, scores) of each group's included raters, as :func:`analysis.correlations.correlation_table` reads them."""
    for gid in study.groups["group_id"]:
        people = included.loc[included["group_id"] == gid, "participant_id"].tolist()
        ratings = study.rating_matrix(gid, people)
        yield gid, ratings, study.scores.reindex(index=ratings.index)


__all__ = ["ChanceResult", "chance_baseline", "study_groups", "permuted_correlations", "permutation_rows",
           "CHANCE_COLUMNS"]
