"""The item bank: the validated items in the release's tagged shape, ready for LLM scoring.

Shape (a JSON list, one entry per query that has at least one keyed response)::

    [{"portrait_id": "1025",                       # always a string
      "content": {"title": str | null, "text": str},
      "outputs": [{"id": 1, "content": "...",
                   "correlations": [["Benevolence", 0.41], ...],            # 10 PVQ values
                   "higher_pvq_correlations": [["Self_Transcendence", 0.38], ...],
                   "bfi_correlations": [["Agreeableness", 0.22], ...],
                   "keyed": {"pvq": ["Benevolence"], "higher_pvq": ["Self_Transcendence"], "bfi": []},
                   "reversed": {"pvq": [], ...},          # only with keying abs
                   "true_loadings": {...}},               # only when the study stored them (simulations)
                  ...]}, ...]

Each correlations list is sorted by |rho|, largest first (NaN rho written as null, last).
Only outputs keyed to at least one dimension are listed.
"""

from __future__ import annotations

import math

import pandas as pd

import instruments as inst

CORRELATION_KEYS = {"pvq": "correlations", "higher_pvq": "higher_pvq_correlations", "bfi": "bfi_correlations"}


def _sorted_pairs(pairs: list[tuple[str, float]]) -> list[list]:
    """[[dimension, rho], ...] by |rho| descending; NaN rho as null, last."""
    out = [[d, None if r is None or math.isnan(r) else float(r)] for d, r in pairs]
    return sorted(out, key=lambda pr: (pr[1] is None, -abs(pr[1]) if pr[1] is not None else 0.0))


def build_item_bank(correlations: pd.DataFrame, selection: pd.DataFrame, items: pd.DataFrame,
                    keying: str = "pos") -> list[dict]:
    """The item bank as a JSON-ready list (see the module docstring for the shape).

    Parameters
    ----------
    correlations : the ``correlations.csv`` table.
    selection : the keyed pairs (``selection.csv``; with keying abs, a ``reversed`` column).
    items : ``Study.items`` (``portrait_id, option_id, title, query_text, response, meta``),
        in the order the bank should list them.
    keying : ``pos`` or ``abs`` (``abs`` adds ``reversed`` to every output).
    """
    keyed: dict[tuple[str, int], dict[str, set]] = {}
    reversed_: dict[tuple[str, int], dict[str, set]] = {}
    has_rev = "reversed" in selection
    for row in selection.itertuples(index=False):
        key = (str(row.portrait_id), int(row.option_id))
        keyed.setdefault(key, {}).setdefault(row.family, set()).add(row.dimension)
        if has_rev and row.reversed:
            reversed_.setdefault(key, {}).setdefault(row.family, set()).add(row.dimension)
    corr: dict[tuple[str, int], dict[str, list]] = {}
    for pid, oid, fam, dim, rho in zip(correlations["portrait_id"].astype(str), correlations["option_id"].astype(int),
                                       correlations["family"], correlations["dimension"], correlations["rho"]):
        if (pid, oid) in keyed:
            corr.setdefault((pid, oid), {}).setdefault(fam, []).append((dim, rho))
    bank: list[dict] = []
    by_query: dict[str, dict] = {}
    for item in items.itertuples(index=False):
        key = (str(item.portrait_id), int(item.option_id))
        if key not in keyed:
            continue
        query = by_query.get(key[0])
        if query is None:
            query = {"portrait_id": key[0],
                     "content": {"title": None if pd.isna(item.title) else str(item.title), "text": item.query_text},
                     "outputs": []}
            by_query[key[0]] = query
            bank.append(query)
        output = {"id": key[1], "content": item.response}
        for family, name in CORRELATION_KEYS.items():
            output[name] = _sorted_pairs(corr.get(key, {}).get(family, []))
        output["keyed"] = {fam: [d for d in dims if d in keyed[key].get(fam, ())] for fam, dims in inst.FAMILIES.items()}
        if keying == "abs":
            rev = reversed_.get(key, {})
            output["reversed"] = {fam: [d for d in dims if d in rev.get(fam, ())] for fam, dims in inst.FAMILIES.items()}
        meta = item.meta if isinstance(item.meta, dict) else {}
        if meta.get("true_loadings"):
            output["true_loadings"] = meta["true_loadings"]
        query["outputs"].append(output)
    return bank


