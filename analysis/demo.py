"""Run the whole method on a simulated study: simulate, analyse, bank, score an LLM, report.

Everything happens offline and from one seed. The simulated study has known truth (which
items really measure which values, every participant's true values, the simulated LLM's
profile), so the demo ends by saying how much of that truth the pipeline recovered
(``recovery.json``), including how many pairs the study's rule keys with no real relation.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pandas as pd

import instruments as inst
from analysis.recovery import profile_rank_corr, score_recovery, selection_recovery
from valueportrait.atomic import write_json_atomic
from valueportrait import options as opt
from valueportrait.errors import InputError
from valueportrait.outdir import holds_folder_lock

DEFAULT_OUT = Path("data/demo")
LLM_MODEL = "simulated-llm"
#: The persona sentence given to the LLM for each demographic group the simulator knows.
PERSONA_TEXT = {
    "gender": "Answer as a {group} person would.",
    "age_band": "Answer as a person aged {group} would.",
    "education": "Answer as a person whose education is: {group}.",
    "politics": "Answer as a politically {group} person would.",
}


def _fmt(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


def _say(line: str = "") -> None:
    print(line, flush=True)


def demo_config(seed: int, quick: bool):
    from analysis.simulate import SimulationConfig

    return SimulationConfig(seed=seed, **({"n_groups": 4, "population_n": 20_000} if quick else {}))


def simulate(out: Path, seed: int, quick: bool, design: str = "one-stage", alpha: float = 0.05):
    """The simulated study in ``out/study.db``: one study ``demo``, or two waves ``demo`` and ``demo-w2``.

    Returns (simulation with the truth, database path, the two-stage waves or None).
    """
    from analysis.simulate import simulate_study, simulate_two_stage, write_to_db

    config = demo_config(seed, quick)
    db_path = out / "study.db"
    for suffix in ("", "-wal", "-shm"):  # a demo starts from a fresh database
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    waves = None
    if design == "two-stage":
        waves = simulate_two_stage(config, db_path, screen_raters=SCREEN_RATERS, study_id="demo", alpha=alpha)
        sim = waves.screen
    else:
        sim = simulate_study(config)
        write_to_db(sim, db_path, study_id="demo")
    sim.truth_to_json(out / "truth.json")
    return sim, db_path, waves


def score_llm(sim, processed: Path, llm_dir: Path, seed: int, personas: bool) -> pd.DataFrame:
    """Ask the simulated LLM (plain and as personas) to rate the bank, then score its answers."""
    from analysis.llm.bank import load_bank
    from analysis.llm.profile import load_responses, score_models, write_profiles
    from analysis.llm.prompts import load_prompts
    from analysis.llm.runner import persona_slug, run_llm
    from analysis.llm.simulated import SimulatedBackend
    from analysis.simulate import persona_profiles

    items = load_bank(processed / "item_bank.json")
    if not items:
        raise InputError(f"{processed / 'item_bank.json'}: no item was keyed, so there is nothing to score")
    prompts = load_prompts()
    if llm_dir.exists():
        shutil.rmtree(llm_dir)  # answers of an earlier bank would mix with this one's
    write_json_atomic(sim.truth.llm_profile, llm_dir / "profile.json")
    runs = [(None, None)]  # (persona text, the persona's profile): first the model as itself
    persona_rows = []
    if personas:
        for attribute, groups in persona_profiles(sim).items():
            for group, profiles in groups.items():
                text = PERSONA_TEXT[attribute].format(group=group)
                runs.append((text, profiles["llm_persona"]))
                persona_rows.append({"slug": persona_slug(text), "attribute": attribute, "group": group, "persona": text})
        write_json_atomic(persona_rows, processed / "personas.json")
    asked = 0
    for persona, profile in runs:
        backend = SimulatedBackend(sim.truth.llm_profile, prompts.labels, seed=seed, noise=0.3, model=LLM_MODEL,
                                   persona_profile=profile)
        stats, _ = run_llm(items, backend, LLM_MODEL, out_dir=llm_dir, prompts=prompts, persona=persona,
                           concurrency=8, progress=persona is None)
        asked += stats.questions
    responses = load_responses([llm_dir])
    profiles, consistency = score_models(items, responses)
    write_profiles(profiles, consistency, processed / "llm_profiles.csv")
    _say(f"  {len(runs)} runs ({len(runs) - 1} personas), {asked} questions answered by the simulated respondent")
    return profiles


def _fdr_pairs(processed: Path, alpha: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The study rule's keyed pairs, and those of them with BH q < alpha."""
    corr = pd.read_csv(processed / "correlations.csv", dtype={"portrait_id": str})
    selection = pd.read_csv(processed / "selection.csv", dtype={"portrait_id": str})
    fdr = selection.merge(corr[["portrait_id", "option_id", "family", "dimension", "q_value"]],
                          on=["portrait_id", "option_id", "family", "dimension"])
    return selection, fdr[fdr["q_value"] < alpha]


