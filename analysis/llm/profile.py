"""An LLM's value profile from its answers to the item bank, and how consistent those answers are.

Reads the bank (``item_bank.json``) and one or more answer files: the release's
``{model}_averaged_results.json`` or ``vp run-llm``'s ``NAME.json`` (a folder stands for
every ``*.json`` in it that has that shape). The model name is the file name without
``_averaged_results.json`` or ``.json``.

Writes ``llm_profiles.csv`` (``model, family, dimension, centered_mean, original_mean,
std_dev, n``) and beside it ``llm_consistency.csv`` (per model: ICC across the prompt
variants and the option-order bias).

Definitions (the Value Portrait study's, DESIGN.md). Let ``a_i`` be the model's answer to
item ``i`` (its ``numeric_response``, the mean over the parsed prompt variants), ``K_d``
the bank items keyed to dimension ``d`` and ``K_f`` the union of ``K_d`` over the
dimensions of family ``f`` (each item once), restricted to the items the model answered.

* ``original_mean_d = mean_{i in K_d} o_id`` with the oriented answer ``o_id = a_i``, or
  ``7 - a_i`` when ``d`` is reversed for ``i`` (only with ``--keying abs``).
* ``std_dev_d``: the sample SD (ddof = 1) of ``o_id`` over ``K_d``; ``n_d = |K_d|``.
* ``m_f = mean_{i in K_f} a_i``: the model's general answer level on the family's items,
  from the raw (never reversed) answers, each item counted once.
* ``centered_mean_d = original_mean_d - r_d`` with the reference
  ``r_d = p_d * m_f + (1 - p_d) * (7 - m_f)``, ``p_d`` the share of ``K_d`` keyed
  positively. With ``--keying pos`` (the default) ``p_d = 1`` and this is the study's
  ``original_mean_d - m_f``. With reversed items it equals
  ``mean_{i in K_d} s_id * (a_i - m_f)`` (``s = -1`` for reversed): each answer is
  centred on the general level first and then oriented, so a model that answers every
  item alike scores 0 on every dimension, whatever the keying.

With ``--keying pos`` a bank built with ``--keying abs`` is read without its reversed keys
(and says how many it dropped).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin as pg
from scipy import stats

import instruments
from analysis.llm.bank import Item, load_bank, normalise_option_id, normalise_portrait_id
from valueportrait import DEFAULT_PROCESSED
from valueportrait.atomic import write_csv_atomic
from valueportrait.errors import InputError
from valueportrait.files import brief, read_data_file

_SCALE = instruments.load_scale("similarity")
#: o = REVERSE_SUM - a reverses an answer on the 1..6 similarity scale (7 - a).
REVERSE_SUM = _SCALE.min + _SCALE.max
DEFAULT_OUT = DEFAULT_PROCESSED / "llm_profiles.csv"
PROFILE_COLUMNS = ["model", "family", "dimension", "centered_mean", "original_mean", "std_dev", "n"]
CONSISTENCY_COLUMNS = [
    "model", "n_items", "icc_type", "icc", "icc_ci_low", "icc_ci_high", "order_bias", "order_bias_t",
    "order_bias_p", "order_bias_wilcoxon_p", "n_order_items", "n_not_in_bank", "n_bank_missing",
]
REVERSED_SUFFIX = "_reversed"
ICC_TYPE = "ICC(C,1)"  # pingouin 0.7's label for Shrout & Fleiss ICC3: consistency, single rater


# ------------------------------------------------------------------ inputs


def key_table(items: list[Item], keying: str = "pos") -> pd.DataFrame:
    """One row per keyed (item, dimension): ``portrait_id, option_id, family, dimension, sign``.

    ``sign`` is +1, or -1 for a reversed key (kept only with ``keying="abs"``).
    """
    if keying not in ("pos", "abs"):
        raise InputError(f"command line: --keying: {keying!r} is not pos or abs")
    rows = [
        (item.portrait_id, item.option_id, fam, dim, -1 if dim in item.reversed.get(fam, ()) else 1)
        for item in items for fam, dims in item.keyed.items() for dim in dims
    ]
    table = pd.DataFrame(rows, columns=["portrait_id", "option_id", "family", "dimension", "sign"])
    if keying == "pos":
        table = table[table["sign"] > 0]
    return table.reset_index(drop=True)


def model_name(path: Path) -> str:
    name = path.name
    for suffix in ("_averaged_results.json", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def parse_responses(data, path: str | Path) -> pd.DataFrame:
    """Answer records -> long frame ``portrait_id, option_id, variant, value``.

    ``variant`` is ``"numeric_response"`` for the item-level answer (when given) and the
    prompt-variant name for each entry of ``version_responses``; ``value`` may be NaN.
    """
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputError(f"{path}: top level: expected a list of answer records")
    rows = []
    for i, record in enumerate(data):
        where = f"{path}: [{i}]"
        if "portrait_id" not in record or "option_id" not in record:
            raise InputError(f"{where}: missing portrait_id or option_id")
        pid = normalise_portrait_id(record["portrait_id"], where)
        oid = normalise_option_id(record["option_id"], where)
        versions = record.get("version_responses") or {}
        if not isinstance(versions, dict):
            raise InputError(f"{where}: version_responses: expected an object of variant -> answer")
        entries = list(versions.items())
        if "numeric_response" in record:
            entries.append(("numeric_response", record["numeric_response"]))
        for variant, value in entries:
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise InputError(f"{where}: {variant}: {brief(value)} is not a number or null")
            if value is not None and not _SCALE.min <= value <= _SCALE.max:
                raise InputError(f"{where}: {variant}: {brief(value)} is outside {_SCALE.min}..{_SCALE.max}")
            rows.append((pid, oid, str(variant), np.nan if value is None else float(value)))
    frame = pd.DataFrame(rows, columns=["portrait_id", "option_id", "variant", "value"])
    dup = frame.duplicated(["portrait_id", "option_id", "variant"])
    if dup.any():
        first = frame[dup].iloc[0]
        raise InputError(f"{path}: item {first.portrait_id}/{first.option_id} appears twice")
    return frame


def _looks_like_responses(data) -> bool:
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and "portrait_id" in data[0] \
        and ("numeric_response" in data[0] or "version_responses" in data[0])


def load_responses(paths: list[str | Path], notes: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """``{model: long frame}`` from files and folders (see :func:`parse_responses`)."""
    found: dict[str, pd.DataFrame] = {}
    sources: dict[str, Path] = {}
    for given in paths:
        given = Path(given)
        if given.is_dir():
            candidates = sorted(p for p in given.glob("*.json") if not p.name.startswith("."))
            explicit = False
        elif given.exists():
            candidates, explicit = [given], True
        else:
            raise InputError(f"{given}: --responses: no such file or folder")
        for path in candidates:
            data = read_data_file(path, "json")
            if not explicit and not _looks_like_responses(data):
                if notes is not None:
                    notes.append(f"skipped {path}: not an answers file")
                continue
            name = model_name(path)
            if name in found:
                raise InputError(f"{path}: model {name!r} also read from {sources[name]}")
            found[name], sources[name] = parse_responses(data, path), path
        if given.is_dir() and not any(sources[m].parent == given for m in sources):
            raise InputError(f"{given}: --responses: no answer files (*.json) in this folder")
    return found


def item_answers(long: pd.DataFrame) -> pd.Series:
    """Per item, ``numeric_response``; where it is missing or null, the mean of the parsed variants."""
    wide = long.pivot(index=["portrait_id", "option_id"], columns="variant", values="value")
    variants = [c for c in wide.columns if c != "numeric_response"]
    fallback = wide[variants].mean(axis=1) if variants else pd.Series(np.nan, index=wide.index)
    answer = wide["numeric_response"].fillna(fallback) if "numeric_response" in wide else fallback
    return answer.dropna().rename("answer")


# ------------------------------------------------------------------ statistics


def _dimension_order(keys: pd.DataFrame) -> pd.DataFrame:
    """(family, dimension) pairs of the bank in the instruments' order, unknown names last."""
    known = {(fam, dim): (fi, di) for fi, (fam, dims) in enumerate(instruments.FAMILIES.items())
             for di, dim in enumerate(dims)}
    pairs = keys[["family", "dimension"]].drop_duplicates()
    order = pairs.apply(lambda r: known.get((r.family, r.dimension), (99, 99)), axis=1)
    pairs = pairs.assign(_o=order.tolist()).sort_values(["_o", "family", "dimension"])
    return pairs.drop(columns="_o").reset_index(drop=True)


