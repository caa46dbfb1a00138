"""Place each item on Schwartz's value circle: the structural summary method.

An item that measures a motivation should correlate most with the value at its place on
the circle and less and less with values further round, down to the opposite side: its
ten correlations, in circle order, follow a cosine. Fitting that cosine gives the item's
angle on the circle (its angular displacement), how strongly it is tied to the circle
(amplitude), its general pull on all values (elevation), and how well a cosine describes
it at all (R^2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Schwartz's circle, in order (DESIGN.md); angles run counter-clockwise from Universalism.
CIRCLE: tuple[str, ...] = (
    "Universalism", "Benevolence", "Tradition", "Conformity", "Security",
    "Power", "Achievement", "Hedonism", "Stimulation", "Self_Direction",
)  # fmt: skip
COLUMNS = ["elevation", "amplitude", "displacement", "r_squared", "nearest_value", "prototypical"]


def value_angles(shared_wedge: bool = False) -> pd.Series:
    """Angle (degrees) of each value on the circle.

    Parameters
    ----------
    shared_wedge : bool
        False (default): ten equally spaced values, 36 degrees apart, Universalism at 0.
        True: Tradition and Conformity share one wedge (Schwartz 1992's picture, Tradition
        outside Conformity), so nine positions 40 degrees apart and both at 80.
    """
    if not shared_wedge:
        return pd.Series(np.arange(10) * 36.0, index=list(CIRCLE))
    slots = [0, 1, 2, 2, 3, 4, 5, 6, 7, 8]
    return pd.Series(np.array(slots) * 40.0, index=list(CIRCLE))


def cosine_r_squared(r: np.ndarray, angles_deg) -> np.ndarray:
    """R^2 of the cosine fit e + a cos(theta - delta) to correlations `r` (..., values), vectorised.

    The fit is linear in (e, b1, b2) with the design [1, cos theta, sin theta], so the fitted
    values are ``r @ H`` with H the design's projection matrix, and
    R^2 = 1 - SS_res / SS_tot over the last axis. Works on any leading shape (items,
    permutations x items, ...); NaN where a row has a missing value or no variation.

    Examples
    --------
    >>> theta = np.arange(10) * 36.0
    >>> round(float(cosine_r_squared(0.2 * np.cos(np.deg2rad(theta - 72.0)), theta)), 6)
    1.0
    """
    theta = np.deg2rad(np.asarray(angles_deg, dtype=float))
    design = np.column_stack([np.ones_like(theta), np.cos(theta), np.sin(theta)])
    hat = design @ np.linalg.pinv(design)          # values x values, symmetric
    r = np.asarray(r, dtype=float)
    resid = r - r @ hat
    dev = r - r.mean(axis=-1, keepdims=True)
    ss_res, ss_tot = (resid * resid).sum(axis=-1), (dev * dev).sum(axis=-1)
    # A flat profile has no variation for a cosine to explain: R^2 does not exist. "Flat"
    # up to rounding: the spread is a few ulps of the values' own size, never exactly 0.
    flat = ss_tot <= (64 * np.finfo(float).eps) ** 2 * np.maximum((r * r).sum(axis=-1), np.finfo(float).tiny)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(flat, np.nan, 1 - ss_res / ss_tot)


def structural_summary(
    correlations: pd.DataFrame,
    angles: pd.Series | None = None,
    shared_wedge: bool = False,
    min_r2: float = 0.7,
) -> pd.DataFrame:
    """Fit r(theta) = e + a cos(theta - delta) to every item's value correlations at once.

    Parameters
    ----------
    correlations : DataFrame
        Items x values: each row an item's correlations with the values (columns named as
        in :data:`CIRCLE`; any order, extra columns ignored). Rows with a missing value
        are returned as NaN.
    angles : Series, optional
        Value -> angle in degrees; default :func:`value_angles` (``shared_wedge``).
    shared_wedge : bool
        Passed to :func:`value_angles` when ``angles`` is not given.
    min_r2 : float
        An item is ``prototypical`` (readable as a point on the circle) when its R^2
        reaches this; .70 is the usual rule (Zimmermann & Wright 2017). Read it together
        with the amplitude: a flat profile can fit a cosine of amplitude near 0.

    Returns
    -------
    DataFrame
        Indexed like ``correlations``: ``elevation, amplitude, displacement`` (degrees in
        [0, 360)), ``r_squared`` (NaN for a flat profile: nothing to explain), ``nearest_value`` (the value whose angle is closest to
        the displacement) and ``prototypical``.

    Notes
    -----
    Writing a cos(theta - delta) = b1 cos(theta) + b2 sin(theta) makes the model linear:
    one least-squares solve with the design [1, cos theta, sin theta] and all items as
    right-hand sides. Then e = b0, a = sqrt(b1^2 + b2^2), delta = atan2(b2, b1), and
    R^2 = 1 - SS_res / SS_tot over the ten values. With equally spaced angles the fit is
    the discrete Fourier fundamental: e is the mean, b1 = (2/k) sum r cos theta.

    References
    ----------
    Gurtman, M. B. (1992). Construct validity of interpersonal personality measures: the
    interpersonal circumplex as a nomological net. JPSP, 63, 105-118.
    Zimmermann, J., & Wright, A. G. C. (2017). Beyond description in interpersonal
    construct validation: methodological advances in the circumplex structural summary
    approach. Assessment, 24(1), 3-23.

    Examples
    --------
    >>> theta = np.deg2rad(value_angles())
    >>> r = pd.DataFrame([0.1 + 0.3 * np.cos(theta - np.pi)], columns=CIRCLE)
    >>> fit = structural_summary(r).iloc[0]
    >>> [round(float(fit[k]), 3) for k in ("elevation", "amplitude", "displacement")], fit.nearest_value
    ([0.1, 0.3, 180.0], 'Power')
    """
    angles = value_angles(shared_wedge) if angles is None else angles
    values = [v for v in angles.index if v in correlations.columns]
    if len(values) < 3:
        raise ValueError(f"need correlations with at least 3 values on the circle, got {values}")
    theta = np.deg2rad(angles[values].to_numpy(float))
    design = np.column_stack([np.ones_like(theta), np.cos(theta), np.sin(theta)])
    r = correlations[values].to_numpy(float)  # items x values
    complete = ~np.isnan(r).any(axis=1)
    coef = np.full((len(r), 3), np.nan)
    if complete.any():
        coef[complete] = np.linalg.lstsq(design, r[complete].T, rcond=None)[0].T
    r_squared = cosine_r_squared(r, angles[values].to_numpy(float))
    amplitude = np.hypot(coef[:, 1], coef[:, 2])
    displacement = np.mod(np.rad2deg(np.arctan2(coef[:, 2], coef[:, 1])), 360.0)
    # mod of a tiny negative angle rounds to exactly 360.0; keep the range [0, 360).
    displacement = np.where(displacement >= 360.0, 0.0, displacement)
    displacement = np.where(amplitude > 1e-12, displacement, np.nan)

    # Circular distance of every item's angle to every value's angle, then the closest.
    value_deg = angles[values].to_numpy(float)
    gap = np.abs((displacement[:, None] - value_deg[None, :] + 180.0) % 360.0 - 180.0)
    names = np.array(values, dtype=object)
    nearest = np.where(np.isnan(displacement), None, names[np.nanargmin(np.nan_to_num(gap, nan=np.inf), axis=1)])
    return pd.DataFrame(
        {
            "elevation": coef[:, 0],
            "amplitude": amplitude,
            "displacement": displacement,
            "r_squared": r_squared,
            "nearest_value": nearest,
            "prototypical": r_squared >= min_r2,
        },
        index=correlations.index,
    )


def circumplex_table(correlations: pd.DataFrame, shared_wedge: bool = False, min_r2: float = 0.7) -> pd.DataFrame:
    """``circumplex.csv`` from the long ``correlations.csv`` table.

    Parameters
    ----------
    correlations : DataFrame
        Long rows ``group_id, portrait_id, option_id, family, dimension, rho, ...``; only
        ``family == "pvq"`` rows are used.

    Returns
    -------
    DataFrame
        ``group_id, portrait_id, option_id`` and :data:`COLUMNS`, one row per item.
    """
    keys = ["group_id", "portrait_id", "option_id"]
    pvq = correlations[correlations["family"] == "pvq"]
    wide = pvq.pivot_table(index=keys, columns="dimension", values="rho", aggfunc="first")
    return structural_summary(wide, shared_wedge=shared_wedge, min_r2=min_r2).reset_index()