def _spread(rows: list[dict], key: str) -> dict:
    """Mean, SD, range and pooled value (true positives / keyed over all runs) of a precision."""
    values = pd.Series([r[key]["precision"] for r in rows], dtype=float)
    keyed = sum(r[key]["keyed"] for r in rows)
    return {"mean": float(values.mean()), "sd": float(values.std()), "min": float(values.min()),
            "max": float(values.max()),
            "pooled": sum(r[key]["true_positives"] for r in rows) / keyed if keyed else float("nan"),
            "keyed_per_run": keyed / len(rows)}


def rater_replicates(sim, out: Path, n: int, alpha: float) -> dict | None:
    """The selection's precision over `n` fresh samples of raters for the same items.

    One study keys a few dozen pairs under the FDR rule, so its precision moves by several
    points from one sample of raters to the next; these replicates (same items, same truth,
    new people; the same analysis with the psychometric steps left out) say how much.
    """
    if n <= 0:
        return None
    import dataclasses
    import tempfile

    from tqdm import tqdm

    from analysis.pipeline import OPTIONAL_STEPS, analyze
    from analysis.simulate import simulate_study, write_to_db

    population = sim.truth.population.rename(columns={"rho": "population_rho"})
    rows = []
    with tempfile.TemporaryDirectory(dir=out, prefix="replicates-") as tmp:
        for r in tqdm(range(1, n + 1), desc="rater replicates", unit="study", leave=False):
            config = dataclasses.replace(sim.config, raters_seed=r, population_n=0)
            db_path, processed = Path(tmp) / f"r{r}.db", Path(tmp) / f"r{r}"
            write_to_db(simulate_study(config), db_path, study_id="demo")
            analyze(db_path, processed, alpha=alpha, skip=tuple(OPTIONAL_STEPS), jobs=1, log=lambda line: None)
            selection, fdr = _fdr_pairs(processed, alpha)
            rows.append({"rule": selection_recovery(selection, population), "rule_fdr": selection_recovery(fdr, population)})
    per = [{"raters_seed": r, "selection_precision": row["rule"]["precision"], "keyed_pairs": row["rule"]["keyed"],
            "fdr_selection_precision": row["rule_fdr"]["precision"], "fdr_keyed_pairs": row["rule_fdr"]["keyed"]}
           for r, row in enumerate(rows, 1)]
    return {"n": n, "raters_seeds": list(range(1, n + 1)),
            "selection_precision": _spread(rows, "rule"), "fdr_selection_precision": _spread(rows, "rule_fdr"),
            "per_replicate": per}


#: Screening raters per group of a simulated two-stage study: 24 of the one-stage study's 48
#: (11,520 of its 23,040 ratings); the confirmation wave gets the rest. Over seeds 0-7
#: (`benchmarks/designs.py --screen-raters 20|24`) 20 and 24 gave two-stage recall 0.375 and
#: 0.390, precision 0.953 and 0.978: close, 24 the better and the top of the range issue
#: 15's rough model named.
SCREEN_RATERS = 24


def design_entry(keyed: pd.DataFrame, population: pd.DataFrame, ratings: int) -> dict:
    """``{precision, recall, keyed, ratings}`` of a design's keyed pairs (recovery.json's ``designs``)."""
    rec = selection_recovery(keyed, population)
    return {"precision": rec["precision"], "recall": rec["recall"], "keyed": rec["keyed"], "ratings": int(ratings)}


def one_stage_designs(config, population: pd.DataFrame, workdir: Path, alpha: float = 0.05) -> dict:
    """The one-stage study on `config` (its own raters), analysed by the study rule and by rule + BH FDR."""
    from analysis.pipeline import OPTIONAL_STEPS, analyze
    from analysis.simulate import simulate_study, write_to_db

    sim = simulate_study(config)
    db_path, processed = Path(workdir) / "one_stage.db", Path(workdir) / "one_stage"
    write_to_db(sim, db_path, study_id="demo")
    analyze(db_path, processed, alpha=alpha, skip=tuple(OPTIONAL_STEPS), jobs=1, log=lambda line: None)
    selection, fdr = _fdr_pairs(processed, alpha)
    return {"one_stage_rule": design_entry(selection, population, len(sim.ratings)),
            "one_stage_fdr": design_entry(fdr, population, len(sim.ratings))}


