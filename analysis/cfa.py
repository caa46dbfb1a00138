"""Fit a confirmatory factor analysis written in lavaan-style syntax and print its fit indices.

The model is estimated by maximum likelihood with semopy; the fit indices are the ones
lavaan reports for the same model (chi2 = N * F_ML, CFI, TLI, RMSEA with its 90%
interval, SRMR), so figures can be compared with published lavaan output.

Example::

    vp cfa --data hs.csv --model "visual =~ x1 + x2 + x3
    textual =~ x4 + x5 + x6
    speed =~ x7 + x8 + x9" --out fit.json
"""

from __future__ import annotations

import argparse
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

from valueportrait.atomic import write_json_atomic
from valueportrait.errors import InputError
from valueportrait.files import brief, read_csv_strict

FIT_KEYS = ("chi2", "df", "p", "cfi", "tli", "rmsea", "rmsea_ci_low", "rmsea_ci_high", "srmr", "n")

# --------------------------------------------------------------------------- syntax


def one_factor_syntax(factor: str, indicators: list[str]) -> str:
    """lavaan-style syntax of a one-factor model, ``factor =~ i1 + i2 + ...``."""
    return f"{factor} =~ " + " + ".join(indicators)


def pvq_value_syntax(prefix: str = "pvq") -> str:
    """The ten-value PVQ-21 measurement model (correlated factors), items named ``pvq1..pvq21``."""
    import instruments as inst

    key = inst.default_pvq21().key()
    return "\n".join(one_factor_syntax(value, [f"{prefix}{i}" for i in items]) for value, items in key.items())


def pvq_higher_syntax(prefix: str = "pvq") -> str:
    """The four higher-order PVQ-21 factors measured directly by their values' items (Hedonism left out)."""
    import instruments as inst

    key = inst.default_pvq21().key()
    lines = []
    for higher, values in inst.HIGHER_ORDER.items():
        items = [f"{prefix}{i}" for v in values for i in key[v]]
        lines.append(one_factor_syntax(higher, items))
    return "\n".join(lines)


def measurement_part(model: str) -> dict[str, list[str]]:
    """The ``=~`` lines of a lavaan-style model: ``{factor: [indicators]}``.

    Modifiers such as ``1*x1`` or ``a*x1`` are stripped to the variable name.
    """
    factors: dict[str, list[str]] = {}
    for line in re.split(r"[\n;]", model):
        line = line.split("#", 1)[0]
        if "=~" not in line:
            continue
        lhs, rhs = line.split("=~", 1)
        names = [term.split("*")[-1].strip() for term in rhs.split("+")]
        factors.setdefault(lhs.strip(), []).extend(n for n in names if n)
    return factors


# --------------------------------------------------------------------------- fit indices


def _as_correlation(cov: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.diag(cov))
    return cov / np.outer(sd, sd)


def srmr(sample_cov: np.ndarray, implied_cov: np.ndarray) -> float:
    """Standardised root mean square residual, Bentler's definition as lavaan's ``srmr``.

    Both matrices are turned into correlations; SRMR is the root mean square of the
    residual correlations over the lower triangle *with* the diagonal
    (p(p+1)/2 elements; the diagonal residuals are zero but counted).

    References
    ----------
    Bentler, P. M. (1995). EQS structural equations program manual.
    Rosseel, Y. (2012). lavaan: An R package for structural equation modeling. JSS 48(2).
    """
    resid = _as_correlation(np.asarray(sample_cov, float)) - _as_correlation(np.asarray(implied_cov, float))
    lower = np.tril_indices(resid.shape[0])
    return float(np.sqrt(np.mean(resid[lower] ** 2)))


def rmsea(chi2: float, df: float, n: int) -> float:
    """RMSEA = sqrt(max(chi2 - df, 0) / (N df)), with N (not N - 1) as lavaan."""
    if df <= 0:
        return math.nan
    return math.sqrt(max(chi2 - df, 0.0) / (n * df))


