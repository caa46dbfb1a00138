"""Confirmation analysis of a two-stage study: `vp analyze --design two-stage --screen W1 --confirm W2`.

The screening wave (W1) rated every candidate item; the confirmation wave (W2, planned by
`vp plan-wave`) rated the promising ones on fresh raters. The analysis keys items on the
confirmation raters only:

* Raters are disjoint by construction: anyone in W2 who also took part in W1 is excluded
  from the confirmation (quality rule ``earlier_wave``), so no screening rater ever enters
  a confirmation test and the confirmation p-values are valid for the selected candidates.
* The candidates are W2's items. Every pair (item x dimension) of a candidate is tested on
  W2's raters; Benjamini-Hochberg q-values are taken within each family over the candidate
  pairs only (the screened-out pairs were never tested, so they do not dilute the family).
* A pair is keyed by the usual rule on its confirmation estimate (rho >= threshold and
  p < alpha) and its q-value below alpha.
* Items not carried into W2 are reported as screened out, with their screening estimate.

These functions are the core steps of :func:`analysis.pipeline.analyze` for the two-stage
design; the psychometric steps then run on the confirmation wave as for any study.
``correlations.csv`` and ``selection.csv`` get trailing columns ``wave`` (the study whose
raters gave the estimate), ``stage`` (``screen`` or ``confirm``), ``screen_rho`` and
``screen_n``; ``design.csv`` follows every item through the funnel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.correlations import add_fisher_z_ci, bh_rows, correlation_table
from analysis.dataset import Study, input_hash, load_study
from analysis.quality import quality_control, summary_lines
from analysis.selection import keyed_counts, keyed_mask, select
from valueportrait.errors import InputError

DESIGNS = ("one-stage", "two-stage")
ITEM = ["portrait_id", "option_id"]
PAIR = ["portrait_id", "option_id", "family", "dimension"]
#: ``design.csv``: one row per item, screened or not.
DESIGN_COLUMNS = ["portrait_id", "option_id", "status", "screen_group", "screen_n", "promise", "basis",
                  "expected_strong_pairs", "confirm_group", "confirm_n", "keyed_pairs", "keyed_dimensions"]
#: Status of an item in ``design.csv``.
STATUSES = ("confirmed", "not confirmed", "screened out", "not screened")


@dataclass
class Waves:
    """The two waves of a two-stage study, read in one snapshot."""

    screen: Study
    confirm: Study
    input_sha256: str


def check_arguments(study_id: str | None, screen: str | None, confirm: str | None) -> None:
    """One-line errors for a two-stage call that cannot work."""
    if study_id is not None:
        raise InputError("--study: not used with --design two-stage (name the waves with --screen and --confirm)")
    if not screen or not confirm:
        raise InputError("--design two-stage: needs --screen STUDY_ID and --confirm STUDY_ID")
    if screen == confirm:
        raise InputError(f"--confirm: {confirm!r} is the screening wave too: the confirmation needs its own raters")


def load_waves(db, screen: str, confirm: str) -> Waves:
    """Both waves from an open database (call inside one read transaction)."""
    screen_id, confirm_id = db.resolve_study(screen), db.resolve_study(confirm)
    digest = hashlib.sha256()
    for sid in (screen_id, confirm_id):
        digest.update(input_hash(db, sid).encode())
    return Waves(load_study(db, screen_id), load_study(db, confirm_id), digest.hexdigest())


# -- core steps (each takes the pipeline's Context) ----------------------------------------------
def step_quality(ctx) -> None:
    """Quality control of each wave; W2 raters who took part in W1 are excluded (``earlier_wave``)."""
    w = ctx.waves
    screen_q = quality_control(w.screen, ctx.quality_options)
    confirm_q = quality_control(w.confirm, ctx.quality_options)
    earlier = set(w.screen.participations["participant_id"])
    table = confirm_q.table
    again = table["participant_id"].isin(earlier).to_numpy()
    table.loc[again, "reasons"] = [";".join(x for x in (r, "earlier_wave") if x) for r in table.loc[again, "reasons"]]
    table.loc[again, "included"] = False
    s = confirm_q.summary
    s["rules"]["earlier_wave"] = {
        "on": True, "applicable": True, "flagged": int(again.sum()),
        "only_reason": int((table.loc[again, "reasons"] == "earlier_wave").sum()),
        "flagged_ids": [f"{p}/{g}" for p, g in table.loc[again, ["participant_id", "group_id"]].itertuples(index=False)],
        "note": f"took part in the screening wave {w.screen.study_id}: not a fresh rater",
    }
    s["included_participations"] = int(table["included"].sum())
    s["excluded_participations"] = int((~table["included"]).sum())
    ctx.quality, ctx.screen_quality = confirm_q, screen_q
    both = pd.concat([screen_q.table.assign(wave=w.screen.study_id), table.assign(wave=w.confirm.study_id)],
                     ignore_index=True)
    ctx.write_csv("quality.csv", both)
    ctx.counts["quality"] = s
    for label, summary in ((f"screening wave {w.screen.study_id}", screen_q.summary),
                           (f"confirmation wave {w.confirm.study_id}", s)):
        ctx.log(f"{label}:")
        for line in summary_lines(summary):
            ctx.log(f"  {line}")


def step_correlations(ctx) -> None:
    """Screening estimates for every W1 item, confirmation estimates (BH over candidates) for W2's."""
    w, s = ctx.waves, ctx.settings
    level = 1 - s["alpha"]
    screen = correlation_table(w.screen, ctx.screen_quality.included, level=level)
    confirm = correlation_table(w.confirm, ctx.included, bootstrap=s["bootstrap"], seed=s["seed"], level=level,
                                progress=ctx.progress)
    ctx.screen_correlations = screen
    table = combine(screen, confirm, w.screen.study_id, w.confirm.study_id)
    try:
        table = add_fisher_z_ci(table, s["alpha"])
    except ImportError:  # pragma: no cover - the contracted columns are complete without it
        pass
    extra = ["wave", "stage", "screen_rho", "screen_n"]
    table = table[[c for c in table.columns if c not in extra] + extra]
    ctx.correlations = table
    ctx.write_csv("correlations.csv", table)
    ctx.counts["pairs"] = int(table["rho"].notna().sum())
    ctx.counts["pairs_without_rho"] = int(table["rho"].isna().sum())
    ctx.counts["candidate_pairs"] = {fam: int(n) for fam, n in
                                     table[table["stage"] == "confirm"].groupby("family", sort=False)["rho"].count().items()}


