"""Exploratory factor analysis of item ratings: Horn's parallel analysis, oblimin loadings, KMO, Bartlett.

A dimensionality check of the item bank within each group of raters, not its validation:
Schwartz's values form a quasi-circumplex of neighbouring, correlated motivations, which
simple-structure EFA is not built to recover (Schwartz's own scoring guidance advises
against EFA for the PVQ). Read the number of factors and the loadings as a description.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats


def _batched_correlations(x: np.ndarray) -> np.ndarray:
    """Correlation matrices of a stack of data sets, shape (..., n, p) -> (..., p, p)."""
    centred = x - x.mean(axis=-2, keepdims=True)
    cov = np.swapaxes(centred, -1, -2) @ centred
    sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    return cov / (sd[..., :, None] * sd[..., None, :])


def _reduce(corr: np.ndarray) -> np.ndarray:
    """Replace the diagonal by squared multiple correlations, SMC_i = 1 - 1 / (R^-1)_ii."""
    inverse = np.linalg.pinv(corr, hermitian=True)
    smc = 1 - 1 / np.diagonal(inverse, axis1=-2, axis2=-1)
    reduced = corr.copy()
    idx = np.arange(corr.shape[-1])
    reduced[..., idx, idx] = np.clip(smc, 0, 1)
    return reduced


def parallel_analysis(
    X,
    n_iter: int = 100,
    seed: int = 0,
    quantile: float = 0.95,
    kind: str = "components",
) -> dict:
    """Horn's parallel analysis: how many factors stand out from random data.

    Parameters
    ----------
    X : array_like or DataFrame
        Respondents x items; rows with a missing value are dropped.
    n_iter : int
        Number of random data sets of the same shape.
    seed : int
        Seed of the random normal data.
    quantile : float
        Quantile of the random eigenvalues a factor must exceed (0.95, Glorfeld 1995;
        0.5 gives Horn's original mean criterion).
    kind : {"components", "factors"}
        ``"components"``: eigenvalues of the correlation matrix (Horn 1965).
        ``"factors"``: eigenvalues of the reduced correlation matrix, squared multiple
        correlations on the diagonal (Humphreys & Ilgen 1969), for the common factor
        model; it suggests more factors than the component version.

    Returns
    -------
    dict
        ``n_factors`` (leading observed eigenvalues above the random quantile, counted
        until the first that is not), ``kind`` and ``eigenvalues``: a DataFrame with
        ``index, observed, random_mean, random_quantile``.

    Notes
    -----
    The random eigenvalues come from ``n_iter`` standard normal data sets of the same
    n x p, all drawn, correlated and decomposed at once (batched ``eigvalsh``).

    References
    ----------
    Horn, J. L. (1965). A rationale and test for the number of factors in factor analysis.
    Psychometrika, 30, 179-185.
    Glorfeld, L. W. (1995). An improvement on Horn's parallel analysis methodology for
    selecting the correct number of factors to retain. Educational and Psychological
    Measurement, 55, 377-393.
    """
    if kind not in ("components", "factors"):
        raise ValueError(f"kind: {kind!r}: use 'components' or 'factors'")
    data = pd.DataFrame(X).apply(pd.to_numeric, errors="coerce").dropna().to_numpy(float)
    n, p = data.shape
    rng = np.random.default_rng(seed)
    observed = _batched_correlations(data)
    random = _batched_correlations(rng.standard_normal((n_iter, n, p)))
    if kind == "factors":
        observed, random = _reduce(observed), _reduce(random)
    obs_eig = np.linalg.eigvalsh(observed)[::-1]
    rand_eig = np.linalg.eigvalsh(random)[:, ::-1]
    threshold = np.quantile(rand_eig, quantile, axis=0)
    above = obs_eig > threshold
    n_factors = int(p if above.all() else np.argmin(above))
    table = pd.DataFrame(
        {
            "index": np.arange(1, p + 1),
            "observed": obs_eig,
            "random_mean": rand_eig.mean(axis=0),
            "random_quantile": threshold,
        }
    )
    return {"n_factors": n_factors, "kind": kind, "eigenvalues": table}


def bartlett_sphericity(X) -> tuple[float, int, float]:
    """Bartlett's test that the correlation matrix is the identity.

    chi2 = -(n - 1 - (2p + 5) / 6) ln|R| with df = p (p - 1) / 2.

    Returns
    -------
    (chi2, df, p_value)

    References
    ----------
    Bartlett, M. S. (1951). The effect of standardization on a chi-square approximation in
    factor analysis. Biometrika, 38, 337-344.
    """
    data = pd.DataFrame(X).dropna().to_numpy(float)
    n, p = data.shape
    sign, logdet = np.linalg.slogdet(np.corrcoef(data.T))
    if sign <= 0:
        return math.nan, p * (p - 1) // 2, math.nan
    chi2 = -(n - 1 - (2 * p + 5) / 6) * logdet
    df = p * (p - 1) // 2
    return float(chi2), df, float(stats.chi2.sf(chi2, df))


def efa(X, n_factors: int | None = None, rotation: str | None = "oblimin", method: str = "minres", seed: int = 0) -> dict:
    """Exploratory factor analysis with factor_analyzer, plus KMO and Bartlett's test.

    Parameters
    ----------
    X : DataFrame or array_like
        Respondents x items (rows with a missing value dropped).
    n_factors : int, optional
        Number of factors; by default Horn's parallel analysis (components, 95th
        percentile), at least 1.
    rotation : str or None
        factor_analyzer rotation (default ``"oblimin"``, oblique: values correlate).
        Ignored for one factor.
    method : str
        Extraction: ``"minres"`` (default, as R's ``psych::fa``), ``"ml"`` or ``"principal"``.
    seed : int
        Seed for the parallel analysis.

    Returns
    -------
    dict
        ``loadings`` (DataFrame items x ``F1..Fk``), ``communalities`` (Series),
        ``n_factors``, ``kmo`` (overall), ``kmo_per_item`` (Series), ``bartlett_chi2``,
        ``bartlett_df``, ``bartlett_p``, ``n``, ``parallel`` (see
        :func:`parallel_analysis`, or None when ``n_factors`` was given) and ``note``.

    Notes
    -----
    KMO = sum r_ij^2 / (sum r_ij^2 + sum q_ij^2) over i != j, with q the partial
    correlations (Kaiser 1974). With as many items as respondents the correlation matrix
    is singular: KMO and Bartlett are then undefined (NaN) and the note says so.
    """
    from factor_analyzer import FactorAnalyzer
    from factor_analyzer.factor_analyzer import calculate_kmo

    frame = pd.DataFrame(X).apply(pd.to_numeric, errors="coerce").dropna()
    frame.columns = [str(c) for c in frame.columns]
    n, p = frame.shape
    notes = []
    constant = frame.columns[frame.std(ddof=0).to_numpy() == 0].tolist()
    if constant:
        notes.append(f"constant items dropped: {', '.join(constant)}")
        frame = frame.drop(columns=constant)
        p = frame.shape[1]
    parallel = None
    if n_factors is None:
        parallel = parallel_analysis(frame, seed=seed)
        n_factors = max(1, parallel["n_factors"])
    n_factors = min(n_factors, max(1, p - 1))
    singular = n <= p or np.linalg.matrix_rank(frame.to_numpy(float) - frame.to_numpy(float).mean(0)) < p
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if singular:
            notes.append(f"{n} respondents for {p} items: correlation matrix singular, KMO and Bartlett undefined")
            kmo_items, kmo_total = np.full(p, np.nan), math.nan
            bart = (math.nan, p * (p - 1) // 2, math.nan)
        else:
            kmo_items, kmo_total = calculate_kmo(frame.to_numpy(float))
            bart = bartlett_sphericity(frame)
        fa = FactorAnalyzer(
            n_factors=n_factors,
            rotation=rotation if n_factors > 1 else None,
            method=method,
        )
        fa.fit(frame.to_numpy(float))
    names = [f"F{i}" for i in range(1, n_factors + 1)]
    loadings = pd.DataFrame(fa.loadings_, index=frame.columns, columns=names)
    # A factor's sign is arbitrary: orient each so its loadings sum to >= 0.
    loadings = loadings * np.where(loadings.sum(axis=0) < 0, -1.0, 1.0)
    return {
        "loadings": loadings,
        "communalities": pd.Series(fa.get_communalities(), index=frame.columns),
        "n_factors": n_factors,
        "kmo": float(kmo_total),
        "kmo_per_item": pd.Series(kmo_items, index=frame.columns),
        "bartlett_chi2": bart[0],
        "bartlett_df": bart[1],
        "bartlett_p": bart[2],
        "n": n,
        "parallel": parallel,
        "note": "; ".join(notes),
    }


def efa_long(result: dict, **labels) -> pd.DataFrame:
    """Tidy rows for ``efa_loadings.csv``: labels, ``item, factor, loading, communality, kmo_item``,
    and the whole-matrix figures (``n_factors, kmo, bartlett_chi2, bartlett_df, bartlett_p, n, note``)."""
    loadings = result["loadings"]
    long = loadings.rename_axis("item").reset_index().melt(id_vars="item", var_name="factor", value_name="loading")
    long["communality"] = long["item"].map(result["communalities"])
    long["kmo_item"] = long["item"].map(result["kmo_per_item"])
    for key in ("n_factors", "kmo", "bartlett_chi2", "bartlett_df", "bartlett_p", "n", "note"):
        long[key] = result[key]
    for i, (key, value) in enumerate(labels.items()):
        long.insert(i, key, value)
    return long