def two_stage_design(config, population: pd.DataFrame, workdir: Path, alpha: float = 0.05, *,
                     screen_raters: int = SCREEN_RATERS, total_ratings: int | None = None, db=None,
                     processed: Path | None = None, analyze_options: dict | None = None) -> dict:
    """The same items as a two-stage study (``simulate_two_stage``), analysed by ``vp analyze --design two-stage``.

    Returns ``{"two_stage": {precision, recall, keyed, ratings}, "plan": {...}}``; by default
    the analysis is the core only (no psychometric steps) in a scratch folder.
    """
    from analysis.pipeline import OPTIONAL_STEPS, analyze
    from analysis.simulate import simulate_two_stage

    db = db or Path(workdir) / "two_stage.db"
    processed = processed or Path(workdir) / "two_stage"
    waves = simulate_two_stage(config, db, screen_raters=screen_raters, total_ratings=total_ratings, alpha=alpha)
    options = analyze_options or {"skip": tuple(OPTIONAL_STEPS), "jobs": 1, "log": lambda line: None}
    manifest = analyze(db, processed, alpha=alpha, design="two-stage", screen=waves.screen_id, confirm=waves.confirm_id,
                       **options)
    selection = pd.read_csv(processed / "selection.csv", dtype={"portrait_id": str})
    f = waves.plan.figures
    return {"two_stage": design_entry(selection, population, waves.ratings),
            "plan": {"screen_raters_per_group": screen_raters, "screen_ratings": int(len(waves.screen.ratings)),
                     "confirm_ratings": int(len(waves.confirm.ratings)), "candidates": f["candidates"],
                     "confirm_groups": f["groups"], "confirm_raters_per_group": f["raters_per_group"],
                     "expected_power": f["expected_power"], "funnel": manifest["design"]["funnel"]},
            "waves": waves, "manifest": manifest, "processed": processed}


def _read(processed: Path, name: str) -> pd.DataFrame | None:
    path = processed / name
    return pd.read_csv(path, dtype={"portrait_id": str}) if path.exists() else None


def chance_and_heldout(processed: Path, population: pd.DataFrame, min_real: float = 0.1) -> dict:
    """Per family: the chance baseline's false-key share and the held-out rho, beside the truth.

    ``true_false_key_share``: keyed pairs whose population rho is below `min_real`.
    ``population_rho_of_keyed``: mean population rho of the keyed pairs. The held-out rho
    estimates the mean population rho of the pairs one half of the raters keys
    (``population_rho_of_half_keyed``, weighted by selections as the estimate is); keys
    chosen with all the raters include fewer chance picks, so their mean is a little higher.
    """
    key = ["portrait_id", "option_id", "family", "dimension"]
    pop = population.assign(portrait_id=population["portrait_id"].astype(str))[key + ["population_rho"]]
    selection, chance = _read(processed, "selection.csv").merge(pop, on=key), _read(processed, "chance.csv")
    pairs, shrink = _read(processed, "replication.csv"), _read(processed, "replication_shrinkage.csv")
    out = {}
    for family in inst.FAMILIES:
        keyed = selection[selection["family"] == family]
        row = {"keyed": int(len(keyed)),
               "true_false_key_share": float((keyed["population_rho"] < min_real).mean()) if len(keyed) else None,
               "population_rho_of_keyed": float(keyed["population_rho"].mean()) if len(keyed) else None}
        if chance is not None:
            c = chance[(chance["family"] == family) & (chance["dimension"] == "all")].iloc[0]
            row.update(chance_false_key_share=None if pd.isna(c["false_key_share"]) else float(c["false_key_share"]),
                       chance_expected_mean=float(c["expected_mean"]))
        if pairs is not None and shrink is not None:
            half = pairs[pairs["family"] == family].merge(pop, on=key)
            s = shrink[(shrink["family"] == family) & (shrink["dimension"] == "all")].iloc[0]
            row.update(heldout_rho_mean=float(s["heldout_rho_mean"]),
                       population_rho_of_half_keyed=float((half["population_rho"] * half["times_selected"]).sum()
                                                          / half["times_selected"].sum()) if len(half) else None)
        out[family] = row
    return out