def _noncentrality(chi2: float, df: float, prob: float) -> float:
    """The noncentrality lambda at which P(X <= chi2 | df, lambda) = prob (0 if none >= 0 does)."""
    if stats.chi2.cdf(chi2, df) < prob:
        return 0.0
    upper = max(chi2, 1.0)
    while stats.ncx2.cdf(chi2, df, upper) > prob:
        upper *= 2.0
    return optimize.brentq(lambda lam: stats.ncx2.cdf(chi2, df, lam) - prob, 1e-12, upper, xtol=1e-10)


def rmsea_ci(chi2: float, df: float, n: int, level: float = 0.90) -> tuple[float, float]:
    """RMSEA confidence interval by inverting the noncentral chi-square (Steiger & Lind).

    The lower limit uses the lambda with P(X <= chi2 | lambda) = (1 + level) / 2, the upper
    the lambda with probability (1 - level) / 2; each is turned into sqrt(lambda / (N df)).

    References
    ----------
    Steiger, J. H. (1990). Structural model evaluation and modification: an interval
    estimation approach. Multivariate Behavioral Research, 25(2), 173-180.
    """
    if df <= 0:
        return math.nan, math.nan
    lam_low = _noncentrality(chi2, df, (1 + level) / 2)
    lam_high = _noncentrality(chi2, df, (1 - level) / 2)
    return math.sqrt(lam_low / (n * df)), math.sqrt(lam_high / (n * df))


def _baseline_chi2(sample_cov: np.ndarray, n: int) -> tuple[float, int]:
    # Independence model: Sigma = diag(S), so F_ML = log|diag S| - log|S|.
    p = sample_cov.shape[0]
    _, logdet = np.linalg.slogdet(sample_cov)
    return float(n * (np.sum(np.log(np.diag(sample_cov))) - logdet)), p * (p - 1) // 2


def singular_note(frame: pd.DataFrame, tol: float = 1e-10) -> str | None:
    """Why a sample covariance matrix is not positive definite (a linear dependence), or None.

    ML fit indices on such data mean nothing (semopy would quietly swap in a nearby matrix
    and report, e.g., CFI 1.000 for perfectly collinear items); lavaan refuses the data.
    """
    corr = np.corrcoef(frame.to_numpy(float), rowvar=False)
    values, vectors = np.linalg.eigh(corr)
    if values[0] > tol * max(values[-1], 1.0):
        return None
    weights = np.abs(vectors[:, 0])
    involved = [str(c) for c, w in zip(frame.columns, weights) if w > 0.1 * weights.max()]
    return (f"sample covariance matrix is not positive definite (smallest eigenvalue {values[0]:.2g}): "
            f"{', '.join(involved)} are linearly dependent; fit indices would be meaningless")


def _empty_fit(n: int, note: str) -> dict:
    out = {key: math.nan for key in FIT_KEYS}
    out.update(n=int(n), loadings=[], note=note)
    return out