def combine(screen: pd.DataFrame, confirm: pd.DataFrame, screen_id: str, confirm_id: str) -> pd.DataFrame:
    """One row per item x dimension: the confirmation estimate for candidates, the screening one otherwise.

    ``confirm`` carries its own BH q-values (within each family over its rows: the candidate
    pairs); screened-out rows get no q-value (they were not tested for keying: NaN).
    Trailing columns ``wave``, ``stage``, ``screen_rho``, ``screen_n``.
    """
    cand = pd.MultiIndex.from_frame(confirm[ITEM].drop_duplicates())
    out_rows = screen[~pd.MultiIndex.from_frame(screen[ITEM]).isin(cand)].assign(
        q_value=np.nan, wave=screen_id, stage="screen")
    screened = screen.set_index(PAIR)[["rho", "n"]].rename(columns={"rho": "screen_rho", "n": "screen_n"})
    in_rows = confirm.assign(wave=confirm_id, stage="confirm").join(screened, on=PAIR)
    out_rows = out_rows.assign(screen_rho=out_rows["rho"], screen_n=out_rows["n"])
    table = pd.concat([in_rows, out_rows], ignore_index=True)
    table["screen_n"] = table["screen_n"].astype("Int64")
    return table


def step_selection(ctx) -> None:
    """The usual rule on the confirmation estimates, plus BH q < alpha over the candidate pairs."""
    s = ctx.settings
    corr = ctx.correlations
    confirm = corr[corr["stage"] == "confirm"]
    chosen = select(confirm, threshold=s["threshold"], alpha=s["alpha"], keying=s["keying"])
    q = confirm.set_index(PAIR)["q_value"]
    keep = q.reindex(pd.MultiIndex.from_frame(chosen[PAIR])).to_numpy() < s["alpha"]
    extra = confirm.set_index(PAIR)[["wave", "screen_rho"]]
    chosen = chosen[keep].join(extra, on=PAIR).reset_index(drop=True)
    ctx.selection = chosen
    ctx.write_csv("selection.csv", chosen)
    ctx.counts["keyed"] = keyed_counts(chosen, confirm)
    ctx.log("selection (confirmation raters, BH over candidate pairs): " + ", ".join(
        f"{fam} {c['keyed_pairs']}/{c['pairs']} pairs keyed ({c['keyed_items']} items)" for fam, c in ctx.counts["keyed"].items()))
    design = design_table(ctx)
    ctx.write_csv("design.csv", design)
    ctx.design = design_summary(ctx, design)
    if s.get("permutations", 200):
        ctx.design["chance"] = chance_keys(ctx.study, ctx.included, chosen, permutations=s.get("permutations", 200),
                                           threshold=s["threshold"], alpha=s["alpha"], keying=s["keying"], seed=s["seed"])
        ctx.log("two-stage keys against chance: " + ", ".join(
            f"{fam} {c['observed']} keyed, {c['expected_mean']:.1f} [{c['expected_low']:.0f}-{c['expected_high']:.0f}] "
            "by chance" for fam, c in ctx.design["chance"].items()))
    f = ctx.design["funnel"]
    ctx.log(f"two-stage funnel: {f['screened']} items screened, {f['candidates']} candidates, {f['confirmed']} confirmed "
            f"({f['screened_out']} screened out)")