def recovery(sim, processed: Path, db_path: Path, profiles: pd.DataFrame, alpha: float) -> dict:
    from analysis.dataset import load_study
    from valueportrait.storage import open_db

    population = sim.truth.population.rename(columns={"rho": "population_rho"})
    selection, fdr = _fdr_pairs(processed, alpha)
    rule = selection_recovery(selection, population)
    rule_fdr = selection_recovery(fdr, population)
    by_family = {}
    for family in inst.FAMILIES:
        pop_f = population[population["family"] == family]
        by_family[family] = {
            "rule": selection_recovery(selection[selection["family"] == family], pop_f),
            "rule_fdr": selection_recovery(fdr[fdr["family"] == family], pop_f),
        }
    with open_db(db_path, readonly=True) as db:
        study = load_study(db, "demo")
    # The scores the analysis used, for the respondents who answered in earnest.
    good = sim.truth.participants.index[sim.truth.participants["kind"] == "good"]
    estimated = study.scores["pvq"]
    score_r = score_recovery(estimated.loc[estimated.index.intersection(good)], sim.truth.values[list(inst.PVQ_VALUES)])
    llm = profiles[(profiles["model"] == LLM_MODEL) & (profiles["family"] == "pvq")].set_index("dimension")["centered_mean"]
    true_llm = pd.Series(sim.truth.llm_profile)
    return {
        "rule": f"rho >= 0.3 and p < {alpha}; fdr: also BH q < {alpha} within each family",
        "selection_precision": rule["precision"],
        "selection_recall": rule["recall"],
        "fdr_selection_precision": rule_fdr["precision"],
        "fdr_selection_recall": rule_fdr["recall"],
        "keyed_pairs": rule["keyed"],
        "fdr_keyed_pairs": rule_fdr["keyed"],
        "pairs_with_population_rho_at_least_0.3": rule["strong_pairs"],
        # How the precisions depend on where "a real relation" starts: many pairs sit just
        # under 0.1 (the rating style's pull towards Self-Enhancement reaches every item).
        "precision_by_real_line": {
            f"{line:g}": {"rule": selection_recovery(selection, population, min_real=line)["precision"],
                          "rule_fdr": selection_recovery(fdr, population, min_real=line)["precision"]}
            for line in (0.0, 0.05, 0.1)},
        "by_family": by_family,
        "participant_score_corr": float(score_r.mean()),
        "participant_score_corr_by_value": {k: float(v) for k, v in score_r.items()},
        "llm_profile_rank_corr": profile_rank_corr(llm, true_llm) if len(llm) >= 3 else None,
        "llm_profile_values_scored": int(llm.notna().sum()),
        "chance_and_heldout": chance_and_heldout(processed, population),
        "definitions": {
            "selection_precision": "share of keyed pairs whose population correlation under the simulation model is >= 0.1",
            "selection_recall": "share of pairs with population correlation >= 0.3 that were keyed",
            "participant_score_corr": "mean over the ten values of Pearson r(estimated centred score, true latent centred value), planted bad respondents left out",
            "llm_profile_rank_corr": "Spearman between the recovered and the true simulated-LLM centred PVQ profile",
            "rater_replicates": "the same items rated by fresh simulated samples of raters (same truth), analysed the same way: "
                                "how much the precision of one study varies; pooled = true positives / keyed over all replicates",
            "chance_and_heldout": "per family: the share of keys chance alone explains (chance.csv) against the true share "
                                  "of keyed pairs with population rho < 0.1; the held-out rho (replication_shrinkage.csv, "
                                  "pooled) against the mean population rho of the pairs it describes (keyed by a half of "
                                  "the raters, weighted by selections) and of the study's keyed pairs",
        },
    }