def score_profile(answers: pd.Series, keys: pd.DataFrame) -> pd.DataFrame:
    """One model's profile: ``family, dimension, centered_mean, original_mean, std_dev, n``.

    Parameters
    ----------
    answers : the model's answer per item, indexed by ``(portrait_id, option_id)``.
    keys : :func:`key_table` of the bank.

    See the module docstring for the formulas. Dimensions keyed in the bank but without
    any answered item get ``n = 0`` and NaN scores.
    """
    pairs = _dimension_order(keys)
    merged = keys.merge(answers.rename("answer").reset_index(), on=["portrait_id", "option_id"], how="inner")
    merged["oriented"] = np.where(merged["sign"] > 0, merged["answer"], REVERSE_SUM - merged["answer"])
    merged["positive"] = (merged["sign"] > 0).astype(float)
    per_dim = merged.groupby(["family", "dimension"]).agg(
        original_mean=("oriented", "mean"), std_dev=("oriented", lambda x: x.std(ddof=1)),
        n=("oriented", "size"), p_positive=("positive", "mean"),
    )
    family_mean = (merged.drop_duplicates(["family", "portrait_id", "option_id"])
                   .groupby("family")["answer"].mean().rename("family_mean"))
    out = pairs.merge(per_dim.reset_index(), on=["family", "dimension"], how="left")
    out = out.merge(family_mean.reset_index(), on="family", how="left")
    p, m = out["p_positive"], out["family_mean"]
    out["centered_mean"] = out["original_mean"] - (p * m + (1 - p) * (REVERSE_SUM - m))
    out["n"] = out["n"].fillna(0).astype(int)
    return out[["family", "dimension", "centered_mean", "original_mean", "std_dev", "n"]]


