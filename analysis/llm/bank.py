"""Read an item bank (``item_bank.json`` from ``vp analyze``) for LLM rating and scoring.

The bank is a JSON list in the release's tagged shape::

    [{"portrait_id": "1025", "content": {"title": str | null, "text": str},
      "outputs": [{"id": 1, "content": "...",
                   "keyed": {"pvq": ["Benevolence"], "higher_pvq": [...], "bfi": [...]},
                   "reversed": {"pvq": ["Power"]},          # only with --keying abs
                   "true_loadings": {"Benevolence": 0.4}},  # only in a simulated study
                  ...]}, ...]

``portrait_id`` may be a string or an int; it is normalised to a string. ``reversed``
names keyed dimensions whose rho is negative; ``true_loadings`` is the simulator's known
truth, used by the simulated LLM backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from valueportrait.errors import InputError
from valueportrait.files import brief, read_data_file

FAMILY_NAMES = ("pvq", "higher_pvq", "bfi")


@dataclass(frozen=True)
class Item:
    """One bank item: a query (``portrait_id``) and one of its responses (``option_id``)."""

    portrait_id: str
    option_id: int
    title: str | None
    text: str
    response: str
    keyed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    reversed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    true_loadings: dict[str, float] | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.portrait_id, self.option_id)

    @property
    def is_advice(self) -> bool:
        """Advice-thread items (portrait id 1xxx/2xxx) carry a title; chat items (3xxx/4xxx) do not."""
        return self.portrait_id[:1] in ("1", "2")


def normalise_portrait_id(value, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise InputError(f"{where}: portrait_id: {brief(value)} is not a string or integer id")
    return str(value).strip()


def normalise_option_id(value, where: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{where}: option_id: {brief(value)} is not an integer")
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: option_id: {brief(value)} is not an integer") from None
    if isinstance(value, float) and value != as_int:
        raise InputError(f"{where}: option_id: {brief(value)} is not an integer")
    return as_int


def _dims(value, where: str) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where}: {brief(value)} is not an object of family -> [dimensions]")
    out = {}
    for fam, dims in value.items():
        if fam not in FAMILY_NAMES:
            raise InputError(f"{where}: family {fam!r} is not one of {', '.join(FAMILY_NAMES)}")
        if not isinstance(dims, list) or not all(isinstance(d, str) for d in dims):
            raise InputError(f"{where}.{fam}: {brief(dims)} is not a list of dimension names")
        out[fam] = tuple(dims)
    return out


def parse_bank(data, path: str | Path = "item bank") -> list[Item]:
    """Validate a decoded item bank and flatten it to one :class:`Item` per output."""
    if not isinstance(data, list):
        raise InputError(f"{path}: top level: expected a list of queries, got {type(data).__name__}")
    items: list[Item] = []
    seen: set[tuple[str, int]] = set()
    for q_index, query in enumerate(data):
        where = f"{path}: [{q_index}]"
        if not isinstance(query, dict):
            raise InputError(f"{where}: expected an object, got {type(query).__name__}")
        pid = normalise_portrait_id(query.get("portrait_id"), where)
        content = query.get("content")
        if not isinstance(content, dict) or not isinstance(content.get("text"), str):
            raise InputError(f"{where} (portrait {pid}): content.text: missing or not a string")
        title = content.get("title")
        if title is not None and not isinstance(title, str):
            raise InputError(f"{where} (portrait {pid}): content.title: {brief(title)} is not a string or null")
        outputs = query.get("outputs")
        if not isinstance(outputs, list):
            raise InputError(f"{where} (portrait {pid}): outputs: missing or not a list")
        for o_index, out in enumerate(outputs):
            o_where = f"{where}.outputs[{o_index}]"
            if not isinstance(out, dict):
                raise InputError(f"{o_where}: expected an object")
            oid = normalise_option_id(out.get("id"), o_where)
            if not isinstance(out.get("content"), str):
                raise InputError(f"{o_where} (item {pid}/{oid}): content: missing or not a string")
            if (pid, oid) in seen:
                raise InputError(f"{o_where}: item {pid}/{oid} appears twice in the bank")
            seen.add((pid, oid))
            keyed = _dims(out.get("keyed"), f"{o_where}.keyed")
            rev = _dims(out.get("reversed"), f"{o_where}.reversed")
            for fam, dims in rev.items():
                extra = set(dims) - set(keyed.get(fam, ()))
                if extra:
                    raise InputError(f"{o_where}.reversed.{fam}: {sorted(extra)} not listed in keyed.{fam}")
            loadings = out.get("true_loadings")
            if loadings is not None:
                if not isinstance(loadings, dict) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in loadings.values()
                ):
                    raise InputError(f"{o_where}.true_loadings: expected an object of dimension -> number")
                loadings = {str(k): float(v) for k, v in loadings.items()}
            items.append(Item(pid, oid, title, content["text"], out["content"], keyed, rev, loadings))
    return items


def load_bank(path: str | Path) -> list[Item]:
    """Read and validate an item bank file; errors name the file, the field and the value."""
    return parse_bank(read_data_file(path, "json"), Path(path))