def compare_designs(sim, config, out: Path, alpha: float, design: str, processed: Path, waves=None) -> dict:
    """recovery.json's ``designs``: the one-stage rules and the two-stage design on the same items and truth.

    The demo's own study gives the entries of its design; the other design is simulated on
    the same items (fresh raters, equal cost) and analysed in a scratch folder.
    """
    import dataclasses
    import tempfile

    population = sim.truth.population.rename(columns={"rho": "population_rho"})
    config = dataclasses.replace(config, population_n=0)  # the truth is the demo study's
    one_cost = config.n_groups * config.participants_per_group * config.items_per_group
    with tempfile.TemporaryDirectory(dir=out, prefix="designs-") as tmp:
        if design == "two-stage":
            selection = pd.read_csv(processed / "selection.csv", dtype={"portrait_id": str})
            designs = {**one_stage_designs(config, population, Path(tmp), alpha),
                       "two_stage": design_entry(selection, population, waves.ratings)}
            plan = waves.plan.figures
        else:
            selection, fdr = _fdr_pairs(processed, alpha)
            two = two_stage_design(config, population, Path(tmp), alpha)
            designs = {"one_stage_rule": design_entry(selection, population, len(sim.ratings)),
                       "one_stage_fdr": design_entry(fdr, population, len(sim.ratings)), "two_stage": two["two_stage"]}
            plan = two["waves"].plan.figures
    return {
        "designs": designs,
        "designs_setup": {
            "one_stage": f"{config.n_groups} groups x {config.participants_per_group} raters x {config.items_per_group} "
                         f"items ({one_cost:,} ratings)",
            "two_stage": f"screening wave {config.n_groups} groups x {SCREEN_RATERS} raters; confirmation wave planned by "
                         f"vp plan-wave: {plan['candidates']} candidates in {plan['groups']} groups of "
                         f"{'/'.join(str(r) for r in plan['raters_per_group'])} raters",
            "the_study": design,
            "other_design": "simulated on the same items with fresh raters, analysed without the psychometric steps",
        },
    }