def variant_consistency(long: pd.DataFrame) -> dict:
    """ICC across prompt variants and the option-order bias of one model's answers.

    Parameters
    ----------
    long : ``portrait_id, option_id, variant, value`` (``numeric_response`` rows are ignored).

    Returns
    -------
    dict with

    * ``icc``, ``icc_ci_low``, ``icc_ci_high``: pingouin's ``intraclass_corr`` with items
      as targets and variants as raters, the ``ICC(C,1)`` row (Shrout & Fleiss ICC3,
      two-way mixed, consistency, single rater): how far the variants order the items alike.
      Items missing any variant are left out (``nan_policy="omit"``); ``n_items`` counts the rest.
    * ``order_bias``: mean over items of (mean answer under ``vK`` minus mean answer under
      ``vK_reversed``), over items with both kinds; positive = higher answers when the
      options are listed from "very much like me" down. ``order_bias_t``/``order_bias_p``:
      the paired t-test (one-sample t on the per-item differences); ``order_bias_wilcoxon_p``:
      Wilcoxon's signed-rank test on the same differences (zeros dropped).
    """
    data = long[(long["variant"] != "numeric_response")].dropna(subset=["value"])
    out = dict.fromkeys(["n_items", "icc", "icc_ci_low", "icc_ci_high", "order_bias", "order_bias_t",
                         "order_bias_p", "order_bias_wilcoxon_p", "n_order_items"], np.nan)
    out["icc_type"] = ICC_TYPE
    if data.empty:
        out["n_items"] = out["n_order_items"] = 0
        return out
    data = data.assign(item=data["portrait_id"] + "/" + data["option_id"].astype(str))
    wide = data.pivot(index="item", columns="variant", values="value")
    complete = wide.dropna()
    out["n_items"] = len(complete)
    if complete.shape[1] >= 2 and len(complete) >= 3 and complete.to_numpy().std() > 0:
        with warnings.catch_warnings():  # pingouin 0.7 uses a pandas keyword pandas 3.1 deprecates
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            icc = pg.intraclass_corr(data[data["item"].isin(complete.index)], targets="item", raters="variant",
                                     ratings="value")
        row = icc.set_index("Type").loc[ICC_TYPE]
        out["icc"] = float(row["ICC"])
        out["icc_ci_low"], out["icc_ci_high"] = (float(x) for x in row["CI95"])
    rev = [c for c in wide.columns if c.endswith(REVERSED_SUFFIX)]
    given = [c for c in wide.columns if not c.endswith(REVERSED_SUFFIX)]
    if rev and given:
        diff = (wide[given].mean(axis=1) - wide[rev].mean(axis=1)).dropna()
        out["n_order_items"] = len(diff)
        if len(diff):
            out["order_bias"] = float(diff.mean())
        if len(diff) >= 2 and diff.std() > 0:
            t = stats.ttest_1samp(diff, 0.0)
            out["order_bias_t"], out["order_bias_p"] = float(t.statistic), float(t.pvalue)
        if (diff != 0).sum() >= 1:
            out["order_bias_wilcoxon_p"] = float(stats.wilcoxon(diff).pvalue)
    else:
        out["n_order_items"] = 0
    return out


