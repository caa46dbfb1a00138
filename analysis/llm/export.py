"""The validated item bank for evaluation frameworks: Hugging Face datasets, Inspect, lm-evaluation-harness, CSV.

``vp export-bank --item-bank FILE --format hf|inspect|lm-eval|csv --out DIR`` writes one
row per (item, prompt variant): the prompt exactly as ``vp run-llm`` sends it (rendered
by :class:`analysis.llm.prompts.PromptSet` from the same templates, ``--variants`` and
``--persona`` included), the options in the order shown, the keyed dimensions with their
directions, and each key's validation statistics read from the analysis tables beside
the bank (``correlations.csv``: rho, its CI, p, BH q, n; ``replication.csv``: the
held-out rho of split-half replication; ``--processed`` names another folder).

* ``hf``: ``data/test-00000-of-00001.parquet`` and a ``README.md`` dataset card;
  ``datasets.load_dataset("parquet", data_dir=DIR)`` or ``load_dataset(DIR)`` loads it.
* ``inspect``: ``task.py`` for ``inspect eval DIR/task.py --model ...``, its
  ``samples.jsonl``, and ``vp_parse.py`` / ``vp_profile.py`` (our parser and profile, copied).
* ``lm-eval``: ``valueportrait.yaml`` (generation, our parser as the filter), ``utils.py``,
  ``valueportrait.jsonl``; run with ``lm_eval --include_path DIR --tasks valueportrait``.
* ``csv``: ``valueportrait.csv``, one row per (item, variant, keyed dimension),
  spreadsheet-safe.

Every export also writes ``valueportrait_export.json`` (what was exported from what).
The folder is written beside ``--out`` and moved into place at the end, so a failed
export leaves nothing half-written; an ``--out`` holding files of anything but an
earlier export is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path

import pandas as pd

import instruments
from analysis.llm.bank import Item, load_bank
from analysis.llm.client import OpenAIBackend
from analysis.llm.prompts import REVERSED_SUFFIX, PromptSet, load_prompts
from valueportrait import __version__
from valueportrait.atomic import write_csv_atomic, write_json_atomic, write_text_atomic
from valueportrait.errors import InputError
from valueportrait.files import read_data_file, read_numeric_csv
from valueportrait.spreadsheet import spreadsheet_safe

FORMATS = ("hf", "inspect", "lm-eval", "csv")
MANIFEST = "valueportrait_export.json"
FILES = Path(__file__).resolve().parent / "export_files"
PARSER_SOURCE = Path(__file__).resolve().parent / "parse.py"
SPLIT = "test"
TASK_NAME = "valueportrait"
KEY_STATS = ("rho", "ci_low", "ci_high", "p_value", "q_value", "n", "heldout_rho", "replication_rate", "times_selected")


# ------------------------------------------------------------------ validation statistics


KEY_COLUMNS = ["portrait_id", "option_id", "family", "dimension"]


def _read_table(path: Path, numbers: list[str]) -> pd.DataFrame | None:
    """The key columns and the named number columns of an analysis table, or None when it is absent."""
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, dtype={"portrait_id": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read as CSV: {exc}") from None
    missing = [c for c in KEY_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    # Numbers checked cell by cell: a stray text cell is named, not cast into the export.
    table[numbers] = read_numeric_csv(path, numbers, absent="missing column")
    table["portrait_id"] = table["portrait_id"].str.strip()
    return table[KEY_COLUMNS + numbers]


def bank_correlations(data) -> dict[tuple[str, int, str], float]:
    """``{(portrait_id, option_id, dimension): rho}`` from the bank's own correlation lists."""
    out = {}
    for query in data if isinstance(data, list) else []:
        pid = str(query.get("portrait_id", "")).strip() if isinstance(query, dict) else ""
        for output in (query.get("outputs") or []) if isinstance(query, dict) else []:
            for name in ("correlations", "higher_pvq_correlations", "bfi_correlations"):
                for pair in output.get(name) or []:
                    if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], (int, float)):
                        out[(pid, int(output["id"]), str(pair[0]))] = float(pair[1])
    return out