def fit_cfa(data: pd.DataFrame, model: str) -> dict:
    """Fit a CFA by maximum likelihood (semopy) and return lavaan's fit indices.

    Parameters
    ----------
    data : DataFrame
        One row per respondent; must hold every observed variable of ``model`` as a
        numeric column. Rows with a missing value in any of them are dropped (listwise).
    model : str
        lavaan-style syntax (``f =~ x1 + x2 + x3``, ``~~``, ``~``).

    Returns
    -------
    dict
        ``chi2, df, p, cfi, tli, rmsea, rmsea_ci_low, rmsea_ci_high, srmr, n``, ``loadings``
        (standardised: a list of ``{factor, indicator, loading}``) and ``note`` (empty when
        the fit converged; otherwise why the indices are NaN).

    Notes
    -----
    chi2 = N F_ML with F_ML = log|Sigma| + tr(S Sigma^-1) - log|S| - p and S the
    covariance with divisor N (lavaan's default likelihood). CFI and TLI against the
    independence model; RMSEA with N, and its 90% interval from the noncentral
    chi-square; SRMR as :func:`srmr`. A just-identified model (df = 0) fits perfectly
    by construction, so CFI, TLI and RMSEA are left NaN with a note.

    Examples
    --------
    >>> from semopy.examples import holzinger39
    >>> fit = fit_cfa(holzinger39.get_data(), holzinger39.get_model())
    >>> round(fit["chi2"], 3), fit["df"], round(fit["srmr"], 3)
    (85.306, 24, 0.065)
    """
    import semopy  # heavy import: only when a model is fitted

    try:
        sem = semopy.Model(model)
    except Exception as exc:  # semopy raises SyntaxError and others for bad syntax
        return _empty_fit(0, f"model syntax not understood: {exc}".replace("\n", " "))
    observed = list(sem.vars["observed"])
    missing = [v for v in observed if v not in data.columns]
    if missing:
        raise KeyError(f"variables not in the data: {', '.join(missing)}")
    frame = data[observed].apply(pd.to_numeric, errors="coerce").dropna()
    n = len(frame)
    if n <= len(observed):
        return _empty_fit(n, f"too few complete rows ({n}) for {len(observed)} variables")
    if (frame.std(ddof=0) == 0).any():
        constant = frame.columns[(frame.std(ddof=0) == 0).to_numpy()].tolist()
        return _empty_fit(n, f"constant variables: {', '.join(constant)}")
    singular = singular_note(frame)
    if singular:
        return _empty_fit(n, singular)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = sem.fit(frame, obj="MLW")
            # semopy's default SLSQP stops early on flat optima (HS: x3 loading .731 vs
            # lavaan's .729); L-BFGS-B from that point polishes to lavaan's optimum.
            start = np.array(sem.param_vals, copy=True)
            polished = sem.fit(frame, obj="MLW", solver="L-BFGS-B")
            if polished.success and polished.fun <= result.fun:
                result = polished
            else:
                sem.param_vals = start
                sem.update_matrices(start)
            implied = sem.calc_sigma()[0]
            std = sem.inspect(std_est=True)
            chi2 = float(n * result.fun)
    except Exception as exc:  # singular matrices, failed optimisation
        return _empty_fit(n, f"estimation failed: {exc}".replace("\n", " "))

    sample_cov = np.cov(frame.to_numpy(float).T, bias=True)
    order = [frame.columns.get_loc(v) for v in sem.vars["observed"]]
    sample_cov = sample_cov[np.ix_(order, order)]
    p = len(observed)
    n_params = len(sem.param_vals)
    df = p * (p + 1) // 2 - n_params
    chi2_base, df_base = _baseline_chi2(sample_cov, n)

    notes = []
    if not getattr(result, "success", True):
        notes.append(f"optimiser did not converge: {getattr(result, 'message', '')}")
    if df < 0:
        return _empty_fit(n, f"model not identified (df = {df})")
    if df == 0:
        notes.append("just identified (df = 0): chi2 is 0 by construction, CFI/TLI/RMSEA not informative")
        cfi = tli = math.nan
    else:
        d_model, d_base = max(chi2 - df, 0.0), max(chi2_base - df_base, 0.0)
        denom = max(d_model, d_base)
        cfi = 1.0 - d_model / denom if denom > 0 else 1.0
        tli = (chi2_base / df_base - chi2 / df) / (chi2_base / df_base - 1.0)
    low, high = rmsea_ci(chi2, df, n)

    factors = measurement_part(model)
    loadings = []
    if {"lval", "op", "rval", "Est. Std"} <= set(std.columns):
        rows = std[std["op"] == "~"]
        for factor, indicators in factors.items():
            for indicator in indicators:
                hit = rows[(rows["lval"] == indicator) & (rows["rval"] == factor)]
                if len(hit):
                    loadings.append(
                        {"factor": factor, "indicator": indicator, "loading": float(hit["Est. Std"].iloc[0])}
                    )
    if any(abs(item["loading"]) > 1 for item in loadings):
        notes.append("Heywood case: a standardised loading exceeds 1")

    return {
        "chi2": chi2,
        "df": int(df),
        "p": float(stats.chi2.sf(chi2, df)) if df > 0 else math.nan,
        "cfi": float(cfi),
        "tli": float(tli),
        "rmsea": rmsea(chi2, df, n),
        "rmsea_ci_low": low,
        "rmsea_ci_high": high,
        "srmr": srmr(sample_cov, implied),
        "n": int(n),
        "loadings": loadings,
        "note": "; ".join(notes),
    }


