"""Selection: which items are keyed to which values and traits.

The Value Portrait rule: an item is keyed to a dimension when the ratings it got correlate
with the raters' scores on that dimension at rho >= threshold (0.3) with p < alpha (0.05).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SELECTION_COLUMNS = ["portrait_id", "option_id", "family", "dimension", "rho", "p_value"]
KEYINGS = ("pos", "abs")


def keyed_mask(rho, p_value, *, threshold: float = 0.3, alpha: float = 0.05, keying: str = "pos") -> np.ndarray:
    """Boolean mask of keyed pairs.

    ``pos``: rho >= threshold and p < alpha (the study's rule).
    ``abs``: |rho| >= threshold and p < alpha; a negative rho keys the item reversed.
    NaN rho or p is never keyed.
    """
    if keying not in KEYINGS:
        raise ValueError(f"keying must be one of {KEYINGS}, got {keying!r}")
    rho = np.asarray(rho, dtype=float)
    p = np.asarray(p_value, dtype=float)
    strength = np.abs(rho) if keying == "abs" else rho
    with np.errstate(invalid="ignore"):
        return (strength >= threshold) & (p < alpha)


def select(correlations: pd.DataFrame, *, threshold: float = 0.3, alpha: float = 0.05, keying: str = "pos") -> pd.DataFrame:
    """The keyed pairs of a correlations table.

    Returns
    -------
    DataFrame ``portrait_id, option_id, family, dimension, rho, p_value`` in the order of
    `correlations`; with ``keying='abs'`` a trailing boolean column ``reversed`` (rho < 0).
    """
    mask = keyed_mask(correlations["rho"], correlations["p_value"], threshold=threshold, alpha=alpha, keying=keying)
    out = correlations.loc[mask, SELECTION_COLUMNS].reset_index(drop=True)
    if keying == "abs":
        out["reversed"] = out["rho"] < 0
    return out


def keyed_counts(selection: pd.DataFrame, correlations: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per family: pairs tested, pairs keyed, items with at least one keyed dimension."""
    out = {}
    for family, tested in correlations.groupby("family", sort=False):
        keyed = selection[selection["family"] == family]
        out[family] = {
            "pairs": int(tested["rho"].notna().sum()),
            "keyed_pairs": int(len(keyed)),
            "keyed_items": int(keyed[["portrait_id", "option_id"]].drop_duplicates().shape[0]),
        }
        if "reversed" in keyed:
            out[family]["reversed_pairs"] = int(keyed["reversed"].sum())
    return out
