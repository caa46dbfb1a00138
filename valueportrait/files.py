"""The one reader of the YAML and JSON files users give us.

Everything a user supplies as YAML or JSON (study files, wordings, prompt templates, item
banks, profiles, answers files, the release's JSON) is parsed here, so every such file
gets the same protection and the same one-line errors naming the file:

* a size cap (YAML :data:`MAX_YAML_BYTES`, JSON :data:`MAX_JSON_BYTES`), checked before
  reading;
* YAML aliases (``*name``) are refused: a few hundred bytes of nested aliases expand to
  billions of nodes in whatever walks the result (the "billion laughs" file). Nothing in
  the project's files needs them: write the value out instead;
* duplicate keys are refused in YAML mappings and JSON objects (both formats let the last
  one silently win, which drops data), naming the path of the key and its lines;
* syntax errors keep their line and column (``study.yaml: not valid YAML: line 7
  column 3: ...``);
* nesting deeper than the parser's recursion limit is an error, not a crash.

Values that end up in an error message go through :func:`brief`, so a huge value is never
formatted whole into a message.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
from json.decoder import scanstring
from pathlib import Path

import yaml

from valueportrait.errors import InputError

MAX_YAML_BYTES = 16 * 2**20
MAX_JSON_BYTES = 256 * 2**20


def brief(value, limit: int = 60) -> str:
    """``repr(value)`` for an error message, cut to about `limit` characters.

    Containers are described by type and size rather than formatted whole.

    >>> brief("x" * 100, 10)
    "'xxxxxxxxx… (100 characters)"
    >>> brief({"a": [1, 2]})
    'a mapping of 1 entry'
    """
    if isinstance(value, dict):
        return f"a mapping of {len(value)} entr{'y' if len(value) == 1 else 'ies'}"
    if isinstance(value, (list, tuple, set)):
        return f"a list of {len(value)} entr{'y' if len(value) == 1 else 'ies'}"
    if isinstance(value, str) and len(value) > limit:
        return repr(value[: limit - 1])[:-1] + f"… ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def key_path(parts) -> str:
    """``["groups", 2, "id"]`` -> ``groups[2].id``; keys that are not identifiers are quoted."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(str(part), ensure_ascii=False)}]"
    return out or "(top level)"


