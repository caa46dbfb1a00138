"""How LLMs picture demographic groups, against what members of those groups report.

Two sides, compared value by value on the ten PVQ values (circle order):

* **Humans**: each participant's centred PVQ-21 value scores, grouped by a demographic
  attribute (``gender``, ``age_band``, ``education``, ``politics``). Per group the mean
  profile with a t-based confidence interval; per attribute and value a test of the group
  difference (Welch's t for two groups, one-way ANOVA for more, Kruskal-Wallis beside it),
  Benjamini-Hochberg corrected across the ten values.
* **LLM personas**: ``vp run-llm --persona TEXT`` writes a model's answers under the
  name ``NAME__persona-<slug>``; ``vp score-llm`` turns them into a centred profile. A
  ``personas.json`` says which group each persona stands for::

      [{"slug": "a-woman", "attribute": "gender", "group": "female", "persona": "a woman"}, ...]

  (``slug`` may be left out: it is then derived from ``persona`` as run-llm does).

**One scale.** Human profiles are centred PVQ-21 scores; persona profiles are centred item
ratings: different units (a model may also use less or more of the rating scale than people
use of the PVQ's). Before anything is compared, both sides are standardised the same way:
per model and attribute, over the groups both sides have, each side's profiles are divided
by that side's *spread*, the standard deviation (ddof = 0) across the values of the mean of
its group profiles, s = SD_v(mean_g p_gv) (over the values both sides score). A
standardised gap of 1 is as large as the typical difference between two values in the
source's own average profile. The standardisation removes any change of units on either
side (a persona profile read as a + b * p gives the same standardised gaps as p).

Per model and group: the Euclidean distance between the persona's profile and the human
group's mean profile (raw and standardised) and their Spearman rank correlation. Per model
and pair of groups of one attribute, the *gap analysis*: the human gap h (A - B, per value,
standardised) against the LLM's standardised gap l between the two personas. With a
tolerance t (default :data:`DEFAULT_TOLERANCE`: a fifth of the spread), a gap with |gap| < t
counts as near zero, and a value's LLM gap

* ``reverses`` the human gap when both are beyond the tolerance and have opposite signs;
* ``exaggerates`` it when |l| > |h| otherwise (including a gap the humans do not show);
* ``attenuates`` it when |l| <= |h| otherwise (including a human gap the model misses);
* is ``near zero`` when both gaps are within the tolerance (nothing to compare).

Per model the shares of each label and the slope of the LLM gap on the human gap
(least squares through the origin, slope = sum(h l) / sum(h^2): a gap's sign depends only
on which group is named first, so the fit must not depend on that order; slope > 1 means
the model exaggerates the human differences on average, slope < 0 that it reverses them),
on the raw gaps (``slope``, mixed units, kept for comparison) and the standardised ones
(``slope_std``).

Reference: Han et al. (2025), Value Portrait, ACL (the persona analysis of its section 6).
"""

from __future__ import annotations

import json
import math
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

import instruments as inst
from valueportrait.atomic import write_csv_atomic
from valueportrait.errors import InputError
from valueportrait.files import brief, read_data_file

VALUES: tuple[str, ...] = inst.PVQ_VALUES  # circle order
ATTRIBUTES: tuple[str, ...] = ("gender", "age_band", "education", "politics")
AGE_BANDS: tuple[tuple[float, float, str], ...] = ((18, 29, "18-29"), (30, 44, "30-44"), (45, 59, "45-59"), (60, math.inf, "60+"))
PERSONA_MARK = "__persona-"
#: Standardised gaps smaller than this (in units of the source's spread) count as near zero.
DEFAULT_TOLERANCE = 0.2

PROFILE_COLUMNS = ["source", "attribute", "group", "dimension", "n", "mean", "sd", "ci_low", "ci_high"]
TEST_COLUMNS = ["attribute", "dimension", "test", "n_groups", "n", "statistic", "p_value", "q_value",
                "kruskal_h", "kruskal_p", "kruskal_q", "eta_squared", "difference"]  # fmt: skip
BIAS_COLUMNS = ["model", "attribute", "group", "slug", "n_humans", "n_values", "euclidean", "spearman_rho", "spearman_p",
                "euclidean_std"]  # fmt: skip
GAP_COLUMNS = ["model", "attribute", "group_a", "group_b", "dimension", "human_gap", "llm_gap", "label",
               "human_gap_std", "llm_gap_std", "human_scale", "llm_scale"]  # fmt: skip