# Two demos writing into one folder would overwrite each other's database and tables.
@holds_folder_lock("vp demo", folder_arg="out")
def run_demo(out: Path, *, seed: int = 0, bootstrap: int = 200, personas: bool = True, quick: bool = False,
             alpha: float = 0.05, replicates: int = 10, design: str = "one-stage") -> dict:
    from analysis.group_bias import run_group_bias, write_group_bias
    from analysis.pipeline import analyze
    from analysis.report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    processed = out / "processed"
    timings = {}

    def step(name: str):
        timings[name] = time.perf_counter()
        _say(f"[{len(timings)}/6] {name}")

    start = time.perf_counter()
    if design not in ("one-stage", "two-stage"):
        raise InputError(f"command line: --design: {design!r} is not one-stage or two-stage")
    step("simulating a study with known truth" + (" as two waves (screening, confirmation)" if design == "two-stage" else ""))
    sim, db_path, waves = simulate(out, seed, quick, design, alpha)
    n_people = sim.participants.shape[0]
    _say(f"  {sim.config.n_groups} groups x {sim.config.participants_per_group} participants, "
         f"{len(sim.items)} items, {len(sim.ratings)} ratings ({n_people} people, bad respondents planted)")
    two_stage = {}
    if waves is not None:
        from analysis.design import plan_lines

        _say(f"  confirmation wave planned from it ({waves.confirm_id}, fresh raters):")
        for line in plan_lines(waves.plan):
            _say(f"    {line}")
        two_stage = {"design": "two-stage", "screen": waves.screen_id, "confirm": waves.confirm_id}
    step("analysing it (quality, correlations, selection, item bank, psychometrics)")
    manifest = analyze(db_path, processed, alpha=alpha, bootstrap=bootstrap, seed=seed, progress=True,
                       log=lambda line: _say(f"  {line}"), **two_stage)
    step("scoring a simulated LLM with a known profile (offline backend)")
    profiles = score_llm(sim, processed, out / "llm", seed, personas)
    step("comparing LLM personas with the human groups")
    tables = run_group_bias(processed, db=db_path)
    write_group_bias(tables, processed)
    step("measuring how much of the truth was recovered")
    rec = recovery(sim, processed, db_path, profiles, alpha)
    rec["design"] = design
    rec.update(compare_designs(sim, demo_config(seed, quick), out, alpha, design, processed, waves))
    # Fresh samples of raters for the one-stage study (the replicates describe its precision).
    rec["rater_replicates"] = rater_replicates(sim, out, replicates, alpha) if design == "one-stage" else None
    if design == "two-stage" and replicates:
        _say("  (--replicates: fresh samples of raters for the one-stage study only; none with --design two-stage)")
    rec["seconds"] = round(time.perf_counter() - start, 1)
    write_json_atomic(rec, out / "recovery.json")
    step("writing the validation report")
    report = write_report(processed, out / "report.html", db=db_path)
    elapsed = time.perf_counter() - start
    _say()
    _say(f"Recovered truth ({rec['rule']}):")
    if design == "two-stage":
        _say(f"  two stages (rule + BH FDR over the candidates, on the confirmation raters): precision "
             f"{_fmt(rec['fdr_selection_precision'])}, recall {_fmt(rec['fdr_selection_recall'])} "
             f"({rec['fdr_keyed_pairs']} pairs keyed; {rec['pairs_with_population_rho_at_least_0.3']} pairs truly >= 0.3)")
    else:
        _say(f"  study rule:    precision {_fmt(rec['selection_precision'])}, recall {_fmt(rec['selection_recall'])} "
             f"({rec['keyed_pairs']} pairs keyed; {rec['pairs_with_population_rho_at_least_0.3']} pairs truly >= 0.3)")
        _say(f"  rule + BH FDR: precision {_fmt(rec['fdr_selection_precision'])}, recall {_fmt(rec['fdr_selection_recall'])} "
             f"({rec['fdr_keyed_pairs']} pairs keyed)")
    reps = rec["rater_replicates"]
    if reps:
        f, r = reps["fdr_selection_precision"], reps["selection_precision"]
        _say(f"  the same items with {reps['n']} fresh samples of raters: precision {_fmt(r['mean'])} (study rule), "
             f"{_fmt(f['mean'])} (rule + BH FDR; {_fmt(f['min'])} to {_fmt(f['max'])}, "
             f"{f['keyed_per_run']:.0f} pairs keyed per study)")
    pvq = (rec.get("chance_and_heldout") or {}).get("pvq") or {}
    if pvq.get("chance_false_key_share") is not None and pvq.get("heldout_rho_mean") is not None:
        _say(f"  PVQ keys chance alone explains: {_fmt(pvq['chance_false_key_share'])} (truth: "
             f"{_fmt(pvq['true_false_key_share'])} have population rho < 0.1); held-out rho "
             f"{_fmt(pvq['heldout_rho_mean'])} (truth: {_fmt(pvq['population_rho_of_half_keyed'])} for keys of half the "
             f"raters, {_fmt(pvq['population_rho_of_keyed'])} for the study's keys)")
    _say("  designs at equal cost (same items and truth):")
    for name, label in (("one_stage_rule", "one stage, study rule"), ("one_stage_fdr", "one stage, rule + BH FDR"),
                        ("two_stage", "two stages")):
        d = rec["designs"][name]
        _say(f"    {label:<25} precision {_fmt(d['precision'])}, recall {_fmt(d['recall'])} ({d['keyed']} pairs keyed, "
             f"{d['ratings']:,} ratings)")
    _say(f"  participant value scores vs truth: mean r = {rec['participant_score_corr']:.3f}")
    if rec["llm_profile_rank_corr"] is not None:
        _say(f"  simulated LLM profile vs truth: Spearman = {rec['llm_profile_rank_corr']:.3f}")
    _say()
    _say(f"Outputs (under {out}):")
    for label, path in [("study database", db_path), ("simulation truth", out / "truth.json"),
                        ("analysis tables", processed), ("item bank", processed / "item_bank.json"),
                        ("LLM answers", out / "llm"), ("LLM profiles", processed / "llm_profiles.csv"),
                        ("recovery", out / "recovery.json"), ("report", report)]:
        _say(f"  {label:<17} {path}")
    _say(f"Done in {elapsed:.1f} s.")
    return {"manifest": manifest, "recovery": rec, "report": str(report), "seconds": elapsed}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for every output of the demo")
    parser.add_argument("--seed", type=opt.seed(), default=0, help="seed of the simulation and every random step")
    parser.add_argument("--bootstrap", type=opt.count(0), default=200, help="bootstrap resamples for the correlation intervals")
    parser.add_argument("--alpha", type=opt.probability(), default=0.05, help="significance level of the selection rule and FDR")
    parser.add_argument("--no-personas", action="store_true", help="skip the persona runs of the group-bias analysis")
    parser.add_argument("--quick", action="store_true", help="a smaller study (4 groups), for a fast look")
    parser.add_argument("--replicates", type=opt.count(0), default=10,
                        help="fresh samples of raters for the same items, to show how much the selection's precision varies (0: none; one-stage only)")
    parser.add_argument("--design", choices=("one-stage", "two-stage"), default="one-stage",
                        help="two-stage: the same cost as two waves, a screening wave and a confirmation wave planned "
                             "from it (vp plan-wave), analysed with vp analyze --design two-stage")


def run(args) -> int:
    if args.bootstrap < 0:
        raise InputError(f"command line: --bootstrap: {args.bootstrap} is negative")
    if args.replicates < 0:
        raise InputError(f"command line: --replicates: {args.replicates} is negative")
    run_demo(args.out, seed=args.seed, bootstrap=args.bootstrap, personas=not args.no_personas, quick=args.quick,
             alpha=args.alpha, replicates=args.replicates, design=args.design)
    return 0
