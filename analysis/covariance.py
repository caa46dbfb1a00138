"""Can a data matrix carry a covariance-based model (CFA, EFA, omega)?

Maximum likelihood needs the sample covariance matrix to be positive definite: more
complete rows than variables, no constant variable and no variable that is an exact
linear combination of others. lavaan refuses such data ("sample covariance matrix is not
positive-definite"); semopy would quietly replace it by a nearby matrix and report a fit
that means nothing. :func:`check_data` refuses it with a message that names the cause.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: An eigenvalue of the correlation matrix at or below this is read as zero: the
#: variables are linearly dependent up to rounding (a sum of items, a copy, a rescaling).
SINGULAR_EIGENVALUE = 1e-10


class DataError(ValueError):
    """The data cannot carry the model: too few rows, a constant variable, collinear variables."""


def _term(coef: float, name: str) -> str:
    return f"{abs(coef):.3g}*{name}"


def linear_dependencies(frame: pd.DataFrame, tol: float = SINGULAR_EIGENVALUE, limit: int = 3) -> list[str]:
    """Exact linear dependencies among the columns, written as equations in the data's units.

    Each near-zero eigenvalue of the correlation matrix gives one dependency: with v its
    eigenvector (in standard units), sum_i v_i z_i = 0, i.e. sum_i (v_i / sd_i) x_i is
    constant. The variable with the largest |v_i| is written as the combination of the
    others, e.g. ``x10 = 1*x1 + 1*x2 (+ a constant)``. Columns must not be constant.

    Examples
    --------
    >>> x = pd.DataFrame({"a": [1., 2, 4, 3], "b": [2., 1, 0, 5], "c": [0., 0, 1, 1]})
    >>> linear_dependencies(x.assign(d=x.a + 2 * x.b))
    ['d = 1*a + 2*b (+ a constant)']
    """
    values = frame.to_numpy(float)
    sd = values.std(axis=0)
    z = (values - values.mean(axis=0)) / sd
    corr = z.T @ z / len(z)
    eigval, eigvec = np.linalg.eigh(corr)
    out = []
    for k in np.flatnonzero(eigval <= tol)[:limit]:
        v = eigvec[:, k]
        lead = int(np.argmax(np.abs(v)))
        raw = v / sd  # coefficients on the data's own scale
        terms = []
        for i in np.flatnonzero(np.abs(v) > 1e-6 * np.abs(v[lead])):
            if i == lead:
                continue
            coef = -raw[i] / raw[lead]
            sign = "- " if coef < 0 else ("+ " if terms else "")
            terms.append(sign + _term(coef, str(frame.columns[i])))
        rhs = " ".join(terms) if terms else "0"
        out.append(f"{frame.columns[lead]} = {rhs} (+ a constant)")
    return out


def complete_numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """The complete rows of ``frame`` as floats; a value that is not a number counts as missing.

    Frames that are numeric already (as the analysis builds them) skip the per-column
    ``pd.to_numeric``, which costs about a millisecond a call and runs once per scale and model.
    """
    if not all(pd.api.types.is_numeric_dtype(t) for t in frame.dtypes):
        frame = frame.apply(pd.to_numeric, errors="coerce")
    return frame.dropna().astype(float)


def check_data(frame: pd.DataFrame, what: str = "sample covariance matrix") -> None:
    """Raise :class:`DataError` unless ``frame`` (complete rows x variables) has a positive-definite covariance.

    The message says which of the causes it is: too few rows, constant variables (named),
    or variables that are exact linear combinations of others (the equation).
    """
    n, p = frame.shape
    if n < 2:
        raise DataError(f"{n} complete rows: nothing to estimate a covariance from")
    constant = [str(c) for c, s in zip(frame.columns, frame.to_numpy(float).std(axis=0)) if s == 0]
    if constant:
        raise DataError(f"constant variables (no variance): {', '.join(constant)}")
    if n <= p:
        raise DataError(f"{n} complete rows for {p} variables: the {what} is singular (needs more rows than variables)")
    deps = linear_dependencies(frame)
    if deps:
        raise DataError(f"the {what} is not positive definite, variables are collinear: {'; '.join(deps)}")
