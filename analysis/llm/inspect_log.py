"""Read the log of the exported Inspect task (``vp export-bank --format inspect``) as answers for ``vp score-llm``.

Inspect writes ``.eval`` logs (or ``.json`` with ``--log-format json``); both are read
with Inspect's own reader (``inspect_ai.log.read_eval_log``, from the ``export`` extra,
imported only here). Each sample of the task is one item under one prompt variant, and
carries them in its metadata. The answer is read again from the model's raw output with
our parser (as ``vp run-llm`` re-reads its cache), so the score does not depend on the
scorer stored in the log. With several epochs, a variant's answer is the mean of its
parsed epochs. The model is named as ``vp run-llm`` names its output for the same model
and persona (``openai/gpt-4o`` -> ``openai_gpt-4o``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.llm.bank import normalise_option_id, normalise_portrait_id
from analysis.llm.parse import parse_answer
from valueportrait.errors import InputError

SUFFIXES = (".eval",)


def looks_like_inspect_json(data) -> bool:
    """An Inspect log written as JSON: an object with ``eval`` and ``samples``/``status``."""
    return isinstance(data, dict) and isinstance(data.get("eval"), dict) and "status" in data


def read_inspect_log(path: str | Path) -> tuple[str, pd.DataFrame, list[str]]:
    """``(model name, long frame portrait_id, option_id, variant, value, notes)`` from one Inspect log."""
    from analysis.llm.runner import output_name

    path = Path(path)
    try:
        from inspect_ai.log import read_eval_log
    except ImportError:
        raise InputError(f"{path}: reading an Inspect log needs inspect_ai: pip install -e '.[export]'") from None
    try:
        log = read_eval_log(str(path))
    except Exception as exc:  # Inspect raises its own and pydantic's errors on a bad file
        raise InputError(f"{path}: not a readable Inspect log: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    notes = []
    if log.status != "success":
        notes.append(f"{path}: the Inspect run ended with status {log.status!r}: only its finished samples are scored")
    rows, personas = [], set()
    for sample in log.samples or []:
        meta = sample.metadata or {}
        where = f"{path}: sample {sample.id!r}"
        if not {"portrait_id", "option_id", "variant", "labels"} <= set(meta):
            raise InputError(f"{where}: no portrait_id/option_id/variant/labels in its metadata: "
                             "not a log of the task `vp export-bank --format inspect` writes")
        labels = tuple((int(v), str(p)) for v, p in meta["labels"])
        text = sample.output.completion if sample.output is not None else None
        value = parse_answer(text, labels)
        rows.append((normalise_portrait_id(meta["portrait_id"], where), normalise_option_id(meta["option_id"], where),
                     str(meta["variant"]), np.nan if value is None else float(value)))
        personas.add(meta.get("persona") or None)
    if not rows:
        raise InputError(f"{path}: the Inspect log has no samples")
    if len(personas) > 1:
        raise InputError(f"{path}: samples with different personas in one log: {sorted(map(str, personas))}")
    frame = pd.DataFrame(rows, columns=["portrait_id", "option_id", "variant", "value"])
    epochs = frame.groupby(["portrait_id", "option_id", "variant"]).size().max()
    if epochs > 1:
        notes.append(f"{path}: up to {epochs} epochs per question: each variant's answer is the mean of its parsed epochs")
    frame = frame.groupby(["portrait_id", "option_id", "variant"], sort=False, as_index=False)["value"].mean()
    return output_name(log.eval.model, personas.pop()), frame, notes
