"""How many raters an item needs for its correlation with a value to be detected.

Prints the number of raters needed for a two-sided test of a correlation rho at level
alpha to reach the given power, by the method of R's ``pwr.r.test`` (Cohen 1988): e.g.
``vp power --rho 0.3 --alpha 0.05 --power 0.8`` gives 84.07, so 85 raters.
"""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import pandas as pd

from valueportrait import options as opt
from valueportrait.errors import InputError


def _check_level(alpha: float, power: float | None = None) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha = {alpha}: must lie strictly between 0 and 1")
    if power is not None and not alpha < power < 1:
        raise ValueError(f"power = {power}: must lie strictly between alpha ({alpha}) and 1")


def _power_corr(**kwargs) -> float:
    import pingouin as pg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pingouin warns and returns NaN for n <= 4
        return float(pg.power_corr(**kwargs))


def achieved_power(rho, n, alpha: float = 0.05):
    """Power of the two-sided test of a correlation, as R's ``pwr.r.test`` (pingouin's ``power_corr``).

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
    # One call per (rho, n): groups, not item-dimension pairs, so a handful.
    power = np.array([_power_corr(r=r, n=m, alpha=alpha) if m > 4 else math.nan
                      for r, m in zip(rho.ravel(), n.ravel())]).reshape(rho.shape)
    return power if power.ndim else float(power)


#: Beyond this many raters the answer is reported as infinite (no study could have them).
MAX_RATERS = 1e15


def raters_needed(rho: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Raters needed for the two-sided test of ``rho`` to reach ``power`` (not rounded up; pingouin).

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
    n = _power_corr(r=rho, power=power, alpha=alpha)
    if math.isnan(n):  # pingouin searches up to 1e9 raters: a tiny rho needs more (1e-5: about 8e10)
        n = _beyond_a_billion(rho, alpha, power)
    return n


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
    """The smallest correlation that ``n`` raters detect with the given power (two-sided; pingouin).

    NaN when n <= 4: too few raters for the approximation.
    """
    _check_level(alpha, power)
    if n <= 4:
        return math.nan
    return _power_corr(n=n, power=power, alpha=alpha)


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
