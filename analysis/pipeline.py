"""Analyse a study: quality control, item-value correlations, selection, item bank and psychometric checks.

Reads one study from the database and writes, into the output folder, ``quality.csv``,
``correlations.csv``, ``selection.csv``, ``item_bank.json``, the psychometric tables
(``reliability.csv``, ``cfa_fit.csv``, ``efa_loadings.csv``, ``power.csv``,
``replication.csv`` with ``replication_shrinkage.csv``, ``circumplex.csv``), the chance
baseline (``chance.csv``, ``chance_distributions.csv``, ``chance_circumplex.csv``) and
``manifest.json`` (settings, tool version, a hash of the input data, counts), each written
atomically.

The analysis is a list of steps (:data:`STEPS`); each reads what earlier steps left in the
:class:`Context` and writes its own file. Adding a table is adding a step.

``--design two-stage --screen W1 --confirm W2`` replaces the core steps by those of
:mod:`analysis.two_stage` (keying on the confirmation wave's raters among the screening
wave's candidates; ``design.csv``); the psychometric steps then run on the confirmation wave.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analysis.correlations import add_bootstrap_ci, add_fisher_z_ci, correlation_table
from analysis.dataset import Study, input_hash, load_study, participants_without_ratings
from analysis.item_bank import build_item_bank
from analysis.quality import QualityOptions, QualityResult, add_quality_arguments, options_from_args, quality_control, summary_lines
from valueportrait.atomic import write_csv_atomic, write_json_atomic
from analysis.selection import KEYINGS, keyed_counts, select
from valueportrait import DEFAULT_DB, DEFAULT_PROCESSED, __version__, software_versions
from valueportrait import options as opt
from valueportrait.errors import InputError
from valueportrait.outdir import staged_output
from valueportrait.storage import open_db
from valueportrait.workers import process_pool


@dataclass
class Context:
    """What the steps share: the study, the settings, and each step's results."""

    study: Study
    out_dir: Path
    settings: dict
    quality_options: QualityOptions
    progress: bool = False
    #: The bootstrap intervals are computed after the required steps, while worker processes
    #: run the psychometric steps (which do not read them); correlations.csv is written then.
    defer_bootstrap: bool = False
    quality: QualityResult | None = None
    correlations: pd.DataFrame | None = None
    selection: pd.DataFrame | None = None
    bank: list | None = None
    files: dict[str, str] = field(default_factory=dict)    # output name -> file name
    counts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    log: Callable[[str], None] = print
    # the two-stage design (analysis/two_stage.py): both waves, the screening wave's results, the funnel
    waves: object | None = None
    screen_quality: QualityResult | None = None
    screen_correlations: pd.DataFrame | None = None
    design: dict | None = None

    def write_csv(self, name: str, frame: pd.DataFrame) -> None:
        write_csv_atomic(frame, self.out_dir / name, index=False)
        self.files[name.rsplit(".", 1)[0]] = name

    @property
    def included(self) -> pd.DataFrame:
        return self.quality.included


# -- core steps --------------------------------------------------------------------------------
def step_quality(ctx: Context) -> None:
    ctx.quality = quality_control(ctx.study, ctx.quality_options)
    ctx.write_csv("quality.csv", ctx.quality.table)
    ctx.counts["quality"] = ctx.quality.summary
    for line in summary_lines(ctx.quality.summary):
        ctx.log(line)


def step_correlations(ctx: Context) -> None:
    s = ctx.settings
    table = correlation_table(ctx.study, ctx.included, bootstrap=0 if ctx.defer_bootstrap else s["bootstrap"],
                              seed=s["seed"], level=1 - s["alpha"], progress=ctx.progress)
    try:
        table = add_fisher_z_ci(table, s["alpha"])
    except ImportError:  # analysis.intervals absent: the contracted columns are complete without it
        pass
    ctx.correlations = table
    if not ctx.defer_bootstrap:
        ctx.write_csv("correlations.csv", table)
    ctx.counts["pairs"] = int(table["rho"].notna().sum())
    ctx.counts["pairs_without_rho"] = int(table["rho"].isna().sum())


