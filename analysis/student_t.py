"""Student's t for whole degrees of freedom, without importing scipy: for the report.

The report needs two t figures: the quantile behind a mean's confidence interval and the
p-value of one Spearman correlation over the ten values. Importing ``scipy.special`` for them
costs its main process 0.12-0.25 s, a tenth of the command; everything else in the report
that needs scipy is computed by ``vp analyze``, which imports it anyway.

For whole ``df`` the central probability A(t) = P(|T| < t) is a finite sum (Abramowitz &
Stegun 26.7.3 and 26.7.4, with theta = atan(t / sqrt(df))):

* df odd:  A = (2/pi) [theta + sin(theta) (cos(theta) + 2/3 cos^3(theta) + ...
  + (2*4*...*(df-3)) / (1*3*...*(df-2)) cos^(df-2)(theta))]  (for df = 1 only the theta term);
* df even: A = sin(theta) [1 + 1/2 cos^2(theta) + (1*3)/(2*4) cos^4(theta) + ...
  + (1*3*...*(df-3)) / (2*4*...*(df-2)) cos^(df-2)(theta)].

The quantile solves A(t) = 2q - 1 by Newton's method from the normal quantile: A is
concave in t > 0, so the steps rise to the root from below. Both agree with
``scipy.stats.t`` to about 1e-12 (``tests/test_student_t.py``); a p-value below about 1e-10 has fewer
correct digits (it is 1 - A).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def _whole(df) -> int:
    k = int(df)
    if k != df or k < 1:
        raise ValueError(f"degrees of freedom must be a whole number >= 1, got {df!r}")
    return k


def central(t: float, df) -> float:
    """P(|T| < |t|) for Student's t with ``df`` (whole) degrees of freedom."""
    k = _whole(df)
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 1.0
    theta = math.atan(abs(t) / math.sqrt(k))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if k % 2:  # odd
        if k == 1:
            return 2 * theta / math.pi
        j = np.arange(1, (k - 1) // 2)  # terms 1..(k-3)/2 after cos(theta)
        terms = np.cumprod((2 * j) / (2 * j + 1) * c2)  # (2*4*..*2j)/(3*5*..*(2j+1)) cos^(2j)
        return 2 / math.pi * (theta + s * math.cos(theta) * (1 + float(terms.sum())))
    j = np.arange(1, k // 2)  # terms 1..(k-2)/2 after the leading 1
    terms = np.cumprod((2 * j - 1) / (2 * j) * c2)
    return s * (1 + float(terms.sum()))


def two_sided_p(t: float, df) -> float:
    """2 P(T > |t|): the two-sided p-value of t with ``df`` (whole) degrees of freedom."""
    return 1 - central(t, df)


def _density(t: float, k: int) -> float:
    return math.exp(math.lgamma((k + 1) / 2) - math.lgamma(k / 2) - 0.5 * math.log(k * math.pi)
                    - (k + 1) / 2 * math.log1p(t * t / k))


def quantile(q: float, df) -> float:
    """The t with P(T <= t) = q, for ``df`` (whole) degrees of freedom (``scipy.stats.t.ppf``)."""
    k = _whole(df)
    if not 0 < q < 1:
        return math.nan if not 0 <= q <= 1 else (math.inf if q == 1 else -math.inf)
    if q == 0.5:
        return 0.0
    target = abs(2 * q - 1)
    t = abs(NormalDist().inv_cdf(q))  # below the root: t's tails are heavier than the normal's
    for _ in range(100):
        step = (target - central(t, k)) / (2 * _density(t, k))
        t += step
        if abs(step) <= 1e-14 * max(1.0, t):
            break
    return math.copysign(t, q - 0.5)
