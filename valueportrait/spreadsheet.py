"""Tables that people open in spreadsheets: cells that a spreadsheet would run as a formula are neutralised.

A text cell starting with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return, which
some spreadsheets skip before looking) is read by Excel, LibreOffice and Google Sheets as a
formula ("CSV injection"). Item texts come from the internet, so every text cell of an
export is checked, and such a cell gets a leading apostrophe, which spreadsheets show as
text. Numbers are left alone (``-0.31`` stays a number).
"""

from __future__ import annotations

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value):
    """``"=1+1"`` -> ``"'=1+1"``; other values unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells cannot start a formula (see the module docstring)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(neutralise_cell)
    return out