def bootstrap_correlations(ctx: Context) -> None:
    """The deferred part of step_correlations: the bootstrap intervals, then correlations.csv."""
    s = ctx.settings
    ctx.correlations = add_bootstrap_ci(ctx.correlations, ctx.study, ctx.included, s["bootstrap"], seed=s["seed"],
                                        level=1 - s["alpha"], progress=ctx.progress)
    ctx.write_csv("correlations.csv", ctx.correlations)


def step_selection(ctx: Context) -> None:
    s = ctx.settings
    ctx.selection = select(ctx.correlations, threshold=s["threshold"], alpha=s["alpha"], keying=s["keying"])
    ctx.write_csv("selection.csv", ctx.selection)
    ctx.counts["keyed"] = keyed_counts(ctx.selection, ctx.correlations)
    ctx.log("selection: " + ", ".join(f"{fam} {c['keyed_pairs']}/{c['pairs']} pairs keyed ({c['keyed_items']} items)"
                                      for fam, c in ctx.counts["keyed"].items()))


def step_item_bank(ctx: Context) -> None:
    ctx.bank = build_item_bank(ctx.correlations, ctx.selection, ctx.study.items, ctx.settings["keying"])
    write_json_atomic(ctx.bank, ctx.out_dir / "item_bank.json")
    ctx.files["item_bank"] = "item_bank.json"
    ctx.counts["item_bank"] = {"queries": len(ctx.bank), "items": sum(len(q["outputs"]) for q in ctx.bank)}
    ctx.log(f"item bank: {ctx.counts['item_bank']['items']} items from {len(ctx.bank)} queries")


# -- psychometric steps (analysis/reliability.py, cfa.py, efa.py, power.py, ...) ---------------
def _included_ratings(ctx: Context) -> pd.DataFrame:
    keys = ctx.included.set_index(["participant_id", "group_id"]).index
    r = ctx.study.ratings
    return r[pd.MultiIndex.from_frame(r[["participant_id", "group_id"]]).isin(keys)]


def _included_answers(ctx: Context) -> pd.DataFrame:
    raw = ctx.study.raw_answers
    return raw[raw.index.isin(set(ctx.included["participant_id"]))]


def step_reliability(ctx: Context) -> None:
    from analysis.reliability import reliability_tables

    answers = _included_answers(ctx)
    table, items = reliability_tables(answers if len(answers) else None, _included_ratings(ctx), ctx.selection)
    ctx.write_csv("reliability.csv", table)
    ctx.write_csv("reliability_items.csv", items)
    ctx.counts["reliability_rows"] = int(len(table))
    ctx.counts["reliability_warnings"] = int(table["warning"].fillna(False).astype(bool).sum())


def step_power(ctx: Context) -> None:
    from analysis.power import power_table

    sizes = ctx.included.groupby("group_id", sort=False).size()
    sizes = {g: int(sizes.get(g, 0)) for g in ctx.study.groups["group_id"]}
    table = power_table(sizes, rho=ctx.settings["threshold"], alpha=ctx.settings["alpha"])
    ctx.write_csv("power.csv", table)


def step_efa(ctx: Context) -> None:
    from analysis.efa import efa, efa_long, efa_skipped, screen

    frames = []
    for k, gid in enumerate(ctx.study.groups["group_id"]):
        people = ctx.included.loc[ctx.included["group_id"] == gid, "participant_id"].tolist()
        matrix = ctx.study.rating_matrix(gid, people)
        matrix.columns = [f"{p}/{o}" for p, o in matrix.columns]
        if matrix.shape[1] < 3 or len(matrix.dropna()) < 5:
            continue
        # Not factored where a factor model means nothing: the reason goes in the table.
        screened = screen(matrix, min_kmo=ctx.settings.get("efa_min_kmo", 0.5))
        if screened["reason"]:
            frames.append(efa_skipped(screened, group_id=gid))
            continue
        frames.append(efa_long(efa(matrix, seed=ctx.settings["seed"] + k), group_id=gid))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    ctx.write_csv("efa_loadings.csv", table)
    ctx.counts["efa_groups"] = {"fitted": int(table.loc[table.get("status", pd.Series(dtype=str)) == "fitted", "group_id"].nunique())
                                if len(table) else 0,
                                "not_factored": int((table.get("status", pd.Series(dtype=str)) == "skipped").sum())}


