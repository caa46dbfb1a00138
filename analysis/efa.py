"""Exploratory factor analysis, the counterpart of psych's fa and fa.parallel.

``vp efa --data FILE.csv`` picks the number of factors by Horn's parallel analysis (or
takes ``--factors``), extracts them by minimum residual or maximum likelihood, rotates
(oblimin by default) and prints loadings, communalities, factor correlations, KMO,
Bartlett's test and, with ML, the chi-square test and RMSEA.

In ``vp analyze`` it is a dimensionality check of the item bank within each group of
raters, not its validation: Schwartz's values form a quasi-circumplex of neighbouring,
correlated motivations, which simple-structure EFA is not built to recover (Schwartz's own
scoring guidance advises against EFA for the PVQ). A group is not factored at all where a
factor model cannot mean anything: no more raters than items, a singular correlation
matrix, or a KMO below ``--efa-min-kmo``.

Example::

    vp efa --data hs.csv --columns x1,x2,x3,x4,x5,x6,x7,x8,x9 --method ml --out efa.json
"""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import pandas as pd

from analysis.covariance import DataError, check_data
from valueportrait import options as opt
from valueportrait.errors import InputError

METHODS = ("minres", "ml")
ROTATIONS = ("oblimin", "promax", "varimax", "none")
OBLIQUE = ("oblimin", "promax")
#: factor_analyzer's lower bound on uniquenesses: a uniqueness there is a Heywood case.
UNIQUENESS_FLOOR = 0.005
#: Kaiser (1974): below .5 a correlation matrix is "unacceptable" for factor analysis.
MIN_KMO = 0.5


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


def _numeric(X) -> pd.DataFrame:
    frame = pd.DataFrame(X).apply(pd.to_numeric, errors="coerce").dropna().astype(float)
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _constant_columns(frame: pd.DataFrame) -> list[str]:
    return frame.columns[frame.to_numpy().std(axis=0) == 0].tolist() if len(frame) else list(frame.columns)


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

    Raises
    ------
    analysis.covariance.DataError
        A column is constant (its correlations do not exist), or fewer than 3 rows.

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
    frame = _numeric(X)
    n, p = frame.shape
    if n < 3:
        raise DataError(f"{n} complete rows: parallel analysis needs at least 3")
    constant = _constant_columns(frame)
    if constant:
        raise DataError(f"constant variables (no variance, so no correlations): {', '.join(constant)}")
    data = frame.to_numpy()
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
    return {"n_factors": n_factors, "kind": kind, "eigenvalues": table, "quantile": quantile, "n_iter": n_iter}


def bartlett_sphericity(X) -> tuple[float, int, float]:
    """Bartlett's test that the correlation matrix is the identity (factor_analyzer's).

    chi2 = -(n - 1 - (2p + 5) / 6) ln|R| with df = p (p - 1) / 2. NaN when R is singular
    (|R| <= 0: the statistic does not exist).

    Returns
    -------
    (chi2, df, p_value)

    References
    ----------
    Bartlett, M. S. (1951). The effect of standardization on a chi-square approximation in
    factor analysis. Biometrika, 38, 337-344.
    """
    from factor_analyzer.factor_analyzer import calculate_bartlett_sphericity

    data = pd.DataFrame(X).dropna().to_numpy(float)
    n, p = data.shape
    df = p * (p - 1) // 2
    sign, _ = np.linalg.slogdet(np.corrcoef(data.T))
    if sign <= 0 or n <= p:
        return math.nan, df, math.nan
    chi2, p_value = calculate_bartlett_sphericity(data)
    return float(chi2), df, float(p_value)


