"""Read the YAML and JSON files users give us, with one-line errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from valueportrait.errors import InputError


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """A user's text file; an unreadable or non-UTF-8 file is a one-line error naming it."""
    try:
        return Path(path).read_text(encoding=encoding)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text: byte {exc.start}") from None


def read_data_file(path: str | Path, kind: str | None = None) -> object:
    """The parsed content of a YAML or JSON file (`kind` 'yaml' or 'json'; default: by suffix)."""
    path = Path(path)
    kind = kind or ("json" if path.suffix.lower() == ".json" else "yaml")
    text = read_text(path)
    try:
        return json.loads(text) if kind == "json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None


def read_numeric_csv(path: str | Path, columns: list[str] | None = None, *, absent: str = "not in the CSV",
                     hint: str = ""):
    """The named columns (default: every column) of a CSV with a header row, as numbers.

    Empty cells stay missing (NaN). A missing file, an unreadable CSV, an absent column or
    a cell that is not a number stops with a one-line ``InputError`` naming the file, the
    line, the column and the value (``absent`` and ``hint`` finish those messages).
    """
    import numpy as np
    import pandas as pd

    path = Path(path)
    if not path.exists() or path.is_dir():
        raise InputError(f"{path}: --data: no such file")
    try:
        data = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV: {exc}") from None
    names = list(data.columns) if columns is None else list(columns)
    for name in names:
        if name not in data.columns:
            raise InputError(f"{path}: column {name!r}: {absent} (columns: {', '.join(map(str, data.columns))})")
        column = data[name]
        bad = column.notna() & pd.to_numeric(column, errors="coerce").isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            # +2: the header is line 1 and file lines count from 1.
            raise InputError(f"{path}: line {row + 2}, column {name}: {column.iloc[row]!r} is not a number{hint}")
    return data[names].apply(pd.to_numeric)