def step_cfa(ctx: Context) -> None:
    from analysis.cfa import cfa_row, one_factor_syntax, pvq_higher_syntax, pvq_value_syntax

    rows = []
    answers = _included_answers(ctx)
    if len(answers):
        rows.append(cfa_row("pvq_values", answers, pvq_value_syntax(), scope="instrument", family="pvq", dimension=""))
        rows.append(cfa_row("pvq_higher", answers, pvq_higher_syntax(), scope="instrument", family="higher_pvq", dimension=""))
    sel = ctx.selection.merge(ctx.study.items[["portrait_id", "option_id", "group_id"]], on=["portrait_id", "option_id"])
    matrices = {}  # one ratings matrix per group, not one per scale
    for (gid, fam, dim), pairs in sel.groupby(["group_id", "family", "dimension"], sort=False):
        if len(pairs) < 3:
            continue
        if gid not in matrices:
            people = ctx.included.loc[ctx.included["group_id"] == gid, "participant_id"].tolist()
            matrices[gid] = ctx.study.rating_matrix(gid, people)
        matrix = matrices[gid]
        names = [f"i{p}_{o}" for p, o in zip(pairs["portrait_id"], pairs["option_id"])]
        data = pd.DataFrame({n: matrix[(p, o)].to_numpy() for n, p, o in zip(names, pairs["portrait_id"], pairs["option_id"])})
        if "reversed" in pairs:
            for n, rev in zip(names, pairs["reversed"]):
                if rev:
                    data[n] = 7 - data[n]
        rows.append(cfa_row("one_factor_keyed", data, one_factor_syntax(dim, names), scope=gid, family=fam, dimension=dim))
    table = pd.DataFrame(rows)
    ctx.write_csv("cfa_fit.csv", table)
    ctx.counts["cfa_models"] = len(rows)
    ctx.counts["cfa_warnings"] = int(table["warning"].astype(bool).sum()) if len(table) else 0


def step_replication(ctx: Context) -> None:
    from analysis.replication import split_half_replication

    import instruments as inst

    scores = ctx.study.scores.copy()
    scores.columns = scores.columns.get_level_values("dimension")
    s = ctx.settings
    result = split_half_replication(_included_ratings(ctx), scores, dict(inst.FAMILY_OF), splits=s["splits"],
                                    threshold=s["threshold"], alpha=s["alpha"], seed=s["seed"], keying=s["keying"])
    ctx.write_csv("replication.csv", result["pairs"])
    ctx.write_csv("replication_shrinkage.csv", result["shrinkage"])
    ctx.counts["replication"] = {
        "splits": s["splits"],
        "shrinkage": {f"{r.family}/{r.dimension}": None if pd.isna(r.shrinkage) else round(float(r.shrinkage), 4)
                      for r in result["shrinkage"].itertuples()},
    }


def step_circumplex(ctx: Context) -> None:
    from analysis.circumplex import circumplex_table

    ctx.write_csv("circumplex.csv", circumplex_table(ctx.correlations))


def step_chance(ctx: Context) -> None:
    from analysis.chance import chance_baseline, study_groups

    s = ctx.settings
    result = chance_baseline(study_groups(ctx.study, ctx.included), permutations=s["permutations"],
                             threshold=s["threshold"], alpha=s["alpha"], keying=s["keying"], seed=s["seed"])
    ctx.write_csv("chance.csv", result.table)
    ctx.write_csv("chance_distributions.csv", result.distributions)
    if len(result.circumplex):
        ctx.write_csv("chance_circumplex.csv", result.circumplex)
        ctx.counts["chance_circumplex"] = result.circumplex_counts()
    ctx.counts["chance"] = result.counts()
    for line in result.summary_lines() + [f"chance: {n}" for n in result.notes]:
        ctx.log(line)


def step_intended(ctx: Context) -> None:
    from analysis.intended import intended_value_check, intended_values, summary

    intended = intended_values(ctx.study.items)
    if intended.empty:  # the release's items, say: nothing to check
        ctx.counts["intended_values"] = {"items": 0}
        return
    check = intended_value_check(intended, ctx.correlations, ctx.selection)
    ctx.write_csv("intended_values.csv", check)
    ctx.counts["intended_values"] = summary(check)


Step = tuple[str, Callable[[Context], None], bool]  # name, function, required