def key_statistics(items: list[Item], processed: Path, bank_rho: dict | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per keyed (item, dimension) with its validation statistics, and notes on what was missing.

    ``rho`` comes from ``correlations.csv`` (or, without it, the bank's own correlation
    lists); ``ci_low, ci_high, p_value, q_value, n`` from ``correlations.csv``;
    ``heldout_rho`` (mean rho on the half of the raters not used to select the pair),
    ``replication_rate`` and ``times_selected`` from ``replication.csv``. What a table
    does not give is left empty (null), never filled in.
    """
    keys = [(it.portrait_id, it.option_id, fam, dim, -1 if dim in it.reversed.get(fam, ()) else 1)
            for it in items for fam, dims in it.keyed.items() for dim in dims]
    table = pd.DataFrame(keys, columns=["portrait_id", "option_id", "family", "dimension", "sign"])
    on = KEY_COLUMNS
    notes = []
    corr = _read_table(processed / "correlations.csv", ["rho", "p_value", "q_value", "n", "ci_low", "ci_high"])
    if corr is None:
        notes.append(f"{processed / 'correlations.csv'} not found: rho from the bank, no CI, p, q or n")
        bank_rho = bank_rho or {}
        table["rho"] = [bank_rho.get((p, o, d)) for p, o, d in zip(table.portrait_id, table.option_id, table.dimension)]
        for column in ("ci_low", "ci_high", "p_value", "q_value", "n"):
            table[column] = None
    else:
        corr = corr[on + ["rho", "ci_low", "ci_high", "p_value", "q_value", "n"]]
        if corr.duplicated(on).any():
            first = corr[corr.duplicated(on)].iloc[0]
            raise InputError(f"{processed / 'correlations.csv'}: item {first.portrait_id}/{first.option_id} "
                             f"{first.family}/{first.dimension} appears twice")
        table = table.merge(corr, on=on, how="left")
        lost = table["rho"].isna().sum()
        if lost:
            notes.append(f"{lost} keyed pairs of the bank have no row in correlations.csv (left empty): "
                         "is it the analysis that built this bank?")
    rep = _read_table(processed / "replication.csv", ["heldout_rho_mean", "replication_rate", "times_selected"])
    if rep is None:
        notes.append(f"{processed / 'replication.csv'} not found: no held-out replication figures")
        for column in ("heldout_rho", "replication_rate", "times_selected"):
            table[column] = None
    else:
        rep = rep[on + ["heldout_rho_mean", "replication_rate", "times_selected"]].rename(
            columns={"heldout_rho_mean": "heldout_rho"}).drop_duplicates(on)
        table = table.merge(rep, on=on, how="left")
    return table, notes


def _plain(value):
    """A JSON/Arrow-friendly scalar: numpy numbers to Python ones; NaN and missing to None."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# ------------------------------------------------------------------ the rows


def bank_rows(items: list[Item], prompts: PromptSet, stats: pd.DataFrame, persona: str | None = None) -> list[dict]:
    """One record per (item, variant), in bank order, variants in the prompt file's order.

    ``prompt`` is the text of the one user message ``vp run-llm`` sends for that item and
    variant (``messages`` the same as chat messages); ``options`` the phrases in the order
    the prompt lists them and ``option_values`` their scale values; ``keys`` one entry
    per keyed dimension: ``family, dimension, direction`` (``positive`` or ``reversed``),
    ``sign`` (+1/-1) and the statistics of :func:`key_statistics`.
    """
    by_item: dict[tuple[str, int], list[dict]] = {}
    for row in stats.to_dict("records"):
        entry = {"family": row["family"], "dimension": row["dimension"],
                 "direction": "positive" if row["sign"] > 0 else "reversed", "sign": int(row["sign"])}
        entry.update({name: _plain(row[name]) for name in KEY_STATS})
        if entry["n"] is not None:
            entry["n"] = int(entry["n"])
        if entry["times_selected"] is not None:
            entry["times_selected"] = int(entry["times_selected"])
        by_item.setdefault((row["portrait_id"], int(row["option_id"])), []).append(entry)
    values = dict((phrase, value) for value, phrase in prompts.labels)
    rows = []
    for item in items:
        for variant in prompts.variants:
            messages = prompts.messages(item, variant, persona)
            options = prompts.options(variant)
            reversed_order = variant.endswith(REVERSED_SUFFIX)
            rows.append({
                "id": f"{item.portrait_id}/{item.option_id}/{variant}",
                "portrait_id": item.portrait_id, "option_id": item.option_id, "variant": variant,
                "wording": variant[: -len(REVERSED_SUFFIX)] if reversed_order else variant,
                "option_order": "lowest_first" if reversed_order else "highest_first",
                "title": item.title, "query": item.text, "response": item.response, "persona": persona,
                "prompt": messages[0]["content"], "messages": messages,
                "options": options, "option_values": [values[o] for o in options],
                "keys": by_item.get(item.key, []),
            })
    return rows


def generation_settings() -> dict:
    """The request settings `vp run-llm` sends by default (temperature, token limit, seed)."""
    return OpenAIBackend("http://unused", "unused").settings()


# ------------------------------------------------------------------ writers


def _write_jsonl(path: Path, records) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _copy_helpers(out: Path) -> None:
    shutil.copyfile(PARSER_SOURCE, out / "vp_parse.py")
    shutil.copyfile(FILES / "vp_profile.py", out / "vp_profile.py")


def _sample_metadata(row: dict, labels) -> dict:
    return {
        "portrait_id": row["portrait_id"], "option_id": row["option_id"], "variant": row["variant"],
        "persona": row["persona"], "labels": [list(pair) for pair in labels],
        "keys": [[k["family"], k["dimension"], k["sign"]] for k in row["keys"]],
    }


def write_inspect(rows: list[dict], prompts: PromptSet, out: Path, context: dict) -> list[str]:
    samples = ({"id": r["id"], "input": r["prompt"], "target": "", "metadata": _sample_metadata(r, prompts.labels)}
               for r in rows)
    _write_jsonl(out / "samples.jsonl", samples)
    shutil.copyfile(FILES / "inspect_task.py", out / "task.py")
    _copy_helpers(out)
    write_text_atomic(out / "README.md", _framework_readme("inspect", context))
    return ["task.py", "samples.jsonl", "vp_parse.py", "vp_profile.py", "README.md"]


def _lm_eval_yaml(settings: dict, dimensions: list[tuple[str, str]]) -> str:
    metrics = "".join(
        f"  - metric: {fam}.{dim}\n    aggregation: !function utils.agg_{fam}__{dim}\n    higher_is_better: true\n"
        for fam, dim in dimensions)
    return (
        "# Written by `vp export-bank --format lm-eval` (valueportrait). Run it with\n"
        "#   lm_eval --include_path THIS_FOLDER --tasks valueportrait --model ... --apply_chat_template\n"
        "# Each document is one item under one prompt variant; the model generates its answer, which\n"
        "# is read by valueportrait's own parser (vp_parse.py) and scored as `vp score-llm` does:\n"
        "# each metric is a dimension's centred mean (`answered` is the share of answers parsed).\n"
        f"task: {TASK_NAME}\n"
        "custom_dataset: !function utils.load_bank\n"
        f"test_split: {SPLIT}\n"
        "output_type: generate_until\n"
        "doc_to_text: \"{{prompt}}\"\n"
        "doc_to_target: \"\"\n"
        "num_fewshot: 0\n"
        "generation_kwargs:\n"
        "  until: []\n"
        "  do_sample: false\n"
        f"  temperature: {settings['temperature']}\n"
        f"  max_gen_toks: {settings['max_tokens']}\n"
        "filter_list:\n"
        "  - name: parsed\n"
        "    filter:\n"
        "      - function: custom\n"
        "        filter_fn: !function utils.parse_ratings\n"
        "      - function: take_first\n"
        "process_results: !function utils.process_results\n"
        "metric_list:\n"
        "  - metric: answered\n    aggregation: mean\n    higher_is_better: true\n"
        + metrics +
        "metadata:\n"
        "  version: 1.0\n"
    )


def write_lm_eval(rows: list[dict], prompts: PromptSet, out: Path, context: dict) -> list[str]:
    docs = ({"id": r["id"], "prompt": r["prompt"], **_sample_metadata(r, prompts.labels)} for r in rows)
    _write_jsonl(out / "valueportrait.jsonl", docs)
    dims = sorted({(k["family"], k["dimension"]) for r in rows for k in r["keys"]},
                  key=lambda fd: _dimension_rank(*fd))
    write_text_atomic(out / "valueportrait.yaml", _lm_eval_yaml(context["generation"], dims))
    shutil.copyfile(FILES / "lm_eval_utils.py", out / "utils.py")
    _copy_helpers(out)
    write_text_atomic(out / "README.md", _framework_readme("lm-eval", context))
    return ["valueportrait.yaml", "utils.py", "valueportrait.jsonl", "vp_parse.py", "vp_profile.py", "README.md"]


def _dimension_rank(family: str, dimension: str) -> tuple:
    families = list(instruments.FAMILIES)
    dims = instruments.FAMILIES.get(family, ())
    return (families.index(family) if family in families else 99,
            dims.index(dimension) if dimension in dims else 99, family, dimension)


CSV_COLUMNS = ["question_id", "portrait_id", "option_id", "variant", "wording", "option_order", "title", "query",
               "response", "persona", "prompt", "options", "option_values", "family", "dimension", "direction",
               *KEY_STATS]


def csv_table(rows: list[dict]) -> pd.DataFrame:
    """The flat table: one row per (item, variant, keyed dimension), text cells spreadsheet-safe."""
    flat = []
    for r in rows:
        base = {"question_id": r["id"], **{c: r[c] for c in CSV_COLUMNS[1:11]},
                "options": " | ".join(r["options"]), "option_values": " | ".join(map(str, r["option_values"]))}
        for key in r["keys"]:
            flat.append({**base, **{c: key[c] for c in ("family", "dimension", "direction", *KEY_STATS)}})
    table = pd.DataFrame(flat, columns=CSV_COLUMNS)
    for column in ("option_id", "n", "times_selected"):
        table[column] = table[column].astype("Int64")
    return spreadsheet_safe(table)


def write_csv(rows: list[dict], prompts: PromptSet, out: Path, context: dict) -> list[str]:
    write_csv_atomic(csv_table(rows), out / "valueportrait.csv", index=False)
    write_text_atomic(out / "README.md", _framework_readme("csv", context))
    return ["valueportrait.csv", "README.md"]


def write_hf(rows: list[dict], prompts: PromptSet, out: Path, context: dict) -> list[str]:
    from analysis.llm.dataset_card import dataset_card, hf_features

    try:
        import datasets
    except ImportError:
        raise InputError("--format hf needs the `datasets` package: pip install -e '.[export]'") from None
    data = out / "data"
    data.mkdir()
    name = f"{SPLIT}-00000-of-00001.parquet"
    datasets.Dataset.from_list(rows, features=hf_features(datasets)).to_parquet(str(data / name))
    write_text_atomic(out / "README.md", dataset_card(rows, context))
    return [f"data/{name}", "README.md"]


WRITERS = {"hf": write_hf, "inspect": write_inspect, "lm-eval": write_lm_eval, "csv": write_csv}


def _framework_readme(fmt: str, context: dict) -> str:
    from analysis.llm.dataset_card import framework_readme

    return framework_readme(fmt, context)


# ------------------------------------------------------------------ the folder


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise InputError(f"{out}: --out: the folder holds other files (no {MANIFEST}); choose a new or empty folder")


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{tmp.name[-8:]}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def export_bank(bank_path: str | Path, fmt: str, out: str | Path, *, processed: str | Path | None = None,
                variants: str | Path | None = None, persona: str | None = None, license_: str = "unknown") -> dict:
    """Write the bank in format ``fmt`` to folder ``out``; returns the export manifest."""
    if fmt not in FORMATS:
        raise InputError(f"command line: --format: {fmt!r} is not one of {', '.join(FORMATS)}")
    bank_path, out = Path(bank_path), Path(out)
    processed = Path(processed) if processed else bank_path.parent
    items = load_bank(bank_path)
    if not items:
        raise InputError(f"{bank_path}: the bank has no items")
    prompts = load_prompts(variants)
    _prepare_out(out)
    stats, notes = key_statistics(items, processed, bank_correlations(read_data_file(bank_path, "json")))
    rows = bank_rows(items, prompts, stats, persona or None)
    analysis_manifest = read_data_file(processed / "manifest.json", "json") if (processed / "manifest.json").is_file() else None
    context = {
        "format": fmt, "tool_version": __version__, "item_bank": str(bank_path),
        "item_bank_sha256": hashlib.sha256(bank_path.read_bytes()).hexdigest(),
        "processed": str(processed), "prompts": prompts.source, "persona": persona or None,
        "variants": prompts.variants, "labels": [list(p) for p in prompts.labels],
        "generation": generation_settings(), "license": license_,
        "items": len(items), "queries": len({it.portrait_id for it in items}), "rows": len(rows),
        "notes": notes, "analysis_manifest": analysis_manifest, "processed_dir": processed,
        "simulated": any(it.true_loadings for it in items),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        files = WRITERS[fmt](rows, prompts, tmp, context)
        manifest = {k: v for k, v in context.items() if k not in ("analysis_manifest", "processed_dir")}
        manifest["files"] = files
        if analysis_manifest:
            manifest["analysis_input_sha256"] = analysis_manifest.get("input_sha256")
        write_json_atomic(manifest, tmp / MANIFEST)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# ------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--item-bank", required=True, type=Path, help="item_bank.json from `vp analyze`")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="hf: Hugging Face dataset (parquet + card); inspect: an Inspect task; "
                             "lm-eval: an lm-evaluation-harness task; csv: one flat spreadsheet-safe table")
    parser.add_argument("--out", required=True, type=Path, help="output folder (new, empty, or an earlier export)")
    parser.add_argument("--processed", type=Path,
                        help="folder with the analysis tables: correlations.csv, replication.csv, replication_shrinkage.csv, chance.csv, manifest.json (default: the bank's folder)")
    parser.add_argument("--variants", type=Path, help="YAML prompt templates replacing analysis/llm/prompts.yaml (as vp run-llm)")
    parser.add_argument("--persona", help="render the prompts with this persona, as vp run-llm --persona")
    parser.add_argument("--license", default="unknown",
                        help="license of the item texts for the dataset card (e.g. mit for the public release's items)")


def run(args) -> int:
    manifest = export_bank(args.item_bank, args.format, args.out, processed=args.processed, variants=args.variants,
                           persona=args.persona, license_=args.license)
    for note in manifest["notes"]:
        print(f"note: {note}")
    print(f"{manifest['items']} items x {len(manifest['variants'])} variants = {manifest['rows']} rows; "
          f"wrote {', '.join(manifest['files'])} to {args.out}")
    print(f"next: {_next_step(args.format, args.out)}")
    return 0


def _next_step(fmt: str, out: Path) -> str:
    return {
        "hf": f"datasets.load_dataset('parquet', data_dir='{out}'), or upload the folder to the Hub",
        "inspect": f"cd {out} && inspect eval task.py --model openai/MODEL (Inspect wants a relative task path), "
                   "then vp score-llm --item-bank BANK --responses logs/",
        "lm-eval": f"lm_eval --include_path {out} --tasks {TASK_NAME} --model local-chat-completions --apply_chat_template ...",
        "csv": f"open {out}/valueportrait.csv (one row per item, variant and keyed dimension)",
    }[fmt]