def cfa_row(name: str, data: pd.DataFrame, model: str, **labels) -> dict:
    """One flat row for ``cfa_fit.csv``: ``model`` name, any labels, the fit indices and a note.

    Bad models and failed fits give a row of NaNs with the reason in ``note``, never an
    exception, so one unfit group does not stop a whole analysis.
    """
    try:
        fit = fit_cfa(data, model)
    except KeyError as exc:
        fit = _empty_fit(0, str(exc).strip("'\""))
    row = {"model": name, **labels}
    row.update({key: fit[key] for key in FIT_KEYS})
    row["n_indicators"] = sum(len(v) for v in measurement_part(model).values())
    row["note"] = fit["note"]
    return row


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="CSV with a header row, one column per observed variable")
    parser.add_argument(
        "--model", required=True, help="lavaan-style model syntax, or the path of a file that holds it"
    )
    parser.add_argument("--out", help="write the fit indices and standardised loadings to this JSON file")


def _read_model(text: str) -> str:
    # Syntax always holds a '~' operator; a path never does.
    if "~" in text:
        return text
    path = Path(text)
    if not path.is_file():
        raise InputError(f"{text}: --model: no such file, and not lavaan syntax (no '=~')")
    syntax = path.read_text(encoding="utf-8")
    if "~" not in syntax:
        raise InputError(f"{path}: model syntax: no '=~' line in the file")
    return syntax


def _read_data(path_text: str, model: str) -> pd.DataFrame:
    import semopy

    path = Path(path_text)
    if not path.exists():
        raise InputError(f"{path}: --data: no such file")
    # Strict: a row with the wrong number of fields (a file cut off) is an error naming
    # its line, not a row of missing values dropped from the fit.
    text, lines = read_csv_strict(path, what="CSV of data")
    if text.empty:
        raise InputError(f"{path}: no rows: the file has a header row and nothing else")
    data = text.replace(r"^\s*$", np.nan, regex=True)
    try:
        observed = list(semopy.Model(model).vars["observed"])
    except Exception as exc:
        raise InputError(f"--model: syntax not understood: {str(exc).strip()}") from None
    for name in observed:
        if name not in data.columns:
            raise InputError(
                f"{path}: column {name!r}: named in the model but absent from the CSV "
                f"(columns: {', '.join(map(str, data.columns))})"
            )
        column = data[name]
        numeric = pd.to_numeric(column, errors="coerce")
        bad = (column.notna() & numeric.isna()) | np.isinf(numeric)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"{path}: line {lines[row]}, column {name}: {brief(column.iloc[row])} is not a finite number")
        data[name] = numeric
    return data


def _format(fit: dict) -> str:
    def num(x, digits=3):
        return "NA" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"

    lines = [
        f"n        {fit['n']}",
        f"chi2     {num(fit['chi2'])}  df {fit['df']}  p {'NA' if math.isnan(fit['p']) else format(fit['p'], '.3g')}",
        f"CFI      {num(fit['cfi'])}",
        f"TLI      {num(fit['tli'])}",
        f"RMSEA    {num(fit['rmsea'])}  90% CI [{num(fit['rmsea_ci_low'])}, {num(fit['rmsea_ci_high'])}]",
        f"SRMR     {num(fit['srmr'])}",
    ]
    if fit["loadings"]:
        lines.append("standardised loadings:")
        lines += [f"  {x['factor']} =~ {x['indicator']}  {x['loading']:.3f}" for x in fit["loadings"]]
    if fit.get("note"):
        lines.append(f"note: {fit['note']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    model = _read_model(args.model)
    data = _read_data(args.data, model)
    fit = fit_cfa(data, model)
    print(_format(fit))
    if args.out:
        write_json_atomic({**fit, "data": str(args.data), "model": model}, args.out)
        print(f"wrote {args.out}")
    # A model that could not be estimated is a failed run, though not bad input.
    return 1 if math.isnan(fit["chi2"]) else 0