#: The analysis, in order. Required steps stop the analysis on failure; the others record
#: the failure in the manifest and go on (an optional step whose module is missing is
#: recorded as "unavailable").
STEPS: list[Step] = [
    ("quality", step_quality, True),
    ("correlations", step_correlations, True),
    ("selection", step_selection, True),
    ("item_bank", step_item_bank, True),
    ("reliability", step_reliability, False),
    ("power", step_power, False),
    ("efa", step_efa, False),
    ("cfa", step_cfa, False),
    ("replication", step_replication, False),
    ("circumplex", step_circumplex, False),
    ("chance", step_chance, False),
    ("intended", step_intended, False),
]
OPTIONAL_STEPS = [name for name, _, required in STEPS if not required]
#: The files each optional step may write: a run that does not write one (skipped, failed,
#: nothing to compute) removes an earlier run's copy, so every table in the folder, and so
#: in the report, comes from the run its manifest describes.
STEP_FILES = {
    "reliability": ("reliability.csv", "reliability_items.csv"), "power": ("power.csv",), "efa": ("efa_loadings.csv",),
    "cfa": ("cfa_fit.csv",), "replication": ("replication.csv", "replication_shrinkage.csv"),
    "circumplex": ("circumplex.csv",), "intended": ("intended_values.csv",),
    "chance": ("chance.csv", "chance_distributions.csv", "chance_circumplex.csv"),
}
STEP_FUNCTIONS = {name: func for name, func, _ in STEPS}
#: Rough relative cost on the release, to start the longest optional steps first.
STEP_COST = {"cfa": 5, "reliability": 4, "replication": 4, "efa": 3, "chance": 1, "power": 0, "circumplex": 0,
             "intended": 0}


