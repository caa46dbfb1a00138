"""How many raters an item needs for its correlation with a value to be detected.

Prints the number of raters needed for a two-sided test of a correlation rho at level
alpha to reach the given power, by the method of R's ``pwr.r.test`` (Cohen 1988): e.g.
``vp power --rho 0.3 --alpha 0.05 --power 0.8`` gives 84.07, so 85 raters.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
from scipy import special

from valueportrait import options as opt
from valueportrait.errors import InputError


def _check_level(alpha: float, power: float | None = None) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha = {alpha}: must lie strictly between 0 and 1")
    if power is not None and not alpha < power < 1:
        raise ValueError(f"power = {power}: must lie strictly between alpha ({alpha}) and 1")


def _pwr_r_power(rho, n, alpha: float):
    """pwr.r.test's two-sided power, vectorised (the formula in :func:`achieved_power`'s notes).

    The same formula as pingouin's ``power_corr``, written with scipy.special: pingouin's
    import (matplotlib and seaborn with it) costs about a second, in a table of a dozen
    numbers. ``tests/test_power.py`` checks it against pwr.r.test's printed figures and
    against pingouin on a grid.
    """
    dof = n - 2
    t = special.stdtrit(dof, 1 - alpha / 2)
    z_crit = np.arctanh(np.sqrt(t**2 / (t**2 + dof)))
    z_rho = np.arctanh(rho) + rho / (2 * (n - 1))
    return special.ndtr((z_rho - z_crit) * np.sqrt(n - 3)) + special.ndtr((-z_rho - z_crit) * np.sqrt(n - 3))


def _solve(func, lower: float, upper: float) -> float:
    """The root of ``func`` in [lower, upper] by Brent's method (hyperbolic), as pingouin solves for n and r."""
    from scipy.optimize import brenth

    return float(brenth(func, lower, upper))


def achieved_power(rho, n, alpha: float = 0.05):
    """Power of the two-sided test of a correlation, as R's ``pwr.r.test`` and pingouin's ``power_corr``.

    Parameters
    ----------
    rho : float or array_like
        True correlation in [-1, 1] (its sign does not matter for a two-sided test).
    n : float or array_like
        Number of raters (pairs); broadcast against ``rho``.
    alpha : float
        Two-sided significance level.

    Returns
    -------
    float or ndarray
        Power in [0, 1]; NaN where n <= 4 (too few raters for the approximation).

    Notes
    -----
    The critical correlation comes from the t test, r_c = sqrt(t^2 / (t^2 + n - 2)) with
    t = t_{1 - alpha/2, n - 2}; the sampling distribution of r is approximated by Fisher's z
    with the bias term rho / (2 (n - 1)):

        z_rho = atanh(rho) + rho / (2 (n - 1)),  z_c = atanh(r_c)
        power = Phi((z_rho - z_c) sqrt(n - 3)) + Phi((-z_rho - z_c) sqrt(n - 3))

    References
    ----------
    Cohen, J. (1988). Statistical power analysis for the behavioral sciences (2nd ed.).
    Champely, S. (2020). pwr: Basic functions for power analysis. R package, ``pwr.r.test``.

    Examples
    --------
    >>> round(float(achieved_power(0.3, 84.07364, 0.05)), 4)
    0.8
    """
    _check_level(alpha)
    rho, n = np.broadcast_arrays(np.asarray(rho, dtype=float), np.asarray(n, dtype=float))
    if np.any(np.abs(rho) > 1):
        raise ValueError(f"rho = {rho[np.abs(rho) > 1].flat[0]}: a correlation lies in [-1, 1]")
    with np.errstate(invalid="ignore", divide="ignore"):
        power = np.where(n > 4, _pwr_r_power(np.abs(rho), n, alpha), np.nan)
    return power if power.ndim else float(power)


#: Beyond this many raters the answer is reported as infinite (no study could have them).
MAX_RATERS = 1e15


