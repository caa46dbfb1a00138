"""An LLM's value profile from its answers to the item bank, and how consistent those answers are.

Reads the bank (``item_bank.json``) and one or more answer files: the release's
``{model}_averaged_results.json``, ``vp run-llm``'s ``NAME.json``, or a log of the Inspect
task ``vp export-bank --format inspect`` writes (``.eval`` or JSON; see
:mod:`analysis.llm.inspect_log`). A folder stands for every ``*.json`` and ``*.eval`` in it
that has one of those shapes. The model name is the file name without
``_averaged_results.json`` or ``.json``; for an Inspect log, the log's model.

Writes ``llm_profiles.csv`` (``model, family, dimension, centered_mean, original_mean,
std_dev, n``, then ``ci_low, ci_high``: a percentile bootstrap interval over items) and
beside it ``llm_consistency.csv`` (per model: ICC across the prompt variants, for one
variant and for the six-variant average the profile is built from, and the option-order
bias).

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

Intervals (``ci_low, ci_high``): the percentile bootstrap over items. Each resample draws
``|K_f|`` items with replacement from the family's answered keyed items and recomputes
``m_f`` and every ``centered_mean_d`` on it (an item drawn twice counts twice in both), so
the interval says how much the profile depends on which items happen to be in the bank. A
dimension none of whose items a resample drew has no value in that resample; the interval
is taken over the others.
"""

from __future__ import annotations

import argparse
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

import instruments
from analysis.llm import LOW_CONSISTENCY  # noqa: F401 (part of this module's interface)
from analysis.llm.bank import Item, load_bank, normalise_option_id, normalise_portrait_id
from analysis.llm.inspect_log import looks_like_inspect_json, read_inspect_log
from valueportrait import DEFAULT_PROCESSED
from valueportrait import options as opt
from valueportrait.atomic import write_csv_atomic
from valueportrait.errors import InputError
from valueportrait.files import brief, read_data_file

_SCALE = instruments.load_scale("similarity")
#: o = REVERSE_SUM - a reverses an answer on the 1..6 similarity scale (7 - a).
REVERSE_SUM = _SCALE.min + _SCALE.max
DEFAULT_OUT = DEFAULT_PROCESSED / "llm_profiles.csv"
PROFILE_COLUMNS = ["model", "family", "dimension", "centered_mean", "original_mean", "std_dev", "n", "ci_low", "ci_high"]
CONSISTENCY_COLUMNS = [
    "model", "n_items", "icc_type", "icc", "icc_ci_low", "icc_ci_high", "order_bias", "order_bias_t",
    "order_bias_p", "order_bias_wilcoxon_p", "n_order_items", "n_not_in_bank", "n_bank_missing",
    "n_variants", "icc_k_type", "icc_k", "icc_k_ci_low", "icc_k_ci_high",
]
REVERSED_SUFFIX = "_reversed"
ICC_TYPE = "ICC(C,1)"  # pingouin 0.7's label for Shrout & Fleiss ICC3: consistency, single rater
ICC_K_TYPE = "ICC(C,k)"  # Shrout & Fleiss ICC(3,k): consistency of the mean over the k variants
DEFAULT_BOOTSTRAP = 1000


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
            candidates = sorted(p for p in [*given.glob("*.json"), *given.glob("*.eval")] if not p.name.startswith("."))
            explicit = False
        elif given.exists():
            candidates, explicit = [given], True
        else:
            raise InputError(f"{given}: --responses: no such file or folder")
        for path in candidates:
            # Inspect logs of the exported task (`vp export-bank --format inspect`): .eval, or JSON logs.
            data = None if path.suffix == ".eval" else read_data_file(path, "json")
            if data is None or looks_like_inspect_json(data):
                name, frame, log_notes = read_inspect_log(path)
                if notes is not None:
                    notes.extend(log_notes)
            elif not explicit and not _looks_like_responses(data):
                if notes is not None:
                    notes.append(f"skipped {path}: not an answers file")
                continue
            else:
                name, frame = model_name(path), parse_responses(data, path)
            if name in found:
                raise InputError(f"{path}: model {name!r} also read from {sources[name]}")
            found[name], sources[name] = frame, path
        if given.is_dir() and not any(sources[m].parent == given for m in sources):
            raise InputError(f"{given}: --responses: no answer files (*.json, Inspect *.eval) in this folder")
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


