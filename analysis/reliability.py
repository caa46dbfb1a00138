"""Internal consistency: Cronbach's alpha (Feldt CI), Spearman-Brown, McDonald's omega.

Two kinds of scale are checked (``reliability.csv``):

* the questionnaires, from raw answers: each PVQ-21 value and higher-order value and
  each BFI-10 trait (scope ``instrument``);
* the item bank: within each group of raters, the items keyed to a dimension, read as a
  scale whose items are the ratings (scope = the group id).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import special

import instruments as inst

COLUMNS = [
    "family", "dimension", "scope", "n_items", "n", "alpha", "alpha_ci_low", "alpha_ci_high",
    "spearman_brown", "omega", "note", "std_alpha", "average_r", "min_item_rest_r", "warning",
]  # fmt: skip
#: Per item of every scale (``reliability_items.csv``), as psych's ``alpha()$item.stats``
#: and ``alpha.drop``: the corrected item-total (item-rest) correlation and alpha without it.
ITEM_COLUMNS = ["family", "dimension", "scope", "item", "n", "mean", "sd", "item_rest_r", "alpha_if_dropped",
                "omega_loading"]
RATING_MAX = 6  # the similarity scale runs 1..6, so a reversed rating is 7 - rating
BFI_MAX = 5  # BFI-10 answers run 1..5, reversed = 6 - answer


def cronbach_alpha(df: pd.DataFrame, ci: float = 0.95) -> tuple[float, float, float]:
    """Cronbach's alpha with Feldt's confidence interval.

    Parameters
    ----------
    df : DataFrame
        Respondents x items, numeric. Rows with a missing answer are dropped (listwise,
        as R's ``psych::alpha(use = "complete.obs")``).
    ci : float
        Confidence level.

    Returns
    -------
    (alpha, ci_low, ci_high) : tuple of float
        NaN when fewer than 2 items or 2 complete rows, or when the total has no variance.
        A negative alpha is returned as it is (see :func:`alpha_table` for the warning).

    Notes
    -----
    alpha = k / (k - 1) (1 - sum_i var_i / var_total) = k / (k - 1) (1 - tr C / sum C)
    with C the items' covariance matrix, as pingouin's ``cronbach_alpha`` computes it
    (``tests/test_reliability.py`` checks it against pingouin and its documented figures;
    computed here because importing pingouin costs a second and this runs per scale).
    Feldt (1987): 1 - (1 - alpha) F_{1 - a/2}(n - 1, (n - 1)(k - 1)) and
    1 - (1 - alpha) F_{a/2}(...), unrounded (pingouin rounds its interval to 3 decimals).

    References
    ----------
    Cronbach, L. J. (1951). Coefficient alpha and the internal structure of tests.
    Psychometrika, 16, 297-334.
    Feldt, L. S., Woodruff, D. J., & Salih, F. A. (1987). Statistical inference for
    coefficient alpha. Applied Psychological Measurement, 11(1), 93-103.

    Examples
    --------
    >>> df = pd.DataFrame({"a": [1, 2, 3, 4, 5], "b": [2, 2, 4, 4, 5], "c": [1, 3, 3, 5, 4]})
    >>> [round(x, 3) for x in cronbach_alpha(df)]
    [0.936, 0.679, 0.993]
    """
    from analysis.covariance import complete_numeric

    return _alpha_of(complete_numeric(df).to_numpy(), ci)


def _alpha_of(data: np.ndarray, ci: float = 0.95) -> tuple[float, float, float]:
    """:func:`cronbach_alpha` on a complete respondents x items array."""
    n, k = data.shape
    if k < 2 or n < 2 or data.sum(axis=1).var() == 0:
        return math.nan, math.nan, math.nan
    return _alpha_feldt(np.cov(data.T), n, ci)


def _alpha_feldt(cov: np.ndarray, n: int, ci: float = 0.95) -> tuple[float, float, float]:
    """Alpha from the items' covariance matrix (divisor n - 1), with Feldt's interval at level `ci`."""
    k = cov.shape[0]
    alpha = k / (k - 1) * (1 - np.trace(cov) / cov.sum())
    df1, df2 = n - 1, (n - 1) * (k - 1)
    tail = (1 - ci) / 2
    low = 1 - (1 - alpha) * special.fdtri(df1, df2, 1 - tail)
    high = 1 - (1 - alpha) * special.fdtri(df1, df2, tail)
    return float(alpha), float(low), float(high)


def alpha_table(df: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """psych's ``alpha()`` in one pass: the scale's figures and, per item, the drop statistics.

    Parameters
    ----------
    df : DataFrame
        Respondents x items (complete rows, no constant item), at least 2 items.

    Returns
    -------
    (scale, items)
        ``scale``: ``std_alpha`` (alpha of the standardised items, k r / (1 + (k - 1) r)
        with r the average inter-item correlation) and ``average_r``. ``items``: a
        DataFrame indexed by item with ``mean, sd, item_rest_r`` (the corrected item-total
        correlation, psych's ``r.drop``) and ``alpha_if_dropped`` (psych's
        ``alpha.drop$raw_alpha``; NaN for a two-item scale: one item has no alpha).

    Notes
    -----
    All items at once from the covariance matrix C (total variance V = sum C, row sums
    c_i): without item i the total has variance V_i = V - 2 c_i + C_ii, so
    alpha_(-i) = (k - 1) / (k - 2) (1 - (tr C - C_ii) / V_i) and the item-rest
    correlation is (c_i - C_ii) / sqrt(C_ii V_i).

    Examples
    --------
    >>> x = pd.DataFrame({"a": [1, 2, 3, 4, 5], "b": [2, 2, 4, 4, 5], "c": [1, 3, 3, 5, 4]})
    >>> scale, items = alpha_table(x)  # without a: 2 (1 - (1.8 + 2.2) / 6.8) = 0.824
    >>> round(scale["std_alpha"], 3), items["alpha_if_dropped"].round(3).tolist()
    (0.937, [0.824, 0.92, 0.964])
    """
    scale, items = _alpha_arrays(df.to_numpy(float))
    return scale, pd.DataFrame(items, index=df.columns)


def _alpha_arrays(data: np.ndarray) -> tuple[dict, dict]:
    """:func:`alpha_table` on a respondents x items array: (scale figures, item figures as arrays)."""
    k = data.shape[1]
    cov = np.cov(data.T)
    corr = np.corrcoef(data.T)
    total, trace = cov.sum(), np.trace(cov)
    rows, own = cov.sum(axis=1), np.diag(cov)
    rest_var = total - 2 * rows + own
    with np.errstate(invalid="ignore", divide="ignore"):
        dropped = (k - 1) / (k - 2) * (1 - (trace - own) / rest_var) if k > 2 else np.full(k, np.nan)
        item_rest = (rows - own) / np.sqrt(own * rest_var)
    average_r = (corr.sum() - k) / (k * (k - 1))
    items = {"mean": data.mean(axis=0), "sd": data.std(axis=0, ddof=1), "item_rest_r": item_rest,
             "alpha_if_dropped": dropped}
    return {"std_alpha": float(k * average_r / (1 + (k - 1) * average_r)), "average_r": float(average_r)}, items


def spearman_brown(r, k: float = 2):
    """Spearman-Brown prophecy: reliability of a test k times as long, k r / (1 + (k - 1) r).

    With k = 2 and r the correlation of two items this is the reliability of their sum,
    the usual coefficient for two-item scales (Eisinga, Te Grotenhuis & Pelzer, 2013).

    Examples
    --------
    >>> round(spearman_brown(0.5), 4)
    0.6667
    """
    r = np.asarray(r, dtype=float)
    out = k * r / (1 + (k - 1) * r)
    return float(out) if out.ndim == 0 else out


def one_factor_fit(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, bool]:
    """A one-factor maximum-likelihood model (factor_analyzer): loadings, uniquenesses, converged.

    The sign is fixed so that the loadings sum to a non-negative number (the factor is
    only identified up to sign). factor_analyzer bounds uniquenesses below at .005: a
    uniqueness there is a Heywood case (see :func:`omega_notes`). A proper solution (every
    uniqueness above .01) is found in closed form by :func:`analysis.cfa.one_factor_ml_correlations`,
    the same ML optimum (``tests/test_reliability.py`` checks the two against each other);
    anything else goes to factor_analyzer.
    """
    from analysis.cfa import one_factor_ml_correlations
    from analysis.covariance import complete_numeric

    data = complete_numeric(df)
    values = data.to_numpy()
    if len(values) > values.shape[1] >= 3:
        # The same ML optimum in closed form (analysis.cfa), without importing
        # factor_analyzer (and scikit-learn): where every uniqueness is clearly inside
        # factor_analyzer's bounds (.005, 1) the bounded and unbounded optima are one.
        z = (values - values.mean(axis=0)) / values.std(axis=0)
        fast = one_factor_ml_correlations(z.T @ z / len(z))
        if fast is not None and np.all(fast[1] > 2 * UNIQUENESS_FLOOR) and np.all(fast[1] < 1):
            return fast[0], 1 - fast[0] ** 2, True
    from factor_analyzer import FactorAnalyzer

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fa = FactorAnalyzer(n_factors=1, rotation=None, method="ml").fit(data)
    converged = not any("converge" in str(w.message).lower() for w in caught)
    loadings = fa.loadings_.ravel()
    loadings = -loadings if loadings.sum() < 0 else loadings
    return loadings, 1 - loadings**2, converged


def one_factor_loadings(df: pd.DataFrame) -> np.ndarray:
    """Standardised loadings of a one-factor maximum-likelihood model (see :func:`one_factor_fit`)."""
    return one_factor_fit(df)[0]


def omega_from_loadings(loadings) -> float:
    """McDonald's omega_total from standardised one-factor loadings.

    omega = (sum lambda)^2 / ((sum lambda)^2 + sum (1 - lambda^2)).
    Uniquenesses below 0 (Heywood cases) are clipped at 0.
    """
    lam = np.asarray(loadings, dtype=float)
    common = lam.sum() ** 2
    unique = np.clip(1 - lam**2, 0, None).sum()
    return float(common / (common + unique))


#: factor_analyzer's lower bound on a uniqueness; a fit that reaches it is improper.
UNIQUENESS_FLOOR = 0.005


def omega_notes(items, loadings: np.ndarray, converged: bool = True) -> list[str]:
    """What makes an omega untrustworthy, as psych's ``omega`` warns: improper fit, mixed signs."""
    notes = []
    if not converged:
        notes.append("one-factor model did not converge: omega not trustworthy")
    floor = [f"{i} (loading {l:.4f})" for i, l in zip(items, loadings) if 1 - l**2 <= UNIQUENESS_FLOOR + 1e-9]
    if floor:
        notes.append(f"one-factor model improper (Heywood case): uniqueness at its floor {UNIQUENESS_FLOOR} for "
                     f"{', '.join(floor)}: omega not trustworthy")
    negative = [f"{i} ({l:.2f})" for i, l in zip(items, loadings) if l < 0]
    if negative:
        notes.append(f"loadings of mixed sign, negative for {', '.join(negative)}: omega of the unit-weighted "
                     f"sum; reverse or drop those items")
    return notes


def mcdonald_omega(df: pd.DataFrame) -> float:
    """McDonald's omega (total) from a one-factor model's standardised loadings.

    Parameters
    ----------
    df : DataFrame
        Respondents x items (at least 3 items; listwise deletion), items keyed in the
        same direction.

    Returns
    -------
    float
        NaN for fewer than 3 items, no more respondents than items, a constant or
        collinear item, or when the factor model fails (:func:`scale_row` says which).

    Notes
    -----
    Fit a one-factor ML model to the item correlations; with standardised loadings
    lambda_i and uniquenesses 1 - lambda_i^2,
    omega = (sum lambda)^2 / ((sum lambda)^2 + sum (1 - lambda^2)).
    Unlike alpha it does not assume equal loadings (tau-equivalence).

    References
    ----------
    McDonald, R. P. (1999). Test theory: A unified treatment. Erlbaum.
    Hayes, A. F., & Coutts, J. J. (2020). Use omega rather than Cronbach's alpha for
    estimating reliability. But... Communication Methods and Measures, 14(1), 1-24.
    """
    from analysis.covariance import DataError, check_data, complete_numeric

    data = complete_numeric(df)
    if data.shape[1] < 3:
        return math.nan
    try:
        check_data(data)
        return omega_from_loadings(one_factor_loadings(data))
    except (DataError, ValueError, np.linalg.LinAlgError):
        return math.nan


def scale_item_rows(items: pd.DataFrame, family: str, dimension: str, scope: str) -> tuple[dict, pd.DataFrame]:
    """One ``reliability.csv`` row and its ``reliability_items.csv`` rows, for a scale given
    as respondents x items (already reversed).

    Warnings go to ``note`` beside the numbers, as psych's ``alpha`` and ``omega`` give
    them: zero-variance items (left out, named), a negative alpha, items that correlate
    negatively with the rest ("reversed?"), an improper one-factor model (a uniqueness at
    its floor), loadings of mixed sign, and no more respondents than items for omega;
    ``warning`` is True when there is one. Notes that only explain a blank (a two-item
    scale's Spearman-Brown, no omega for two items) come after them.
    """
    row, table = _scale_parts(items, family, dimension, scope)
    return row, pd.DataFrame(table, columns=ITEM_COLUMNS)


def _scale_parts(items: pd.DataFrame, family: str, dimension: str, scope: str) -> tuple[dict, dict]:
    """:func:`scale_item_rows` with the item rows as a dict of :data:`ITEM_COLUMNS` arrays.

    The arithmetic runs on arrays: a study of thousands of items has a thousand scales, and
    building frames per scale cost more than the statistics (``benchmarks/scaling.py``).
    """
    from analysis.covariance import DataError, check_data, complete_numeric

    complete = complete_numeric(items)
    names = np.array([str(c) for c in complete.columns], dtype=object)
    values = complete.to_numpy()
    warns, notes = [], []  # what a reviewer must see; what only explains a blank
    flat = []
    if len(values):
        varies = values.std(axis=0) != 0
        flat = names[~varies].tolist()
        if flat:
            warns.append(f"zero-variance items left out: {', '.join(flat)}")
            values, names = values[:, varies], names[varies]
    k, n = values.shape[1], len(values)
    alpha = low = high = sb = omega = std_alpha = average_r = min_rest = math.nan
    table = {"family": np.full(k, family, dtype=object), "dimension": np.full(k, dimension, dtype=object),
             "scope": np.full(k, scope, dtype=object), "item": names, "n": np.full(k, n)}
    table.update({c: np.full(k, np.nan) for c in ITEM_COLUMNS[5:]})
    if k >= 2 and n >= 3:
        alpha, low, high = _alpha_of(values)
        scale, stats_ = _alpha_arrays(values)
        std_alpha, average_r = scale["std_alpha"], scale["average_r"]
        table.update(stats_)
        rest = stats_["item_rest_r"]
        min_rest = float(np.min(rest))
        if alpha < 0:
            warns.append(f"negative alpha ({alpha:.2f}): the items correlate negatively on average; "
                         "they do not measure one thing in one direction")
        if (rest < 0).any():
            warns.append("reversed? negative item-rest correlation: "
                         + ", ".join(f"{i} ({r:.2f})" for i, r in zip(names[rest < 0], rest[rest < 0])))
    elif k < 2:
        (warns if flat else notes).append("one item: no internal consistency" if k == 1
                                                         else "no item that varies: no internal consistency")
    else:
        warns.append(f"only {n} complete respondents")
    if k == 2 and n >= 3:
        r = np.corrcoef(values.T)[0, 1]
        sb = spearman_brown(r)
        notes.append(f"two items: Spearman-Brown of r = {r:.3f}")
    if k >= 3 and n <= k:
        warns.append(f"omega not estimable: {n} respondents for {k} items (needs more respondents than items)")
    elif k >= 3:
        frame = pd.DataFrame(values, columns=names.tolist())
        try:
            check_data(frame)
            loadings, _, converged = one_factor_fit(frame)
        except DataError as exc:
            warns.append(f"omega not estimable: {exc}")
        except (ValueError, np.linalg.LinAlgError) as exc:
            warns.append(f"one-factor model failed: {exc}")
        else:
            omega = omega_from_loadings(loadings)
            table["omega_loading"] = np.asarray(loadings, dtype=float)
            warns += omega_notes(names, loadings, converged)
    elif 2 <= k < 3:
        notes.append("omega needs >= 3 items")
    row = {
        "family": family, "dimension": dimension, "scope": scope, "n_items": k, "n": n,
        "alpha": alpha, "alpha_ci_low": low, "alpha_ci_high": high,
        "spearman_brown": sb, "omega": omega, "note": "; ".join(warns + notes),
        "std_alpha": std_alpha, "average_r": average_r, "min_item_rest_r": min_rest, "warning": bool(warns),
    }  # fmt: skip
    return row, table


def scale_row(items: pd.DataFrame, family: str, dimension: str, scope: str) -> dict:
    """One ``reliability.csv`` row for a scale given as respondents x items (already reversed)."""
    return scale_item_rows(items, family, dimension, scope)[0]


def _instrument_scales(answers: pd.DataFrame):
    """(family, dimension, respondents x items) for every questionnaire scale, reversed items rescored."""
    if all(f"pvq{i}" in answers for i in range(1, 22)):
        key = inst.default_pvq21().key()
        for value, ids in key.items():
            yield "pvq", value, answers[[f"pvq{i}" for i in ids]]
        for higher, values in inst.HIGHER_ORDER.items():
            yield "higher_pvq", higher, answers[[f"pvq{i}" for v in values for i in key[v]]]
    if all(f"bfi{i}" in answers for i in range(1, 11)):
        for trait, items in inst.default_bfi10().key().items():
            yield "bfi", trait, pd.DataFrame(
                {f"bfi{i}": (BFI_MAX + 1 - answers[f"bfi{i}"]) if rev else answers[f"bfi{i}"] for i, rev in items}
            )


def _tables(results) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scale table and the item table from :func:`_scale_parts` results (one frame each, built once)."""
    results = list(results)
    scales = pd.DataFrame([row for row, _ in results], columns=COLUMNS)
    parts = [items for _, items in results if len(items["item"])]
    if not parts:
        return scales, pd.DataFrame(columns=ITEM_COLUMNS)
    items = pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in ITEM_COLUMNS})
    return scales, items


def instrument_reliability(answers: pd.DataFrame, with_items: bool = False):
    """Reliability of each PVQ-21 value, higher-order value and BFI-10 trait from raw answers.

    Parameters
    ----------
    answers : DataFrame
        One row per participant with columns ``pvq1..pvq21`` (1..6) and/or ``bfi1..bfi10``
        (1..5). A questionnaire whose columns are absent is skipped.
    with_items : bool
        Also return the per-item table (:data:`ITEM_COLUMNS`).

    Returns
    -------
    DataFrame with :data:`COLUMNS`, scope ``instrument`` (and the item table when asked).
    BFI-10 reversed items are rescored 6 - answer first. Raw (uncentred) PVQ answers are
    used: centring on the person's mean is a scoring choice, not part of the items'
    consistency.
    """
    scales, items = _tables(_scale_parts(block, family, dim, "instrument")
                            for family, dim, block in _instrument_scales(answers))
    return (scales, items) if with_items else scales


def _keyed_block(matrix: pd.DataFrame, keyed: list, reversed_items=(), rating_max: int = RATING_MAX) -> pd.DataFrame:
    reversed_items = set(reversed_items)
    block = matrix[list(keyed)].astype(float)
    flip = [c for c in block.columns if c in reversed_items]
    if flip:
        block[flip] = rating_max + 1 - block[flip]
    return block


def keyed_reliability(
    matrix: pd.DataFrame,
    keyed: list,
    reversed_items=(),
    family: str = "",
    dimension: str = "",
    scope: str = "",
    rating_max: int = RATING_MAX,
) -> dict:
    """Reliability of one dimension's keyed items within a group.

    Parameters
    ----------
    matrix : DataFrame
        The group's raters x items ratings (1..rating_max).
    keyed : list
        Column labels of ``matrix`` keyed to the dimension.
    reversed_items : iterable
        Those keyed negatively (keying ``abs``): rescored rating_max + 1 - rating.
    family, dimension, scope : str
        Labels of the row; ``scope`` is the group id.

    Returns
    -------
    dict
        One row with :data:`COLUMNS`.
    """
    return scale_row(_keyed_block(matrix, keyed, reversed_items, rating_max), family, dimension, scope)


def _item_label(portrait_id, option_id) -> str:
    return f"{portrait_id}/{option_id}"


def _mean_matrix(ratings: pd.DataFrame) -> pd.DataFrame:
    """Raters x items (both sorted) of the mean rating, NaN where none: ``pivot_table(aggfunc="mean")``, by counting."""
    people, row = np.unique(ratings["participant_id"].to_numpy(), return_inverse=True)
    items, col = np.unique(ratings["item"].to_numpy(), return_inverse=True)
    cell = row.ravel() * len(items) + col.ravel()
    size = len(people) * len(items)
    sums = np.bincount(cell, weights=ratings["rating"].to_numpy(float), minlength=size)
    counts = np.bincount(cell, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.where(counts > 0, sums / counts, np.nan).reshape(len(people), len(items))
    return pd.DataFrame(matrix, index=pd.Index(people, name="participant_id"), columns=pd.Index(items, name="item"))


def _group_scales(ratings: pd.DataFrame, selection: pd.DataFrame):
    """(family, dimension, group id, raters x keyed items) for every group and dimension with >= 2 keyed items."""
    ratings = ratings.assign(item=[_item_label(p, o) for p, o in zip(ratings.portrait_id, ratings.option_id)])
    selection = selection.assign(
        item=[_item_label(p, o) for p, o in zip(selection.portrait_id, selection.option_id)]
    )
    item_group = ratings.drop_duplicates("item").set_index("item")["group_id"]
    selection = selection[selection.item.isin(item_group.index)].assign(group_id=lambda s: s.item.map(item_group))
    chosen_in = dict(tuple(selection.groupby("group_id", sort=False)))
    for group_id, group_ratings in ratings.groupby("group_id", sort=True):
        chosen = chosen_in.get(group_id)
        if chosen is None:
            continue
        matrix = _mean_matrix(group_ratings)
        for (family, dimension), pairs in chosen.groupby(["family", "dimension"], sort=True):
            if len(pairs) < 2:
                continue
            negative = pairs.item[pairs["rho"] < 0] if "rho" in pairs else []
            yield family, dimension, str(group_id), _keyed_block(matrix, pairs.item.tolist(), negative)


def group_reliability(ratings: pd.DataFrame, selection: pd.DataFrame, with_items: bool = False):
    """Reliability of every dimension's keyed items within every group (``scope`` = group id).

    Parameters
    ----------
    ratings : DataFrame
        Long ratings: ``participant_id, group_id, portrait_id, option_id, rating``.
    selection : DataFrame
        The keyed pairs (``selection.csv``): ``portrait_id, option_id, family, dimension``
        and optionally ``rho``; a negative rho (keying ``abs``) reverses the item.
    with_items : bool
        Also return the per-item table (:data:`ITEM_COLUMNS`; items as ``portrait/option``).

    Returns
    -------
    DataFrame with :data:`COLUMNS`: one row per group and dimension with >= 2 keyed items
    in that group (alpha; omega from 3 items); and the item table when asked.
    """
    scales, items = _tables(_scale_parts(block, family, dim, scope)
                            for family, dim, scope, block in _group_scales(ratings, selection))
    return (scales, items) if with_items else scales


def reliability_tables(
    answers: pd.DataFrame | None = None,
    ratings: pd.DataFrame | None = None,
    selection: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``reliability.csv`` and ``reliability_items.csv``: the questionnaires (when raw answers
    exist) and the keyed items.

    Parameters
    ----------
    answers : DataFrame, optional
        Raw questionnaire answers, wide (see :func:`instrument_reliability`).
    ratings, selection : DataFrame, optional
        Long item ratings and keyed pairs (see :func:`group_reliability`).

    Returns
    -------
    (scales, items)
        ``scales`` with :data:`COLUMNS` (``family, dimension, scope, n_items, n, alpha,
        alpha_ci_low, alpha_ci_high, spearman_brown, omega, note``, then ``std_alpha,
        average_r, min_item_rest_r, warning``); ``items`` with :data:`ITEM_COLUMNS`.
    """
    parts = []
    if answers is not None and len(answers):
        parts.append(instrument_reliability(answers, with_items=True))
    if ratings is not None and selection is not None and len(selection):
        parts.append(group_reliability(ratings, selection, with_items=True))
    scales = [s for s, _ in parts if len(s)]
    items = [i for _, i in parts if len(i)]
    return (pd.concat(scales, ignore_index=True) if scales else pd.DataFrame(columns=COLUMNS),
            pd.concat(items, ignore_index=True) if items else pd.DataFrame(columns=ITEM_COLUMNS))


def reliability_table(
    answers: pd.DataFrame | None = None,
    ratings: pd.DataFrame | None = None,
    selection: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The whole ``reliability.csv`` (the first table of :func:`reliability_tables`)."""
    return reliability_tables(answers, ratings, selection)[0]
