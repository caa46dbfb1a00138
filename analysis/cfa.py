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
from scipy import special  # scipy.optimize (a few hundred ms to import) only where a model needs it

from valueportrait.atomic import write_json_atomic
from valueportrait.errors import InputError

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
    """The noncentrality lambda at which P(X <= chi2 | df, lambda) = prob (0 if none >= 0 does).

    ``special.chndtr`` is the function behind ``stats.ncx2.cdf`` (the same values), without
    the distribution object's per-call overhead (about 0.3 ms, times ~25 calls per model).
    """
    if special.chdtr(df, chi2) < prob:
        return 0.0
    upper = max(chi2, 1.0)
    while special.chndtr(chi2, df, upper) > prob:
        upper *= 2.0
    from scipy import optimize

    return optimize.brentq(lambda lam: special.chndtr(chi2, df, lam) - prob, 1e-12, upper, xtol=1e-10)


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


def _empty_fit(n: int, note: str) -> dict:
    out = {key: math.nan for key in FIT_KEYS}
    out.update(n=int(n), loadings=[], factor_correlations={}, r2={}, parameters=[], converged=False, note=note,
               warning=True)
    return out


# --------------------------------------------------------------------------- estimation
#
# semopy builds the model's matrices from the syntax (Beta, Lambda, Psi, Theta) and gives
# the ML discrepancy's gradient; the estimation itself is done here, because semopy's
# defaults are not lavaan's: it bounds variances at >= 0 (hiding Heywood cases), replaces a
# singular sample covariance by a nearby one, and its SLSQP stops early when variables are
# on very different scales. So: refuse singular data (analysis.covariance), fit the
# standardised data with variances unbounded (quasi-Newton, then Fisher scoring, which
# converges quadratically at the optimum), carry the estimates back to the data's own units
# and polish there. ML is scale invariant, so fit indices and standardised estimates do not
# depend on the units of any variable.

_MATRICES = ("beta", "lambda", "psi", "theta")  # semopy's order of sem.matrices


def _discrepancy(sem, x: np.ndarray) -> float:
    """F_ML = log|Sigma| + tr(S Sigma^-1) - log|S| - p; inf where Sigma is not positive definite."""
    sem.update_matrices(x)
    sigma, _ = sem.calc_sigma()
    try:
        chol = np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        return math.inf
    inv_chol = np.linalg.inv(chol)
    logdet = 2 * np.log(np.diag(chol)).sum()
    trace = np.einsum("ij,ij->", inv_chol @ sem.mx_cov, inv_chol)  # tr(L^-1 S L^-T)
    return float(logdet + trace - sem.cov_logdet - sigma.shape[0])


def _gradient(sem, x: np.ndarray) -> np.ndarray:
    sem.update_matrices(x)
    sigma, (m, c) = sem.calc_sigma()
    inv = np.linalg.inv(sigma)
    weight = inv - inv @ sem.mx_cov @ inv
    return np.array([np.einsum("ij,ji->", weight, d) for d in sem.calc_sigma_grad(m, c)])


def _information(sem, x: np.ndarray) -> np.ndarray:
    """Expected information per observation (x 2): H_ab = tr(Sigma^-1 dSigma_a Sigma^-1 dSigma_b)."""
    sem.update_matrices(x)
    sigma, (m, c) = sem.calc_sigma()
    inv = np.linalg.inv(sigma)
    weighted = np.array([inv @ d for d in sem.calc_sigma_grad(m, c)])
    return np.einsum("aij,bji->ab", weighted, weighted)


def _fisher_scoring(sem, x: np.ndarray, max_iter: int = 200) -> tuple[np.ndarray, bool]:
    """Newton steps with the expected information, halved until F does not rise.

    Converged when the Newton decrement g' H^-1 g (scale free: the same for any units of
    the parameters) is below 1e-16, or when no step lowers F any more and it is below
    1e-8 (rounding): F is then within ~1e-8 of its minimum, the estimates within ~1e-4
    standard errors.
    """
    fx = _discrepancy(sem, x)
    if not math.isfinite(fx):
        return x, False
    for _ in range(max_iter):
        grad = _gradient(sem, x)
        step = np.linalg.lstsq(_information(sem, x), grad, rcond=None)[0]
        decrement = float(grad @ step)
        if not math.isfinite(decrement):
            return x, False
        if decrement < 1e-16:
            return x, True
        t = 1.0
        while t > 1e-8:
            candidate = x - t * step
            fc = _discrepancy(sem, candidate)
            if fc <= fx:
                break
            t /= 2
        else:  # no step lowers F: at the optimum up to rounding, or stuck
            return x, decrement < 1e-8
        x, fx = candidate, fc
    return x, False