def bootstrap_profile(answers: pd.Series, keys: pd.DataFrame, n_boot: int = DEFAULT_BOOTSTRAP,
                      rng: np.random.Generator | None = None, level: float = 0.95) -> pd.DataFrame:
    """Percentile bootstrap interval of every ``centered_mean``, resampling items (see the module docstring).

    Parameters
    ----------
    answers : the model's answer per item, indexed by ``(portrait_id, option_id)``.
    keys : :func:`key_table` of the bank.
    n_boot : resamples (0: no intervals, NaN).
    rng : the random generator (default: seed 0).
    level : the interval's coverage.

    Returns
    -------
    DataFrame ``family, dimension, ci_low, ci_high, n_boot_defined`` in the order of
    :func:`score_profile`. Vectorised over resamples: per family, the resamples are a
    matrix of multinomial counts ``W`` (resamples x items), and every dimension's centred
    mean of every resample comes from three matrix products:
    ``(W @ (S a) - m * (W @ S)) / (W @ |S|)`` with ``S`` the items' signed keys and
    ``m = W @ a / |K_f|`` the resample's general level.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    pairs = _dimension_order(keys)
    out = pairs.assign(ci_low=np.nan, ci_high=np.nan, n_boot_defined=0)
    if n_boot <= 0:
        return out
    merged = keys.merge(answers.rename("answer").reset_index(), on=["portrait_id", "option_id"], how="inner")
    tail = (1 - level) / 2
    for family, part in merged.groupby("family", sort=False):
        items = part[["portrait_id", "option_id"]].drop_duplicates().reset_index(drop=True)
        dims = pairs.loc[pairs["family"] == family, "dimension"].tolist()
        row = pd.MultiIndex.from_frame(items).get_indexer(pd.MultiIndex.from_frame(part[["portrait_id", "option_id"]]))
        col = pd.Index(dims).get_indexer(part["dimension"])
        signs = np.zeros((len(items), len(dims)))
        signs[row, col] = part["sign"].to_numpy(float)
        a = np.zeros(len(items))
        a[row] = part["answer"].to_numpy(float)
        n = len(items)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)  # resamples x items
        level_b = counts @ a / n
        with np.errstate(invalid="ignore", divide="ignore"):
            centred = (counts @ (signs * a[:, None]) - level_b[:, None] * (counts @ signs)) / (counts @ np.abs(signs))
        defined = np.isfinite(centred).sum(axis=0)
        with warnings.catch_warnings():  # a dimension never drawn has no interval
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanquantile(centred, [tail, 1 - tail], axis=0)
        at = out.index[out["family"] == family]
        out.loc[at, "ci_low"], out.loc[at, "ci_high"], out.loc[at, "n_boot_defined"] = low, high, defined
    return out


def _model_rng(seed: int, model: str) -> np.random.Generator:
    """A generator per model, the same whichever other models are scored in the same run."""
    return np.random.default_rng([int(seed), zlib.crc32(model.encode("utf-8"))])


def consistency_icc(y: np.ndarray, level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """ICC(C,1) and ICC(C,k) (Shrout & Fleiss ICC3, ICC3k) of a complete targets x raters array, with F intervals.

    The two-way ANOVA without replication: MS_targets = k SS(row means) / (n - 1),
    MS_error = SS_residual / ((n - 1)(k - 1)); ICC(C,1) = (MSR - MSE) / (MSR + (k - 1) MSE),
    ICC(C,k) = (MSR - MSE) / MSR. With F = MSR / MSE and the F quantiles q_l = F_{1 - a/2}(n - 1,
    (n - 1)(k - 1)), q_u = F_{1 - a/2}((n - 1)(k - 1), n - 1): F_L = F / q_l, F_U = F q_u, and the
    interval is ((F_L - 1) / (F_L + k - 1), (F_U - 1) / (F_U + k - 1)) for ICC(C,1) and
    (1 - 1 / F_L, 1 - 1 / F_U) for ICC(C,k) (Shrout & Fleiss 1979; McGraw & Wong 1996).
    The figures of pingouin's ``intraclass_corr`` (``tests/test_llm_profile.py`` compares
    them), whose import costs `vp score-llm` about a second; its interval is rounded to 2
    decimals, this one is not. Returns ``{"ICC(C,1)": (icc, low, high), "ICC(C,k)": (...)}``.

    References
    ----------
    Shrout, P. E., & Fleiss, J. L. (1979). Intraclass correlations: uses in assessing rater
    reliability. Psychological Bulletin, 86(2), 420-428.
    """
    from scipy import special

    y = np.asarray(y, dtype=float)
    n, k = y.shape
    grand = y.mean()
    ss_rows = k * ((y.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((y.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((y - grand) ** 2).sum() - ss_rows - ss_cols
    df_rows, df_err = n - 1, (n - 1) * (k - 1)
    msr, mse = ss_rows / df_rows, ss_err / df_err
    f = msr / mse
    tail = 1 - (1 - level) / 2
    f_low = f / special.fdtri(df_rows, df_err, tail)
    f_high = f * special.fdtri(df_err, df_rows, tail)
    return {ICC_TYPE: ((msr - mse) / (msr + (k - 1) * mse), (f_low - 1) / (f_low + k - 1), (f_high - 1) / (f_high + k - 1)),
            ICC_K_TYPE: ((msr - mse) / msr, 1 - 1 / f_low, 1 - 1 / f_high)}


def variant_consistency(long: pd.DataFrame) -> dict:
    """ICC across prompt variants and the option-order bias of one model's answers.

    Parameters
    ----------
    long : ``portrait_id, option_id, variant, value`` (``numeric_response`` rows are ignored).

    Returns
    -------
    dict with

    * ``icc``, ``icc_ci_low``, ``icc_ci_high``: :func:`consistency_icc` (pingouin's
      ``intraclass_corr``) with items as targets and variants as raters, the ``ICC(C,1)`` row (Shrout & Fleiss ICC3,
      two-way mixed, consistency, single rater): how far the variants order the items alike.
      Items missing any variant are left out (``nan_policy="omit"``); ``n_items`` counts the rest.
    * ``icc_k``, ``icc_k_ci_low``, ``icc_k_ci_high``: the ``ICC(C,k)`` row (ICC3k), the
      consistency of the mean over the ``n_variants`` variants, which is what the profile
      uses: ``(MS_items - MS_error) / MS_items``, i.e. Cronbach's alpha over the variants.
    * ``order_bias``: mean over items of (mean answer under ``vK`` minus mean answer under
      ``vK_reversed``), over items with both kinds; positive = higher answers when the
      options are listed from "very much like me" down. ``order_bias_t``/``order_bias_p``:
      the paired t-test (one-sample t on the per-item differences); ``order_bias_wilcoxon_p``:
      Wilcoxon's signed-rank test on the same differences (zeros dropped).
    """
    from scipy import stats  # only where used: its import costs half a second

    data = long[(long["variant"] != "numeric_response")].dropna(subset=["value"])
    out = dict.fromkeys(["n_items", "icc", "icc_ci_low", "icc_ci_high", "order_bias", "order_bias_t",
                         "order_bias_p", "order_bias_wilcoxon_p", "n_order_items", "icc_k", "icc_k_ci_low",
                         "icc_k_ci_high"], np.nan)
    out["icc_type"], out["icc_k_type"] = ICC_TYPE, ICC_K_TYPE
    if data.empty:
        out["n_items"] = out["n_order_items"] = out["n_variants"] = 0
        return out
    data = data.assign(item=data["portrait_id"] + "/" + data["option_id"].astype(str))
    wide = data.pivot(index="item", columns="variant", values="value")
    complete = wide.dropna()
    out["n_items"], out["n_variants"] = len(complete), wide.shape[1]
    if complete.shape[1] >= 2 and len(complete) >= 3 and complete.to_numpy().std() > 0:
        icc = consistency_icc(complete.to_numpy(float))
        for prefix, kind in (("icc", ICC_TYPE), ("icc_k", ICC_K_TYPE)):
            out[prefix], out[f"{prefix}_ci_low"], out[f"{prefix}_ci_high"] = (float(x) for x in icc[kind])
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


def score_models(items: list[Item], responses: dict[str, pd.DataFrame], keying: str = "pos",
                 bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Profiles and consistency of every model (see :func:`score_profile`, :func:`variant_consistency`).

    Items in a model's answers that are not in the bank are ignored (counted in
    ``n_not_in_bank``); bank items the model did not answer lower ``n`` (``n_bank_missing``).
    ``bootstrap`` resamples of the items give each score's interval (:func:`bootstrap_profile`),
    seeded by ``seed`` and the model's name.
    """
    keys = key_table(items, keying)
    bank_index = pd.MultiIndex.from_tuples([it.key for it in items], names=["portrait_id", "option_id"])
    profiles, consistency = [], []
    for model, long in responses.items():
        answers = item_answers(long)
        in_bank = answers.index.isin(bank_index)
        profile = score_profile(answers[in_bank], keys)
        ci = bootstrap_profile(answers[in_bank], keys, bootstrap, _model_rng(seed, model))
        profile = profile.merge(ci[["family", "dimension", "ci_low", "ci_high"]], on=["family", "dimension"], how="left")
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
                        help="answer files (*_averaged_results.json, vp run-llm's NAME.json, Inspect logs of the exported task) or folders of them")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="profiles CSV; llm_consistency.csv is written beside it")
    parser.add_argument("--keying", choices=("pos", "abs"), default="pos",
                        help="pos: positively keyed items only; abs: also negatively keyed ones, reversed (7 - answer)")
    parser.add_argument("--bootstrap", type=opt.count(0), default=DEFAULT_BOOTSTRAP,
                        help="resamples of the items for each score's 95%% interval (ci_low, ci_high; 0: none)")
    parser.add_argument("--seed", type=opt.seed(), default=0, help="seed of the bootstrap (with each model's name)")


