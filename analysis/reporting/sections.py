"""The report's sections, in the order a reader checks a validation: who answered, whether the
instruments worked, which items measure which values, how far to trust them, what models
say, how models picture groups, and how it was done.

Each section is a function ``(Inputs) -> html`` that reads only what it needs and says
plainly what is missing.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

import instruments as inst
from analysis import group_bias as gb
from valueportrait import software_versions
from analysis.reporting.drawing import later as F  # figures drawn in the report's worker
from analysis.reporting.html import (
    details, diverging_bg, esc, figure, fmt_ci, fmt_num, fmt_p, header_words, heat_classes, label, missing, note, para,
    sorted_views, sources, table,
)  # fmt: skip
from analysis.selection import VERDICTS, item_verdicts
from analysis.reporting.inputs import Inputs

VALUES = list(inst.PVQ_VALUES)
ORDER: list[tuple[str, str]] = [(f, d) for f, dims in inst.FAMILIES.items() for d in dims]
FAMILY_NAMES = inst.FAMILY_LABELS


def _f(d: int = 2):
    return lambda v: fmt_num(v, d)


def _int(v) -> str:
    return "" if pd.isna(v) else f"{int(v):,}"


def _pct(v) -> str:
    return "" if pd.isna(v) else f"{100 * float(v):.0f}%"


def _settings(inp: Inputs) -> dict:
    return (inp.manifest or {}).get("settings", {}) or {}


def t_ci(x: np.ndarray, level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and t-based CI of the finite values of x (the t quantile as ``scipy.stats.t.ppf``, without scipy)."""
    from analysis.student_t import quantile

    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(x.mean())
    if n < 2:
        return m, math.nan, math.nan, n
    half = quantile((1 + level) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return m, m - half, m + half, n


# --------------------------------------------------------------------------- warnings beside numbers

#: The kinds of warning the psychometric tables carry, by the words their notes start with.
WARNING_KINDS = {
    "negative residual variance": "negative residual variance (Heywood case)",
    "negative variance": "negative latent variance",
    "latent correlation beyond": "latent correlation beyond ±1",
    "standardised loading beyond": "standardised loading beyond 1",
    "did not converge": "did not converge",
    "information matrix singular": "not identified (singular information)",
    "just identified yet": "cannot reproduce the data (one factor does not fit the correlations' signs)",
    "not positive definite": "singular or collinear data",
    "constant variables": "constant variables",
    "negative alpha": "negative alpha",
    "reversed?": "item correlating negatively with the rest",
    "zero-variance items": "zero-variance item left out",
    "one-factor model improper": "improper one-factor model behind omega",
    "loadings of mixed sign": "one-factor loadings of mixed sign",
    "omega not estimable": "omega not estimable",
}


def _text(values: pd.Series) -> pd.Series:
    """Notes as strings, a missing note (read from CSV as NaN) as ""."""
    return values.astype(object).where(values.notna(), "").astype(str)


def _warned(frame: pd.DataFrame) -> pd.Series:
    """The ``warning`` column, or (older files without it) any non-empty note."""
    if "warning" in frame.columns:
        return frame["warning"].astype(str).str.lower().isin(["true", "1"])
    return _text(frame.get("note", pd.Series("", index=frame.index))).str.len() > 0


def _warning_kinds(notes: pd.Series) -> dict[str, int]:
    notes = _text(notes)
    out = {}
    for key, label in WARNING_KINDS.items():
        count = int(notes.str.contains(key, regex=False).sum())
        if count:
            out[label] = count
    return out


def _warning_line(frame: pd.DataFrame, what: str) -> str:
    warned = _warned(frame)
    if not warned.any():
        return para(f"None of the {len(frame)} {what} carries a warning.")
    kinds = _warning_kinds(frame.loc[warned, "note"]) if "note" in frame.columns else {}
    detail = "; ".join(f"{label}: {n}" for label, n in kinds.items())
    return note(f"{int(warned.sum())} of {len(frame)} {what} carry a warning" + (f" ({detail})" if detail else "")
                + ". The warning stands in the note beside the figures it concerns.")


def _warning_style(value) -> str:
    return "background:rgba(230,159,0,0.25)" if isinstance(value, str) and value.strip() else ""


# --------------------------------------------------------------------------- participants


def participants(inp: Inputs) -> str:
    out = [sources([("quality.csv", inp.has("quality.csv")), ("database", inp.db is not None)])]
    q = inp.csv("quality.csv")
    if q is None:
        out.append(missing("No quality.csv: run vp analyze to get participant counts and exclusions."))
    else:
        q = q.assign(included=q["included"].astype(str).str.lower().isin(["true", "1", "yes"]),
                     reasons=q["reasons"].fillna("").astype(str))
        per = q.groupby("group_id", sort=True).agg(participations=("participant_id", "size"),
                                                   included=("included", "sum")).reset_index()
        per["excluded"] = per["participations"] - per["included"]
        out.append(para(f"{q['participant_id'].nunique():,} participants in {len(per)} groups: "
                        f"{len(q):,} participations, {int(q['included'].sum()):,} included in the analysis, "
                        f"{int((~q['included']).sum()):,} excluded."))
        unrated = _unrated(inp)
        if unrated:
            out.append(para(f"Another {unrated:,} {'person has' if unrated == 1 else 'people have'} questionnaire "
                            "scores but rated no items: they are in no group and not in the analysis."))
        out.append(figure(F.bar_groups(per), "Included and excluded participations per group",
                          "Participations per group of items: included (blue) and excluded by quality control (orange).",
                          width="640px"))
        total = pd.DataFrame([{"group_id": "all", "participations": per["participations"].sum(),
                               "included": per["included"].sum(), "excluded": per["excluded"].sum()}])
        out.append(details("Counts per group", table(pd.concat([per, total], ignore_index=True),
                                                     formats={c: _int for c in ("participations", "included", "excluded")})))
        out.append("<h3>Exclusions by reason</h3>")
        reasons = q.loc[q["reasons"] != "", "reasons"].str.split(";").explode().str.strip()
        reasons = reasons[reasons != ""]
        rules = ((inp.manifest or {}).get("quality") or {}).get("rules") or {}
        rows = []
        for reason, n in reasons.value_counts().items():
            info = rules.get(reason) or {}
            rows.append({"rule": reason, "participations flagged": n,
                         "note": "" if info.get("applicable", True) else info.get("note", "")})
        for rule, info in rules.items():
            if rule not in set(reasons) and isinstance(info, dict):
                applicable = info.get("applicable", True)
                rows.append({"rule": rule, "participations flagged": 0 if applicable else np.nan,
                             "note": ("switched off" if not info.get("on", True)
                                      else "" if applicable else info.get("note", "not applicable"))})
        if rows:
            out.append(table(pd.DataFrame(rows), formats={"participations flagged": _int},
                             caption="A participation can break several rules; empty count = rule not applicable."))
        else:
            out.append(para("No participation was excluded."))
    out.append("<h3>Time taken</h3>")
    timings = inp.timings
    if timings is None:
        out.append(missing("No timings: the data has no start and completion times (the public release has none). "
                           "Give --db for a study collected with the app, or a Prolific export with 'Time taken'."))
    else:
        sec, where = timings
        minutes = sec / 60
        qs = np.percentile(minutes, [25, 50, 75])
        out.append(para(f"Completion time over {len(sec):,} completed participations (from {where}): median "
                        f"{qs[1]:.1f} min (interquartile range {qs[0]:.1f}-{qs[2]:.1f}), fastest {minutes.min():.1f}, "
                        f"slowest {minutes.max():.1f} min."))
        out.append(figure(F.histogram(np.clip(minutes, 0, np.percentile(minutes, 99)), "minutes"),
                          "Histogram of completion times", "Completion time per participation (top 1% clipped).",
                          width="640px"))
    demo = inp.demographics
    out.append("<h3>Demographics</h3>")
    if demo is None:
        out.append(missing("No demographics (gender, age, education, political orientation) in the database or a "
                           "demographics CSV: the public release has none."))
    else:
        if inp.included is not None:
            demo = demo[demo["participant_id"].isin(inp.included)]
        rows = []
        for attr in gb.ATTRIBUTES:
            counts = demo[attr].value_counts()
            order = [b[2] for b in gb.AGE_BANDS if b[2] in counts.index] if attr == "age_band" else sorted(counts.index)
            for g in order:
                rows.append({"attribute": attr, "group": g, "participants": counts[g], "share": counts[g] / len(demo)})
            if demo[attr].isna().any():
                rows.append({"attribute": attr, "group": "(not given)", "participants": int(demo[attr].isna().sum()),
                             "share": demo[attr].isna().mean()})
        out.append(details(f"Included participants by group ({len(demo):,} with demographics)",
                           table(pd.DataFrame(rows), formats={"participants": _int, "share": _pct}), open_=True))
    return "".join(out)


def _unrated(inp: Inputs) -> int | None:
    """People with questionnaire scores but no item ratings: from the manifest, else the database."""
    n = ((inp.manifest or {}).get("counts") or {}).get("participants_without_ratings")
    if n is not None:
        return int(n)
    rated = inp.rated()
    if rated is None:
        return None
    from analysis.dataset import participants_without_ratings

    return len(participants_without_ratings(inp.study, rated))


# --------------------------------------------------------------------------- instruments


def instruments_section(inp: Inputs) -> str:
    out = [sources([("reliability.csv", inp.has("reliability.csv")), ("circumplex.csv", inp.has("circumplex.csv")),
                    ("participant scores", inp.scores is not None)])]
    out.append("<h3>Reliability of the questionnaires</h3>")
    rel = inp.csv("reliability.csv")
    if rel is None:
        out.append(missing("No reliability.csv: run vp analyze (psychometrics step)."))
    else:
        rel = rel.assign(warning=_warned(rel))
        instr = rel[rel["scope"].astype(str) == "instrument"]
        cols = ["family", "dimension", "n_items", "n", "alpha", "alpha_ci", "std_alpha", "spearman_brown", "omega", "note"]
        if instr.empty:
            out.append(missing("No questionnaire reliability: it needs raw PVQ-21 / BFI-10 answers, and this study "
                               "has published scores only (as the public release)."))
        else:
            t = instr.assign(alpha_ci=[fmt_ci(a, b) for a, b in zip(instr["alpha_ci_low"], instr["alpha_ci_high"])])
            out.append(_warning_line(instr, "questionnaire scales"))
            out.append(table(t[[c for c in cols if c in t.columns]],
                             formats={"n_items": _int, "n": _int, "alpha_ci": str},
                             headers={"alpha_ci": "alpha 95% CI (Feldt)", "spearman_brown": "Spearman-Brown",
                                      "std_alpha": "standardised alpha", "note": "warnings and notes"},
                             cell_style={"note": _warning_style},
                             caption="Cronbach's alpha; for two-item scales the Spearman-Brown coefficient is the "
                                     "better estimate. Short scales like the PVQ-21's are expected to be low (~.4-.6). "
                                     "Warnings (negative alpha, items that look reversed, an improper one-factor "
                                     "model behind omega) stand beside the number they concern."))
        bank = rel[rel["scope"].astype(str) != "instrument"]
        if not bank.empty:
            summ = (bank.groupby(["family", "dimension"], sort=False)
                    .agg(groups=("scope", "nunique"), median_items=("n_items", "median"),
                         median_alpha=("alpha", "median"), min_alpha=("alpha", "min"), max_alpha=("alpha", "max"),
                         median_omega=("omega", "median"), with_warning=("warning", "sum")).reset_index())
            summ = _order_dims(summ)
            every = bank[[c for c in ("family", "dimension", "scope", "n_items", "n", "alpha", "alpha_ci_low",
                                      "alpha_ci_high", "std_alpha", "omega", "min_item_rest_r", "note")
                          if c in bank.columns]]
            body = (_warning_line(bank, "item-bank scales")
                    + table(summ, formats={"groups": _int, "median_items": _f(0), "with_warning": _int},
                            headers={"with_warning": "scales with a warning"})
                    + details("Every group", table(every, formats={"n_items": _int, "n": _int},
                                                   headers={"note": "warnings and notes",
                                                            "min_item_rest_r": "lowest item-rest r"},
                                                   cell_style={"note": _warning_style})))
            items = inp.csv("reliability_items.csv")
            if items is not None and not items.empty:
                body += details("Item statistics (psych's alpha: corrected item-total r, alpha if the item is dropped)",
                                table(items, formats={"n": _int},
                                      headers={"item_rest_r": "item-rest r", "alpha_if_dropped": "alpha if dropped",
                                               "omega_loading": "one-factor loading"},
                                      cell_style={"item_rest_r": lambda v: _warning_style("x") if pd.notna(v) and v < 0 else ""}))
            out.append(details("Reliability of the item bank's scales (keyed items within each group)", body))
    out.append("<h3>Mean value profile</h3>")
    scores = inp.scores
    if scores is None:
        out.append(missing("No participant scores: give --db (the study database) or put scores.csv "
                           "(participant_id, family, dimension, score) in the processed folder."))
    else:
        rows = []
        for fam, dim in ORDER:
            if (fam, dim) in scores.columns:
                m, lo, hi, n = t_ci(scores[(fam, dim)].to_numpy(float))
                rows.append({"family": fam, "dimension": dim, "n": n, "mean": m, "ci_low": lo, "ci_high": hi})
        prof = pd.DataFrame(rows)
        centred = prof[prof["family"].isin(["pvq", "higher_pvq"])]
        if not centred.empty:
            out.append(figure(F.profile_with_ci(centred), "Mean centred value profile with 95% confidence intervals",
                              f"Mean centred PVQ-21 score of the {int(centred['n'].max()):,} included participants "
                              f"(values in circle order, then the higher-order values), with t-based 95% CIs. "
                              f"Source: {inp.score_source}.", width="640px"))
        prof["ci"] = [fmt_ci(a, b) for a, b in zip(prof["ci_low"], prof["ci_high"])]
        out.append(details("Means and intervals (BFI-10 traits on their 1-5 scale)",
                           table(prof[["family", "dimension", "n", "mean", "ci"]], formats={"n": _int, "ci": str},
                                 headers={"ci": "95% CI"})))
        out.append("<h3>Circumplex check</h3>")
        vals = [v for v in VALUES if ("pvq", v) in scores.columns]
        if len(vals) == 10:
            matrix = scores[[("pvq", v) for v in vals]].droplevel(0, axis=1).dropna().corr()
            out.append(figure(F.correlation_heatmap(matrix), "Correlations between the ten values, in circle order",
                              "Pearson correlations of the centred value scores, values in the order of Schwartz's "
                              "circle: neighbours should correlate most, opposite values least.", width="560px"))
            out.append(_circle_distance(matrix))
        else:
            out.append(missing("The ten PVQ value scores are not all available."))
    circ = inp.csv("circumplex.csv")
    out.append("<h3>Items on the value circle</h3>")
    if circ is None:
        out.append(missing("No circumplex.csv: the structural-summary fit of each item (angle, amplitude, R²) "
                           "comes from vp analyze's circumplex step."))
    else:
        out.append(_circumplex_items(circ, inp))
    return "".join(out)


def design_section(inp: Inputs) -> str | None:
    """For a two-stage study (`vp analyze --design two-stage`): the design, the funnel, the items screened out."""
    d = (inp.manifest or {}).get("design")
    if not isinstance(d, dict) or d.get("design") != "two-stage":
        return None
    out = [sources([("manifest.json", True), ("design.csv", inp.has("design.csv"))])]
    f, r = d.get("funnel") or {}, d.get("raters") or {}
    ratings = d.get("ratings") or {}
    out.append(para(
        f"Two stages. A screening wave ({d.get('screen')}) had every candidate item rated by a few raters; the most "
        f"promising items went on to a confirmation wave ({d.get('confirm')}) rated by fresh raters. Items were keyed "
        f"on the confirmation raters only: {r.get('confirm_included', '?')} raters who passed quality control and did "
        f"not take part in the screening ("
        + (f"{r['confirm_excluded_earlier_wave']} who had were excluded" if r.get("confirm_excluded_earlier_wave")
           else "no one in the confirmation wave had") + "), with "
        f"Benjamini-Hochberg q < {d.get('alpha')} within each family over the candidate items' pairs and the usual rule "
        f"(rho ≥ {d.get('threshold')}, p < {d.get('alpha')}). Because the raters who selected the candidates never enter "
        "the test, the confirmation p-values are valid and the false discovery rate holds among the candidates."))
    stages = [("screened", f.get("screened", 0)), ("candidates", f.get("candidates", 0)), ("confirmed", f.get("confirmed", 0))]
    out.append(figure(F.design_funnel(stages), alt="Items screened, carried to the confirmation wave, and confirmed",
                      caption=f"The funnel: {f.get('screened', 0):,} items screened, {f.get('candidates', 0):,} "
                              f"candidates, {f.get('confirmed', 0):,} confirmed (keyed to at least one dimension)."))
    pairs = d.get("pairs") or {}
    rows = [{"stage": "screening", "wave": d.get("screen"), "raters included": r.get("screen_included"),
             "participations": r.get("screen_participations"), "ratings": ratings.get("screen"),
             "items": f.get("screened"), **{f"{FAMILY_NAMES.get(k, k)} pairs": v.get("screened") for k, v in pairs.items()}},
            {"stage": "confirmation", "wave": d.get("confirm"), "raters included": r.get("confirm_included"),
             "participations": r.get("confirm_participations"), "ratings": ratings.get("confirm"),
             "items": f.get("candidates"), **{f"{FAMILY_NAMES.get(k, k)} pairs": v.get("candidates") for k, v in pairs.items()}},
            {"stage": "keyed", "wave": d.get("confirm"), "raters included": None, "participations": None, "ratings": None,
             "items": f.get("confirmed"), **{f"{FAMILY_NAMES.get(k, k)} pairs": v.get("keyed") for k, v in pairs.items()}}]
    frame = pd.DataFrame(rows)
    out.append(table(frame, formats={c: _int for c in frame.columns if c not in ("stage", "wave")},
                     caption="Raters, ratings, items and item-dimension pairs at each stage."))
    chance = d.get("chance") or {}
    if chance:
        parts = [f"{FAMILY_NAMES.get(k, k)}: {v.get('observed')} keyed, {fmt_num(v.get('expected_mean'), 1)} "
                 f"[{fmt_num(v.get('expected_low'), 0)}-{fmt_num(v.get('expected_high'), 0)}] by chance"
                 for k, v in chance.items()]
        out.append(para("Against chance: keying the candidates the same way after permuting the confirmation raters' "
                        "scores within each group (every item-value relation broken) gives " + "; ".join(parts) + "."))
    screened_out = f.get("screened_out", 0)
    out.append(para(
        f"{screened_out:,} items were screened out: their only estimates come from the screening raters (correlations.csv, "
        f"stage 'screen', no q-value: they were never tested for keying) and none of them is in the item bank. "
        f"{f.get('not_confirmed', 0):,} candidates were not confirmed"
        + (f"; {f.get('not_screened'):,} items of the confirmation wave had not been screened." if f.get("not_screened") else ".")))
    design = inp.csv("design.csv")
    if design is not None and not design.empty:
        shown = design[design["status"] != "screened out"].copy()
        cols = [c for c in ("portrait_id", "option_id", "status", "promise", "basis", "expected_strong_pairs",
                            "screen_n", "confirm_group", "confirm_n", "keyed_dimensions") if c in shown.columns]
        out.append(details(f"Candidates ({len(shown):,}) and their fate",
                           table(shown[cols], formats={"promise": _f(2), "expected_strong_pairs": _f(2), "screen_n": _int,
                                                       "confirm_n": _int, "option_id": _int},
                                 headers={"expected_strong_pairs": "expected pairs ≥ threshold", "keyed_dimensions": "keyed to"},
                                 caption="Promise: standard deviations above what an item without any relation shows on "
                                         "the screening raters (circle: the peak of its cosine around the value circle; "
                                         "single: its largest correlation). Expected pairs: empirical-Bayes estimate.")))
    return "".join(out)


def _circle_distance(matrix: pd.DataFrame) -> str:
    n = len(matrix)
    i, j = np.triu_indices(n, 1)
    steps = np.minimum(j - i, n - (j - i))
    r = matrix.to_numpy(float)[i, j]
    t = pd.DataFrame({"steps apart on the circle": steps, "r": r}).groupby("steps apart on the circle")["r"].agg(
        ["mean", "size"]).reset_index()
    t.columns = ["steps apart on the circle", "mean r", "pairs"]
    decreasing = bool(np.all(np.diff(t["mean r"].to_numpy()) < 0))
    verdict = ("The mean correlation falls steadily with distance around the circle, as the circumplex predicts."
               if decreasing else
               "The mean correlation does not fall steadily with distance around the circle: the circular order "
               "is only partly reproduced.")
    return table(t, formats={"steps apart on the circle": _int, "pairs": _int}) + para(verdict)


def _circumplex_items(circ: pd.DataFrame, inp: Inputs) -> str:
    parts = []
    r2 = circ["r_squared"] if "r_squared" in circ.columns else None
    if r2 is not None:
        ok = r2.dropna()
        line = (f"{len(ok):,} items fitted: median R² {ok.median():.2f}; "
                f"{(ok >= 0.7).mean():.0%} fit a cosine with R² ≥ .70.")
        if "prototypical" in circ.columns:
            proto = circ["prototypical"].astype(str).str.lower().isin(["true", "1"])
            line += f" {proto.mean():.0%} are prototypical (the structural summary's criteria)."
        parts.append(para(line))
        parts.append(_circumplex_against_chance(inp))
    if "nearest_value" in circ.columns:
        counts = circ["nearest_value"].value_counts().reindex(VALUES).fillna(0).astype(int)
        parts.append(table(pd.DataFrame({"nearest value on the circle": counts.index, "items": counts.to_numpy()}),
                           formats={"items": _int}))
    parts.append(details("All items", table(circ)))
    return "".join(parts)


def _circumplex_against_chance(inp: Inputs) -> str:
    """The items' R² against what ratings unrelated to the values give on the same value scores."""
    summ, dist = inp.csv("chance_circumplex.csv"), inp.csv("chance_distributions.csv")
    if summ is None or dist is None or not (dist["statistic"] == "r_squared").any():
        return missing("No chance baseline for the circle fit (chance_circumplex.csv): vp analyze --permutations N.")
    c = summ.set_index("statistic")
    share = next((k for k in c.index if k.startswith("share_r_squared")), None)
    bits = []
    if "median_r_squared" in c.index:
        m = c.loc["median_r_squared"]
        bits.append(f"median R² {m.observed:.2f} against {m.expected_mean:.2f} [{m.expected_low:.2f}-"
                    f"{m.expected_high:.2f}] by chance")
    if share is not None:
        m = c.loc[share]
        bits.append(f"R² ≥ .70 for {m.observed:.0%} of items against {m.expected_mean:.0%} [{m.expected_low:.0%}-"
                    f"{m.expected_high:.0%}] by chance")
    text = (f"Chance alone fits the circle well too: the ten centred value scores correlate among themselves "
            f"in a circular pattern, so even ratings unrelated to the values give cosine-shaped correlations. With the "
            f"scores permuted among each group's raters ({_permutations(inp)}): {'; '.join(bits)}. Only the excess "
            "over chance says the items follow the circle.")
    fig = figure(F.null_band_histograms(dist[dist["statistic"] == "r_squared"], [("pvq", "items' circle fit")], "R²"),
                 "Histogram of the items' circle-fit R² against the permutation band",
                 "Bars: the R² of each item's cosine fit to its ten value correlations. Grey band and line: the same "
                 "with the scores permuted among each group's raters (95% range and mean).", width="420px")
    return para(text) + fig


def _order_dims(frame: pd.DataFrame) -> pd.DataFrame:
    rank = {fd: k for k, fd in enumerate(ORDER)}
    key = [rank.get((f, d), 999) for f, d in zip(frame["family"], frame["dimension"])]
    return frame.assign(_k=key).sort_values("_k", kind="stable").drop(columns="_k").reset_index(drop=True)


# --------------------------------------------------------------------------- correlations


def correlations_section(inp: Inputs) -> str:
    out = [sources([("correlations.csv", inp.has("correlations.csv")), ("selection.csv", inp.has("selection.csv")),
                    ("chance.csv", inp.has("chance.csv")), ("chance_distributions.csv", inp.has("chance_distributions.csv")),
                    ("power.csv", inp.has("power.csv"))])]
    corr = inp.csv("correlations.csv")
    sel = inp.csv("selection.csv")
    threshold = float(_settings(inp).get("threshold", 0.3))
    if corr is None:
        out.append(missing("No correlations.csv: run vp analyze."))
    else:
        order = [fd for fd in ORDER if ((corr["family"] == fd[0]) & (corr["dimension"] == fd[1])).any()]
        # Only the columns the figure reads cross to the drawing worker (the whole table is ~1 MB pickled).
        out.append(figure(F.rho_boxplots(corr[["family", "dimension", "rho"]], order, threshold),
                          "Distribution of rho per dimension",
                          "Spearman's rho of every item with every dimension (box: quartiles; whiskers: 5th-95th "
                          "percentile; triangle: the largest rho). Blue: PVQ values; purple: higher-order values; "
                          "green: Big Five traits. Dashed red: the keying threshold.", width="780px"))
        out.append(_rho_against_chance(inp, threshold))
        chance = _chance_totals(inp)
        rows = []
        for fam, dims in inst.FAMILIES.items():
            c = corr[corr["family"] == fam]
            if c.empty:
                continue
            s = sel[sel["family"] == fam] if sel is not None else None
            rows.append({"family": FAMILY_NAMES[fam], "items": c[["portrait_id", "option_id"]].drop_duplicates().shape[0],
                         "pairs": len(c), "median |rho|": c["rho"].abs().median(), "largest rho": c["rho"].max(),
                         "pairs with q < .05": int((c["q_value"] < 0.05).sum()) if "q_value" in c else np.nan,
                         "keyed pairs": len(s) if s is not None else np.nan,
                         "keyed items": s[["portrait_id", "option_id"]].drop_duplicates().shape[0] if s is not None else np.nan,
                         **({"keyed by chance alone": _expected_text(chance.loc[fam]),
                             "false-key share": chance.loc[fam, "false_key_share"]}
                            if chance is not None and fam in chance.index else {})})
        out.append(table(pd.DataFrame(rows), formats={**{k: _int for k in ("items", "pairs", "pairs with q < .05",
                                                                         "keyed pairs", "keyed items")},
                                                      "keyed by chance alone": str, "false-key share": _pct},
                         caption=("Keyed by chance alone: pairs the same rule keys when the scores are permuted among "
                                  "each group's raters (mean and 95% range over permutations); false-key share: that "
                                  "mean over the pairs keyed, at most 100%." if chance is not None else None)))
        if sel is not None and len(sel):
            out.append(_selected_heatmap(corr, sel))
    out.append("<h3>Power</h3>")
    power = inp.csv("power.csv")
    if power is None:
        out.append(missing("No power.csv: run vp analyze (psychometrics step)."))
    else:
        p = power
        out.append(para(f"With {int(p['n'].min())}-{int(p['n'].max())} raters per group, the power to detect "
                        f"rho = {p['rho'].iloc[0]:g} at alpha = {p['alpha'].iloc[0]:g} (two-sided) was "
                        f"{p['achieved_power'].min():.2f}-{p['achieved_power'].max():.2f}; 80% power needs "
                        f"{int(p['raters_needed'].iloc[0])} raters. The smallest rho these groups detect with 80% "
                        f"power is {p['detectable_rho'].min():.2f}-{p['detectable_rho'].max():.2f}: items near the "
                        "threshold are often missed, and those keyed are partly chosen by luck (see the split-half "
                        "replication below)."))
        out.append(details("Power per group", table(p, formats={"n": _int, "raters_needed": _int})))
    return "".join(out)


def _chance_totals(inp: Inputs) -> pd.DataFrame | None:
    """chance.csv's family totals (``dimension == "all"``), indexed by family."""
    ch = inp.csv("chance.csv")
    if ch is None or not {"family", "dimension", "observed", "expected_mean"} <= set(ch.columns):
        return None
    return ch[ch["dimension"] == "all"].set_index("family")


def _expected_text(row) -> str:
    """'108 [82-138]': the mean count of keys under permutation and its range."""
    if row is None or pd.isna(row.get("expected_mean")):
        return ""
    return f"{row['expected_mean']:.0f} [{row['expected_low']:.0f}-{row['expected_high']:.0f}]"


def _permutations(inp: Inputs) -> str:
    n = _settings(inp).get("permutations")
    return f"{int(n):,} permutations" if n else "permutations"


def _rho_against_chance(inp: Inputs, threshold: float) -> str:
    """The histogram of rho in each family with the band chance alone gives, and what it says."""
    dist = inp.csv("chance_distributions.csv")
    chance = _chance_totals(inp)
    if dist is None or chance is None:
        return missing("No chance baseline (chance.csv, chance_distributions.csv): vp analyze --permutations N "
                       "(default 200) shows how many pairs the rule keys when no item relates to anything.")
    rho = dist[dist["statistic"] == "rho"]
    panels = [(f, FAMILY_NAMES.get(f, f)) for f in inst.FAMILIES if (rho["family"] == f).any()]
    parts = [figure(F.null_band_histograms(rho, panels, "Spearman's rho", threshold=threshold, log=True),
                    "Histogram of rho in each family against the permutation band",
                    f"Bars: rho of every item with every dimension of the family. Grey band and line: the count in "
                    f"each bin when the scores are permuted among each group's raters ({_permutations(inp)}; 95% "
                    "range and mean), i.e. when no item relates to any dimension. Bars above the band right of the "
                    "threshold are keys chance does not explain; the rest of the keyed pairs sit inside what "
                    "chance gives. Log scale.", width="900px")]
    lines = []
    for fam, r in chance.iterrows():
        share = "" if pd.isna(r["false_key_share"]) else f", so about {r['false_key_share']:.0%} of its keys may be false"
        lines.append(f"{FAMILY_NAMES.get(fam, fam)}: {int(r['observed']):,} pairs keyed, "
                     f"{_expected_text(r)} expected by chance alone{share}")
    parts.append(para("The keying rule uses an uncorrected p-value at about 45 raters per item, so it keys pairs "
                      "with no relation too. " + "; ".join(lines) + "."))
    return "".join(parts)


def _item_key(frame: pd.DataFrame) -> pd.Series:
    return frame["portrait_id"].astype(str) + "/" + frame["option_id"].astype(str)


def _selected_heatmap(corr: pd.DataFrame, sel: pd.DataFrame) -> str:
    """The bank as a heat map: an overview figure, then per keyed dimension a table of its items by id."""
    corr = corr.assign(item=_item_key(corr))
    sel = sel.assign(item=_item_key(sel))
    items = sel["item"].unique()
    sub = corr[corr["item"].isin(items)]
    cols = [fd for fd in ORDER if ((sub["family"] == fd[0]) & (sub["dimension"] == fd[1])).any()]
    wide = sub.pivot_table(index="item", columns=["family", "dimension"], values="rho").reindex(columns=cols)
    # rows grouped by the item's strongest keyed dimension, in dimension order
    rank = {fd: k for k, fd in enumerate(cols)}
    best = sel.assign(r=sel["rho"].abs(), k=[rank.get((f, d), 999) for f, d in zip(sel["family"], sel["dimension"])])
    best = best.sort_values(["item", "r"], ascending=[True, False]).drop_duplicates("item").sort_values(["k", "r"],
                                                                                                        ascending=[True, False])
    wide = wide.reindex(best["item"])
    keyed = np.zeros(wide.shape, dtype=bool)
    pos = {it: i for i, it in enumerate(wide.index)}
    for it, f, d in zip(sel["item"], sel["family"], sel["dimension"]):
        if (f, d) in rank:
            keyed[pos[it], rank[(f, d)]] = True
    blocks, start = [], 0
    for k, size in best.groupby("k", sort=True).size().items():
        if k < len(cols):
            blocks.append((label(cols[k][1]), start, start + int(size)))
        start += int(size)
    flat = wide.copy()
    flat.columns = [d for _, d in cols]
    fig = figure(F.selected_heatmap(flat, keyed, list(flat.index), blocks), "Heat map of keyed items by dimensions",
                 f"The {len(flat):,} keyed items (rows, grouped by their strongest keyed dimension) and their rho with "
                 "every dimension (columns: values in circle order, higher-order values, Big Five). Black squares "
                 "mark the keyed pairs. The tables below list each dimension's items by id.", width="760px")
    group = corr.drop_duplicates("item").set_index("item")["group_id"] if "group_id" in corr.columns else None
    tables = []
    for (fam, dim), part in _order_dims(sel).groupby(["family", "dimension"], sort=False):
        if (fam, dim) not in rank:
            continue
        order = part.sort_values("rho", key=lambda x: -x.abs())["item"].drop_duplicates()
        tables.append(details(f"{label(dim)} ({FAMILY_NAMES.get(fam, fam)}): {len(order)} items",
                              _heat_table(wide.loc[order], keyed[[pos[i] for i in order]], group)))
    return (fig + details("Heat map per dimension, with item ids",
                          para("Each keyed item (query/response id) and its rho with every dimension; a framed bold "
                               "cell is a keyed pair. Items are sorted by rho on the dimension they are listed "
                               "under; blue is positive, red negative.") + "".join(tables)))


def _heat_table(wide: pd.DataFrame, keyed: np.ndarray, group: pd.Series | None) -> str:
    """Items (rows, by id) x dimensions: rho in a coloured cell (classes, not inline styles: the tables are long)."""
    head = ['<th>item</th>'] + (['<th>group</th>'] if group is not None else [])
    head += [f'<th class="v" title="{esc(FAMILY_NAMES.get(f, f))}"><span>{esc(label(d))}</span></th>' for f, d in wide.columns]
    rows = []
    values = wide.to_numpy(float)
    heat = heat_classes(values)  # classes and numbers for the whole table at once
    for i, item in enumerate(wide.index):
        cells = [f"<td>{esc(item)}</td>"] + ([f"<td>{esc(group.get(item, ''))}</td>"] if group is not None else [])
        cells += [f'<td class="num{" " + h if h else ""}{" keyed" if k else ""}">{"" if v != v else f"{v:.2f}"}</td>'
                  for v, h, k in zip(values[i].tolist(), heat[i], keyed[i])]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap"><table class="heat"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


# --------------------------------------------------------------------------- selected items


def selected_items(inp: Inputs) -> str:
    out = [sources([("selection.csv", inp.has("selection.csv")), ("correlations.csv", inp.has("correlations.csv")),
                    ("chance.csv", inp.has("chance.csv")), ("replication.csv", inp.has("replication.csv")),
                    ("replication_shrinkage.csv", inp.has("replication_shrinkage.csv")),
                    ("item_bank.json", inp.item_bank is not None)])]
    sel = inp.csv("selection.csv")
    corr = inp.csv("correlations.csv")
    if sel is None:
        out.append(missing("No selection.csv: run vp analyze."))
        return "".join(out)
    if sel.empty:
        out.append(para("No item was keyed to any dimension with these settings."))
        return "".join(out)
    s = _settings(inp)
    alpha = float(s.get("alpha", 0.05))
    out.append(para(f"An item is keyed to a dimension when rho ≥ {s.get('threshold', 0.3)} and p < {alpha} "
                    f"(uncorrected; keying '{s.get('keying', 'pos')}'). The rho that keyed a pair comes from the raters "
                    "who selected it, so it is biased upwards. The honest figures below come from raters who did not "
                    "select: each group's raters were split in random halves many times, pairs were keyed on one half "
                    "and measured on the other (held-out rho); and the scores were permuted among each group's raters "
                    "to count the keys chance alone gives."))
    merged = sel.copy()
    if corr is not None:
        extra = [c for c in ("group_id", "q_value", "n", "ci_low", "ci_high", "fz_ci_low", "fz_ci_high") if c in corr.columns]
        merged = merged.merge(corr[["portrait_id", "option_id", "family", "dimension", *extra]],
                              on=["portrait_id", "option_id", "family", "dimension"], how="left")
    lo, hi, ci_kind = _ci_columns(merged)
    merged["ci_low_"], merged["ci_high_"] = lo, hi
    rep = inp.csv("replication.csv")
    if rep is not None and not {"portrait_id", "option_id", "times_selected", "replication_rate"} <= set(rep.columns):
        out.append(note("replication.csv has no per-pair times_selected / replication_rate: verdicts use FDR only."))
        rep = None
    merged = item_verdicts(merged, replication=rep, alpha=alpha)
    out.append("<h3>Keys per dimension: against chance and on held-out raters</h3>")
    out.append(_dimension_table(inp, merged, alpha))
    out.append("<h3>Verdict per item</h3>")
    out.append(_verdict_table(inp, merged, ci_kind, alpha, rep is not None))
    out.append(_intended(inp))
    out.append(_item_lists(merged, inp, ci_kind))
    return "".join(out)


def _dimension_table(inp: Inputs, merged: pd.DataFrame, alpha: float) -> str:
    """Per dimension (and per family): keys observed, expected by chance, held-out rho, replication, FDR."""
    chance = inp.csv("chance.csv")
    shrink = inp.csv("replication_shrinkage.csv")
    keys = ["family", "dimension"]
    per = merged.groupby(keys, sort=False).agg(keyed=("rho", "size"), fdr=("survives_fdr", "sum")).reset_index()
    fam = merged.groupby("family", sort=False).agg(keyed=("rho", "size"),
                                                   fdr=("survives_fdr", "sum")).reset_index().assign(dimension="all")
    rows = pd.concat([per, fam], ignore_index=True)
    frames = [("chance", chance, ["expected_mean", "expected_low", "expected_high", "false_key_share"]),
              ("shrink", shrink, ["heldout_rho_mean", "selected_rho_mean", "shrinkage", "replication_rate"])]
    for _, frame, cols in frames:
        if frame is not None and set(keys + cols) <= set(frame.columns):
            rows = rows.merge(frame[keys + cols], on=keys, how="outer")
    rows["keyed"] = rows["keyed"].fillna(0)
    rows["fdr"] = rows["fdr"].fillna(0)
    rank = {fd: k for k, fd in enumerate(ORDER)}
    fam_rank = {f: k for k, f in enumerate(inst.FAMILIES)}
    rows["_k"] = [(fam_rank.get(f, 9), 99 if d == "all" else rank.get((f, d), 98)) for f, d in zip(rows["family"], rows["dimension"])]
    rows = rows.sort_values("_k").drop(columns="_k").reset_index(drop=True)
    short = {"pvq": "PVQ", "higher_pvq": "higher-order", "bfi": "Big Five"}
    table_ = pd.DataFrame({
        "family": [short.get(f, f) for f in rows["family"]],
        "dimension": ["all" if d == "all" else label(d) for d in rows["dimension"]],
        "keyed pairs": rows["keyed"],
    })
    parts = []
    if "expected_mean" in rows:
        table_["keyed by chance alone"] = [_expected_text(r) for _, r in rows.iterrows()]
        table_["beyond chance"] = np.where(rows["keyed"] > rows["expected_high"], "yes", "no")
        table_["false-key share"] = rows["false_key_share"]
    else:
        parts.append(missing("No chance.csv: vp analyze --permutations N (default 200) counts the keys chance alone gives."))
    if "heldout_rho_mean" in rows:
        table_["held-out rho"] = rows["heldout_rho_mean"]
        table_["rho where keyed"] = rows["selected_rho_mean"]
        table_["replicated"] = rows["replication_rate"]
    else:
        parts.append(missing("No replication_shrinkage.csv: the held-out rho comes from vp analyze's replication step."))
    table_[f"q < {alpha:g}"] = rows["fdr"]
    parts.insert(0, table(table_, formats={"keyed pairs": _int, "keyed by chance alone": str, "false-key share": _pct,
                                           "replicated": _pct, f"q < {alpha:g}": _int, "held-out rho": _f(3),
                                           "rho where keyed": _f(3)},
                          caption="Keyed by chance alone: the same rule on scores permuted among each group's raters "
                                  "(mean [95% range]); beyond chance: more keys than the top of that range; false-key "
                                  "share: that mean over the keys observed, at most 100%. "
                                  "Held-out rho: the mean rho, on the other half, of the pairs one half of the raters "
                                  "keyed (pooled over all splits both ways); it describes keys chosen with half the "
                                  "raters, so for the keys chosen with all of them it errs low. Rho where keyed: the "
                                  "same pairs on the half that keyed them; the difference is the winner's curse. "
                                  "Replicated: how often the other half keyed the pair too. q: Benjamini-Hochberg "
                                  "within the family."))
    return "".join(parts)


def _verdict_table(inp: Inputs, merged: pd.DataFrame, ci_kind: str, alpha: float, have_replication: bool) -> str:
    splits = int(_settings(inp).get("splits") or 0)
    counts = merged["verdict"].value_counts()
    rank = {v: k for k, v in enumerate(VERDICTS)}
    plain = dict(zip(VERDICTS, ("survive FDR and replicate", "survive FDR but do not replicate",
                                "replicate but do not survive FDR", "neither survive FDR nor replicate")))
    plain.update({"keyed, survives FDR": "survive FDR", "keyed": "do not survive FDR"})
    said = ", ".join(f"{int(counts[v]):,} {plain.get(v, v)}" for v in sorted(counts.index, key=lambda v: rank.get(v, 9)))
    parts = [para(f"Of the {len(merged):,} keyed pairs, {said}. A pair survives FDR when its Benjamini-Hochberg q "
                  f"(within its family, over every pair tested) is below {alpha:g}. It replicates when, among the "
                  "random halves of its group's raters that keyed it, the other half keyed it too at least half the "
                  "time; a half has about 23 raters, so a pair with a true rho of .3 passes there only about a third "
                  "of the time, and a pair no half keyed does not replicate. Replication is checked on raters the "
                  "selecting half did not use, but the pair was listed because all its raters keyed it: read it as "
                  "stability, not as an unbiased figure (on the release with scores shuffled within groups, 2-3% of "
                  "the keys replicate, against 8% on the real release).")]
    if not have_replication:
        parts.append(missing("No replication.csv: verdicts say only whether a pair survives FDR."))
    dim_rank = {fd: k for k, fd in enumerate(ORDER)}
    t = pd.DataFrame({
        "item": _item_key(merged),
        "group": merged["group_id"] if "group_id" in merged else "",
        "dimension": [label(d) for d in merged["dimension"]],
        "rho": merged["rho"],
        f"CI ({ci_kind})": [fmt_ci(a, b) for a, b in zip(merged["ci_low_"], merged["ci_high_"])],
        "q": merged["q_value"],
        "keyed by a half": merged["times_selected"] / (2 * splits) if splits and have_replication else np.nan,
        "replicated": merged["replication_rate"],
        "verdict": merged["verdict"],
        "_dim": [dim_rank.get((f, d), 999) for f, d in zip(merged["family"], merged["dimension"])],
        "_verdict": merged["verdict"].map(rank),
        "_rep": merged["replication_rate"].fillna(-1),
    })
    views = [("dimension", ["_dim", "rho"], [True, False]), ("verdict", ["_verdict", "rho"], [True, False]),
             ("rho", ["rho"], [False]), ("replication", ["_rep", "rho"], [False, False]),
             ("q", ["q", "rho"], [True, False])]
    views_html = sorted_views(t, views, "verdicts", formats={"rho": _f(2), "q": fmt_p, "keyed by a half": _pct,
                                                             "replicated": _pct, f"CI ({ci_kind})": str},
                              caption="Every keyed pair. Rho and its interval are on all the item's raters (biased "
                                      "upwards); keyed by a half: the share of halves of the raters (2 per split) "
                                      "that keyed it; replicated: of those, the share whose other half keyed it too.")
    parts.append(details(f"All {len(t):,} keyed pairs with their verdicts (sortable)", views_html))
    return "".join(parts)


def truth_section(inp: Inputs) -> str | None:
    """For `vp demo`'s simulated study: how much of the known truth the analysis recovered."""
    rec = inp.recovery
    if rec is None:
        return None
    out = [sources([("recovery.json", True)])]
    out.append(para("This study was simulated, so which items really measure which values is known. Precision is the "
                    "share of keyed pairs whose population correlation under the simulation is at least 0.1; recall the "
                    "share of pairs with population correlation of at least 0.3 that were keyed."))
    lines = rec.get("precision_by_real_line") or {}
    rows = []
    for key, label, keyed in (("selection", "study rule", "keyed_pairs"), ("fdr_selection", "rule + BH FDR", "fdr_keyed_pairs")):
        rule = "rule" if key == "selection" else "rule_fdr"
        rows.append({"rule": label, "pairs keyed": rec.get(keyed), "precision": rec.get(f"{key}_precision"),
                     "recall": rec.get(f"{key}_recall"),
                     "precision, line 0.05": (lines.get("0.05") or {}).get(rule),
                     "precision, line 0": (lines.get("0") or {}).get(rule)})
    out.append(table(pd.DataFrame(rows), formats={"pairs keyed": _int},
                     caption="Keyed pairs against the truth; the last two columns count a keyed pair as real from a "
                             "population correlation of 0.05, or of anything above 0."))
    designs = rec.get("designs") or {}
    if designs:
        labels = {"one_stage_rule": "one stage, study rule", "one_stage_fdr": "one stage, rule + BH FDR",
                  "two_stage": "two stages (screening, confirmation)"}
        frame = pd.DataFrame([{"design": labels.get(k, k), **{c: v.get(c) for c in ("precision", "recall", "keyed", "ratings")}}
                              for k, v in designs.items()])
        setup = rec.get("designs_setup") or {}
        out.append(table(frame, formats={"keyed": _int, "ratings": _int},
                         caption="The same items and truth at equal cost (paid ratings). " + " ".join(
                             f"{k.replace('_', ' ')}: {v}." for k, v in setup.items() if k in ("one_stage", "two_stage"))))
    honest = rec.get("chance_and_heldout") or {}
    if honest:
        rows = [{"family": FAMILY_NAMES.get(f, f), "pairs keyed": r.get("keyed"),
                 "false-key share by chance": r.get("chance_false_key_share"),
                 "true share with rho < 0.1": r.get("true_false_key_share"),
                 "held-out rho": r.get("heldout_rho_mean"),
                 "true rho, keys of half the raters": r.get("population_rho_of_half_keyed"),
                 "true rho, the study's keys": r.get("population_rho_of_keyed")} for f, r in honest.items()]
        out.append(table(pd.DataFrame(rows), formats={"pairs keyed": _int, "false-key share by chance": _pct,
                                                      "true share with rho < 0.1": _pct, "held-out rho": _f(3),
                                                      "true rho, keys of half the raters": _f(3),
                                                      "true rho, the study's keys": _f(3)},
                         caption="The honest figures of the Selected items section against the truth. The chance "
                                 "baseline counts keys among pairs with no relation at all; pairs with a weak real "
                                 "relation (below 0.1) are false keys by the truth's line but not by chance's. The "
                                 "held-out rho estimates the true rho of keys chosen with half the raters; the "
                                 "study's own keys, chosen with all of them, are a little stronger."))
    reps = rec.get("rater_replicates") or {}
    per = pd.DataFrame(reps.get("per_replicate") or [])
    if not per.empty and {"selection_precision", "fdr_selection_precision"} <= set(per.columns):
        f = reps.get("fdr_selection_precision") or {}
        out.append(figure(F.replicate_precision(per, {k: rec.get(k) for k in ("selection_precision", "fdr_selection_precision")}),
                          alt="Precision of the study and of each fresh sample of raters, for both rules",
                          caption=f"The same items rated by {len(per)} fresh simulated samples of raters, analysed the "
                                  f"same way. With the FDR rule: mean {fmt_num(f.get('mean'))}, range "
                                  f"{fmt_num(f.get('min'))} to {fmt_num(f.get('max'))}, about "
                                  f"{fmt_num(f.get('keyed_per_run'), 0)} pairs keyed per study: one study's precision "
                                  "rests on few pairs."))
    facts = []
    if rec.get("participant_score_corr") is not None:
        facts.append(f"participants' estimated value scores against their true values: mean r = "
                     f"{fmt_num(rec['participant_score_corr'])}")
    if rec.get("llm_profile_rank_corr") is not None:
        facts.append(f"the simulated LLM's recovered profile against its true one: Spearman = "
                     f"{fmt_num(rec['llm_profile_rank_corr'])}")
    if facts:
        out.append(para("Also recovered: " + "; ".join(facts) + "."))
    return "".join(out)


def _intended(inp: Inputs) -> str:
    """How often an item's ratings confirmed the value its response was written for."""
    check = inp.csv("intended_values.csv")
    if check is None or check.empty:
        return ""
    n = len(check)
    confirmed, points = int(check["confirmed"].sum()), int(check["points_to_intended"].sum())
    per_value = (check.groupby("intended_value")
                 .agg(items=("confirmed", "size"), confirmed=("confirmed", "mean"),
                      points_to_intended=("points_to_intended", "mean"), median_rank=("intended_rank", "median"))
                 .reset_index().rename(columns={"intended_value": "dimension"}))
    per_value.insert(0, "family", "pvq")
    return ("<h3>Intended values</h3>"
            + para(f"{n:,} items record the value their response was written to express. The ratings keyed "
                   f"{confirmed:,} of them ({confirmed / n:.0%}) to that value, and for {points:,} ({points / n:.0%}) "
                   "it was the value they correlated with most (chance: 10%).")
            + table(_order_dims(per_value), formats={"items": _int, "confirmed": _pct, "points_to_intended": _pct,
                                                     "median_rank": _f(1)},
                    headers={"confirmed": "keyed to it", "points_to_intended": "highest rho",
                             "median_rank": "median rank of 10"},
                    caption="Per intended value: the share of its items the analysis keyed to it, and the share "
                            "whose highest correlation was with it."))


def _ci_columns(frame: pd.DataFrame):
    if {"ci_low", "ci_high"} <= set(frame.columns) and frame["ci_low"].notna().any():
        return frame["ci_low"], frame["ci_high"], "bootstrap percentile"
    if {"fz_ci_low", "fz_ci_high"} <= set(frame.columns) and frame["fz_ci_low"].notna().any():
        return frame["fz_ci_low"], frame["fz_ci_high"], "Bonett-Wright Fisher z"
    return pd.Series(np.nan, index=frame.index), pd.Series(np.nan, index=frame.index), "none"


def _texts(inp: Inputs) -> dict[tuple[str, int], tuple[str, str, str]]:
    """(portrait_id, option_id) -> (title, query text, response)."""
    texts: dict[tuple[str, int], tuple[str, str, str]] = {}
    for q in inp.item_bank or []:
        content = q.get("content") or {}
        for o in q.get("outputs") or []:
            try:
                texts[(str(q.get("portrait_id")), int(o.get("id")))] = (
                    content.get("title") or "", content.get("text") or "", o.get("content") or "")
            except (TypeError, ValueError):
                continue
    if inp.study is not None:
        for r in inp.study.items.itertuples():
            texts.setdefault((str(r.portrait_id), int(r.option_id)), (r.title or "", r.query_text or "", r.response or ""))
    return texts


def _item_lists(merged: pd.DataFrame, inp: Inputs, ci_kind: str) -> str:
    texts = _texts(inp)
    if not texts:
        return missing("No item texts: item_bank.json not found (and no database).")
    parts = ["<h3>The items</h3>", para("Item texts are shown as plain text, exactly as stored.")]
    for (fam, dim), part in _order_dims(merged).groupby(["family", "dimension"], sort=False):
        part = part.sort_values("rho", key=lambda s: -s.abs())
        body = []
        for r in part.itertuples():
            title, query, response = texts.get((str(r.portrait_id), int(r.option_id)), ("", "(text not found)", ""))
            bits = [f"rho {r.rho:.2f}"]
            ci = fmt_ci(r.ci_low_, r.ci_high_)
            if ci:
                bits[0] += f" {ci}"
            if hasattr(r, "q_value") and pd.notna(r.q_value):
                bits.append(f"q {fmt_p(r.q_value)}")
            if hasattr(r, "n") and pd.notna(r.n):
                bits.append(f"n {int(r.n)}")
            if hasattr(r, "replication_rate") and pd.notna(r.replication_rate):
                bits.append(f"replicated in {_pct(r.replication_rate)} of the halves that keyed it")
            if r.rho < 0:
                bits.append("reversed")
            if hasattr(r, "verdict"):
                bits.append(str(r.verdict))
            grp = f" · {r.group_id}" if hasattr(r, "group_id") and pd.notna(r.group_id) else ""
            body.append(
                '<div class="item">'
                f'<div class="stats"><b>{esc(r.portrait_id)}/{esc(r.option_id)}</b>{esc(grp)} · {esc(" · ".join(bits))}</div>'
                + (f'<div class="q"><b>{esc(title)}</b></div>' if title else "")
                + f'<div class="q">{esc(query)}</div><div class="r">{esc(response)}</div></div>'
            )
        parts.append(details(f"{label(dim)} ({FAMILY_NAMES.get(fam, fam)}): {len(part)} items", "".join(body)))
    parts.append(note(f"Confidence intervals: {ci_kind}."))
    return "".join(parts)


# --------------------------------------------------------------------------- factor analyses


def factor_analyses(inp: Inputs) -> str:
    out = [sources([("cfa_fit.csv", inp.has("cfa_fit.csv")), ("efa_loadings.csv", inp.has("efa_loadings.csv"))])]
    out.append(note("The exploratory factor analysis is a dimensionality check, not the validation: Schwartz's values "
                    "form a quasi-circumplex of overlapping motivations, which EFA's simple structure does not "
                    "describe (Schwartz's own scoring guidance advises against validating the PVQ by EFA). The "
                    "validation is the item-value correlations above and the confirmatory models below."))
    cfa = inp.csv("cfa_fit.csv")
    out.append("<h3>Confirmatory factor analyses</h3>")
    if cfa is None:
        out.append(missing("No cfa_fit.csv: run vp analyze (psychometrics step)."))
    else:
        fit_cols = [c for c in ("chi2", "df", "p", "cfi", "tli", "rmsea", "rmsea_ci", "srmr", "n") if c in cfa.columns
                    or c == "rmsea_ci"]
        cfa = cfa.assign(rmsea_ci=[fmt_ci(a, b, 3) for a, b in zip(cfa.get("rmsea_ci_low", np.nan),
                                                                  cfa.get("rmsea_ci_high", np.nan))])
        label_cols = [c for c in ("model", "scope", "family", "dimension") if c in cfa.columns]
        fmts = {"chi2": _f(1), "df": _int, "p": fmt_p, "cfi": _f(3), "tli": _f(3), "rmsea": _f(3), "srmr": _f(3),
                "n": _int, "rmsea_ci": str, "n_indicators": _int}
        keyed = cfa["model"].astype(str).str.startswith("one_factor") if "model" in cfa.columns else pd.Series(False, index=cfa.index)
        whole = cfa[~keyed]
        if whole.empty:
            out.append(missing("No questionnaire CFA (the PVQ-21 ten-value and higher-order models): they need raw "
                               "PVQ-21 answers, which this study does not have."))
        else:
            out.append(table(whole[label_cols + fit_cols + [c for c in ("note",) if c in cfa.columns]], formats=fmts,
                             headers={"rmsea_ci": "RMSEA 90% CI", "note": "warnings and notes"},
                             cell_style={"note": _warning_style}, caption="Questionnaire models (ML as lavaan's "
                             "defaults: variances unbounded; indices as lavaan reports them)."))
        k = cfa[keyed]
        if not k.empty:
            informative = k[k["df"].fillna(0) > 0]
            good = ((informative["cfi"] >= 0.95) & (informative["rmsea"] <= 0.06) & (informative["srmr"] <= 0.08))
            notes = _text(k["note"]) if "note" in k.columns else pd.Series("", index=k.index)
            out.append(para(f"One-factor models of each dimension's keyed items within a group: {len(k)} models, "
                            f"{len(informative)} with df > 0; {int(good.sum())} of these meet CFI ≥ .95, "
                            f"RMSEA ≤ .06 and SRMR ≤ .08 together (Hu & Bentler 1999). "
                            f"{int(notes.str.contains('just identified').sum())} are just identified. "
                            f"Variances are not bounded (lavaan's default), so an improper solution shows as one."))
            out.append(_warning_line(k.assign(note=notes), "one-factor models"))
            out.append(details("All one-factor models of keyed items",
                               table(_order_dims(k[label_cols + fit_cols + [c for c in ("n_indicators", "note")
                                                                           if c in k.columns]])
                                     if "family" in k.columns else k, formats=fmts,
                                     headers={"rmsea_ci": "RMSEA 90% CI", "note": "warnings and notes"},
                                     cell_style={"note": _warning_style})))
    efa = inp.csv("efa_loadings.csv")
    out.append("<h3>Exploratory factor analyses</h3>")
    if efa is None:
        out.append(missing("No efa_loadings.csv: run vp analyze (psychometrics step)."))
    elif efa.empty:
        out.append(para("efa_loadings.csv is empty: no group had enough raters for an EFA."))
    else:
        status = efa["status"] if "status" in efa.columns else pd.Series("fitted", index=efa.index)
        g = efa.groupby("group_id", sort=True)
        summ = g.agg(items=("item", "nunique"), **{c: (c, "first") for c in
                                                  ("n", "n_factors", "kmo", "bartlett_chi2", "bartlett_df", "bartlett_p", "note")
                                                  if c in efa.columns}).reset_index()
        skipped = efa.loc[status == "skipped", "group_id"].unique()
        summ.loc[summ["group_id"].isin(skipped), "items"] = np.nan
        if len(skipped):
            out.append(note(f"{len(skipped)} of {efa['group_id'].nunique()} groups were not factored: a factor model "
                            f"of them would mean nothing (no more raters than items, a singular correlation matrix, "
                            f"or KMO below the threshold). The reason for each is in the table."))
        out.append(table(summ, formats={"items": _int, "n": _int, "n_factors": _int, "bartlett_chi2": _f(1),
                                        "bartlett_df": _int, "bartlett_p": fmt_p, "kmo": _f(2)},
                         headers={"n_factors": "factors (parallel analysis)", "kmo": "KMO", "note": "warnings and notes"},
                         cell_style={"note": _warning_style},
                         caption="Item ratings within each group: factors retained by Horn's parallel analysis, "
                                 "oblimin rotation. KMO below .5 means the ratings share too little for a factor "
                                 "model, as expected with about 45 raters for 40 items."))
        blocks = []
        for gid, part in efa[status != "skipped"].groupby("group_id", sort=True):
            wide = part.pivot_table(index="item", columns="factor", values="loading", sort=False)
            if "communality" in part.columns:
                wide["h2"] = part.groupby("item", sort=False)["communality"].first()
            factors = [c for c in wide.columns if c != "h2"]
            lim = 1.0
            blocks.append(details(f"Loadings in {gid}", table(
                wide.reset_index(), formats={c: _f(2) for c in wide.columns},
                cell_style={c: (lambda v: diverging_bg(v, lim) if pd.notna(v) and abs(v) >= 0.3 else "")
                            for c in factors},
                caption="Pattern loadings with |loading| ≥ .30 shaded; h2 the communality, diag(Λ Φ Λᵀ).")))
        if blocks:
            out.append(details("Loadings per group", "".join(blocks)))
    return "".join(out)


# --------------------------------------------------------------------------- LLM profiles


#: Radars per figure in the small multiples: a figure stays within one printed page.
RADARS_PER_FIGURE = 12


def _consistency(inp: Inputs, plain: list[str]) -> pd.DataFrame | None:
    cons = inp.csv("llm_consistency.csv")
    if cons is None:
        return None
    return cons[cons["model"].astype(str).isin(plain)].reset_index(drop=True)


def _low_consistency(cons: pd.DataFrame | None) -> set[str]:
    """Models whose six-variant average is too inconsistent for a profile: ICC(C,k) below the line."""
    from analysis.llm import LOW_CONSISTENCY  # not via profile: its imports cost a tenth of a second

    if cons is None or "icc_k" not in cons.columns:
        return set()
    return set(cons.loc[cons["icc_k"] < LOW_CONSISTENCY, "model"].astype(str))


def llm_section(inp: Inputs) -> str:
    from analysis.llm import LOW_CONSISTENCY  # not via profile: its imports cost a tenth of a second

    out = [sources([("llm_profiles.csv", inp.has("llm_profiles.csv")),
                    ("llm_consistency.csv", inp.has("llm_consistency.csv"))])]
    prof = inp.csv("llm_profiles.csv")
    if prof is None:
        out.append(missing(f"No LLM profiles: run vp run-llm on the item bank, then vp score-llm --item-bank "
                           f"{inp.processed / 'item_bank.json'} --responses <answer files> --out "
                           f"{inp.processed / 'llm_profiles.csv'}."))
        return "".join(out)
    names = gb.split_persona_models(prof["model"].unique())
    plain = sorted(names.loc[names["slug"].isna(), "model_name"].astype(str))
    base = prof[prof["model"].isin(plain)]
    if base.empty:
        out.append(missing("llm_profiles.csv holds persona runs only; plain model profiles are shown under Group bias."))
        return "".join(out)
    cons = _consistency(inp, plain)
    low = _low_consistency(cons)
    line = f"{LOW_CONSISTENCY:.2f}".lstrip("0")
    has_ci = {"ci_low", "ci_high"} <= set(base.columns) and base["ci_low"].notna().any()
    out.append(para(
        f"{len(plain)} {'model' if len(plain) == 1 else 'models'} rated the bank's items. A model's answer to an item "
        "is its mean over the prompt variants, and a value's score is the mean answer on the items keyed to it minus "
        "the mean over all keyed items of the family (the centred score: above 0, the model endorses the value more "
        "than its average)."
        + (f" {len(low)} of them ({', '.join(sorted(low))}) answer too inconsistently across the variants for their "
           f"profile to mean much: the reliability of their averaged answers, ICC(C,k), is below {line} "
           "(marked †)." if low else
           (f" Every model's averaged answers are consistent enough: ICC(C,k) ≥ {line}." if cons is not None
            and "icc_k" in cons.columns else ""))))
    pvq = base[base["family"] == "pvq"]
    if not pvq.empty:
        out.append(figure(F.profile_dots(pvq, VALUES, low), "Each model's centred score on each value, with intervals",
                          "Centred PVQ-value score of every model (rows), one panel per value in the order of "
                          "Schwartz's circle, all on one scale"
                          + ("; lines: 95% percentile bootstrap intervals over the bank's items (how much the score "
                             "depends on which items were kept)" if has_ci else
                             " (no intervals: this llm_profiles.csv was written without them; rerun vp score-llm)")
                          + (f". † and hollow grey dots: low consistency, ICC(C,k) below {line}." if low else "."),
                          width="900px"))
    out.append(_profile_tables(base, plain, low))
    scores = inp.scores
    if scores is not None and all(("pvq", v) in scores.columns for v in VALUES) and not pvq.empty:
        wide = pvq.pivot_table(index="model", columns="dimension", values="centered_mean")
        human = scores[[("pvq", v) for v in VALUES]].mean()
        human.index = VALUES
        rows = []
        for m in plain:
            if m in wide.index:
                a, b = wide.loc[m].reindex(VALUES).to_numpy(float), human.to_numpy(float)
                rho = p = math.nan  # as spearmanr: a value missing on either side gives no rho
                if not (np.isnan(a).any() or np.isnan(b).any()):
                    rho, p = _spearman_over_values(a, b)
                rows.append({"model": m, "rank correlation with the participants' mean profile": rho, "p": p})
        out.append(table(pd.DataFrame(rows), formats={"p": fmt_p}, caption="How far each model orders the ten values "
                         "as the average participant does (Spearman's rho over the ten values)."))
    out.append("<h3>Consistency across prompt variants and option-order bias</h3>")
    if cons is None:
        out.append(missing("No llm_consistency.csv (vp score-llm writes it beside llm_profiles.csv)."))
    else:
        out.append(_consistency_table(cons, low))
    if not pvq.empty:
        from analysis.correlations import spearman_matrix  # scipy's spearmanr to 1e-12, without scipy.stats' import

        wide = pvq.pivot_table(index="model", columns="dimension", values="centered_mean")
        radars = [m for m in plain if m in wide.index]
        figs = []
        for k in range(0, len(radars), RADARS_PER_FIGURE):
            chunk = radars[k:k + RADARS_PER_FIGURE]
            figs.append(figure(F.radar_grid({m: wide.loc[m] for m in chunk}, VALUES, ncols=4),
                               "Radar charts of the models' centred value profiles",
                               "Each model's centred PVQ profile around Schwartz's circle; rings labelled in centred-"
                               "score units, the dashed ring is zero (outside it: endorsed more than the model's "
                               "average). One scale for all radars.", width="900px"))
        out.append(details(f"Radar charts ({len(radars)} {'model' if len(radars) == 1 else 'models'})", "".join(figs)))
    return "".join(out)


def _short_num(x: float) -> str:
    """-0.44 -> -.44: interval ends under a score, where width is short."""
    return f"{x:.2f}".replace("0.", ".", 1)


def _spearman_over_values(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Spearman's rho of two complete profiles and its two-sided p (as ``scipy.stats.spearmanr``, without scipy).

    rho is Pearson's r of the average ranks; p refers t = rho sqrt((n - 2) / (1 - rho^2)) to
    Student's t with n - 2 degrees of freedom. A constant profile has no rho (NaN).
    """
    from analysis.correlations import average_ranks
    from analysis.student_t import two_sided_p

    ra, rb = average_ranks(a) - (len(a) + 1) / 2, average_ranks(b) - (len(b) + 1) / 2
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if denom == 0:
        return math.nan, math.nan
    rho = float(np.clip(ra @ rb / denom, -1.0, 1.0))
    dof = len(a) - 2
    if dof < 1:
        return rho, math.nan
    t = math.inf if abs(rho) == 1 else rho * math.sqrt(dof / ((1 + rho) * (1 - rho)))
    return rho, two_sided_p(t, dof)


def _profile_tables(base: pd.DataFrame, plain: list[str], low: set[str]) -> str:
    """Models (rows) x dimensions (columns), one table per family: fits a page at any number of models.

    Each cell: the centred score, and below it its bootstrap interval when llm_profiles.csv has one.
    """
    parts = []
    scale = float(np.nanmax(np.abs(base["centered_mean"].to_numpy(float)))) if len(base) else 1.0
    has_ci = {"ci_low", "ci_high"} <= set(base.columns)

    def cell(v) -> str:
        m, lo, hi = v if isinstance(v, tuple) else (v, np.nan, np.nan)
        if pd.isna(m):
            return ""
        return f"{m:.2f}" + (f"\n[{_short_num(lo)}, {_short_num(hi)}]" if pd.notna(lo) and pd.notna(hi) else "")

    def style(v, s=scale) -> str:
        return diverging_bg(v[0] if isinstance(v, tuple) else v, s)

    for fam, dims in inst.FAMILIES.items():
        part = base[base["family"] == fam]
        if part.empty:
            continue
        cols = [d for d in dims if d in set(part["dimension"])]
        models = [m for m in plain if m in set(part["model"])]
        at = part.set_index(["model", "dimension"])
        frame = pd.DataFrame({"model": [f"{m} †" if m in low else m for m in models]})
        for d in cols:
            frame[d] = [tuple(float(at.loc[(m, d), c]) if (m, d) in at.index and c in at.columns else np.nan
                              for c in ("centered_mean", "ci_low", "ci_high")) for m in models]
        nmin = part.groupby("dimension")["n"].min()
        caption = (f"Centred scores on the {FAMILY_NAMES[fam]}" + (", with 95% intervals (bootstrap over items)"
                                                                    if has_ci else "")
                   + " (blue: above the model's average, red: below). Fewest keyed items any model answered: "
                   + ", ".join(f"{label(d)} {int(nmin[d])}" for d in cols if d in nmin.index) + ".")
        parts.append(table(frame, formats={d: cell for d in cols}, headers={d: label(d) for d in cols},
                           cell_style={d: style for d in cols}, caption=caption, css_class="lines"))
    return "".join(parts)


def _consistency_table(cons: pd.DataFrame, low: set[str]) -> str:
    from analysis.llm import LOW_CONSISTENCY  # not via profile: its imports cost a tenth of a second

    def with_ci(value, lo, hi) -> str:
        return "" if pd.isna(value) else f"{value:.2f}" + (f"\n{fmt_ci(lo, hi)}" if fmt_ci(lo, hi) else "")

    c = cons.copy()
    c["icc_1"] = [with_ci(v, a, b) for v, a, b in zip(c["icc"], c.get("icc_ci_low", np.nan), c.get("icc_ci_high", np.nan))]
    cols = ["model", "n_items", "n_variants", "icc_1"]
    if "icc_k" in c.columns:
        c["icc_k_"] = [with_ci(v, a, b) for v, a, b in zip(c["icc_k"], c["icc_k_ci_low"], c["icc_k_ci_high"])]
        c["verdict"] = ["" if pd.isna(v) else "low" if m in low else "adequate" for m, v in zip(c["model"], c["icc_k"])]
        cols += ["icc_k_", "verdict"]
    c["order_bias_"] = [with_ci(v, np.nan, np.nan) + (f"\nt = {t:.1f}" if pd.notna(t) else "")
                        for v, t in zip(c.get("order_bias", np.nan), c.get("order_bias_t", np.nan))]
    cols += ["order_bias_", "order_bias_p", "order_bias_wilcoxon_p"]
    cols = [x for x in cols if x in c.columns]
    line = f"{LOW_CONSISTENCY:.2f}".lstrip("0")
    body = table(c[cols], formats={"n_items": _int, "n_variants": _int, "icc_1": str, "icc_k_": str, "order_bias_": str,
                                   "order_bias_p": fmt_p, "order_bias_wilcoxon_p": fmt_p},
                 headers={"n_items": "items with every variant", "n_variants": "variants",
                          "icc_1": "ICC(C,1) one variant [95% CI]", "icc_k_": "ICC(C,k) their mean [95% CI]",
                          "verdict": "consistency", "order_bias_": "order bias (given - reversed)",
                          "order_bias_p": "order bias p (paired t)", "order_bias_wilcoxon_p": "order bias p (Wilcoxon)"},
                 cell_style={"verdict": lambda v: "color:#8a4b00;font-weight:600" if v == "low" else ""},
                 css_class="lines",
                 caption="Agreement between the prompt variants, items as targets and variants as raters (two-way "
                         "mixed, consistency; Shrout & Fleiss ICC(3,1) and ICC(3,k)). ICC(C,1) is one variant's "
                         "reliability (below .5 is poor, Koo & Li 2016); ICC(C,k) is the reliability of the mean over "
                         "the k variants, which is what the profile is built from, and equals Cronbach's alpha over "
                         f"the variants: below {line}, the usual minimum for research use, the consistency is marked "
                         "low. Order bias: mean answer with the options in the given order minus in reversed order, "
                         "on the 1-6 scale.")
    if "icc_k" not in cons.columns:
        body += note("llm_consistency.csv has no ICC(C,k) column (written by an older vp score-llm): rerun vp score-llm "
                     "to judge the profiles by the reliability of the averaged answers.")
    return body


# --------------------------------------------------------------------------- group bias


def _group_bias_tables(inp: Inputs) -> tuple[dict[str, pd.DataFrame], list[str], str]:
    """The group-bias tables: vp demo's group_*.csv when they are on one scale, else computed here."""
    names = ("group_profiles", "group_tests", "group_bias", "group_gaps", "group_bias_summary")
    if inp.has("group_bias.csv") and inp.has("group_profiles.csv"):
        tables = {name: inp.csv(f"{name}.csv") for name in names}
        tables = {k: (v if v is not None else pd.DataFrame()) for k, v in tables.items()}
        gaps = tables["group_gaps"]
        if gaps.empty or "human_gap_std" in gaps.columns:
            return tables, [], "group_*.csv in the processed folder"
    tables = gb.run_group_bias(inp.processed, db=inp.db, demographics_csv=inp.demographics_csv)
    notes = tables.pop("notes")["note"].tolist()
    return tables, notes, "computed for this report from the participants' scores and demographics"


def group_bias_section(inp: Inputs) -> str:
    try:
        tables, notes, where = _group_bias_tables(inp)
    except Exception as exc:
        return missing(f"The group-bias analysis could not run: {exc}")
    out = [para(f"Source: {where}.")]
    out += [missing(n) for n in notes]
    prof = tables.get("group_profiles", pd.DataFrame())
    if prof is None or prof.empty:
        if not notes:
            out.append(missing("No group profiles."))
        return "".join(out)
    human = prof[prof["source"] == "humans"]
    tests = tables.get("group_tests", pd.DataFrame())
    out.append("<h3>How the groups of participants differ</h3>")
    if tests is not None and not tests.empty:
        sig = tests[tests["q_value"] < 0.05]
        line = []
        for attr in gb.ATTRIBUTES:
            t = tests[tests["attribute"] == attr]
            if len(t):
                s_ = sig[sig["attribute"] == attr]["dimension"].map(label).tolist()
                test = {"welch_t": "Welch's t", "anova": "one-way ANOVA"}.get(t["test"].iloc[0], t["test"].iloc[0])
                line.append(f"{label(attr)} ({test}): {', '.join(s_) if s_ else 'none'}")
        out.append(para("Values on which the groups of participants differ (q < .05, Benjamini-Hochberg over the ten "
                        "values): " + "; ".join(line) + "."))
        out.append(details("All tests", table(tests, formats={"n_groups": _int, "n": _int, "p_value": fmt_p,
                                                              "q_value": fmt_p, "kruskal_p": fmt_p, "kruskal_q": fmt_p,
                                                              "eta_squared": _f(3)},
                                              headers={"test": "test", "statistic": "t or F",
                                                       "difference": "difference (first - second group)"})))
    human_radar = {}
    for attr in gb.ATTRIBUTES:
        h = human[human["attribute"] == attr]
        if len(h):
            human_radar[label(attr)] = {f"{g} (n={int(part['n'].iloc[0])})": part.set_index("dimension")["mean"]
                                        for g, part in h.groupby("group", sort=False)}
    if human_radar:
        out.append(figure(F.radar_grid({}, VALUES, ncols=4, overlay=human_radar, legend_each=True),
                          "Participants' mean profiles per group",
                          "Mean centred value profile of each group of participants, in PVQ-21 points (t-based CIs "
                          "in group_profiles.csv).", width="900px"))
    llm = prof[prof["source"] != "humans"]
    out.append("<h3>LLM personas against the real groups</h3>")
    if llm.empty:
        if not notes:
            out.append(missing("No LLM persona profiles: run vp run-llm --persona for each group, score them with "
                               "vp score-llm, and describe them in personas.json."))
        return "".join(out)
    dist = tables.get("group_bias", pd.DataFrame())
    summ = tables.get("group_bias_summary", pd.DataFrame())
    gaps = tables.get("group_gaps", pd.DataFrame())
    tol = float(summ["tolerance"].dropna().iloc[0]) if summ is not None and "tolerance" in summ.columns \
        and summ["tolerance"].notna().any() else gb.DEFAULT_TOLERANCE
    out.append(para(
        "Human gaps are differences in PVQ-21 points, persona gaps differences in item-rating points: different "
        "units. Both are put on one scale the same way before they are compared: per model and attribute, each "
        "side's gaps are divided by that side's spread, the standard deviation across the ten values of its average "
        "group profile (humans: "
        + _scale_text(gaps, "human_scale") + " PVQ-21 points; personas: " + _scale_text(gaps, "llm_scale")
        + " rating points). A standardised "
        "gap of 1 is as large as the typical difference between two values in that side's own profile. "
        f"Gaps smaller than {tol:g} on this scale count as near zero: a value is called reversed only when both "
        "the human and the persona gap are beyond it and point opposite ways; when both are within it, it is "
        "'near zero' and not counted as anything else."))
    if summ is not None and not summ.empty:
        cols = [c for c in ("model", "attribute", "n_gaps", "share_exaggerated", "share_reversed", "share_attenuated",
                            "share_near_zero", "slope_std", "mean_euclidean_std", "mean_spearman") if c in summ.columns]
        out.append(table(summ[cols], formats={"n_gaps": _int, "share_exaggerated": _pct, "share_reversed": _pct,
                                              "share_attenuated": _pct, "share_near_zero": _pct, "slope_std": _f(2),
                                              "mean_euclidean_std": _f(2), "mean_spearman": _f(2)},
                         headers={"n_gaps": "gaps compared", "share_exaggerated": "exaggerated",
                                  "share_reversed": "reversed", "share_attenuated": "attenuated",
                                  "share_near_zero": "both near zero", "slope_std": "slope (one scale)",
                                  "mean_euclidean_std": "mean distance (one scale)",
                                  "mean_spearman": "mean rank correlation"},
                         caption="Per model, over all pairs of groups and values: how often the persona gap "
                                 "exaggerates (larger), reverses (opposite sign, both beyond the tolerance) or "
                                 "attenuates (smaller) the human gap, or both are near zero; the slope of the persona "
                                 "gap on the human gap through the origin (> 1: exaggerated on average, < 0: "
                                 "reversed); the mean distance between persona and group profiles and their mean "
                                 "rank correlation. Gaps and distances on the standardised scale."))
    if dist is not None and not dist.empty:
        cols = [c for c in ("model", "attribute", "group", "n_humans", "n_values", "euclidean_std", "spearman_rho",
                            "spearman_p") if c in dist.columns]
        out.append(details("Distance of each persona from its group", table(
            dist[cols], formats={"n_humans": _int, "n_values": _int, "euclidean_std": _f(2), "spearman_rho": _f(2),
                                 "spearman_p": fmt_p},
            headers={"euclidean_std": "distance (one scale)"},
            caption="Per model and group: distance between the persona's profile and the group's mean profile, each "
                    "divided by its side's spread, and their Spearman rank correlation, over the values both have "
                    "(a value with no keyed item in the bank has no persona score).")))
    if gaps is not None and not gaps.empty:
        out.append(figure(F.gap_scatter(gaps, summ, tol), "Persona gaps against human gaps, on one scale",
                          "Each point is one value and one pair of groups: the standardised human gap (group A minus "
                          "group B) against the same model's standardised persona gap. Dashed: y = x (a faithful "
                          f"picture); solid: fitted slope through the origin; grey bands: gaps within ±{tol:g}, "
                          "counted as near zero.", width="900px"))
    scales = {} if gaps is None or gaps.empty or "human_scale" not in gaps.columns else \
        gaps.drop_duplicates(["model", "attribute"]).set_index(["model", "attribute"])[["human_scale", "llm_scale"]]
    for model in sorted(llm["source"].unique()):
        overlay = {}
        for (attr, group), h in human.groupby(["attribute", "group"], sort=False):
            l = llm[(llm["source"] == model) & (llm["attribute"] == attr) & (llm["group"] == group)]
            if len(l) and (model, attr) in getattr(scales, "index", ()):
                s_h, s_l = scales.loc[(model, attr)]
                overlay[f"{label(attr)}: {group}"] = {
                    "participants": h.set_index("dimension")["mean"] / s_h,
                    model: l.set_index("dimension")["mean"] / s_l}
        if overlay:
            out.append(figure(F.radar_grid({}, VALUES, ncols=4, overlay=overlay), f"Paired radar charts for {model}",
                              f"Participants (blue) against {model}'s persona (red), per group, each profile divided "
                              "by its side's spread (one scale).", width="900px"))
    return "".join(out)


def _scale_text(gaps: pd.DataFrame | None, column: str) -> str:
    if gaps is None or gaps.empty or column not in gaps.columns:
        return "not recorded"
    vals = gaps.drop_duplicates(["model", "attribute"])[column].dropna()
    if vals.empty:
        return "undefined"
    return f"{vals.min():.2f}" + (f" to {vals.max():.2f}" if vals.max() - vals.min() >= 0.005 else "")


# --------------------------------------------------------------------------- methods


def _rule_text(rule: str, opts: dict, info: dict) -> str:
    """A quality rule as it ran, in words (thresholds from the manifest's quality options)."""
    if rule == "duplicate":
        return ("duplicates (every participation of someone who took part in more than one group)"
                if opts.get("duplicate_policy") == "exclude-all" else
                "duplicates (a later participation of someone already counted in another group)")
    if rule == "attention":
        k = int(opts.get("max_failed_checks", 0))
        return "attention (failing any attention check)" if k == 0 else f"attention (failing more than {k} checks)"
    if rule == "straightlining":
        ratings = f"the same rating for every item, with at least {opts.get('min_block', 3)} items"
        return "straight-lining (" + (ratings if "item ratings only" in str(info.get("note", "")) else
                                      ratings + ", or the same answer to all 21 PVQ-21 items") + ")"
    if rule == "speeder":
        crit = []
        if opts.get("speeder_sd"):
            crit.append(f"more than {opts['speeder_sd']:g} SD below the group's mean completion time")
        if opts.get("speeder_fraction"):
            crit.append(f"under {opts['speeder_fraction']:.0%} of the group's median time")
        return "speeding (" + " or ".join(crit) + ")" if crit else "speeding"
    if rule == "incomplete":
        return "incomplete (the study, an item or a questionnaire not completed)"
    return rule


def _quality_sentences(m: dict, inp: Inputs) -> list[str]:
    """Participations before and after quality control, and each rule that ran with what it flagged.

    From the manifest's quality summary; a manifest without one (older runs) falls back on
    the rule list in its options and the reasons in quality.csv.
    """
    counts = m.get("counts", {}) or {}
    quality = m.get("quality", {}) or {}
    opts = m.get("quality_options") or quality.get("options") or {}
    rules = {r: i for r, i in (quality.get("rules") or {}).items() if isinstance(i, dict)}
    q = inp.csv("quality.csv")
    if q is not None and {"participant_id", "included"} <= set(q.columns):
        inc = q["included"].astype(str).str.lower().isin(["true", "1", "yes"])
        reasons = q["reasons"].fillna("").astype(str).str.split(";").explode().str.strip() if "reasons" in q else None
        found = {"participations": len(q), "participants": q["participant_id"].nunique(),
                 "included_participations": int(inc.sum()),
                 "included_participants": q.loc[inc, "participant_id"].nunique(),
                 "excluded_participations": int((~inc).sum())}
        counts = {**found, **counts}
        if not rules and reasons is not None:
            flagged = reasons[reasons != ""].value_counts()
            rules = {r: {"on": True, "applicable": True, "flagged": int(flagged.get(r, 0))}
                     for r in opts.get("rules", flagged.index)}
    before, people = counts.get("participations"), counts.get("participants")
    after, people_after = counts.get("included_participations"), counts.get("included_participants")
    excluded = counts.get("excluded_participations")
    out = []
    # load_study leaves the app's test-mode runs (pilots, no Prolific id) out before anything else
    tests = next((int(x.group(1)) for n in m.get("notes") or []
                  if (x := re.match(r"(\d+) test-mode participations", str(n)))), 0)
    if tests:
        out.append(f"{tests:,} test-mode {'participation' if tests == 1 else 'participations'} (pilot runs "
                   "without a Prolific id) {} left out before quality control.".format("was" if tests == 1 else "were"))
    if before is not None and after is not None:
        out.append(f"Of {before:,} participations ({people:,} participants), {excluded:,} "
                   f"{'was' if excluded == 1 else 'were'} excluded by quality control, leaving {after:,}"
                   + (f" from {people_after:,} participants" if people_after is not None else "") + ".")
    applied = [(r, i) for r, i in rules.items() if i.get("on", True) and i.get("applicable", True)]
    if applied:
        parts = [f"{_rule_text(r, opts, i)}: {i.get('flagged', 0):,} flagged" for r, i in applied]
        out.append("Rules applied (a participation can break several): " + "; ".join(parts) + ".")
    not_applicable = [r for r, i in rules.items() if i.get("on", True) and not i.get("applicable", True)]
    if not_applicable:
        why = {"attention": "attention checks", "speeder": "completion times"}
        out.append("The data has no " + " or ".join(why.get(r, r) for r in not_applicable)
                   + ", so " + ("that rule" if len(not_applicable) == 1 else "those rules")
                   + " could not be applied.")
    off = [r for r, i in rules.items() if not i.get("on", True)]
    if off:
        out.append("Switched off: " + ", ".join(off) + ".")
    unrated = _unrated(inp)
    if unrated:
        out.append(f"A further {unrated:,} {'person' if unrated == 1 else 'people'} had questionnaire scores but "
                   f"rated no items and {'was' if unrated == 1 else 'were'} not analysed.")
    return out


PAIR_NAMES = {"pvq": "item-value pairs", "higher_pvq": "item-higher-order-value pairs", "bfi": "item-trait pairs"}


def _chance_for_methods(inp: Inputs) -> pd.DataFrame | None:
    """Family totals of the chance baseline: chance.csv's, else the manifest's ``counts.chance``."""
    totals = _chance_totals(inp)
    if totals is not None:
        return totals
    counts = ((inp.manifest or {}).get("counts") or {}).get("chance")
    rows = {f: v for f, v in counts.items() if isinstance(v, dict) and "expected_mean" in v} \
        if isinstance(counts, dict) else {}
    return pd.DataFrame.from_dict(rows, orient="index") if rows else None


def _efa_method(inp: Inputs) -> tuple[str, str]:
    efa = inp.csv("efa_loadings.csv")
    if efa is not None and {"method", "rotation"} <= set(efa.columns) and efa["method"].notna().any():
        fitted = efa.dropna(subset=["method"])  # groups that were not factored have no method
        return (" / ".join(map(str, fitted["method"].unique())),
                " / ".join(map(str, fitted["rotation"].fillna("no").unique())))
    import inspect

    from analysis.efa import efa as run_efa

    defaults = inspect.signature(run_efa).parameters
    return str(defaults["method"].default), str(defaults["rotation"].default)


def _fmt_mean(value) -> str:
    return "?" if value is None else f"{float(value):.1f}".rstrip("0").rstrip(".")


def methods(inp: Inputs) -> str:
    m = inp.manifest
    if m is None:
        return missing("No manifest.json: the methods paragraph is generated from the settings vp analyze records there.")
    s = m.get("settings", {}) or {}
    counts = m.get("counts", {}) or {}
    keyed = counts.get("keyed", {}) or {}
    bank = counts.get("item_bank", {}) or {}
    versions = dict(m.get("versions") or m.get("software") or {})
    version_source = "as recorded in manifest.json by vp analyze"
    if not versions:
        versions = software_versions()
        version_source = "installed when this report was made (manifest.json records none)"
    n_groups = counts.get("groups")
    boot = int(s.get("bootstrap") or 0)
    keying = s.get("keying", "pos")
    threshold, alpha = s.get("threshold", 0.3), s.get("alpha", 0.05)
    power = inp.csv("power.csv")

    design = [
        "Participants rated candidate items (a query and a response) by how similar the response was to their own "
        "thoughts, on a six-point scale"
        + (f", in {n_groups} groups of items" if n_groups else "")
        + (f" ({counts['items']:,} items)" if counts.get("items") else "") + "."]
    two_stage = m.get("design") if isinstance(m.get("design"), dict) else None
    if two_stage:
        f, r = two_stage.get("funnel") or {}, two_stage.get("raters") or {}
        design.append(
            f"The study had two stages: {f.get('screened', '?')} items were screened on {r.get('screen_included', '?')} "
            f"raters (wave {two_stage.get('screen')}), and the {f.get('candidates', '?')} most promising were rated by "
            f"{r.get('confirm_included', '?')} fresh raters (wave {two_stage.get('confirm')}) who had not taken part in "
            "the screening; selection and confirmation used disjoint raters, so every figure reported for the keyed "
            "items comes from raters not used to select the candidates. The figures below are the confirmation "
            "wave's.")
    design += _quality_sentences(m, inp)
    if power is not None and len(power):
        design.append(f"Each item was rated by the {int(power['n'].min())}-{int(power['n'].max())} included raters "
                      "of its group.")
    design.append(
        "Values were scored with the PVQ-21 (a value's mean answer minus the person's mean over all 21 items; "
        "higher-order values as the item-weighted mean of their values) and traits with the BFI-10 "
        f"({m.get('score_source', 'scores as published')}).")

    validation = []
    ci = (f"{boot:,} bootstrap resamples of the raters within each group (percentile intervals, seed {s.get('seed', 0)})"
          if boot else "the Bonett-Wright Fisher-z interval (no bootstrap)")
    validation.append(
        "For every item and each of the 19 dimensions (10 values, 4 higher-order values, 5 traits), we computed "
        "Spearman's rank correlation between the item's ratings and the raters' scores (tied ranks averaged), with a "
        "two-sided p-value from the t approximation on n - 2 degrees of freedom (as scipy.stats.spearmanr), "
        f"Benjamini-Hochberg q-values within each family of dimensions, and {int(round(100 * (1 - alpha)))}% "
        f"confidence intervals from {ci}.")
    rule = (f"rho ≥ {threshold}" if keying == "pos"
            else f"|rho| ≥ {threshold} (negative correlations keyed as reversed)")
    tested = sum(v.get("pairs", 0) for v in keyed.values() if isinstance(v.get("pairs"), int))
    if two_stage:
        validation.append(f"An item was keyed to a dimension when, on the confirmation raters, {rule}, p < {alpha} and "
                          f"the Benjamini-Hochberg q-value within its family, over the {tested:,} candidate items' "
                          f"pairs only, was below {alpha}.")
    else:
        validation.append(f"An item was keyed to a dimension when {rule} and the uncorrected p < {alpha} (no correction "
                          f"for the {f'{tested:,} ' if tested else ''}pairs tested).")
    chance = _chance_for_methods(inp) if not two_stage else None
    if keyed:
        parts = []
        for fam, v in keyed.items():
            what = PAIR_NAMES.get(fam, f"{fam} pairs")
            text = f"{v.get('keyed_pairs', '?'):,} of {v.get('pairs', '?'):,} {what}" \
                if isinstance(v.get("pairs"), int) else f"{v.get('keyed_pairs', '?')} {what}"
            c = chance.loc[fam] if chance is not None and fam in chance.index else None
            if c is not None and pd.notna(c.get("expected_mean")):
                text += f" (chance alone: {_expected_text(c)}"
                if pd.notna(c.get("false_key_share")):
                    text += f", an estimated {_pct(c['false_key_share'])} of the keys"
                text += ")"
            parts.append(text)
        validation.append("This keyed " + ", ".join(parts)
                          + (f"; the item bank holds {bank.get('items')} items from {bank.get('queries')} queries."
                             if bank else "."))
    if chance is not None:
        validation.append(
            f"The keys expected by chance come from {_permutations(inp)} of the scores among the raters of each group, keyed by the same rule: mean number of keys and its "
            "95% range; the false-key share is expected over observed keys, at most 1.")
    if two_stage and two_stage.get("chance"):
        parts = [f"{FAMILY_NAMES.get(k, k)} {_fmt_mean(v.get('expected_mean'))} "
                 f"[{_fmt_mean(v.get('expected_low'))}-{_fmt_mean(v.get('expected_high'))}]"
                 for k, v in two_stage["chance"].items()]
        validation.append(f"Keyed the same way after permuting the confirmation raters' scores within each group "
                          f"({int(s.get('permutations') or 0):,} permutations), chance alone gives "
                          + ", ".join(parts) + " keys (mean [95% range]).")
    checks = []
    rep = counts.get("replication") or {}
    if inp.has("replication.csv"):
        splits = rep.get("splits") or s.get("splits")
        checks.append(f"split-half replication ({splits} random splits of each group's raters)" if splits
                      else "split-half replication")
    if inp.has("reliability.csv"):
        checks.append("Cronbach's alpha and McDonald's omega of each dimension's keyed items within a group")
    if inp.has("cfa_fit.csv"):
        checks.append("confirmatory factor analyses by maximum likelihood as lavaan's defaults fit them (models "
                      "specified with semopy; covariances with divisor N; variances unbounded, so improper "
                      "solutions show and are named; fit indices as lavaan reports them)")
    efa = inp.csv("efa_loadings.csv")
    if efa is not None and len(efa):
        method, rotation = _efa_method(inp)
        groups = efa["group_id"].nunique() if "group_id" in efa.columns else 0
        fitted = (efa.loc[efa["status"].astype(str) == "fitted", "group_id"].nunique()
                  if {"status", "group_id"} <= set(efa.columns) else groups)
        how = f"{method} extraction, {rotation} rotation, factors retained by Horn's parallel analysis"
        if fitted == groups:
            checks.append(f"exploratory factor analyses of each group's ratings ({how})")
        elif fitted:
            checks.append(f"exploratory factor analyses of the ratings of {fitted} of the {groups} groups ({how}; "
                          "the others could not be factored, see Factor analyses)")
        else:
            checks.append(f"an exploratory factor analysis, which none of the {groups} groups' ratings allowed (see "
                          "Factor analyses)")
    if inp.has("circumplex.csv"):
        checks.append("a structural-summary (cosine) fit of each item's correlations with the ten values around the "
                      "value circle")
    if checks:
        validation.append("We checked the keyed items with " + "; ".join(checks) + ".")

    llm = []
    cons = inp.csv("llm_consistency.csv")
    if inp.has("llm_profiles.csv"):
        llm.append("LLMs rated every bank item under six prompt variants (three wordings, each also with the options "
                   "in reverse order); an item's answer is the mean over the variants, and a dimension's score the "
                   "mean answer on its keyed items minus the mean over all items keyed in its family.")
        prof = inp.csv("llm_profiles.csv")
        if prof is not None and "ci_low" in prof.columns and prof["ci_low"].notna().any():
            llm.append("Score intervals are 95% percentile bootstrap intervals over the bank's items.")
    if cons is not None and len(cons):
        kinds = [str(cons["icc_type"].iloc[0])] if "icc_type" in cons.columns else []
        if "icc_k_type" in cons.columns:
            kinds.append(str(cons["icc_k_type"].iloc[0]))
        from analysis.llm import LOW_CONSISTENCY  # not via profile: its imports cost a tenth of a second

        llm.append("Agreement between the variants is the intraclass correlation "
                   + " and ".join(kinds) + " (two-way mixed, consistency, items as targets and variants as raters; "
                   "pingouin's intraclass_corr); "
                   + (f"profiles whose averaged answers have ICC(C,k) below {LOW_CONSISTENCY:.2f} are marked as "
                      "low-consistency." if "icc_k" in cons.columns else "a single variant's agreement only."))
    gsum = inp.csv("group_bias_summary.csv")
    if gsum is not None and "slope_std" in gsum.columns:
        tol = gsum["tolerance"].dropna().iloc[0] if "tolerance" in gsum.columns and gsum["tolerance"].notna().any() \
            else gb.DEFAULT_TOLERANCE
        llm.append("Persona and human group gaps were compared after dividing each side by the standard deviation "
                   "across values of its own average group profile; gaps within "
                   f"±{tol:g} of zero on that scale were not labelled as reversals.")

    python = versions.pop("python", None)
    tool = versions.pop("valueportrait", m.get("version", "?"))
    software = [f"Python {python}" if python else "Python (version not recorded)", f"valueportrait {tool}"]
    software += [f"{k} {v}" for k, v in versions.items()]
    soft = ["Software: " + ", ".join(software) + "."]
    if m.get("input_sha256"):
        soft.append(f"The input data's SHA-256 is {m['input_sha256']}.")
    paragraphs = [x for x in (design, validation, llm, soft) if x]
    return (para("Generated from manifest.json and the tables this analysis wrote: ready to paste into a paper "
                 "(check the wording for your study).")
            + "".join(f'<p class="methods">{esc(" ".join(x))}</p>' for x in paragraphs)
            + note(f"Software versions {version_source}.")
            + details("Settings as recorded", table(pd.DataFrame({"setting": [header_words(k) for k in s],
                                                                  "value": [str(v) for v in s.values()]}))))