def _minimise(sem) -> tuple[np.ndarray, bool]:
    """Quasi-Newton from semopy's starting values, then Fisher scoring to the optimum.

    The quasi-Newton steps run on parameters divided by their information-based scale,
    sqrt(H_kk) at the start, so that a parameter in large units does not dominate them.
    """
    x0 = np.array(sem.param_vals, dtype=float)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scale = np.sqrt(np.diag(_information(sem, x0)))
        except np.linalg.LinAlgError:
            scale = np.ones_like(x0)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        from scipy import optimize

        res = optimize.minimize(lambda u: _discrepancy(sem, u / scale), x0 * scale,
                                jac=lambda u: _gradient(sem, u / scale) / scale,
                                method="L-BFGS-B", options={"maxiter": 5000, "ftol": 1e-14, "gtol": 1e-9})
        x = res.x / scale if np.isfinite(res.fun) and np.all(np.isfinite(res.x)) else x0
        return _fisher_scoring(sem, x)


def _locations(sem):
    """(parameter name, matrix kind, row, column) for every place a parameter sits in."""
    kind_of = {id(mx): kind for kind, mx in zip(_MATRICES, sem.matrices)}
    for name, param in sem.parameters.items():
        for loc in param.locations:
            yield name, kind_of[id(loc.matrix)], loc.indices[0], loc.indices[1]


def _scale_exponents(sem, kind: str, i: int, j: int) -> list[tuple[str, str, int]]:
    """How a matrix entry scales when variables are rescaled: [(space, name, power)]."""
    obs, inner = sem.names_lambda
    if kind == "lambda":
        return [("obs", obs[i], 1), ("inner", inner[j], -1)]
    if kind == "beta":
        return [("inner", inner[i], 1), ("inner", inner[j], -1)]
    if kind == "psi":
        return [("inner", inner[i], 1), ("inner", inner[j], 1)]
    return [("obs", obs[i], 1), ("obs", obs[j], 1)]


def _rescaling(sem, sd: dict, fixed: dict) -> np.ndarray | None:
    """Factors that carry each free parameter from standardised data to the data's units.

    Rescaling observed variable i by c_i rescales every latent variable by the factor its
    identification implies (a marker loading fixed at 1: the marker's c; a variance fixed
    at 1: 1). An entry then scales by c_row / c_col (loadings, regressions) or
    c_row * c_col (covariances). The latent factors are solved from the fixed entries;
    None when they are not determined or disagree (a model that is not scale invariant).
    """
    obs, inner = sem.names_lambda
    c = {("obs", v): float(sd[v]) for v in obs}
    c.update({("inner", v): (float(sd[v]) if v in sd else None) for v in inner})
    constraints = [e for name, kind, i, j in _locations(sem) if name in fixed and fixed[name] != 0
                   for e in [_scale_exponents(sem, kind, i, j)]]
    placed = {(i, j) for _, kind, i, j in _locations(sem) if kind == "lambda"}
    for i, j in zip(*np.nonzero(sem.mx_lambda_built)):
        if (i, j) not in placed:  # observed variables that take part in regressions
            constraints.append(_scale_exponents(sem, "lambda", i, j))
    changed = True
    while changed:
        changed = False
        for terms in constraints:
            unknown = [(s, v, k) for s, v, k in terms if c[(s, v)] is None]
            if len(unknown) == 1 or (len(unknown) == 2 and unknown[0][:2] == unknown[1][:2]):
                known = math.prod(c[(s, v)] ** k for s, v, k in terms if c[(s, v)] is not None)
                power = sum(k for *_, k in unknown)
                if power == 0:
                    continue
                c[unknown[0][:2]] = known ** (-1.0 / power)
                changed = True
    if any(value is None for value in c.values()):
        return None
    for terms in constraints:
        if not math.isclose(math.prod(c[(s, v)] ** k for s, v, k in terms), 1.0, rel_tol=1e-9):
            return None
    factors: dict[str, float] = {}
    for name, kind, i, j in _locations(sem):
        if name in fixed or not sem.parameters[name].active:
            continue
        f = math.prod(c[(s, v)] ** k for s, v, k in _scale_exponents(sem, kind, i, j))
        if name in factors and not math.isclose(factors[name], f, rel_tol=1e-9):
            return None  # one label on entries that scale differently
        factors[name] = f
    active = [name for name, param in sem.parameters.items() if param.active]
    return np.array([factors[name] for name in active])