def design_table(ctx) -> pd.DataFrame:
    """``design.csv``: every item of either wave, its promise on the screening raters and its fate."""
    from analysis.design import expected_strong_pairs, promise_scores

    w, s = ctx.waves, ctx.settings
    promise = promise_scores(w.screen, ctx.screen_quality.included, keying=s["keying"], seed=s["seed"])
    expected = expected_strong_pairs(ctx.screen_correlations, s["threshold"], s["keying"])
    screened = promise.merge(expected, on=ITEM, how="left").rename(columns={"group_id": "screen_group", "n": "screen_n"})
    corr = ctx.correlations
    confirm = corr[corr["stage"] == "confirm"]
    cand = (confirm.groupby(ITEM, sort=False).agg(confirm_group=("group_id", "first"), confirm_n=("n", "max"))
            .reset_index())
    keyed = (ctx.selection.groupby(ITEM, sort=False)
             .agg(keyed_pairs=("dimension", "size"), keyed_dimensions=("dimension", ";".join)).reset_index())
    table = screened.merge(cand, on=ITEM, how="outer").merge(keyed, on=ITEM, how="left")
    table["keyed_pairs"] = table["keyed_pairs"].fillna(0).astype(int)
    table["keyed_dimensions"] = table["keyed_dimensions"].fillna("")
    is_cand, was_screened = table["confirm_group"].notna(), table["screen_group"].notna()
    table["status"] = np.select([~is_cand, table["keyed_pairs"] > 0, was_screened],
                                ["screened out", "confirmed", "not confirmed"], "not screened")
    for col in ("screen_n", "confirm_n"):
        table[col] = table[col].astype("Int64")
    order = pd.Categorical(table["status"], categories=STATUSES, ordered=True)
    table = table.assign(_o=order).sort_values(["_o", "promise"], ascending=[True, False], kind="stable").drop(columns="_o")
    return table[DESIGN_COLUMNS].reset_index(drop=True)