SUMMARY_COLUMNS = ["model", "attribute", "n_gaps", "share_exaggerated", "share_reversed", "share_attenuated", "slope",
                   "mean_euclidean", "mean_spearman", "share_near_zero", "slope_std", "mean_euclidean_std",
                   "tolerance"]  # fmt: skip

# Prolific export headers (and ours), after _norm_header: lower case, non-alphanumerics -> "_".
_ALIASES: dict[str, tuple[str, ...]] = {
    "participant_id": ("participant_id", "participant", "prolific_pid", "prolific_id", "pid"),
    "age": ("age",),
    "gender": ("gender", "sex", "gender_identity"),
    "education": ("education", "highest_education_level_completed", "education_level", "highest_education"),
    "politics": ("politics", "political_spectrum_us", "political_spectrum", "political_orientation",
                 "political_affiliation_us", "political_affiliation"),  # fmt: skip
    "country": ("country", "country_of_residence"),
    "time_taken": ("time_taken", "seconds", "time_taken_seconds"),
}
# Prolific's placeholders for answers it no longer shares.
_MISSING = {"", "nan", "none", "data_expired", "consent_revoked", "prefer not to say", "revoked", "n/a", "na"}


def _norm_header(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def age_band(age) -> pd.Series:
    """Age in years -> ``18-29``, ``30-44``, ``45-59``, ``60+`` (NaN below 18 or unknown).

    >>> age_band(pd.Series([18, 29.5, 30, 59, 60, 17, None])).tolist()
    ['18-29', '18-29', '30-44', '45-59', '60+', nan, nan]
    """
    a = pd.to_numeric(pd.Series(age), errors="coerce")
    out = pd.Series(np.nan, index=a.index, dtype=object)
    for low, high, label in AGE_BANDS:
        # bands are closed on whole years; 29.5 is still in its thirtieth year -> 18-29
        out[(a >= low) & (np.floor(a) <= high)] = label
    return out


def _clean_labels(s: pd.Series) -> pd.Series:
    text = s.astype(object).where(s.notna(), None).map(lambda v: None if v is None else str(v).strip())
    return text.map(lambda v: np.nan if v is None or v.lower() in _MISSING else v)


def normalise_demographics(frame: pd.DataFrame, source: str = "demographics") -> pd.DataFrame:
    """Rename a demographics table (ours or a Prolific export) to our columns and clean it.

    Returns ``participant_id, age, gender, education, politics, country, time_taken,
    age_band`` (columns absent from the input are NaN). Gender is lower-cased (Prolific's
    ``Sex`` gives ``Male``/``Female``); Prolific's ``DATA_EXPIRED``/``CONSENT_REVOKED`` and
    empty cells become NaN.
    """
    by_norm = {_norm_header(c): c for c in frame.columns}
    out = pd.DataFrame(index=frame.index)
    for ours, aliases in _ALIASES.items():
        hit = next((by_norm[a] for a in aliases if a in by_norm), None)
        out[ours] = frame[hit] if hit is not None else np.nan
    if out["participant_id"].isna().all():
        raise InputError(f"{source}: participant id: no column named one of "
                         f"'participant_id', 'Participant id', 'PROLIFIC_PID' (columns: {', '.join(map(str, frame.columns))})")
    out = out[out["participant_id"].notna()].copy()
    out["participant_id"] = out["participant_id"].astype(str).str.strip()
    for col in ("gender", "education", "politics", "country"):
        out[col] = _clean_labels(out[col])
    out["gender"] = out["gender"].map(lambda v: v.lower() if isinstance(v, str) else v)
    out["age"] = pd.to_numeric(_clean_labels(out["age"]), errors="coerce")
    out["time_taken"] = pd.to_numeric(_clean_labels(out["time_taken"]), errors="coerce")
    out["age_band"] = age_band(out["age"]).to_numpy()
    return out.drop_duplicates("participant_id", keep="last").reset_index(drop=True)


def read_demographics_csv(path: str | Path) -> pd.DataFrame:
    """A demographics CSV (a Prolific export or ours), normalised (see `normalise_demographics`)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read it as CSV: {exc}") from exc
    return normalise_demographics(frame, str(path))


def demographics_from_db(db_path: str | Path, study_id: str | None = None) -> pd.DataFrame:
    """The participants table of the study database, normalised; empty when it holds none."""
    from valueportrait.storage import open_db

    with open_db(db_path, readonly=True) as db:
        study = db.resolve_study(study_id)
        frame = db.table("participants", study)
    if frame.empty:
        return normalise_demographics(pd.DataFrame(columns=["participant_id"]), str(db_path))
    return normalise_demographics(frame.drop(columns=["study_id"]), str(db_path))


def has_demographics(demo: pd.DataFrame) -> bool:
    return demo is not None and not demo.empty and demo[list(ATTRIBUTES)].notna().any().any()


# --------------------------------------------------------------------------- human side


def _groups(demo: pd.DataFrame, attribute: str) -> list[str]:
    present = demo[attribute].dropna().unique().tolist()
    if attribute == "age_band":
        return [b[2] for b in AGE_BANDS if b[2] in present]
    return sorted(present, key=str)


def group_profiles(scores: pd.DataFrame, demographics: pd.DataFrame, attributes=ATTRIBUTES, level: float = 0.95,
                   min_n: int = 2) -> pd.DataFrame:
    """Mean centred value profile per demographic group, with t-based confidence intervals.

    Parameters
    ----------
    scores : DataFrame
        Indexed by participant_id, one column per PVQ value (centred scores). Participants
        with any value missing are left out.
    demographics : DataFrame
        ``participant_id`` and the attribute columns (see `normalise_demographics`).
    level : float
        Confidence level of mean +- t_{n-1, (1+level)/2} * sd / sqrt(n).
    min_n : int
        Groups with fewer participants are left out.

    Returns
    -------
    DataFrame ``source ("humans"), attribute, group, dimension, n, mean, sd, ci_low, ci_high``.
    """
    from scipy import stats  # only where used: its import costs half a second

    merged = _merge(scores, demographics)
    rows = []
    for attribute in attributes:
        sub = merged[merged[attribute].notna()]
        if sub.empty:
            continue
        g = sub.groupby(attribute)[list(VALUES)]
        n, mean, sd = g.count(), g.mean(), g.std(ddof=1)
        half = stats.t.ppf((1 + level) / 2, n - 1) * sd / np.sqrt(n)
        for group in _groups(sub, attribute):
            if n.loc[group].iloc[0] < min_n:
                continue
            rows.append(pd.DataFrame({
                "source": "humans", "attribute": attribute, "group": group, "dimension": list(VALUES),
                "n": n.loc[group].to_numpy(), "mean": mean.loc[group].to_numpy(), "sd": sd.loc[group].to_numpy(),
                "ci_low": (mean.loc[group] - half.loc[group]).to_numpy(),
                "ci_high": (mean.loc[group] + half.loc[group]).to_numpy(),
            }))  # fmt: skip
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=PROFILE_COLUMNS)


def _merge(scores: pd.DataFrame, demographics: pd.DataFrame) -> pd.DataFrame:
    s = scores[list(VALUES)].dropna()
    s.index = s.index.astype(str)
    demo = demographics.set_index("participant_id")[list(ATTRIBUTES)]
    return s.join(demo, how="inner")


def group_tests(scores: pd.DataFrame, demographics: pd.DataFrame, attributes=ATTRIBUTES, min_n: int = 2) -> pd.DataFrame:
    """Per attribute and value, a test of the difference between the groups' means.

    Two groups: Welch's t (``scipy.stats.ttest_ind(equal_var=False)``), with
    ``difference`` = mean of the first group minus the second (groups in the order of
    `group_profiles`). More: one-way ANOVA (``scipy.stats.f_oneway``). Always also
    Kruskal-Wallis. eta^2 = SS_between / SS_total. q-values: Benjamini-Hochberg across the
    ten values of an attribute, for each test. Groups below `min_n` are left out; an
    attribute with fewer than two groups gets no rows.
    """
    from scipy import stats  # only where used: its import costs half a second

    from statsmodels.stats.multitest import multipletests

    merged = _merge(scores, demographics)
    out = []
    for attribute in attributes:
        sub = merged[merged[attribute].notna()]
        if sub.empty:
            continue
        groups = [g for g in _groups(sub, attribute) if (sub[attribute] == g).sum() >= min_n]
        if len(groups) < 2:
            continue
        arrays = [sub.loc[sub[attribute] == g, list(VALUES)].to_numpy(float) for g in groups]
        if len(groups) == 2:
            test, res = "welch_t", stats.ttest_ind(arrays[0], arrays[1], equal_var=False, axis=0)
            difference = arrays[0].mean(axis=0) - arrays[1].mean(axis=0)
        else:
            test, res = "anova", stats.f_oneway(*arrays, axis=0)
            difference = np.full(len(VALUES), np.nan)
        kw = stats.kruskal(*arrays, axis=0)
        allx = np.vstack(arrays)
        ss_total = ((allx - allx.mean(axis=0)) ** 2).sum(axis=0)
        ss_between = sum(len(a) * (a.mean(axis=0) - allx.mean(axis=0)) ** 2 for a in arrays)
        p = np.asarray(res.pvalue, float)
        kp = np.asarray(kw.pvalue, float)
        out.append(pd.DataFrame({
            "attribute": attribute, "dimension": list(VALUES), "test": test, "n_groups": len(groups), "n": len(allx),
            "statistic": np.asarray(res.statistic, float), "p_value": p, "q_value": _bh(p, multipletests),
            "kruskal_h": np.asarray(kw.statistic, float), "kruskal_p": kp, "kruskal_q": _bh(kp, multipletests),
            "eta_squared": np.divide(ss_between, ss_total, out=np.full(len(VALUES), np.nan), where=ss_total > 0),
            "difference": difference,
        }))  # fmt: skip
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=TEST_COLUMNS)


def _bh(p: np.ndarray, multipletests) -> np.ndarray:
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return q


# --------------------------------------------------------------------------- LLM side


def load_personas(personas, source: str = "personas") -> pd.DataFrame:
    """The persona mapping: ``slug, attribute, group, persona``.

    `personas` is a path to a JSON list, or the list itself, of objects with ``attribute``,
    ``group`` and ``slug`` and/or ``persona`` (the text given to ``vp run-llm --persona``;
    the slug is derived from it as run-llm does). ``age`` is read as ``age_band``.
    """
    if isinstance(personas, (str, Path)):
        source = str(personas)
        personas = read_data_file(personas, "json")
    if not isinstance(personas, list):
        raise InputError(f"{source}: top level: expected a list of personas, got {type(personas).__name__}")
    from analysis.llm.runner import persona_slug

    rows = []
    for i, p in enumerate(personas):
        if not isinstance(p, dict):
            raise InputError(f"{source}: [{i}]: expected an object, got {brief(p)}")
        attribute = {"age": "age_band", "sex": "gender"}.get(str(p.get("attribute", "")), str(p.get("attribute", "")))
        if attribute not in ATTRIBUTES:
            raise InputError(f"{source}: [{i}].attribute: {p.get('attribute')!r} is not one of {', '.join(ATTRIBUTES)}")
        group = p.get("group")
        if group is None or str(group).strip() == "":
            raise InputError(f"{source}: [{i}].group: {group!r} is empty")
        slug = p.get("slug") or (persona_slug(p["persona"]) if p.get("persona") else None)
        if not slug:
            raise InputError(f"{source}: [{i}].slug: neither slug nor persona given")
        group = str(group).strip()
        rows.append({"slug": str(slug), "attribute": attribute,
                     "group": group.lower() if attribute == "gender" else group, "persona": p.get("persona", "")})
    frame = pd.DataFrame(rows, columns=["slug", "attribute", "group", "persona"])
    dup = frame["slug"].duplicated()
    if dup.any():
        raise InputError(f"{source}: slug: {frame.loc[dup, 'slug'].iloc[0]!r} appears twice")
    return frame


def split_persona_models(models) -> pd.DataFrame:
    """``NAME__persona-<slug>`` -> (``NAME``, ``slug``); slug is NaN for a plain model."""
    s = pd.Series(list(models), dtype=object)
    parts = s.str.split(PERSONA_MARK, n=1, regex=False)
    return pd.DataFrame({"model_name": s, "model": parts.str[0], "slug": parts.map(lambda p: p[1] if len(p) > 1 else np.nan)})


def persona_profiles(llm_profiles: pd.DataFrame, personas: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The centred PVQ profiles of the persona runs, labelled with their group.

    Returns (long DataFrame ``model, slug, attribute, group, dimension, centered_mean``,
    notes on persona runs that the mapping does not name).
    """
    pvq = llm_profiles[llm_profiles["family"] == "pvq"]
    names = split_persona_models(pvq["model"].unique())
    names = names[names["slug"].notna()]
    notes = []
    unknown = sorted(set(names["slug"]) - set(personas["slug"]))
    if unknown:
        notes.append(f"persona runs with no entry in personas.json (left out): {', '.join(unknown)}")
    merged = (pvq.merge(names, left_on="model", right_on="model_name", suffixes=("_full", ""))
              .merge(personas[["slug", "attribute", "group"]], on="slug"))
    cols = ["model", "slug", "attribute", "group", "dimension", "centered_mean"]
    return merged[merged["dimension"].isin(VALUES)][cols].reset_index(drop=True), notes


def profile_scales(human: pd.DataFrame, llm: pd.DataFrame) -> pd.DataFrame:
    """Per model and attribute, each side's spread: the unit both sides' profiles are divided by.

    Over the groups both sides have (and the values both score), the spread of a side is
    ``SD_v(mean_g p_gv)`` (ddof = 0): the standard deviation across values of the mean of
    its group profiles. Returns ``model, attribute, n_groups, human_scale, llm_scale``
    (NaN when a side has fewer than two values or no spread at all).
    """
    h = human.pivot_table(index=["attribute", "group"], columns="dimension", values="mean").reindex(columns=list(VALUES))
    rows = []
    for (model, attribute), part in llm.groupby(["model", "attribute"], sort=True):
        l = part.pivot_table(index="group", columns="dimension", values="centered_mean").reindex(columns=list(VALUES))
        groups = [g for g in _order(attribute, l.index) if (attribute, g) in h.index]
        if not groups:
            continue
        hm = h.loc[[(attribute, g) for g in groups]].to_numpy(float).mean(axis=0)
        lm = l.loc[groups].to_numpy(float).mean(axis=0)
        ok = np.isfinite(hm) & np.isfinite(lm)
        hs, ls = (float(x[ok].std()) if ok.sum() >= 2 else math.nan for x in (hm, lm))
        rows.append({"model": model, "attribute": attribute, "n_groups": len(groups),
                     "human_scale": hs if hs > 0 else math.nan, "llm_scale": ls if ls > 0 else math.nan})
    return pd.DataFrame(rows, columns=["model", "attribute", "n_groups", "human_scale", "llm_scale"])


def _scale_lookup(scales: pd.DataFrame) -> dict[tuple[str, str], tuple[float, float]]:
    return {(r.model, r.attribute): (r.human_scale, r.llm_scale) for r in scales.itertuples()}


def profile_distances(human: pd.DataFrame, llm: pd.DataFrame, min_values: int = 3) -> pd.DataFrame:
    """Per model and group: Euclidean distance and Spearman's rho between LLM and human profiles.

    d = sqrt(sum_v (l_v - h_v)^2) and rho = ``scipy.stats.spearmanr(l, h)`` over the values
    both sides have (all ten normally; a small bank may leave a value with no keyed item,
    and then ``n_values`` says over how many the figures are, so compare distances only
    at equal ``n_values``). ``euclidean_std`` is the same distance between the two profiles
    each divided by its side's spread (:func:`profile_scales`): on one scale. Groups with
    fewer than `min_values` shared values are left out.
    """
    from scipy import stats  # only where used: its import costs half a second

    h = human.pivot_table(index=["attribute", "group"], columns="dimension", values="mean")
    n = human.groupby(["attribute", "group"])["n"].first()
    scales = _scale_lookup(profile_scales(human, llm))
    rows = []
    for (model, attribute, group, slug), part in llm.groupby(["model", "attribute", "group", "slug"], sort=True):
        if (attribute, group) not in h.index:
            continue
        lv = part.set_index("dimension")["centered_mean"].reindex(VALUES).to_numpy(float)
        hv = h.loc[(attribute, group)].reindex(VALUES).to_numpy(float)
        ok = np.isfinite(lv) & np.isfinite(hv)
        if ok.sum() < min_values:
            continue
        rho, p = stats.spearmanr(lv[ok], hv[ok])
        s_h, s_l = scales.get((model, attribute), (math.nan, math.nan))
        rows.append({"model": model, "attribute": attribute, "group": group, "slug": slug,
                     "n_humans": int(n.loc[(attribute, group)]), "n_values": int(ok.sum()),
                     "euclidean": float(np.sqrt(((lv[ok] - hv[ok]) ** 2).sum())),
                     "spearman_rho": float(rho), "spearman_p": float(p),
                     "euclidean_std": float(np.sqrt(((lv[ok] / s_l - hv[ok] / s_h) ** 2).sum()))})
    return pd.DataFrame(rows, columns=BIAS_COLUMNS)


def gap_labels(human_gap, llm_gap, tolerance: float = 0.0) -> np.ndarray:
    """Label each LLM gap against the human gap; gaps with |gap| < tolerance are near zero.

    'near zero' if both are near zero; 'reverses' if neither is and they have opposite signs;
    else 'exaggerates' if |l| > |h| and 'attenuates' if not; '' where either is NaN.

    >>> gap_labels([0.4, 0.4, 0.4, 0.0], [0.6, 0.2, -0.1, 0.0]).tolist()
    ['exaggerates', 'attenuates', 'reverses', 'attenuates']
    >>> gap_labels([0.4, 0.05, 0.05, 0.4], [-0.1, -0.1, -0.3, 0.02], tolerance=0.2).tolist()
    ['attenuates', 'near zero', 'exaggerates', 'attenuates']
    """
    h, l = np.asarray(human_gap, float), np.asarray(llm_gap, float)
    near_h, near_l = np.abs(h) < tolerance, np.abs(l) < tolerance
    out = np.where(near_h & near_l, "near zero",
                   np.where(~near_h & ~near_l & (h * l < 0), "reverses",
                            np.where(np.abs(l) > np.abs(h), "exaggerates", "attenuates")))
    return np.where(np.isfinite(h) & np.isfinite(l), out, "").astype(object)


def gap_analysis(human: pd.DataFrame, llm: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """For every model and pair of groups of one attribute: human gap (A - B) vs LLM gap, per value.

    Raw gaps, standardised gaps (each divided by its side's spread, :func:`profile_scales`)
    and the label of the standardised pair (:func:`gap_labels` with `tolerance`).
    """
    h = human.set_index(["attribute", "group", "dimension"])["mean"]
    scales = _scale_lookup(profile_scales(human, llm))
    frames = []
    for (model, attribute), part in llm.groupby(["model", "attribute"], sort=True):
        l = part.set_index(["group", "dimension"])["centered_mean"]
        order = [g for g in _order(attribute, part["group"].unique()) if (attribute, g, VALUES[0]) in h.index]
        s_h, s_l = scales.get((model, attribute), (math.nan, math.nan))
        for a, b in combinations(order, 2):
            hg = np.array([h[(attribute, a, v)] - h[(attribute, b, v)] for v in VALUES])
            lg = l.loc[a].reindex(VALUES).to_numpy(float) - l.loc[b].reindex(VALUES).to_numpy(float)
            hs, ls = hg / s_h, lg / s_l
            frames.append(pd.DataFrame({"model": model, "attribute": attribute, "group_a": a, "group_b": b,
                                        "dimension": list(VALUES), "human_gap": hg, "llm_gap": lg,
                                        "label": gap_labels(hs, ls, tolerance), "human_gap_std": hs,
                                        "llm_gap_std": ls, "human_scale": s_h, "llm_scale": s_l}))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=GAP_COLUMNS)
    out.attrs["tolerance"] = tolerance
    return out


def _order(attribute: str, groups) -> list[str]:
    groups = list(groups)
    if attribute == "age_band":
        return [b[2] for b in AGE_BANDS if b[2] in groups]
    return sorted(groups, key=str)


def summarise_gaps(gaps: pd.DataFrame, distances: pd.DataFrame, tolerance: float | None = None) -> pd.DataFrame:
    """Per model, per attribute and over all attributes (``attribute = "all"``): label shares,
    the through-origin slope sum(h l) / sum(h^2) on the raw gaps (``slope``) and on the
    standardised ones (``slope_std``), and the mean distances and rank correlation.

    `tolerance` is recorded beside the shares (default: the one `gaps` were labelled with).
    """
    if tolerance is None:
        tolerance = gaps.attrs.get("tolerance", DEFAULT_TOLERANCE)
    rows = []
    for model in sorted(set(gaps["model"]) | set(distances["model"])):
        g_m, d_m = gaps[gaps["model"] == model], distances[distances["model"] == model]
        attrs = [a for a in ATTRIBUTES if a in set(g_m["attribute"]) | set(d_m["attribute"])]
        for attribute in [*attrs, "all"]:
            g = g_m if attribute == "all" else g_m[g_m["attribute"] == attribute]
            d = d_m if attribute == "all" else d_m[d_m["attribute"] == attribute]
            g = g.dropna(subset=["human_gap", "llm_gap"])
            hh = float((g["human_gap"] ** 2).sum())
            share = {label: (g["label"] == label).mean() if len(g) else np.nan
                     for label in ("exaggerates", "reverses", "attenuates", "near zero")}
            std = g.dropna(subset=["human_gap_std", "llm_gap_std"]) if "human_gap_std" in g else g.iloc[:0]
            hh_std = float((std["human_gap_std"] ** 2).sum()) if len(std) else 0.0
            rows.append({"model": model, "attribute": attribute, "n_gaps": len(g),
                         "share_exaggerated": share["exaggerates"], "share_reversed": share["reverses"],
                         "share_attenuated": share["attenuates"],
                         "slope": float((g["human_gap"] * g["llm_gap"]).sum()) / hh if hh > 0 else np.nan,
                         "mean_euclidean": d["euclidean"].mean() if len(d) else np.nan,
                         "mean_spearman": d["spearman_rho"].mean() if len(d) else np.nan,
                         "share_near_zero": share["near zero"],
                         "slope_std": (float((std["human_gap_std"] * std["llm_gap_std"]).sum()) / hh_std
                                       if hh_std > 0 else np.nan),
                         "mean_euclidean_std": (d["euclidean_std"].mean() if len(d) and "euclidean_std" in d
                                                else np.nan),
                         "tolerance": tolerance})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


# --------------------------------------------------------------------------- inputs and the whole analysis


def _analysed_study(processed_dir) -> str | None:
    """The study the analysis in `processed_dir` read (its manifest's ``study_id``), for a database holding several."""
    path = Path(processed_dir) / "manifest.json" if processed_dir else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("study_id")
    except (OSError, ValueError, AttributeError):
        return None


def human_scores(processed_dir: str | Path | None = None, db: str | Path | None = None) -> pd.DataFrame | None:
    """Participants' centred PVQ value scores, indexed by participant_id (None if none found).

    Looked for in order: ``scores.csv`` in the processed folder (long ``participant_id,
    family, dimension, score`` or wide with one column per value), then the database's raw
    PVQ-21 answers (scored as DESIGN.md says), then its published ``scores`` table (the
    release). Participants excluded in ``quality.csv`` are left out.
    """
    scores = None
    path = Path(processed_dir) / "scores.csv" if processed_dir else None
    if path is not None and path.is_file():
        frame = pd.read_csv(path, dtype={"participant_id": str})
        if {"participant_id", "dimension", "score"} <= set(frame.columns):
            if "family" in frame.columns:
                frame = frame[frame["family"] == "pvq"]
            scores = frame.pivot_table(index="participant_id", columns="dimension", values="score")
        elif "participant_id" in frame.columns and set(VALUES) <= set(frame.columns):
            scores = frame.set_index("participant_id")
    if scores is None and db is not None and Path(db).is_file():
        scores = _scores_from_db(db, _analysed_study(processed_dir))
    if scores is None or not set(VALUES) <= set(scores.columns):
        return None
    scores = scores[list(VALUES)]
    scores.index = scores.index.astype(str)
    quality = Path(processed_dir) / "quality.csv" if processed_dir else None
    if quality is not None and quality.is_file():
        q = pd.read_csv(quality, dtype={"participant_id": str})
        if "included" in q.columns:
            inc = q["included"].astype(str).str.lower().isin(["true", "1", "yes"])
            # included in at least one participation
            keep = set(q.loc[inc, "participant_id"])
            scores = scores[scores.index.isin(keep)]
    return scores


def _scores_from_db(db: str | Path, study_id: str | None = None) -> pd.DataFrame | None:
    from analysis.scoring import PVQ_COLUMNS, score_pvq
    from valueportrait.storage import open_db

    with open_db(db, readonly=True) as con:
        studies = con.studies()
        if study_id is not None and study_id in set(studies["study_id"]):
            study = study_id
        elif len(studies) != 1:
            return None
        else:
            study = studies["study_id"].iloc[0]
        answers = con.frame("SELECT participant_id, item_id, answer FROM instrument_answers "
                            "WHERE study_id = ? AND instrument = 'pvq21'", (study,))
        if not answers.empty:
            wide = answers.pivot_table(index="participant_id", columns="item_id", values="answer")
            wide = wide.reindex(columns=range(1, 22))
            wide.columns = PVQ_COLUMNS
            return score_pvq(wide)
        published = con.frame("SELECT participant_id, dimension, score FROM scores WHERE study_id = ? AND family = 'pvq'",
                              (study,))
    if published.empty:
        return None
    return published.pivot_table(index="participant_id", columns="dimension", values="score")


def find_first(processed_dir: Path, names: tuple[str, ...]) -> Path | None:
    """The first of `names` (relative paths) that exists under processed_dir."""
    for name in names:
        p = Path(processed_dir) / name
        if p.is_file():
            return p
    return None


LLM_PROFILE_NAMES = ("llm_profiles.csv", "llm/llm_profiles.csv")
PERSONA_NAMES = ("personas.json", "llm/personas.json")
DEMOGRAPHIC_NAMES = ("demographics.csv", "participants.csv")


def load_demographics(processed_dir=None, db=None, demographics_csv=None) -> pd.DataFrame | None:
    """Demographics from the database and/or a CSV (the CSV wins where both give a value)."""
    frames = []
    if db is not None and Path(db).is_file():
        try:
            study = _analysed_study(processed_dir)
            try:
                frames.append(demographics_from_db(db, study))
            except InputError:  # the manifest names a study this database does not hold
                frames.append(demographics_from_db(db))
        except InputError:
            pass
    csv = Path(demographics_csv) if demographics_csv else (find_first(Path(processed_dir), DEMOGRAPHIC_NAMES) if processed_dir else None)
    if csv is not None:
        if demographics_csv and not csv.is_file():
            raise InputError(f"{csv}: demographics file not found")
        frames.append(read_demographics_csv(csv))
    frames = [f for f in frames if not f.empty]
    if not frames:
        return None
    out = frames[0].set_index("participant_id")
    for f in frames[1:]:
        out = f.set_index("participant_id").combine_first(out)
    return out.reset_index()


def run_group_bias(processed_dir, db=None, demographics_csv=None, personas=None, min_n: int = 2,
                   tolerance: float = DEFAULT_TOLERANCE) -> dict[str, pd.DataFrame]:
    """The whole group-bias analysis from a processed folder (plus the database / a Prolific CSV).

    Returns a dict of DataFrames: ``group_profiles`` (humans and LLM personas, long),
    ``group_tests``, ``group_bias`` (distances per model and group), ``group_gaps``,
    ``group_bias_summary``, and ``notes`` (one column ``note``: what was missing or left
    out, in words for the report).
    """
    processed_dir = Path(processed_dir)
    notes: list[str] = []
    empty = {"group_profiles": pd.DataFrame(columns=PROFILE_COLUMNS), "group_tests": pd.DataFrame(columns=TEST_COLUMNS),
             "group_bias": pd.DataFrame(columns=BIAS_COLUMNS), "group_gaps": pd.DataFrame(columns=GAP_COLUMNS),
             "group_bias_summary": pd.DataFrame(columns=SUMMARY_COLUMNS)}  # fmt: skip
    demo = load_demographics(processed_dir, db, demographics_csv)
    scores = human_scores(processed_dir, db)
    if not has_demographics(demo):
        notes.append("No demographics: neither the database's participants table nor a demographics CSV "
                     "(a Prolific export, or demographics.csv in the processed folder) gives gender, age, "
                     "education or politics.")
    if scores is None:
        notes.append("No participant value scores (scores.csv in the processed folder, or PVQ-21 answers / "
                     "scores in the database given with --db).")
    if notes:
        return {**empty, "notes": pd.DataFrame({"note": notes})}
    human = group_profiles(scores, demo, min_n=min_n)
    tests = group_tests(scores, demo, min_n=min_n)
    tables = {**empty, "group_profiles": human, "group_tests": tests}
    llm_path = find_first(processed_dir, LLM_PROFILE_NAMES)
    persona_path = Path(personas) if isinstance(personas, (str, Path)) else find_first(processed_dir, PERSONA_NAMES)
    if llm_path is None:
        notes.append("No LLM profiles (llm_profiles.csv): run vp run-llm --persona ... and vp score-llm to compare personas.")
    elif personas is None and persona_path is None:
        notes.append("No personas.json: without it the persona runs cannot be matched to groups.")
    else:
        llm = pd.read_csv(llm_path)
        mapping = load_personas(personas if isinstance(personas, list) else persona_path)
        lp, more = persona_profiles(llm, mapping)
        notes += more
        if lp.empty:
            notes.append("No persona runs in llm_profiles.csv match personas.json.")
        else:
            llm_long = lp.rename(columns={"centered_mean": "mean"}).assign(source=lambda f: f["model"])
            llm_long["n"], llm_long["sd"], llm_long["ci_low"], llm_long["ci_high"] = np.nan, np.nan, np.nan, np.nan
            tables["group_profiles"] = pd.concat([human, llm_long[PROFILE_COLUMNS]], ignore_index=True)
            dist = profile_distances(human, lp)
            gaps = gap_analysis(human, lp, tolerance)
            tables.update(group_bias=dist, group_gaps=gaps, group_bias_summary=summarise_gaps(gaps, dist, tolerance))
    tables["notes"] = pd.DataFrame({"note": notes}, dtype=object)
    return tables


def write_group_bias(tables: dict[str, pd.DataFrame], out_dir) -> list[Path]:
    """Write each table as ``<name>.csv`` in out_dir (atomically); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in tables.items():
        if name == "notes":
            continue
        path = write_csv_atomic(frame, out_dir / f"{name}.csv", index=False)
        written.append(path)
    return written
