"""The valueportrait item bank as an Inspect task (written by `vp export-bank --format inspect`).

    inspect eval task.py --model openai/gpt-4o-mini
    inspect eval task.py --model openai/gpt-4o-mini -T keying=abs

Each sample is one bank item under one prompt variant: the text `vp run-llm` sends, word
for word (samples.jsonl). The model answers once; the scorer reads the answer with
valueportrait's own parser (vp_parse.py, a copy of analysis/llm/parse.py) and the metric
gives the value profile as `vp score-llm` does (vp_profile.py): per dimension, the mean
rating of its keyed items minus the mean over all items keyed in its family, each item's
rating being its mean over the parsed variants. An answer that is no scale phrase is kept
in the log with a NaN score and left out, never guessed: Inspect counts those samples as
`unscored_samples` in the log's results.

The log can be scored by valueportrait itself:
    vp score-llm --item-bank item_bank.json --responses logs/THE_LOG.eval
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

from inspect_ai import Task, task
from inspect_ai.dataset import json_dataset
from inspect_ai.model import GenerateConfig
from inspect_ai.scorer import SampleScore, Score, Target, metric, scorer
from inspect_ai.solver import TaskState, generate

HERE = Path(__file__).resolve().parent


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"valueportrait_export_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vp_parse = _sibling("vp_parse")
vp_profile = _sibling("vp_profile")
EXPORT = json.loads((HERE / "valueportrait_export.json").read_text(encoding="utf-8"))


def _dimension_name(family: str, dimension: str) -> str:
    return f"{family}.{dimension}"


def _ratings(scores):
    """(item, rating or None) and the item's keys, from the sample scores."""
    ratings, keys = [], set()
    for sample_score in scores:
        meta = sample_score.score.metadata or {}
        item = (meta["portrait_id"], meta["option_id"])
        value = sample_score.score.value
        ratings.append((item, None if not isinstance(value, (int, float)) or math.isnan(value) else float(value)))
        keys.update((item, fam, dim, int(sign)) for fam, dim, sign in meta["keys"])
    return ratings, keys


@metric
def value_profile(keying: str = "pos"):
    """Centred mean per keyed dimension (``family.dimension``), as `vp score-llm`."""

    def compute(scores: list[SampleScore]) -> dict:
        ratings, keys = _ratings(scores)
        profile = vp_profile.centred_profile(vp_profile.item_means(ratings), keys, keying)
        return {_dimension_name(fam, dim): (None if math.isnan(value) else value)
                for (fam, dim), (value, _) in sorted(profile.items())}

    return compute


@scorer(metrics=[])
def rating(keying: str = "pos"):
    """The answer's scale value (1..6) by valueportrait's parser; NaN when it is no scale phrase."""

    async def score(state: TaskState, target: Target) -> Score:
        meta = state.metadata
        labels = tuple((int(v), str(p)) for v, p in meta["labels"])
        text = state.output.completion
        value = vp_parse.parse_answer(text, labels)
        info = {"portrait_id": meta["portrait_id"], "option_id": meta["option_id"], "variant": meta["variant"],
                "keys": meta["keys"]}
        if value is None:
            return Score(value=float("nan"), answer=text, explanation="not one scale phrase: left out", metadata=info)
        return Score(value=float(value), answer=text, metadata=info)

    return score


@task
def valueportrait(keying: str = "pos") -> Task:
    """The bank's items under every prompt variant; `keying=abs` also scores reversed keys."""
    if keying not in ("pos", "abs"):
        raise ValueError(f"keying: {keying!r} is not pos or abs")
    settings = EXPORT["generation"]  # what `vp run-llm` sends by default
    return Task(
        dataset=json_dataset(str(HERE / "samples.jsonl")),
        solver=generate(),
        scorer=rating(keying),
        metrics=[value_profile(keying)],
        config=GenerateConfig(temperature=settings["temperature"], seed=settings["seed"], max_tokens=settings["max_tokens"]),
        metadata={"valueportrait_version": EXPORT["tool_version"], "item_bank_sha256": EXPORT["item_bank_sha256"],
                  "persona": EXPORT["persona"], "keying": keying},
    )