# The output folder is this run's alone until it ends, and its tables change only at the
# end, all at once, with the manifest that describes them: the steps write into a fresh
# staging folder (what `out_dir` is inside), and the manifest.json written there is
# completed with every table's sha256 and rows, then swapped in (valueportrait.outdir).
@staged_output("vp analyze", also_remove=lambda: [f for files in STEP_FILES.values() for f in files])
def analyze(db_path, out_dir, *, threshold: float = 0.3, alpha: float = 0.05, keying: str = "pos",
            bootstrap: int = 0, seed: int = 0, study_id: str | None = None, splits: int = 100, efa_min_kmo: float = 0.5,
            permutations: int = 200,
            quality: QualityOptions | None = None, skip: tuple[str, ...] = (), jobs: int | None = None,
            progress: bool = False, design: str = "one-stage", screen: str | None = None, confirm: str | None = None,
            log: Callable[[str], None] | None = None) -> dict:
    """Run the whole analysis of one study and write its files into `out_dir`.

    Parameters
    ----------
    db_path : path of the study database.
    out_dir : folder for the outputs (created if needed).
    threshold, alpha, keying : the selection rule (rho >= threshold and p < alpha; ``abs``
        also keys strong negative correlations, reversed).
    bootstrap, seed : resamples for the percentile intervals (0: none) and the seed of every random step.
    splits : random split-halves of each group's raters for the replication step.
    permutations : permutations of the scores within each group for the chance baseline
        (``chance.csv``); 0 leaves the chance step out.
    study_id : the study (default: the only one in the database).
    quality : the quality-control rules and thresholds (default: all rules, default thresholds).
    skip : names of optional steps to leave out (see :data:`OPTIONAL_STEPS`).
    jobs : worker processes for the optional (psychometric) steps; default min(2, CPUs);
        1 runs everything in this process.
    design, screen, confirm : ``two-stage``: key items on the confirmation wave `confirm`'s
        raters only, among the candidates the screening wave `screen` selected
        (:mod:`analysis.two_stage`); the psychometric steps then run on the confirmation wave.
    efa_min_kmo : a group whose KMO is below this is not factored (the reason goes in efa_loadings.csv).

    Returns
    -------
    dict, the manifest (also written to ``manifest.json``).
    """
    if keying not in KEYINGS:
        raise InputError(f"--keying: {keying!r} is not one of {', '.join(KEYINGS)}")
    if splits < 1:
        raise InputError(f"--splits: {splits} must be at least 1")
    if bootstrap < 0:
        raise InputError(f"--bootstrap: {bootstrap} is negative")
    if permutations < 0:
        raise InputError(f"--permutations: {permutations} is negative")
    if not 0 < alpha < 1:
        raise InputError(f"--alpha: {alpha} is outside (0, 1)")
    if not 0 <= threshold < 1:
        raise InputError(f"--threshold: {threshold} is outside [0, 1)")
    if not 0 <= efa_min_kmo <= 1:
        raise InputError(f"--efa-min-kmo: {efa_min_kmo} is outside [0, 1]")
    from analysis import two_stage

    if design not in two_stage.DESIGNS:
        raise InputError(f"--design: {design!r} is not one of {', '.join(two_stage.DESIGNS)}")
    if design == "two-stage":
        two_stage.check_arguments(study_id, screen, confirm)
    elif screen or confirm:
        raise InputError("--screen/--confirm: only with --design two-stage")
    unknown = set(skip) - set(OPTIONAL_STEPS)
    if unknown:
        raise InputError(f"--skip: {', '.join(sorted(unknown))} not among {', '.join(OPTIONAL_STEPS)}")
    db_path = Path(db_path)
    if not db_path.exists():
        raise InputError(f"{db_path}: no such database (run `vp import-release` or collect data first)")
    log = log or (lambda line: print(line, file=sys.stderr))
    start = time.perf_counter()
    with open_db(db_path, readonly=True) as db:
        # One read transaction: the study and its hash come from one snapshot even while
        # the app keeps writing (WAL readers see the database as of their first read).
        db.conn.execute("BEGIN")
        try:
            if design == "two-stage":
                waves = two_stage.load_waves(db, screen, confirm)
                sid, study, data_hash = waves.confirm.study_id, waves.confirm, waves.input_sha256
            else:
                sid = db.resolve_study(study_id)
                study = load_study(db, sid)
                data_hash = input_hash(db, sid)
        finally:
            db.conn.execute("COMMIT")
    settings = {"study_id": sid, "threshold": threshold, "alpha": alpha, "keying": keying, "bootstrap": bootstrap,
                "seed": seed, "splits": splits, "efa_min_kmo": efa_min_kmo, "permutations": permutations,
                "ci_level": 1 - alpha, "ci_method": "bootstrap percentile" if bootstrap else None,
                "design": design, **({"screen": waves.screen.study_id, "confirm": sid} if design == "two-stage" else {})}
    ctx = Context(study, Path(out_dir), settings, quality or QualityOptions(), progress=progress, log=log)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    if permutations == 0 and "chance" not in skip:
        skip = (*skip, "chance")
    steps = {name: {"status": "skipped"} for name, _, _ in STEPS if name in skip}
    optional = [name for name, _, required in STEPS if not required and name not in skip]
    if jobs is None:
        jobs = min(2, os.cpu_count() or 1)
    jobs = max(1, min(jobs, len(optional)))
    parallel = jobs > 1 and "fork" in mp.get_all_start_methods()
    # With worker processes the parent would only wait for them: it bootstraps meanwhile
    # (one-stage design; the two-stage design bootstraps its confirmation wave in its own step).
    ctx.defer_bootstrap = parallel and bootstrap > 0 and design != "two-stage"
    core = [step for step in STEPS if step[2]]
    if design == "two-stage":
        ctx.waves = waves
        core = two_stage.core_steps(step_item_bank)
    for name, func, required in core:
        steps[name] = _run_step(ctx, name, func, required)
    if parallel:
        meanwhile = (lambda: steps["correlations"].update(_deferred_bootstrap(ctx))) if ctx.defer_bootstrap else None
        steps.update(_run_parallel(ctx, optional, jobs, meanwhile=meanwhile))
    else:
        for name in optional:
            steps[name] = _run_step(ctx, name, STEP_FUNCTIONS[name], False)
    steps = {name: steps[name] for name, _, _ in STEPS}
    settings["jobs"] = jobs
    included = ctx.included
    multi = study.participations.groupby("participant_id")["group_id"].agg(list)
    multi = multi[multi.str.len() > 1]
    notes = list(study.notes)
    for pid, groups in multi.items():
        counted = included.loc[included["participant_id"] == pid, "group_id"].tolist()
        notes.append(f"participant {pid} took part in groups {', '.join(groups)} (one score record); "
                     f"counted in: {', '.join(counted) or 'none'}")
    for rule, entry in ctx.quality.summary["rules"].items():
        if entry["on"] and not entry["applicable"]:
            notes.append(f"{rule} rule {entry['note']}")
    unrated = participants_without_ratings(study)
    if unrated:
        notes.append(f"{len(unrated)} participants have scores but no ratings (not analysed)")
    manifest = {
        "tool": "valueportrait",
        "version": __version__,
        "versions": software_versions(),
        "command": "vp analyze",
        "database": str(db_path),
        "study_id": sid,
        "study_source": study.source,
        **({"design": ctx.design} if ctx.design else {}),
        "input_sha256": data_hash,
        "input_hash_of": "canonical JSON dump of the study's rows used by the analysis (see analysis.dataset.input_hash)"
                         + ("; for two-stage, sha256 of the two waves' hashes, screening wave first" if ctx.design else ""),
        "settings": settings,
        "quality_options": ctx.quality.summary["options"],
        "score_source": study.score_source,
        "counts": {
            "participants": int(study.participations["participant_id"].nunique()),
            "participations": int(len(study.participations)),
            "participants_without_ratings": len(unrated),
            "included_participants": int(included["participant_id"].nunique()),
            "included_participations": int(len(included)),
            "excluded_participations": int(ctx.quality.summary["excluded_participations"]),
            "excluded_per_rule": {rule: e.get("flagged") for rule, e in ctx.quality.summary["rules"].items()},
            "groups": int(len(study.groups)),
            "items": int(len(study.items)),
            **{k: v for k, v in ctx.counts.items() if k != "quality"},
        },
        "quality": ctx.quality.summary,
        "steps": steps,
        "files": dict(sorted(ctx.files.items())),
        "notes": notes,
        "seconds": round(time.perf_counter() - start, 3),
    }
    write_json_atomic(_jsonable(manifest), ctx.out_dir / "manifest.json")
    for note in notes:
        log(f"note: {note}")
    return manifest


