"""Helpers of the valueportrait lm-evaluation-harness task (written by `vp export-bank --format lm-eval`).

* ``load_bank``: the documents (valueportrait.jsonl beside this file), one per item and
  prompt variant, with the prompt `vp run-llm` sends word for word.
* ``parse_ratings``: the filter: each generated answer read by valueportrait's own parser
  (vp_parse.py, a copy of analysis/llm/parse.py): a scale value 1..6, or None when the
  answer is not exactly one scale phrase (never guessed).
* ``process_results`` and ``agg_FAMILY__DIMENSION``: each dimension's centred mean, as
  `vp score-llm` computes it (vp_profile.py): the mean rating of the items keyed to it
  minus the mean over all items keyed in its family, an item's rating being its mean
  over the parsed prompt variants. Only positive keys are scored here; use `vp score-llm
  --keying abs` on the answers for reversed ones.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE / "valueportrait.jsonl"


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"valueportrait_lm_eval_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vp_parse = _sibling("vp_parse")
vp_profile = _sibling("vp_profile")


def load_bank(**kwargs):
    """The task's documents as a DatasetDict with one split, ``test``."""
    import datasets

    return datasets.load_dataset("json", data_files={"test": str(DOCS)})


def _labels(doc) -> tuple:
    return tuple((int(v), str(p)) for v, p in doc["labels"])


def parse_ratings(resps, docs):
    """Filter: every answer of every document to its scale value, or None."""
    return [[vp_parse.parse_answer(r, _labels(doc)) for r in answers] for answers, doc in zip(resps, docs)]


def _dimensions():
    dims = set()
    with DOCS.open(encoding="utf-8") as handle:
        for line in handle:
            dims.update((fam, dim) for fam, dim, _ in json.loads(line)["keys"])
    return sorted(dims)


DIMENSIONS = _dimensions()


def process_results(doc, results):
    """Per document: whether the answer parsed, and (item, rating, keys) for every dimension's aggregation."""
    rating = results[0] if results else None
    item = (doc["portrait_id"], int(doc["option_id"]))
    record = (item, rating, tuple((fam, dim, int(sign)) for fam, dim, sign in doc["keys"]))
    out = {"answered": float(rating is not None)}
    out.update({f"{fam}.{dim}": record for fam, dim in DIMENSIONS})
    return out


def _profile(records):
    ratings = [(item, rating) for item, rating, _ in records]
    keys = {(item, fam, dim, sign) for item, _, item_keys in records for fam, dim, sign in item_keys}
    return vp_profile.centred_profile(vp_profile.item_means(ratings), keys, "pos")


def _aggregation(family, dimension):
    def aggregate(records):
        return _profile(records).get((family, dimension), (float("nan"), 0))[0]

    aggregate.__name__ = f"agg_{family}__{dimension}"
    return aggregate


for _family, _dimension in DIMENSIONS:
    globals()[f"agg_{_family}__{_dimension}"] = _aggregation(_family, _dimension)