def raters_needed(rho: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Raters needed for the two-sided test of ``rho`` to reach ``power`` (not rounded up; as pingouin's ``power_corr``).

    Raises ``ValueError`` for rho = 0 (no number of raters detects it), |rho| >= 1, or
    alpha/power out of range.

    Examples
    --------
    >>> round(raters_needed(0.3, 0.05, 0.8), 2)
    84.07
    """
    rho = abs(float(rho))
    _check_level(alpha, power)
    if rho == 0:
        raise ValueError("rho = 0: no number of raters detects a zero correlation")
    if rho >= 1:
        raise ValueError(f"rho = {rho}: must lie strictly between -1 and 1")
    lowest = 4 + 1e-9  # the approximation needs n > 4 (pingouin's own limit)
    if achieved_power(rho, lowest + 1e-9, alpha) >= power:
        return lowest
    if achieved_power(rho, 1e9, alpha) < power:  # past pingouin's search range (1e-5: about 8e10 raters)
        return _beyond_a_billion(rho, alpha, power)
    return _solve(lambda n: _pwr_r_power(rho, n, alpha) - power, 4 + 1e-10, 1e9)


def _beyond_a_billion(rho: float, alpha: float, power: float) -> float:
    """raters_needed past pingouin's search range: the same power function, a wider bracket (inf past MAX_RATERS)."""
    from scipy import optimize

    upper = 1e9
    while achieved_power(rho, upper, alpha) < power:
        if upper >= MAX_RATERS:
            return math.inf
        upper *= 100
    return float(optimize.brentq(lambda n: achieved_power(rho, n, alpha) - power, 1e9 / 2, upper, xtol=1e-6))


def detectable_rho(n: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest correlation that ``n`` raters detect with the given power (two-sided; as pingouin's ``power_corr``).

    NaN when n <= 4: too few raters for the approximation.
    """
    _check_level(alpha, power)
    if n <= 4:
        return math.nan
    return _solve(lambda r: _pwr_r_power(r, n, alpha) - power, 1e-10, 1 - 1e-10)


def power_table(group_sizes: dict, rho: float = 0.3, alpha: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """Per group: its raters and the power they had to detect ``rho`` (``power.csv``).

    Parameters
    ----------
    group_sizes : dict
        ``{group_id: number of raters}`` (e.g. the included raters of each group).
    rho, alpha : float
        The correlation to detect (the keying threshold) and the two-sided level.
    power : float
        Target power for ``raters_needed`` and ``detectable_rho``.

    Returns
    -------
    DataFrame
        ``group_id, n, rho, alpha, achieved_power, raters_needed, detectable_rho``: the
        power the group had, the raters it would have needed (rounded up), and the
        smallest rho it could detect with the target power.
    """
    groups = list(group_sizes)
    n = np.array([group_sizes[g] for g in groups], dtype=float)
    # rho = 0 (a keying threshold of 0): no number of raters detects it, so no figure.
    needed = raters_needed(rho, alpha, power) if rho != 0 else math.inf
    needed = math.ceil(needed) if math.isfinite(needed) else math.nan
    return pd.DataFrame(
        {
            "group_id": groups,
            "n": n.astype(int),
            "rho": rho,
            "alpha": alpha,
            "achieved_power": achieved_power(rho, n, alpha) if len(n) else np.array([]),
            "raters_needed": needed,
            "detectable_rho": [detectable_rho(x, alpha, power) for x in n],
        }
    )


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rho", type=opt.NumberType(-1, 1, low_open=True, high_open=True, not_zero=True), default=0.3,
                        help="the correlation to detect")
    parser.add_argument("--alpha", type=opt.probability(), default=0.05, help="two-sided significance level")
    parser.add_argument("--power", type=opt.probability(), default=0.8, help="the power wanted")


def run(args: argparse.Namespace) -> int:
    if not (0 < abs(args.rho) < 1):
        raise InputError(f"--rho: {args.rho}: must lie strictly between -1 and 1 and not be 0")
    if not (0 < args.alpha < 1):
        raise InputError(f"--alpha: {args.alpha}: must lie strictly between 0 and 1")
    if not (args.alpha < args.power < 1):
        raise InputError(f"--power: {args.power}: must lie strictly between alpha ({args.alpha}) and 1")
    n = raters_needed(args.rho, args.alpha, args.power)
    if not math.isfinite(n):
        print(f"raters needed to detect rho = {args.rho:g} (two-sided alpha = {args.alpha:g}, power = {args.power:g}): "
              f"more than {MAX_RATERS:.0e}")
        return 0
    print(
        f"raters needed to detect rho = {args.rho:g} (two-sided alpha = {args.alpha:g}, "
        f"power = {args.power:g}): {n:.2f} -> {math.ceil(n)} raters"
    )
    return 0
