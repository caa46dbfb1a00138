"""Write output files atomically: a temporary file in the same folder, then a rename.

A run that fails or is killed midway never leaves half a file behind, and a reader never
sees one. Every writer of the project's outputs goes through here.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from valueportrait.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, write: Callable[[IO[str]], None]) -> Path:
    """Call ``write(handle)`` on a temporary file, then move it to `path`; returns the path."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for this output")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # name the output asked for, not the temporary file
        raise OSError(exc.errno, exc.strerror, str(path if exc.errno != errno.EEXIST else exc.filename)) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            write(handle)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (tmp, None):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda handle: handle.write(text))


def write_csv_atomic(frame, path: str | Path, **to_csv) -> Path:
    """``frame.to_csv(path, **to_csv)``, atomically."""
    return write_atomic(path, lambda handle: frame.to_csv(handle, **to_csv))


def json_safe(value):
    """Plain JSON values: numpy scalars and arrays become Python ones, NaN becomes null."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def write_json_atomic(data, path: str | Path, *, indent: int = 1) -> Path:
    """JSON (UTF-8, NaN as null), atomically."""
    text = json.dumps(json_safe(data), ensure_ascii=False, indent=indent, allow_nan=False) + "\n"
    return write_text_atomic(path, text)