def _run_step(ctx: Context, name: str, func, required: bool) -> dict:
    """Run one step; a failed optional step is recorded, a failed required one stops the analysis."""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with _one_blas_thread():
            func(ctx)
        # CPU time beside wall time: on a busy machine wall time says more about the others.
        return {"status": "ok", "seconds": round(time.perf_counter() - t0, 3),
                "cpu_seconds": round(time.process_time() - c0, 3), "peak_rss_mb": _peak_rss_mb()}
    except ImportError as exc:
        if required:
            raise
        return {"status": "unavailable", "detail": str(exc)}
    except (InputError, OSError):
        raise  # bad input, a full disk, a read-only folder: the run stops, it is not a step's failure
    except Exception as exc:
        if required:
            raise
        ctx.log(f"step {name} failed: {type(exc).__name__}: {exc}")
        ctx.log(traceback.format_exc(limit=3))
        return {"status": "failed", "detail": f"{type(exc).__name__}: {exc}"}


def _deferred_bootstrap(ctx: Context) -> dict:
    """Run :func:`bootstrap_correlations` (part of the required correlations step: a failure stops the analysis)."""
    t0, c0 = time.perf_counter(), time.process_time()
    with _one_blas_thread():
        bootstrap_correlations(ctx)
    return {"bootstrap_seconds": round(time.perf_counter() - t0, 3),
            "bootstrap_cpu_seconds": round(time.process_time() - c0, 3), "bootstrap_peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float | None:
    """The largest resident memory of this process so far, in MB (a worker's includes what it shares with
    the parent it was forked from); None where the platform does not say."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 2**20 if sys.platform == "darwin" else peak / 1024, 1)  # bytes on macOS, KiB on Linux


_FORKED_CONTEXT: Context | None = None  # what forked workers read (a Context holds a log callable: not picklable)


def _step_in_child(name: str):
    ctx = _FORKED_CONTEXT
    lines: list[str] = []
    ctx.log = lines.append
    files, counts = dict(ctx.files), set(ctx.counts)
    entry = _run_step(ctx, name, STEP_FUNCTIONS[name], False)
    return (entry, {k: v for k, v in ctx.files.items() if k not in files},
            {k: v for k, v in ctx.counts.items() if k not in counts}, lines)


def _run_parallel(ctx: Context, names: list[str], jobs: int, meanwhile: Callable[[], None] | None = None) -> dict:
    """Run independent optional steps in forked worker processes (each writes its own files).

    The psychometric steps only read what the required steps left in the context, so they
    can run side by side; fork shares the loaded study without pickling it. `meanwhile`
    runs in this process once the steps are handed out (the workers have their copy of
    the context by then), before their results are collected.
    """
    global _FORKED_CONTEXT

    _FORKED_CONTEXT = ctx
    out = {}
    try:
        # Workers die with this process (kill -9 included) and are killed when it is
        # interrupted: none goes on writing into the output folder (valueportrait.workers).
        with process_pool(jobs) as pool:
            # Longest first, so the two workers finish at about the same time.
            order = sorted(names, key=lambda n: -STEP_COST.get(n, 0))
            futures = {name: pool.submit(_step_in_child, name) for name in order}
            if meanwhile is not None:
                meanwhile()
            for name in names:
                try:
                    entry, files, counts, lines = futures[name].result()
                except (InputError, OSError):
                    raise
                except Exception as exc:  # a worker that died (memory, signal)
                    entry, files, counts, lines = {"status": "failed", "detail": f"{type(exc).__name__}: {exc}"}, {}, {}, []
                ctx.files.update(files)
                ctx.counts.update(counts)
                for line in lines:
                    ctx.log(line)
                out[name] = entry
    finally:
        _FORKED_CONTEXT = None
    return out


def _one_blas_thread():
    """Limit BLAS/OpenMP to one thread for a step.

    The analysis multiplies many small matrices (48 raters x 80 items; semopy and
    factor_analyzer fit hundreds of small models): multithreaded BLAS spends more time
    synchronising than computing. On the release this cut the CPU time of
    `vp analyze --bootstrap 2000` from about 47 s to about 11 s.
    """
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="the study database")
    parser.add_argument("--study", default=None, help="the study id (default: the only study in the database)")
    parser.add_argument("--out", type=Path, default=DEFAULT_PROCESSED, help="output folder")
    parser.add_argument("--threshold", type=opt.correlation_threshold(), default=0.3, help="keying threshold on rho")
    parser.add_argument("--alpha", type=opt.probability(), default=0.05,
                        help="keying significance level (p < alpha); intervals are at level 1 - alpha")
    parser.add_argument("--keying", choices=KEYINGS, default="pos",
                        help="pos: rho >= threshold; abs: |rho| >= threshold, negative items reversed")
    parser.add_argument("--bootstrap", type=opt.count(0), default=0, help="bootstrap resamples for rho intervals (0: none)")
    parser.add_argument("--seed", type=opt.seed(), default=0, help="seed of the bootstrap and other random steps")
    parser.add_argument("--splits", type=opt.count(1), default=100, help="random split-halves per group for the replication check")
    parser.add_argument("--permutations", type=opt.count(0), default=200,
                        help="permutations of the scores within groups for the chance baseline (0: off)")
    parser.add_argument("--efa-min-kmo", type=opt.fraction(), default=0.5,
                        help="groups whose KMO is below this are not factored (Kaiser 1974: below .5 unacceptable)")
    parser.add_argument("--skip", default="", help=f"comma-separated optional steps to leave out ({', '.join(OPTIONAL_STEPS)})")
    parser.add_argument("--jobs", type=opt.count(1), default=None,
                        help="processes for the psychometric steps (default: min(2, CPUs); 1: no worker processes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--design", choices=("one-stage", "two-stage"), default="one-stage",
                        help="two-stage: key items on the confirmation wave's raters among the screening wave's candidates")
    parser.add_argument("--screen", default=None, help="with --design two-stage: the screening wave's study id")
    parser.add_argument("--confirm", default=None, help="with --design two-stage: the confirmation wave's study id")
    add_quality_arguments(parser)


def run(args) -> int:
    skip = tuple(s.strip() for s in args.skip.split(",") if s.strip())
    try:
        options = options_from_args(args)
    except ValueError as exc:
        raise InputError(f"quality options: {exc}") from None
    analyze(args.db, args.out, threshold=args.threshold, alpha=args.alpha, keying=args.keying,
            bootstrap=args.bootstrap, seed=args.seed, study_id=args.study, splits=args.splits, jobs=args.jobs,
            efa_min_kmo=args.efa_min_kmo, permutations=args.permutations, quality=options, skip=skip,
            progress=not args.no_progress, design=args.design, screen=args.screen, confirm=args.confirm)
    return 0