def run(args) -> int:
    if args.bootstrap < 0:
        raise InputError(f"command line: --bootstrap: {args.bootstrap} is negative")
    items = load_bank(args.item_bank)
    notes: list[str] = []
    responses = load_responses(args.responses, notes)
    for note in notes:
        print(note)
    dropped = sum(len(dims) for it in items for dims in it.reversed.values()) if args.keying == "pos" else 0
    if dropped:
        print(f"--keying pos: left out {dropped} reversed keys of the bank (use --keying abs to score them)")
    profiles, consistency = score_models(items, responses, args.keying, bootstrap=args.bootstrap, seed=args.seed)
    cons_path = write_profiles(profiles, consistency, args.out)
    for row in consistency.itertuples():
        print(f"{row.model}: {row.n_items} items with all variants, {row.icc_type} = {row.icc:.3f}, "
              f"{row.icc_k_type} = {row.icc_k:.3f} (the {row.n_variants}-variant average); "
              f"order bias {row.order_bias:+.3f} (paired t p = {row.order_bias_p:.3g}); "
              f"{row.n_not_in_bank} answers not in the bank (ignored), {row.n_bank_missing} bank items unanswered")
    pvq = profiles[profiles["family"] == "pvq"]
    if not pvq.empty:
        table = pvq.pivot(index="dimension", columns="model", values="centered_mean")
        print("centred PVQ profile:\n" + table.round(3).to_string())
    print(f"wrote {args.out} and {cons_path}")
    return 0
