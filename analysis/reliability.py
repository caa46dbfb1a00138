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
from scipy import stats

import instruments as inst

COLUMNS = [
    "family", "dimension", "scope", "n_items", "n", "alpha", "alpha_ci_low", "alpha_ci_high",
    "spearman_brown", "omega", "note",
]  # fmt: skip
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

    Notes
    -----
    alpha = k / (k - 1) (1 - sum_i var_i / var_total), computed by pingouin.
    Feldt (1987): 1 - (1 - alpha) F_{1 - a/2}(n - 1, (n - 1)(k - 1)) and
    1 - (1 - alpha) F_{a/2}(...). pingouin rounds its interval to 3 decimals, so the
    interval is recomputed here with the same formula, unrounded.

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
    import pingouin as pg

    data = df.apply(pd.to_numeric, errors="coerce").dropna()
    n, k = data.shape
    if k < 2 or n < 2 or data.sum(axis=1).var() == 0:
        return math.nan, math.nan, math.nan
    alpha, _ = pg.cronbach_alpha(data=data.astype(float), ci=ci)
    df1, df2 = n - 1, (n - 1) * (k - 1)
    tail = (1 - ci) / 2
    low = 1 - (1 - alpha) * stats.f.isf(tail, df1, df2)
    high = 1 - (1 - alpha) * stats.f.isf(1 - tail, df1, df2)
    return float(alpha), float(low), float(high)


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


def one_factor_loadings(df: pd.DataFrame) -> np.ndarray:
    """Standardised loadings of a one-factor maximum-likelihood model (factor_analyzer).

    The sign is fixed so that the loadings sum to a non-negative number (the factor is
    only identified up to sign).
    """
    from factor_analyzer import FactorAnalyzer

    data = df.apply(pd.to_numeric, errors="coerce").dropna().astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's force_all_finite deprecation notice
        fa = FactorAnalyzer(n_factors=1, rotation=None, method="ml").fit(data)
    loadings = fa.loadings_.ravel()
    return -loadings if loadings.sum() < 0 else loadings


def omega_from_loadings(loadings) -> float:
    """McDonald's omega_total from standardised one-factor loadings.

    omega = (sum lambda)^2 / ((sum lambda)^2 + sum (1 - lambda^2)).
    Uniquenesses below 0 (Heywood cases) are clipped at 0.
    """
    lam = np.asarray(loadings, dtype=float)
    common = lam.sum() ** 2
    unique = np.clip(1 - lam**2, 0, None).sum()
    return float(common / (common + unique))


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
        NaN for fewer than 3 items or when the factor model fails.

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
    if df.shape[1] < 3:
        return math.nan
    try:
        return omega_from_loadings(one_factor_loadings(df))
    except (ValueError, np.linalg.LinAlgError):
        return math.nan


def scale_row(items: pd.DataFrame, family: str, dimension: str, scope: str) -> dict:
    """One ``reliability.csv`` row for a scale given as respondents x items (already reversed)."""
    complete = items.apply(pd.to_numeric, errors="coerce").dropna()
    k, n = complete.shape[1], len(complete)
    notes = []
    alpha = low = high = sb = omega = math.nan
    if k >= 2 and n >= 3:
        alpha, low, high = cronbach_alpha(complete)
    elif k < 2:
        notes.append("one item: no internal consistency")
    else:
        notes.append(f"only {n} complete respondents")
    if k == 2 and n >= 3:
        r = complete.corr().iloc[0, 1]
        sb = spearman_brown(r)
        notes.append(f"two items: Spearman-Brown of r = {r:.3f}")
    if k >= 3 and n > k:
        loadings = None
        try:
            loadings = one_factor_loadings(complete)
        except (ValueError, np.linalg.LinAlgError) as exc:
            notes.append(f"one-factor model failed: {exc}")
        if loadings is not None:
            omega = omega_from_loadings(loadings)
            if np.any(np.abs(loadings) >= 1):
                notes.append("Heywood case in the one-factor model")
    elif 2 <= k < 3:
        notes.append("omega needs >= 3 items")
    return {
        "family": family, "dimension": dimension, "scope": scope, "n_items": k, "n": n,
        "alpha": alpha, "alpha_ci_low": low, "alpha_ci_high": high,
        "spearman_brown": sb, "omega": omega, "note": "; ".join(notes),
    }  # fmt: skip