def design_summary(ctx, design: pd.DataFrame) -> dict:
    """The manifest's ``design`` entry: the waves, their raters, the funnel and the method."""
    w, s = ctx.waves, ctx.settings
    screened = int(design["screen_group"].notna().sum())
    cand = design["confirm_group"].notna()
    status = design["status"].value_counts()
    screen_inc, confirm_inc = ctx.screen_quality.included, ctx.included
    overlap = int(ctx.quality.summary["rules"]["earlier_wave"]["flagged"])
    corr = ctx.correlations
    return {
        "design": "two-stage",
        "screen": w.screen.study_id,
        "confirm": w.confirm.study_id,
        "raters": {"screen_included": int(len(screen_inc)), "screen_participations": int(len(w.screen.participations)),
                   "confirm_included": int(len(confirm_inc)), "confirm_participations": int(len(w.confirm.participations)),
                   "confirm_excluded_earlier_wave": overlap,
                   "shared_included": int(len(set(screen_inc["participant_id"]) & set(confirm_inc["participant_id"])))},
        "ratings": {"screen": int(len(w.screen.ratings)), "confirm": int(len(w.confirm.ratings)),
                    "total": int(len(w.screen.ratings) + len(w.confirm.ratings))},
        "funnel": {"screened": screened, "candidates": int(cand.sum()), "confirmed": int(status.get("confirmed", 0)),
                   "not_confirmed": int(status.get("not confirmed", 0)), "screened_out": int(status.get("screened out", 0)),
                   "not_screened": int(status.get("not screened", 0))},
        "pairs": {fam: {"screened": int(sub["screen_rho"].notna().sum()),
                        "candidates": int((sub["stage"] == "confirm").sum()),
                        "keyed": int((ctx.selection["family"] == fam).sum())}
                  for fam, sub in corr.groupby("family", sort=False)},
        "method": ("selection on the screening raters (promise), keying on the confirmation raters only, who did not "
                   "take part in the screening; rho >= threshold, p < alpha and Benjamini-Hochberg q < alpha within "
                   "each family over the candidate items' pairs"),
        "threshold": s["threshold"], "alpha": s["alpha"],
    }


def chance_keys(study, included: pd.DataFrame, selection: pd.DataFrame, *, permutations: int = 200,
                threshold: float = 0.3, alpha: float = 0.05, keying: str = "pos", seed: int = 0,
                level: float = 0.95) -> dict:
    """What the two-stage keying rule keys by chance among the candidates.

    The confirmation raters' scores are permuted within each group (the chance baseline's
    machinery, :mod:`analysis.chance`): every item-score relation is broken, everything else
    kept. Each permutation is keyed exactly as the data were (rho >= threshold, p < alpha,
    BH q < alpha within each family over all candidate pairs), all permutations at once.

    Returns
    -------
    ``{family: {observed, expected_mean, expected_low, expected_high}}``: keyed pairs in the
    data and by chance (mean and the central `level` range over permutations).
    """
    from analysis.chance import permutation_rows, permuted_correlations, study_groups
    from analysis.correlations import spearman_p

    families = study.scores.columns.get_level_values("family").to_numpy()
    rho_parts, n_parts = [], []
    for k, (gid, ratings, scores) in enumerate(study_groups(study, included)):
        x, y = ratings.to_numpy(float), scores.to_numpy(float)
        keep = ~np.isnan(y).all(axis=1)
        x, y = x[keep], y[keep]
        if len(x) < 3 or x.shape[1] == 0:
            continue
        orders = permutation_rows(len(x), permutations, np.random.default_rng([seed, k, 2]))
        batches = list(permuted_correlations(x, y, orders))
        rho_parts.append(np.concatenate([r for r, _ in batches], axis=0))
        n_parts.append(np.concatenate([np.broadcast_to(n, r.shape) for r, n in batches], axis=0))
    out = {}
    if not rho_parts:
        return out
    rho, n = np.concatenate(rho_parts, axis=1), np.concatenate(n_parts, axis=1)   # (perms, items, dims)
    p = spearman_p(rho, n)
    tail = (1 - level) / 2
    for family in dict.fromkeys(families):
        cols = families == family
        p_f = p[:, :, cols].reshape(permutations, -1)
        q_f = bh_rows(p_f)
        keyed = keyed_mask(rho[:, :, cols].reshape(permutations, -1), p_f, threshold=threshold, alpha=alpha,
                           keying=keying) & (q_f < alpha)
        counts = keyed.sum(axis=1)
        low, high = np.quantile(counts, [tail, 1 - tail])
        out[family] = {"observed": int((selection["family"] == family).sum()), "expected_mean": float(counts.mean()),
                       "expected_low": float(low), "expected_high": float(high)}
    return out


#: The two-stage design's core steps: same names as the one-stage ones, so the manifest lists them alike.
def core_steps(item_bank_step) -> list:
    return [("quality", step_quality, True), ("correlations", step_correlations, True),
            ("selection", step_selection, True), ("item_bank", item_bank_step, True)]
