"""Tables that people open in a spreadsheet: no cell runs as a formula.

A text cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return, which
some spreadsheets skip before reading one of those) is run as a formula by Excel, LibreOffice
and Google Sheets: ``=HYPERLINK(...)`` typed into a free-text answer becomes a link in the
researcher's sheet. OWASP's advice ("CSV Injection") is to prefix such cells with a single
quote, which spreadsheets show as text; numbers in numeric columns are left alone, so a
negative score stays a number.
"""

from __future__ import annotations

import pandas as pd

#: A cell starting with one of these is read as a formula by Excel, LibreOffice or Sheets
#: (OWASP's "CSV injection"); a leading apostrophe makes it plain text.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells cannot start a formula (numbers are left as they are).

    >>> spreadsheet_safe(pd.DataFrame({"country": ['=HYPERLINK("x")', "Chile"], "score": [-1.5, 2.0]}))
                country  score
    0  '=HYPERLINK("x")   -1.5
    1             Chile    2.0
    """
    out = frame.copy()
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column]) and not pd.api.types.is_bool_dtype(out[column]):
            out[column] = out[column].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v)
    return out


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """`frame` as UTF-8 CSV with a header row, formula cells made plain text."""
    return spreadsheet_safe(frame).to_csv(index=False).encode("utf-8")