def _estimate(sem, frame: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """ML estimates in the data's units (see the comment above _MATRICES)."""
    sd = frame.std(ddof=0)
    fixed = {name: p.start for name, p in sem.parameters.items() if not p.active and p.start is not None}
    sem.mx_lambda_built = sem.mx_lambda.copy()  # before starting values fill it
    sem.load((frame - frame.mean()) / sd)
    x_std, converged = _minimise(sem)
    factors = _rescaling(sem, sd.to_dict(), fixed)
    sem.load(frame, clean_slate=True)  # data-derived fixed values (exogenous covariances) from the raw data
    if factors is None:
        return _minimise(sem)
    x, polished = _fisher_scoring(sem, x_std * factors)
    return x, converged and polished


# --------------------------------------------------------------------------- the solution


def _solution(sem, x: np.ndarray, n: int, model: str) -> dict:
    """Parameter table (estimate, SE, z, p, standardised), loadings, factor correlations, R², notes."""
    sem.update_matrices(x)
    beta, lam, psi, theta = (np.array(m) for m in sem.matrices[:4])
    obs, inner = sem.names_lambda
    order = list(measurement_part(model))
    latent = sorted((v for v in inner if v in sem.vars["latent"]), key=lambda v: (order.index(v) if v in order else len(order), v))
    sigma, _ = sem.calc_sigma()
    c = np.linalg.inv(np.eye(len(inner)) - beta)
    inner_cov = c @ psi @ c.T
    var_obs, var_in = np.diag(sigma), np.diag(inner_cov)
    notes = []

    info = _information(sem, x)
    # Judge singularity on the information scaled to a unit diagonal: free of the units
    # the parameters happen to have (a loading in km and one in mm).
    scale = np.sqrt(np.clip(np.diag(info), 1e-300, None))
    eig = np.linalg.eigvalsh(info / np.outer(scale, scale)) if info.size else np.array([1.0])
    if eig.min() <= 1e-10 * eig.max():
        se = np.full(len(x), math.nan)
        notes.append("information matrix singular: the model may not be identified; standard errors not computed")
    else:
        se = np.sqrt(np.diag(np.linalg.inv(info)) * 2.0 / n)
    index = {name: k for k, name in enumerate(p for p, param in sem.parameters.items() if param.active)}
    measured = {(f, i) for f, items in measurement_part(model).items() for i in items}
    with np.errstate(invalid="ignore", divide="ignore"):
        sd_obs, sd_in = np.sqrt(var_obs), np.sqrt(var_in)
        rows = []
        for name, kind, i, j in _locations(sem):
            est = float(sem.matrices[_MATRICES.index(kind)][i, j])
            if kind == "lambda":
                lhs, rhs = inner[j], obs[i]
                op = "=~" if (lhs, rhs) in measured or lhs in latent else "~"
                if op == "~":
                    lhs, rhs = rhs, lhs
                std = est * sd_in[j] / sd_obs[i]
            elif kind == "beta":
                lhs, op, rhs = inner[i], "~", inner[j]
                if (rhs, lhs) in measured:
                    lhs, op, rhs = rhs, "=~", lhs
                std = est * sd_in[j] / sd_in[i]
            else:
                names, var = (inner, var_in) if kind == "psi" else (obs, var_obs)
                own = psi if kind == "psi" else theta
                lhs, op, rhs = names[i], "~~", names[j]
                if lhs in latent and rhs in latent and latent.index(rhs) < latent.index(lhs):
                    lhs, rhs = rhs, lhs
                # Variances as a share of the total; covariances as correlations of the
                # (residual) terms, as lavaan's std.all.
                std = est / var[i] if i == j else est / np.sqrt(own[i, i] * own[j, j])
            k = index.get(name)
            s = float(se[k]) if k is not None else math.nan
            rows.append({"lhs": lhs, "op": op, "rhs": rhs, "est": est, "se": s,
                         "z": est / s if k is not None and s > 0 else math.nan,
                         "p": float(2 * special.ndtr(-abs(est / s))) if k is not None and s > 0 else math.nan,
                         "std_all": float(std), "free": k is not None, "kind": kind, "i": i, "j": j})
    table = pd.DataFrame(rows)

    loadings = [{"factor": r.lhs, "indicator": r.rhs, "loading": r.std_all, "estimate": r.est, "se": r.se}
                for r in table[table.op == "=~"].itertuples()]
    r2 = {}
    for k, v in enumerate(obs):
        if np.any(lam[k] != 0) and not (v in inner and lam[k, inner.index(v)] == 1 and np.count_nonzero(lam[k]) == 1):
            r2[v] = float(1 - theta[k, k] / var_obs[k])
    for k, v in enumerate(inner):
        if np.any(beta[k] != 0):
            r2[v] = float(1 - psi[k, k] / var_in[k])
    pos = [inner.index(v) for v in latent]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = inner_cov[np.ix_(pos, pos)] / np.outer(sd_in[pos], sd_in[pos])
    factor_corr = {a: {b: float(corr[p, q]) for q, b in enumerate(latent)} for p, a in enumerate(latent)}

    # lavaan's checks for an improper solution, each named with its value.
    for k, v in enumerate(obs):
        if theta[k, k] < 0:
            notes.append(f"negative residual variance: {v} = {theta[k, k]:.3f} (Heywood case)")
    for k, v in enumerate(inner):
        if psi[k, k] < 0:
            what = "residual variance" if np.any(beta[k] != 0) else "variance"
            notes.append(f"negative {what}: {v} = {psi[k, k]:.3f}")
    for p, a in enumerate(latent):
        for q in range(p + 1, len(latent)):
            if abs(corr[p, q]) > 1:
                notes.append(f"latent correlation beyond ±1: {a} ~~ {latent[q]} = {corr[p, q]:.3f}")
    for item in loadings:
        if abs(item["loading"]) > 1:
            notes.append(f"standardised loading beyond 1: {item['factor']} =~ {item['indicator']} = {item['loading']:.3f}")
    if len(pos) > 1:
        lat_eig = np.linalg.eigvalsh(inner_cov[np.ix_(pos, pos)])
        if lat_eig.min() < -1e-10 * abs(lat_eig).max():
            notes.append("covariance matrix of the latent variables is not positive definite")
    # lavaan's order: loadings, regressions, then (co)variances of the observed and of the latent variables.
    rank = {"lambda": 0, "beta": 1, "theta": 2, "psi": 3}
    table = (table.assign(_r=table["kind"].map(rank), _l=[latent.index(v) if v in latent else -1 for v in table["lhs"]])
             .assign(_m=[latent.index(v) if v in latent else -1 for v in table["rhs"]])
             .sort_values(["_r", "_l", "_m", "i", "j"], kind="stable").drop(columns=["kind", "i", "j", "_r", "_l", "_m"]))
    return {"parameters": table.to_dict("records"), "loadings": loadings, "factor_correlations": factor_corr,
            "r2": r2, "implied": sigma, "notes": notes}


def fit_cfa(data: pd.DataFrame, model: str) -> dict:
    """Fit a CFA by maximum likelihood, as lavaan's defaults do, and return its fit and solution.

    Parameters
    ----------
    data : DataFrame
        One row per respondent; must hold every observed variable of ``model`` as a
        numeric column. Rows with a missing value in any of them are dropped (listwise).
    model : str
        lavaan-style syntax (``f =~ x1 + x2 + x3``, ``~~``, ``~``); the first loading of
        each factor is fixed at 1 unless the syntax says otherwise.

    Returns
    -------
    dict
        ``chi2, df, p, cfi, tli, rmsea, rmsea_ci_low, rmsea_ci_high, srmr, n``;
        ``loadings`` (a list of ``{factor, indicator, loading, estimate, se}``, ``loading``
        standardised as lavaan's std.all); ``factor_correlations`` ({factor: {factor: r}});
        ``r2`` ({variable: R²} for indicators and endogenous variables); ``parameters``
        (lavaan's parameter table: ``lhs, op, rhs, est, se, z, p, std_all, free``);
        ``converged``; ``note``: empty for a proper solution, else every problem by name:
        non-convergence, negative (residual) variances, latent correlations beyond ±1,
        standardised loadings beyond 1, a latent covariance matrix that is not positive
        definite, an information matrix that is singular; ``warning``: True when the note
        names one of these (not for a just-identified model's remark).

    Raises
    ------
    KeyError
        A variable of the model is not a column of ``data``.
    analysis.covariance.DataError
        The sample covariance matrix is not positive definite (too few rows, a constant
        variable, collinear variables), as lavaan refuses such data.

    Notes
    -----
    chi2 = N F_ML with F_ML = log|Sigma| + tr(S Sigma^-1) - log|S| - p and S the
    covariance with divisor N (lavaan's default likelihood). Variances are not bounded, so
    an improper solution shows as one (lavaan's default) and is named in ``note``. The
    estimates are found on standardised data and carried back to the data's units, so the
    fit indices and standardised estimates do not depend on the units of any variable.
    Standard errors from the expected information with N, as lavaan's
    ``se = "standard"``. CFI and TLI against the independence model; RMSEA with N, and its
    90% interval from the noncentral chi-square; SRMR as :func:`srmr`. A just-identified
    model (df = 0) fits perfectly by construction, so CFI, TLI and RMSEA are left NaN with
    a note.

    References
    ----------
    Rosseel, Y. (2012). lavaan: An R package for structural equation modeling. JSS 48(2).
    Lee, S.-Y., & Jennrich, R. I. (1979). A study of algorithms for covariance structure
    analysis with specific comparisons using factor analysis. Psychometrika, 44, 99-113.

    Examples
    --------
    >>> from semopy.examples import holzinger39
    >>> fit = fit_cfa(holzinger39.get_data(), holzinger39.get_model())
    >>> round(fit["chi2"], 3), fit["df"], round(fit["srmr"], 3), round(fit["factor_correlations"]["visual"]["textual"], 3)
    (85.306, 24, 0.065, 0.459)
    """
    import semopy  # heavy import: only when a model is fitted

    from analysis.covariance import check_data, complete_numeric

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sem = semopy.Model(model)
    except Exception as exc:  # semopy raises SyntaxError and others for bad syntax
        return _empty_fit(0, f"model syntax not understood: {exc}".replace("\n", " "))
    observed = list(sem.vars["observed"])
    missing = [v for v in observed if v not in data.columns]
    if missing:
        raise KeyError(f"variables not in the data: {', '.join(missing)}")
    frame = complete_numeric(data[observed])
    n, p = frame.shape
    check_data(frame)
    n_params = sum(param.active for param in sem.parameters.values())
    df = p * (p + 1) // 2 - n_params
    if df < 0:
        return _empty_fit(n, f"model not identified (df = {df})")
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            x, converged = _estimate(sem, frame)
            chi2 = n * max(_discrepancy(sem, x), 0.0)
            solution = _solution(sem, x, n, model)
    except (np.linalg.LinAlgError, ValueError) as exc:
        return _empty_fit(n, f"estimation failed: {exc}".replace("\n", " "))
    if not math.isfinite(chi2):
        return _empty_fit(n, "estimation failed: no start value gives a positive-definite implied covariance")

    fit = fit_indices(chi2, int(df), n, np.asarray(sem.mx_cov, float), solution["implied"], converged,
                      solution["notes"])
    return {**{key: fit[key] for key in FIT_KEYS}, "loadings": solution["loadings"],
            "factor_correlations": solution["factor_correlations"], "r2": solution["r2"],
            "parameters": solution["parameters"], "converged": bool(converged), "note": fit["note"],
            "warning": fit["warning"]}


def fit_indices(chi2: float, df: int, n: int, sample_cov: np.ndarray, implied: np.ndarray, converged: bool,
                improper: list[str]) -> dict:
    """lavaan's fit indices (:data:`FIT_KEYS`) and the note, from the ML chi2 of a fitted model.

    ``improper`` names what is wrong with the solution (negative variances and so on);
    with non-convergence it makes ``warning`` True. The indices are scale free: the
    covariance matrices may be in any units, as long as both are in the same ones.
    """
    chi2_base, df_base = _baseline_chi2(sample_cov, n)
    warns = [] if converged else ["did not converge: the estimates and fit are not at the ML optimum"]
    warns += improper
    notes = []
    if df == 0:
        notes.append("just identified (df = 0): no test of fit, CFI/TLI/RMSEA not informative")
        if chi2 > 1e-6:  # a proper just-identified solution reproduces S exactly
            warns.append(f"just identified yet chi2 = {chi2:.3f}: the model cannot reproduce the data "
                         "(for one factor: the signs of the correlations do not fit it)")
        cfi = tli = math.nan
    else:
        d_model, d_base = max(chi2 - df, 0.0), max(chi2_base - df_base, 0.0)
        denom = max(d_model, d_base)
        cfi = 1.0 - d_model / denom if denom > 0 else 1.0
        tli = (chi2_base / df_base - chi2 / df) / (chi2_base / df_base - 1.0)
    low, high = rmsea_ci(chi2, df, n)
    return {
        "chi2": chi2,
        "df": int(df),
        "p": float(special.chdtrc(df, chi2)) if df > 0 else math.nan,  # stats.chi2.sf
        "cfi": float(cfi),
        "tli": float(tli),
        "rmsea": rmsea(chi2, df, n),
        "rmsea_ci_low": low,
        "rmsea_ci_high": high,
        "srmr": srmr(sample_cov, implied),
        "n": int(n),
        "note": "; ".join(warns + notes),
        "warning": bool(warns),
    }


# --------------------------------------------------------------------------- one-factor models
#
# `vp analyze` fits a one-factor model to every group's keyed items per dimension: 84 on the
# release, about ten times as many at ten times the items. Building a semopy model costs
# tens of milliseconds; a plain ``f =~ a + b + c ...`` needs no model builder: with
# loadings lambda and residual variances Theta (unbounded), Sigma = lambda lambda' + Theta,
# and the gradient, expected information and Hessian of F_ML have closed forms. ML is
# scale free, so the model is fitted to the correlation matrix. lavaan's parametrisation
# (the first loading fixed at 1, the factor variance free) is the same model wherever the
# first loading is not 0: phi = lambda_1^2, v = lambda / lambda_1; the estimates are carried
# to it and to the data's units for the notes. The stopping rule is that of
# :func:`_fisher_scoring` (the Newton decrement does not depend on the parametrisation);
# whatever this route does not settle (no convergence, a singular information matrix)
# goes the general way.

_NAME = r"[A-Za-z_]\w*"
_ONE_FACTOR = re.compile(rf"\s*({_NAME})\s*=~\s*({_NAME}(?:\s*\+\s*{_NAME})*)\s*")


def _plain_one_factor(model: str) -> tuple[str, list[str]] | None:
    """(factor, indicators) of a model that is one ``f =~ a + b + c ...`` line and nothing else."""
    match = _ONE_FACTOR.fullmatch(model)
    if match is None:
        return None
    factor, items = match.group(1), [t.strip() for t in match.group(2).split("+")]
    if len(items) < 3 or len(set(items)) < len(items) or factor in items:
        return None
    return factor, items


def _one_factor_discrepancy(x: np.ndarray, r: np.ndarray, logdet_r: float) -> float:
    """F_ML at x = (lambda, Theta); inf where Sigma is not positive definite."""
    p = len(r)
    sigma = np.outer(x[:p], x[:p])
    sigma[np.diag_indices(p)] += x[p:]
    try:
        chol = np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        return math.inf
    inv_chol = np.linalg.inv(chol)
    return float(2 * np.log(np.diag(chol)).sum() + np.einsum("ij,ij->", inv_chol @ r, inv_chol) - logdet_r - p)


def _one_factor_derivatives(x: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient of F_ML, expected information and Hessian at x = (lambda, Theta), in closed form.

    With V = Sigma^-1, P = V S V, W = V - P: the gradient is tr(W dSigma_a), the expected
    information tr(V dSigma_a V dSigma_b), the Hessian tr(W dSigma_ab) - tr(V dSigma_a V dSigma_b)
    + 2 tr(V dSigma_a P dSigma_b). dSigma/dlambda_i = e_i lambda' + lambda e_i' and
    dSigma/dtheta_i = e_i e_i', so every trace reduces to entries of V, P and W and to
    a = V lambda, b = P lambda, c = lambda'a, d = lambda'b: O(p^2) work.
    """
    p = len(r)
    lam = x[:p]
    sigma = np.outer(lam, lam)
    sigma[np.diag_indices(p)] += x[p:]
    inv = np.linalg.inv(sigma)
    pm = inv @ r @ inv
    weight = inv - pm
    a, b, wl = inv @ lam, pm @ lam, weight @ lam
    c, d = float(lam @ a), float(lam @ b)
    grad = np.concatenate((2 * wl, np.diag(weight)))

    def blocks(m, ml, mll):  # tr(V dSigma_a M dSigma_b), M = V (ml = a, mll = c) or M = P (b, d)
        out = np.empty((2 * p, 2 * p))
        out[:p, :p] = np.outer(a, ml) + np.outer(ml, a) + mll * inv + c * m
        out[:p, p:] = inv * ml[None, :] + m * a[None, :]
        out[p:, :p] = out[:p, p:].T
        out[p:, p:] = inv * m
        return out

    info = blocks(inv, a, c)
    hess = 2 * blocks(pm, b, d) - info
    hess[:p, :p] += 2 * weight
    return grad, info, hess


def _one_factor_ml(r: np.ndarray, max_iter: int = 200) -> tuple[np.ndarray, bool]:
    """ML (lambda, Theta) from the principal-axis start: Newton steps (Fisher scoring where the
    Hessian is not positive definite), halved until F does not rise.

    Stops as :func:`_fisher_scoring` does, on the Newton decrement with the expected
    information: below 1e-16, or below 1e-8 when no step lowers F any more.
    """
    logdet_r = np.linalg.slogdet(r)[1]
    values, vectors = np.linalg.eigh(r)
    lam = vectors[:, -1] * np.sqrt(max(values[-1], 1e-6))
    x = np.concatenate((lam, np.clip(1 - lam**2, 0.05, None)))
    fx = _one_factor_discrepancy(x, r, logdet_r)
    for _ in range(max_iter):
        grad, info, hess = _one_factor_derivatives(x, r)
        fisher = np.linalg.lstsq(info, grad, rcond=None)[0]
        decrement = float(grad @ fisher)
        if not math.isfinite(decrement):
            return x, False
        if decrement < 1e-16:
            return x, True
        try:
            np.linalg.cholesky(hess)
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            step = fisher
        t = 1.0
        while t > 1e-8:
            candidate = x - t * step
            fc = _one_factor_discrepancy(candidate, r, logdet_r)
            if fc <= fx:
                break
            t /= 2
        else:
            return x, decrement < 1e-8
        x, fx = candidate, fc
    return x, False


def one_factor_ml_correlations(r: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """ML one-factor solution of a correlation matrix: (loadings, uniquenesses), or None where it does not settle.

    The closed-form route of :func:`one_factor_fit_indices` (Newton on F_ML, variances
    unbounded). None when it does not converge, the information matrix is singular or
    the first loading is 0; the caller then takes a general optimiser. Loadings are
    signed so that they sum to a non-negative number.
    """
    p = len(r)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            x, converged = _one_factor_ml(np.asarray(r, dtype=float))
            if not converged or not np.all(np.isfinite(x)):
                return None
            _, info, _ = _one_factor_derivatives(x, r)
            scale = np.sqrt(np.clip(np.diag(info), 1e-300, None))
            eig = np.linalg.eigvalsh(info / np.outer(scale, scale))
        except (np.linalg.LinAlgError, ValueError):
            return None
    if eig.min() <= 1e-10 * eig.max():
        return None
    lam, theta = x[:p], x[p:]
    return (-lam if lam.sum() < 0 else lam), theta


def one_factor_fit_indices(data: pd.DataFrame, model: str) -> dict | None:
    """:func:`fit_cfa`'s fit indices, note and warning for a plain one-factor model, without semopy.

    Returns None when the model is not one ``f =~ a + b + c ...`` line of at least three
    indicators that are all columns of ``data``, or when the fit does not settle
    (no convergence, a singular information matrix): :func:`fit_cfa` then decides. Raises
    :class:`analysis.covariance.DataError` as :func:`fit_cfa` does. The figures are those
    of :func:`fit_cfa` to rounding error (``tests/test_cfa.py``): the same likelihood, the same
    optimum, the same checks (negative residual or factor variances, standardised loadings
    beyond 1) with the same wording, in the data's units.
    """
    from analysis.covariance import check_data, complete_numeric

    parsed = _plain_one_factor(model)
    if parsed is None or not set(parsed[1]) <= set(data.columns):
        return None
    factor, items = parsed
    observed = sorted(items)  # semopy's (so fit_cfa's) order of the observed variables
    frame = complete_numeric(data[observed])
    n, p = frame.shape
    check_data(frame)
    values = frame.to_numpy()[:, [observed.index(name) for name in items]]  # the marker first
    sd = values.std(axis=0)
    z = (values - values.mean(axis=0)) / sd
    r = z.T @ z / n
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            x, converged = _one_factor_ml(r)
            lam, theta = x[:p], x[p:]
            if not converged or abs(lam[0]) < 1e-6 * np.abs(lam).max():  # lavaan's marker would not load
                return None
            sigma = np.outer(lam, lam) + np.diag(theta)
            chi2 = n * max(_one_factor_discrepancy(x, r, np.linalg.slogdet(r)[1]), 0.0)
            _, info, _ = _one_factor_derivatives(x, r)
            scale = np.sqrt(np.clip(np.diag(info), 1e-300, None))
            eig = np.linalg.eigvalsh(info / np.outer(scale, scale))
        except (np.linalg.LinAlgError, ValueError):
            return None
        if not math.isfinite(chi2) or eig.min() <= 1e-10 * eig.max():
            return None
        std_loadings = np.sign(lam[0]) * lam / np.sqrt(np.diag(sigma))  # the marker's loading positive, as lavaan's
    # The checks of _solution, in its order and units: residual variances in the observed
    # variables' order, then standardised loadings in the syntax's order. (The factor's
    # variance, lambda_1^2, is positive here.)
    position = {name: k for k, name in enumerate(items)}
    notes = [f"negative residual variance: {name} = {theta[position[name]] * sd[position[name]] ** 2:.3f} (Heywood case)"
             for name in observed if theta[position[name]] < 0]
    notes += [f"standardised loading beyond 1: {factor} =~ {name} = {std:.3f}"
              for name, std in zip(items, std_loadings) if abs(std) > 1]
    return fit_indices(chi2, p * (p + 1) // 2 - 2 * p, n, r, sigma, True, notes)


def cfa_row(name: str, data: pd.DataFrame, model: str, **labels) -> dict:
    """One flat row for ``cfa_fit.csv``: ``model`` name, any labels, the fit indices and a note.

    Bad models, unusable data and failed fits give a row of NaNs with the reason in
    ``note``, never an exception, so one unfit group does not stop a whole analysis.
    """
    from analysis.covariance import DataError

    try:
        fit = one_factor_fit_indices(data, model)  # a plain one-factor model: no model builder needed
        if fit is None:
            fit = fit_cfa(data, model)
    except KeyError as exc:
        fit = _empty_fit(0, str(exc).strip("'\""))
    except DataError as exc:
        fit = _empty_fit(len(data), str(exc))
    row = {"model": name, **labels}
    row.update({key: fit[key] for key in FIT_KEYS})
    row["n_indicators"] = sum(len(v) for v in measurement_part(model).values())
    row["note"] = fit["note"]
    row["warning"] = fit["warning"]  # the note names an improper solution or why there is none
    return row


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="CSV with a header row, one column per observed variable")
    parser.add_argument(
        "--model", required=True, help="lavaan-style model syntax, or the path of a file that holds it"
    )
    parser.add_argument("--out", help="write the fit indices, the parameter table, factor correlations and R² to this JSON file")


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

    from valueportrait.files import read_numeric_csv

    try:
        observed = list(semopy.Model(model).vars["observed"])
    except Exception as exc:
        raise InputError(f"--model: syntax not understood: {str(exc).strip()}") from None
    return read_numeric_csv(path_text, observed, absent="named in the model but absent from the CSV")


def _num(x, digits: int = 3) -> str:
    return "NA" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _format(fit: dict) -> str:
    """The printout: fit indices, then the solution as lavaan's summary(standardized = TRUE) shows it."""
    num = _num
    lines = [
        f"n        {fit['n']}",
        f"chi2     {num(fit['chi2'])}  df {fit['df']}  p {'NA' if math.isnan(fit['p']) else format(fit['p'], '.3g')}",
        f"CFI      {num(fit['cfi'])}",
        f"TLI      {num(fit['tli'])}",
        f"RMSEA    {num(fit['rmsea'])}  90% CI [{num(fit['rmsea_ci_low'])}, {num(fit['rmsea_ci_high'])}]",
        f"SRMR     {num(fit['srmr'])}",
    ]
    params = pd.DataFrame(fit.get("parameters") or [])
    if len(params):
        width = max(len(f"{r.lhs} {r.op} {r.rhs}") for r in params.itertuples()) + 2
        head = f"  {'':<{width}}{'estimate':>9}{'SE':>8}{'z':>8}{'std.all':>9}"
        sections = [("loadings", params.op == "=~"), ("regressions", params.op == "~"),
                    ("covariances", (params.op == "~~") & (params.lhs != params.rhs)),
                    ("variances (residual variances of indicators)", (params.op == "~~") & (params.lhs == params.rhs))]
        for title, mask in sections:
            if not mask.any():
                continue
            lines += [f"{title}:", head]
            for r in params[mask].itertuples():
                label = f"{r.lhs} {r.op} {r.rhs}"
                lines.append(f"  {label:<{width}}{num(r.est):>9}{num(r.se):>8}{num(r.z, 2):>8}{num(r.std_all):>9}")
    if fit.get("factor_correlations") and len(fit["factor_correlations"]) > 1:
        names = list(fit["factor_correlations"])
        width = max(len(n) for n in names) + 2
        lines.append("factor correlations:")
        lines.append("  " + " " * width + "".join(f"{n[:8]:>9}" for n in names))
        for a in names:
            lines.append(f"  {a:<{width}}" + "".join(f"{num(fit['factor_correlations'][a][b]):>9}" for b in names))
    if fit.get("r2"):
        lines.append("R-squared:")
        lines += [f"  {v:<12}{num(r2)}" for v, r2 in fit["r2"].items()]
    if fit.get("note"):
        lines.append(f"note: {fit['note']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from analysis.covariance import DataError

    model = _read_model(args.model)
    data = _read_data(args.data, model)
    try:
        fit = fit_cfa(data, model)
    except DataError as exc:
        raise InputError(f"{args.data}: {exc}") from None
    print(_format(fit))
    if args.out:
        write_json_atomic({**fit, "data": str(args.data), "model": model}, args.out)
        print(f"wrote {args.out}")
    # A model that could not be estimated is a failed run, though not bad input.
    return 1 if math.isnan(fit["chi2"]) else 0