# -- YAML -------------------------------------------------------------------------------------
class _Refused(yaml.MarkedYAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(problem=f"an alias (*{event.anchor}) is not accepted here: write the value out "
                                   f"(aliases let a tiny file expand without bound)", problem_mark=event.start_mark)
        return super().compose_node(parent, index)


def _yaml_duplicates(node, source) -> None:
    """Refuse a mapping that repeats a key, naming the key's path and both lines."""
    stack = [(node, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None:
                    token = (key.tag, name)
                    if token in seen:
                        raise InputError(f"{source}: {key_path([*path, name])}: the key {brief(name)} appears twice "
                                         f"(lines {seen[token] + 1} and {key.start_mark.line + 1}); keep one")
                    seen[token] = key.start_mark.line
                stack.append((value, [*path, name if name is not None else "?"]))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, [*path, i]) for i, child in enumerate(node.value))


def _mark(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    return f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""


def parse_yaml(text: str, source) -> object:
    """The data of a YAML document (aliases and duplicate keys refused); errors name `source`."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _yaml_duplicates(node, source)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise InputError(f"{source}: not valid YAML: {_mark(exc)}{what}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise InputError(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()


# -- JSON -------------------------------------------------------------------------------------
class _Duplicate(Exception):
    pass


def _no_duplicates(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Duplicate
    return out


_WS = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null|NaN|-?Infinity")


def _find_duplicate(text: str):
    """(path, key, first offset, second offset) of the first repeated key in a JSON text.

    Only called once the fast parser has found that some object repeats a key: this slower
    walk says which one and where.
    """
    def skip(i):
        return _WS.match(text, i).end()

    def value(i, path):
        i = skip(i)
        c = text[i]
        if c == "{":
            seen = {}
            i = skip(i + 1)
            if text[i] == "}":
                return i + 1
            while True:
                start = i
                key, i = scanstring(text, i + 1)
                if key in seen:
                    raise _Found(path + [key], key, seen[key], start)
                seen[key] = start
                i = skip(i) + 1  # the colon
                i = skip(value(i, path + [key]))
                if text[i] == ",":
                    i = skip(i + 1)
                    continue
                return i + 1
        if c == "[":
            i = skip(i + 1)
            if text[i] == "]":
                return i + 1
            k = 0
            while True:
                i = skip(value(i, path + [k]))
                k += 1
                if text[i] == ",":
                    i += 1
                    continue
                return i + 1
        if c == '"':
            return scanstring(text, i + 1)[1]
        return _SCALAR.match(text, i).end()

    class _Found(Exception):
        pass

    try:
        value(0, [])
    except _Found as found:
        return found.args
    except (IndexError, AttributeError, ValueError, RecursionError):  # malformed further on
        return None
    return None


def parse_json(text: str, source) -> object:
    """The data of a JSON text, refusing objects that repeat a key; errors name `source`."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not valid JSON (truncated or corrupt?): line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InputError(f"{source}: not valid JSON: nested too deeply") from None
    except _Duplicate:
        found = _find_duplicate(text)
        if found is None:
            raise InputError(f"{source}: an object repeats a key") from None
        path, key, first, second = found
        lines = (text.count("\n", 0, first) + 1, text.count("\n", 0, second) + 1)
        raise InputError(f"{source}: {key_path(path)}: the key {brief(key)} appears twice (lines {lines[0]} and {lines[1]}): "
                         "the second would silently replace the first; keep one") from None


# -- files ------------------------------------------------------------------------------------
def read_text(path: str | Path, encoding: str = "utf-8", *, max_bytes: int | None = None, what: str = "file") -> str:
    """The UTF-8 text of a user's file (a BOM is allowed), with one-line errors naming it.

    `encoding` is for callers that name it; UTF-8 with or without a BOM is the only one read.
    """
    if encoding.lower().replace("_", "-") not in ("utf-8", "utf-8-sig", "utf8"):
        raise ValueError(f"read_text reads UTF-8 only, not {encoding}")
    path = Path(path)
    try:
        if path.is_dir():
            raise InputError(f"{path}: is a folder; a {what} is needed here")
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise InputError(f"{path}: {size / 2**20:,.1f} MB is more than the {max_bytes / 2**20:,.0f} MB "
                             f"accepted for a {what}")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    return decode(raw, path)


def decode(raw: bytes, source) -> str:
    """UTF-8 (with or without a BOM); UTF-16 and other encodings are named, not guessed."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{source}: UTF-16 text: save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not UTF-8 text (byte {exc.start}): save it as UTF-8") from None


def read_data_file(path: str | Path, kind: str | None = None) -> object:
    """The parsed content of a YAML or JSON file (`kind` 'yaml' or 'json'; default: by suffix)."""
    path = Path(path)
    kind = kind or ("json" if path.suffix.lower() == ".json" else "yaml")
    if kind == "json":
        return parse_json(read_text(path, max_bytes=MAX_JSON_BYTES, what="JSON file"), path)
    return parse_yaml(read_text(path, max_bytes=MAX_YAML_BYTES, what="YAML file"), path)


def read_csv_records(path: str | Path, *, what: str = "CSV file") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the records of a CSV file, each record with the line it starts on.

    Every record must have exactly as many fields as the header: a short or long row
    (a file cut off mid-line, a stray comma) is an error naming its line, never read as
    missing answers. Blank lines are skipped; a header-only file gives no records.
    """
    path = Path(path)
    text = read_text(path, what=what)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise InputError(f"{path}: empty: a header row naming the columns is needed")
        header = [h.strip() for h in header]
        repeated = sorted({h for h in header if header.count(h) > 1})
        if repeated:
            raise InputError(f"{path}: line 1: column {brief(repeated[0])} appears more than once in the header")
        records = []
        start = reader.line_num + 1
        for fields in reader:
            if fields:
                if len(fields) != len(header):
                    last = reader.line_num >= text.count("\n") + (0 if text.endswith("\n") else 1)
                    raise InputError(f"{path}: line {start}: {len(fields)} field{'s' if len(fields) != 1 else ''} where the "
                                     f"header has {len(header)}" + (" (is the file cut off?)" if last else ""))
                records.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"{path}: line {reader.line_num}: not a readable CSV: {exc}") from None
    return header, records


def read_csv_strict(path: str | Path, *, what: str = "CSV file"):
    """A CSV file as a DataFrame of strings (see :func:`read_csv_records`), with each row's line number.

    Returns ``(frame, lines)``; ``lines[i]`` is the file line of row ``i``.
    """
    import pandas as pd

    header, records = read_csv_records(path, what=what)
    frame = pd.DataFrame([fields for _, fields in records], columns=header, dtype=str)
    return frame, [line for line, _ in records]


def check_can_create(path: str | Path) -> None:
    """Raise the OSError a write would meet if `path` (not there yet) cannot be created in its folder.

    SQLite reports a read-only folder only as "unable to open database file"; this names
    the real cause (read-only file system, or no permission) before it gets there.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists() or not folder.is_dir() or os.access(folder, os.W_OK):
        return
    read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    code = errno.EROFS if read_only else errno.EACCES
    raise OSError(code, os.strerror(code), str(path))


def read_numeric_csv(path: str | Path, columns: list[str] | None = None, *, absent: str = "not in the CSV",
                     hint: str = ""):
    """The named columns (default: every column) of a CSV with a header row, as numbers.

    Empty cells stay missing (NaN). A missing file, an unreadable CSV, a row with the wrong
    number of fields (a file cut off), an absent column or a cell that is not a finite
    number stops with a one-line ``InputError`` naming the file, the line, the column and
    the value (``absent`` and ``hint`` finish those messages).
    """
    import numpy as np
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: --data: no such file")
    text, lines = read_csv_strict(path, what="CSV of data")
    if text.empty:
        raise InputError(f"{path}: no rows: the file has a header row and nothing else")
    names = list(text.columns) if columns is None else list(columns)
    out = {}
    for name in names:
        if name not in text.columns:
            raise InputError(f"{path}: column {name!r}: {absent} (columns: {', '.join(map(str, text.columns))})")
        column = text[name].str.strip()
        numeric = pd.to_numeric(column.where(column != ""), errors="coerce")
        bad = ((column != "") & numeric.isna()) | np.isinf(numeric)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            what = "is not a finite number" if np.isinf(numeric.iloc[row]) else "is not a number"
            raise InputError(f"{path}: line {lines[row]}, column {name}: {brief(column.iloc[row])} {what}{hint}")
        out[name] = numeric.astype(float)
    return pd.DataFrame(out, columns=names)
