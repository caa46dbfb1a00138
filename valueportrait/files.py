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