def score_models(items: list[Item], responses: dict[str, pd.DataFrame], keying: str = "pos") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Profiles and consistency of every model (see :func:`score_profile`, :func:`variant_consistency`).

    Items in a model's answers that are not in the bank are ignored (counted in
    ``n_not_in_bank``); bank items the model did not answer lower ``n`` (``n_bank_missing``).
    """
    keys = key_table(items, keying)
    bank_index = pd.MultiIndex.from_tuples([it.key for it in items], names=["portrait_id", "option_id"])
    profiles, consistency = [], []
    for model, long in responses.items():
        answers = item_answers(long)
        in_bank = answers.index.isin(bank_index)
        profile = score_profile(answers[in_bank], keys)
        profiles.append(profile.assign(model=model))
        item_idx = pd.MultiIndex.from_frame(long[["portrait_id", "option_id"]])
        row = variant_consistency(long[item_idx.isin(bank_index)])
        answered = set(answers.index[in_bank])
        row.update(model=model, n_not_in_bank=int((~in_bank).sum()),
                   n_bank_missing=int(sum(1 for it in items if it.key not in answered)))
        consistency.append(row)
    profile_df = pd.concat(profiles, ignore_index=True)[PROFILE_COLUMNS] if profiles else pd.DataFrame(columns=PROFILE_COLUMNS)
    return profile_df, pd.DataFrame(consistency, columns=CONSISTENCY_COLUMNS)


# ------------------------------------------------------------------ command line


def write_profiles(profiles: pd.DataFrame, consistency: pd.DataFrame, path: str | Path) -> Path:
    """Write the profiles to `path` and the variant consistency beside it (llm_consistency.csv)."""
    path = Path(path)
    write_csv_atomic(profiles, path, index=False, float_format="%.6g")
    cons_path = path.with_name("llm_consistency.csv")
    write_csv_atomic(consistency, cons_path, index=False, float_format="%.6g")
    return cons_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--item-bank", required=True, type=Path, help="item_bank.json from `vp analyze`")
    parser.add_argument("--responses", required=True, nargs="+", type=Path,
                        help="answer files (*_averaged_results.json or vp run-llm's NAME.json) or folders of them")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="profiles CSV; llm_consistency.csv is written beside it")
    parser.add_argument("--keying", choices=("pos", "abs"), default="pos",
                        help="pos: positively keyed items only; abs: also negatively keyed ones, reversed (7 - answer)")


def run(args) -> int:
    items = load_bank(args.item_bank)
    notes: list[str] = []
    responses = load_responses(args.responses, notes)
    for note in notes:
        print(note)
    dropped = sum(len(dims) for it in items for dims in it.reversed.values()) if args.keying == "pos" else 0
    if dropped:
        print(f"--keying pos: left out {dropped} reversed keys of the bank (use --keying abs to score them)")
    profiles, consistency = score_models(items, responses, args.keying)
    cons_path = write_profiles(profiles, consistency, args.out)
    for row in consistency.itertuples():
        print(f"{row.model}: {row.n_items} items with all variants, {row.icc_type} = {row.icc:.3f}; "
              f"order bias {row.order_bias:+.3f} (paired t p = {row.order_bias_p:.3g}); "
              f"{row.n_not_in_bank} answers not in the bank (ignored), {row.n_bank_missing} bank items unanswered")
    pvq = profiles[profiles["family"] == "pvq"]
    if not pvq.empty:
        table = pvq.pivot(index="dimension", columns="model", values="centered_mean")
        print("centred PVQ profile:\n" + table.round(3).to_string())
    print(f"wrote {args.out} and {cons_path}")
    return 0