def kmo(X) -> tuple[float, pd.Series]:
    """Kaiser-Meyer-Olkin measure of sampling adequacy (factor_analyzer's), overall and per item.

    KMO = sum r_ij^2 / (sum r_ij^2 + sum q_ij^2) over i != j, with q the partial
    correlations (Kaiser 1974). NaN for a singular correlation matrix (no partial
    correlations).
    """
    from factor_analyzer.factor_analyzer import calculate_kmo

    frame = _numeric(X)
    n, p = frame.shape
    sign, _ = np.linalg.slogdet(np.corrcoef(frame.to_numpy().T)) if n > 1 else (0, 0)
    if sign <= 0 or n <= p:
        return math.nan, pd.Series(np.nan, index=frame.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_item, total = calculate_kmo(frame.to_numpy())
    return float(total), pd.Series(per_item, index=frame.columns)


def screen(X, min_kmo: float = MIN_KMO) -> dict:
    """Should these data be factored at all? ``{n, p, kmo, reason}``, reason empty when yes.

    Refused (the reason says which): no more complete rows than items (the correlation
    matrix is singular), a singular correlation matrix (collinear items, named), or a
    KMO below ``min_kmo``. Constant items are left out first, as :func:`efa` does.
    """
    frame = _numeric(X)
    frame = frame.drop(columns=_constant_columns(frame))
    n, p = frame.shape
    out = {"n": n, "p": p, "kmo": math.nan, "reason": ""}
    if p < 3:
        out["reason"] = f"{p} items that vary: an EFA needs at least 3"
        return out
    if n <= p:
        out["reason"] = f"{n} raters for {p} items: no more raters than items, the correlation matrix is singular"
        return out
    try:
        check_data(frame, what="correlation matrix")
    except DataError as exc:
        out["reason"] = str(exc)
        return out
    out["kmo"] = kmo(frame)[0]
    if out["kmo"] < min_kmo:
        out["reason"] = f"KMO {out['kmo']:.2f} < {min_kmo:g}: the items share too little for a factor model"
    return out


def _ml_fit(corr: np.ndarray, loadings: np.ndarray, n: int, k: int) -> dict:
    """chi2 = N F_ML, its df and RMSEA for an ML EFA of k factors (lavaan's efa() definitions)."""
    from analysis.cfa import rmsea
    from scipy import stats

    p = corr.shape[0]
    implied = loadings @ loadings.T
    implied[np.diag_indices(p)] = 1.0  # at the ML optimum diag(Sigma) = diag(R)
    f = np.linalg.slogdet(implied)[1] + np.trace(corr @ np.linalg.inv(implied)) - np.linalg.slogdet(corr)[1] - p
    df = ((p - k) ** 2 - (p + k)) // 2
    chi2 = n * max(float(f), 0.0)
    return {"chi2": chi2, "df": int(df), "p": float(stats.chi2.sf(chi2, df)) if df > 0 else math.nan,
            "rmsea": rmsea(chi2, df, n)}


def _rotate(unrotated: np.ndarray, rotation: str) -> tuple[np.ndarray, np.ndarray]:
    """Rotated loadings and the factor correlations that go with them (identity if orthogonal).

    factor_analyzer's ``FactorAnalyzer`` reorders the factors after an oblique rotation
    without reordering ``phi_``, and its ``get_communalities`` ignores phi: so rotate here
    with its ``Rotator`` and keep loadings and phi together. With L = L0 (T')^-1 and
    Phi = T'T, L Phi L' = L0 L0': communalities do not depend on the rotation.
    """
    from factor_analyzer.rotator import Rotator

    k = unrotated.shape[1]
    if k == 1 or rotation == "none":
        loadings, phi = unrotated.copy(), np.eye(k)
    else:
        rotator = Rotator(method=rotation)
        loadings = rotator.fit_transform(unrotated)
        phi = rotator.phi_ if rotator.phi_ is not None else np.eye(k)
    signs = np.where(loadings.sum(axis=0) < 0, -1.0, 1.0)  # a factor's sign is arbitrary
    loadings, phi = loadings * signs, phi * np.outer(signs, signs)
    order = np.argsort(-(loadings**2).sum(axis=0), kind="stable")  # largest factor first
    return loadings[:, order], phi[np.ix_(order, order)]


def efa(
    X,
    n_factors: int | None = None,
    rotation: str | None = "oblimin",
    method: str = "minres",
    seed: int = 0,
    n_iter: int = 100,
) -> dict:
    """Exploratory factor analysis (factor_analyzer), with parallel analysis, KMO and Bartlett's test.

    Parameters
    ----------
    X : DataFrame or array_like
        Respondents x items (rows with a missing value dropped; constant items are left
        out, named in the note).
    n_factors : int, optional
        Number of factors; by default Horn's parallel analysis (components, 95th
        percentile), at least 1.
    rotation : {"oblimin", "promax", "varimax", "none"}
        Default ``"oblimin"`` (oblique: values correlate). None means ``"none"``.
    method : {"minres", "ml"}
        Extraction: minimum residual (default, as R's ``psych::fa``) or maximum likelihood.
    seed, n_iter : int
        Seed and random data sets of the parallel analysis.

    Returns
    -------
    dict
        ``loadings`` (DataFrame items x ``F1..Fk``, pattern loadings), ``communalities``
        (Series, diag(L Phi L')), ``uniquenesses``, ``factor_correlations`` (DataFrame
        k x k), ``n_factors``, ``method``, ``rotation``, ``eigenvalues`` (of the
        correlation matrix), ``parallel`` (see :func:`parallel_analysis`), ``kmo``,
        ``kmo_per_item``, ``bartlett_chi2``, ``bartlett_df``, ``bartlett_p``, ``n``;
        ``chi2``, ``df``, ``p``, ``rmsea`` (ML; NaN for minres) and ``note``.

    Raises
    ------
    analysis.covariance.DataError
        Fewer than 3 items vary, no more rows than items, or collinear items (the
        correlation matrix is singular): a factor model of such data means nothing.

    Notes
    -----
    Communalities are diag(L Phi L'), L the pattern loadings and Phi the factor
    correlations: invariant under rotation, they equal the unrotated solution's row sums
    of squared loadings (factor_analyzer's ``get_communalities`` sums squared pattern
    loadings, wrong under an oblique rotation). With ML, chi2 = N F_ML and RMSEA with N
    as lavaan's ``efa()`` (R's ``factanal`` uses Bartlett's correction instead). A
    uniqueness at factor_analyzer's floor (.005) is a Heywood case and is named in the
    note, as are KMO < .5 and a suggested number of factors capped by the data.

    References
    ----------
    Kaiser, H. F. (1974). An index of factorial simplicity. Psychometrika, 39, 31-36.
    Revelle, W. psych: Procedures for psychological, psychometric, and personality
    research (``fa``, ``fa.parallel``).
    """
    from factor_analyzer import FactorAnalyzer

    rotation = "none" if rotation is None else rotation
    if method not in METHODS:
        raise ValueError(f"method: {method!r}: use one of {', '.join(METHODS)}")
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation: {rotation!r}: use one of {', '.join(ROTATIONS)}")
    frame = _numeric(X)
    notes = []
    constant = _constant_columns(frame)
    if constant:
        notes.append(f"constant items left out: {', '.join(constant)}")
        frame = frame.drop(columns=constant)
    n, p = frame.shape
    if p < 3:
        raise DataError(f"{p} variables that vary{' (' + ', '.join(frame.columns) + ')' if p else ''}: an EFA needs at least 3")
    check_data(frame, what="correlation matrix")
    parallel = parallel_analysis(frame, n_iter=n_iter, seed=seed)
    if n_factors is None:
        n_factors = max(1, parallel["n_factors"])
    if n_factors < 1:
        raise ValueError(f"n_factors: {n_factors}: must be at least 1")
    # The most factors the data can carry: df >= 0 for ML (Ledermann's bound); p - 1 for minres.
    most = max(k for k in range(1, p) if method != "ml" or (p - k) ** 2 >= p + k)
    if n_factors > most:
        notes.append(f"{n_factors} factors asked for, but {p} items carry at most {most}: {most} extracted")
        n_factors = most
    corr = np.corrcoef(frame.to_numpy().T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fa = FactorAnalyzer(n_factors=n_factors, rotation=None, method=method).fit(frame.to_numpy())
    unrotated = fa.loadings_
    communality = (unrotated**2).sum(axis=1)
    loadings, phi = _rotate(unrotated, rotation)
    kmo_total, kmo_items = kmo(frame)
    bart = bartlett_sphericity(frame)
    heywood = [c for c, h in zip(frame.columns, communality) if h >= 1 - UNIQUENESS_FLOOR - 1e-9]
    if heywood:
        notes.append(f"Heywood case: uniqueness at its floor ({UNIQUENESS_FLOOR}) for {', '.join(heywood)}: improper solution")
    if kmo_total < MIN_KMO:
        notes.append(f"KMO {kmo_total:.2f} < {MIN_KMO}: the items share too little for a factor model")
    if parallel["n_factors"] == 0:
        notes.append("parallel analysis finds no factor above random data")
    fit = _ml_fit(corr, unrotated, n, n_factors) if method == "ml" else {
        "chi2": math.nan, "df": math.nan, "p": math.nan, "rmsea": math.nan}
    names = [f"F{i}" for i in range(1, n_factors + 1)]
    return {
        "loadings": pd.DataFrame(loadings, index=frame.columns, columns=names),
        "communalities": pd.Series(np.einsum("ij,jk,ik->i", loadings, phi, loadings), index=frame.columns),
        "uniquenesses": pd.Series(1 - communality, index=frame.columns),
        "factor_correlations": pd.DataFrame(phi, index=names, columns=names),
        "n_factors": n_factors,
        "method": method,
        "rotation": rotation,
        "eigenvalues": np.linalg.eigvalsh(corr)[::-1],
        "parallel": parallel,
        "kmo": kmo_total,
        "kmo_per_item": kmo_items,
        "bartlett_chi2": bart[0],
        "bartlett_df": bart[1],
        "bartlett_p": bart[2],
        "n": n,
        **fit,
        "note": "; ".join(notes),
    }


LONG_COLUMNS = ["item", "factor", "loading", "communality", "kmo_item", "n_factors", "kmo", "bartlett_chi2",
                "bartlett_df", "bartlett_p", "n", "note", "uniqueness", "method", "rotation", "status"]


def efa_long(result: dict, **labels) -> pd.DataFrame:
    """Tidy rows for ``efa_loadings.csv``: labels, ``item, factor, loading, communality, kmo_item``,
    the whole-matrix figures (``n_factors, kmo, bartlett_chi2, bartlett_df, bartlett_p, n, note``)
    and, trailing, ``uniqueness, method, rotation, status`` (``fitted``)."""
    loadings = result["loadings"]
    long = loadings.rename_axis("item").reset_index().melt(id_vars="item", var_name="factor", value_name="loading")
    long["communality"] = long["item"].map(result["communalities"])
    long["kmo_item"] = long["item"].map(result["kmo_per_item"])
    for key in ("n_factors", "kmo", "bartlett_chi2", "bartlett_df", "bartlett_p", "n", "note"):
        long[key] = result[key]
    long["uniqueness"] = long["item"].map(result["uniquenesses"])
    long["method"], long["rotation"], long["status"] = result["method"], result["rotation"], "fitted"
    for i, (key, value) in enumerate(labels.items()):
        long.insert(i, key, value)
    return long


def efa_skipped(screened: dict, **labels) -> pd.DataFrame:
    """One ``efa_loadings.csv`` row for a group not factored: no loadings, the reason in ``note``."""
    row = {key: math.nan for key in LONG_COLUMNS}
    row.update(item="", factor="", n=screened["n"], kmo=screened["kmo"], note=f"not factored: {screened['reason']}",
               method="", rotation="", status="skipped")
    return pd.DataFrame([{**labels, **row}])


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="CSV with a header row, one column per variable")
    parser.add_argument("--columns", help="comma-separated columns to analyse (default: every column)")
    parser.add_argument("--factors", type=opt.count(1), help="number of factors (default: Horn's parallel analysis)")
    parser.add_argument("--method", choices=METHODS, default="minres", help="extraction: minimum residual or maximum likelihood")
    parser.add_argument("--rotation", choices=ROTATIONS, default="oblimin", help="rotation of the loadings")
    parser.add_argument("--seed", type=opt.seed(), default=0, help="seed of the parallel analysis's random data")
    parser.add_argument("--out", help="write the result to this JSON file")


def _read(path_text: str, columns: str | None) -> pd.DataFrame:
    from valueportrait.files import read_numeric_csv

    names = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    return read_numeric_csv(path_text, names, hint="" if columns else " (choose numeric columns with --columns)")


def to_json(result: dict) -> dict:
    """The ``vp efa`` JSON: keys as DESIGN.md lists them, plus uniquenesses and per-item KMO."""
    loadings = result["loadings"]
    table = result["parallel"]["eigenvalues"]
    return {
        "n": result["n"],
        "n_factors": result["n_factors"],
        "method": result["method"],
        "rotation": result["rotation"],
        "loadings": {item: row.tolist() for item, row in loadings.iterrows()},
        "communalities": result["communalities"].to_dict(),
        "uniquenesses": result["uniquenesses"].to_dict(),
        "factor_correlations": result["factor_correlations"].to_numpy().tolist(),
        "eigenvalues": list(result["eigenvalues"]),
        "parallel_analysis": {"n_factors": result["parallel"]["n_factors"], "kind": result["parallel"]["kind"],
                              "quantile": result["parallel"]["quantile"], "iterations": result["parallel"]["n_iter"],
                              "random_mean": table["random_mean"].tolist(),
                              "random_quantile": table["random_quantile"].tolist()},
        "kmo": result["kmo"],
        "kmo_per_item": result["kmo_per_item"].to_dict(),
        "bartlett_chi2": result["bartlett_chi2"],
        "bartlett_df": result["bartlett_df"],
        "bartlett_p": result["bartlett_p"],
        **({key: result[key] for key in ("chi2", "df", "p", "rmsea")} if result["method"] == "ml" else {}),
        "note": result["note"],
    }


def _format(result: dict, dropped: int) -> str:
    def num(x, digits=2):
        return "NA" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"

    loadings = result["loadings"]
    pa = result["parallel"]
    k = result["n_factors"]
    lines = [f"n {result['n']}" + (f" ({dropped} rows with a missing value left out)" if dropped else "")
             + f", {len(loadings)} variables; {result['method']}, rotation {result['rotation']}",
             f"parallel analysis: {pa['n_factors']} factor(s) above the {pa['quantile']:.0%} quantile of "
             f"{pa['n_iter']} random data sets; {k} extracted"]
    width = max(len(str(i)) for i in loadings.index) + 2
    lines.append(" " * width + "".join(f"{c:>7}" for c in loadings.columns) + f"{'h2':>7}{'u2':>7}")
    for item, row in loadings.iterrows():
        lines.append(f"{item:<{width}}" + "".join(f"{num(v):>7}" for v in row)
                     + f"{num(result['communalities'][item]):>7}{num(result['uniquenesses'][item]):>7}")
    ss = np.diag(result["factor_correlations"].to_numpy() @ loadings.T.to_numpy() @ loadings.to_numpy())
    lines.append(f"{'SS loadings':<{width}}" + "".join(f"{num(v):>7}" for v in ss))
    if k > 1 and result["rotation"] in OBLIQUE:
        lines.append("factor correlations:")
        for name, row in result["factor_correlations"].iterrows():
            lines.append(f"  {name:<5}" + "".join(f"{num(v):>7}" for v in row))
    if result["method"] == "ml":
        p = result["p"]
        lines.append(f"chi2 {num(result['chi2'], 3)}  df {result['df']}  p {'NA' if math.isnan(p) else format(p, '.3g')}"
                     f"  RMSEA {num(result['rmsea'], 3)}")
    lines.append(f"KMO {num(result['kmo'])}; Bartlett chi2 {num(result['bartlett_chi2'], 1)}, df {result['bartlett_df']}, "
                 f"p {'NA' if math.isnan(result['bartlett_p']) else format(result['bartlett_p'], '.3g')}")
    lines.append("eigenvalues: " + " ".join(f"{v:.2f}" for v in result["eigenvalues"]))
    lines.append("random 95%:  " + " ".join(f"{v:.2f}" for v in pa["eigenvalues"]["random_quantile"]))
    if result["note"]:
        lines.append(f"note: {result['note']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from valueportrait.atomic import write_json_atomic

    if args.factors is not None and args.factors < 1:
        raise InputError(f"--factors: {args.factors}: must be at least 1")
    data = _read(args.data, args.columns)
    complete = data.dropna()
    try:
        result = efa(complete, n_factors=args.factors, rotation=args.rotation, method=args.method, seed=args.seed)
    except DataError as exc:
        raise InputError(f"{args.data}: {exc}") from None
    print(_format(result, len(data) - len(complete)))
    if args.out:
        write_json_atomic({**to_json(result), "data": str(args.data)}, args.out)
        print(f"wrote {args.out}")
    return 0