def instrument_reliability(answers: pd.DataFrame) -> pd.DataFrame:
    """Reliability of each PVQ-21 value, higher-order value and BFI-10 trait from raw answers.

    Parameters
    ----------
    answers : DataFrame
        One row per participant with columns ``pvq1..pvq21`` (1..6) and/or ``bfi1..bfi10``
        (1..5). A questionnaire whose columns are absent is skipped.

    Returns
    -------
    DataFrame with :data:`COLUMNS`, scope ``instrument``. BFI-10 reversed items are
    rescored 6 - answer first. Raw (uncentred) PVQ answers are used: centring on the
    person's mean is a scoring choice, not part of the items' consistency.
    """
    rows = []
    if all(f"pvq{i}" in answers for i in range(1, 22)):
        key = inst.default_pvq21().key()
        for value, ids in key.items():
            rows.append(scale_row(answers[[f"pvq{i}" for i in ids]], "pvq", value, "instrument"))
        for higher, values in inst.HIGHER_ORDER.items():
            cols = [f"pvq{i}" for v in values for i in key[v]]
            rows.append(scale_row(answers[cols], "higher_pvq", higher, "instrument"))
    if all(f"bfi{i}" in answers for i in range(1, 11)):
        for trait, items in inst.default_bfi10().key().items():
            block = pd.DataFrame(
                {
                    f"bfi{i}": (BFI_MAX + 1 - answers[f"bfi{i}"]) if rev else answers[f"bfi{i}"]
                    for i, rev in items
                }
            )
            rows.append(scale_row(block, "bfi", trait, "instrument"))
    return pd.DataFrame(rows, columns=COLUMNS)


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
    reversed_items = set(reversed_items)
    block = matrix[list(keyed)].astype(float)
    flip = [c for c in block.columns if c in reversed_items]
    if flip:
        block[flip] = rating_max + 1 - block[flip]
    return scale_row(block, family, dimension, scope)


def _item_label(portrait_id, option_id) -> str:
    return f"{portrait_id}/{option_id}"


def group_reliability(ratings: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """Reliability of every dimension's keyed items within every group (``scope`` = group id).

    Parameters
    ----------
    ratings : DataFrame
        Long ratings: ``participant_id, group_id, portrait_id, option_id, rating``.
    selection : DataFrame
        The keyed pairs (``selection.csv``): ``portrait_id, option_id, family, dimension``
        and optionally ``rho``; a negative rho (keying ``abs``) reverses the item.

    Returns
    -------
    DataFrame with :data:`COLUMNS`: one row per group and dimension with >= 2 keyed items
    in that group (alpha; omega from 3 items).
    """
    ratings = ratings.assign(item=[_item_label(p, o) for p, o in zip(ratings.portrait_id, ratings.option_id)])
    selection = selection.assign(
        item=[_item_label(p, o) for p, o in zip(selection.portrait_id, selection.option_id)]
    )
    item_group = ratings.drop_duplicates("item").set_index("item")["group_id"]
    selection = selection[selection.item.isin(item_group.index)].assign(group_id=lambda s: s.item.map(item_group))
    rows = []
    for group_id, group_ratings in ratings.groupby("group_id", sort=True):
        chosen = selection[selection.group_id == group_id]
        if chosen.empty:
            continue
        matrix = group_ratings.pivot_table(index="participant_id", columns="item", values="rating", aggfunc="mean")
        for (family, dimension), pairs in chosen.groupby(["family", "dimension"], sort=True):
            if len(pairs) < 2:
                continue
            negative = pairs.item[pairs["rho"] < 0] if "rho" in pairs else []
            rows.append(
                keyed_reliability(matrix, pairs.item.tolist(), negative, family, dimension, str(group_id))
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def reliability_table(
    answers: pd.DataFrame | None = None,
    ratings: pd.DataFrame | None = None,
    selection: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The whole ``reliability.csv``: the questionnaires (when raw answers exist) and the keyed items.

    Parameters
    ----------
    answers : DataFrame, optional
        Raw questionnaire answers, wide (see :func:`instrument_reliability`).
    ratings, selection : DataFrame, optional
        Long item ratings and keyed pairs (see :func:`group_reliability`).

    Returns
    -------
    DataFrame with columns ``family, dimension, scope, n_items, n, alpha, alpha_ci_low,
    alpha_ci_high, spearman_brown, omega, note``.
    """
    parts = []
    if answers is not None and len(answers):
        parts.append(instrument_reliability(answers))
    if ratings is not None and selection is not None and len(selection):
        parts.append(group_reliability(ratings, selection))
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(parts, ignore_index=True)
