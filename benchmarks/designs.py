"""One-stage vs two-stage study designs at equal cost, on the simulated study's known truth.

For each seed: the default simulated study (12 groups x 48 raters x 40 items = 23,040
paid ratings) analysed by the study's rule and by rule + BH FDR; and the same items run as
a two-stage study (``analysis.simulate.simulate_two_stage``: a screening wave, `vp
plan-wave`'s plan, a confirmation wave on fresh raters, `vp analyze --design two-stage`)
at several total costs, the screening wave always taking the same share (20 of 48 raters
per group at full cost). Prints precision, recall and keyed pairs averaged over seeds at
equal cost, the two targets of issue 15, and the ratings the two-stage design needs to
match the one-stage FDR recall (linear interpolation between the costs run).

Run: ``.venv/bin/python benchmarks/designs.py --seeds 8`` (about 1 minute per seed on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.demo import SCREEN_RATERS, one_stage_designs, two_stage_design
from analysis.simulate import SimulationConfig, simulate_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1")
    parser.add_argument("--fractions", default="0.3,0.4,0.5,0.7,1.0",
                        help="total costs of the two-stage runs, as fractions of the one-stage cost")
    parser.add_argument("--screen-raters", type=int, default=SCREEN_RATERS, help="screening raters per group at full cost")
    parser.add_argument("--population-n", type=int, default=SimulationConfig.population_n)
    args = parser.parse_args()
    fractions = sorted({float(f) for f in args.fractions.split(",")} | {1.0})
    rows, plans = [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            config = SimulationConfig(seed=seed, population_n=args.population_n)
            truth = simulate_study(config).truth.population.rename(columns={"rho": "population_rho"})
            lean = dataclasses.replace(config, population_n=0)
            work = Path(tmp) / f"s{seed}"
            for name, entry in one_stage_designs(lean, truth, work).items():
                rows.append({"seed": seed, "design": name, "fraction": 1.0, **entry})
            full = config.n_groups * config.participants_per_group * config.items_per_group
            for frac in fractions:
                screen = max(4, round(args.screen_raters * frac))
                out = two_stage_design(lean, truth, work / f"f{frac}", screen_raters=screen, total_ratings=round(full * frac))
                rows.append({"seed": seed, "design": "two_stage", "fraction": frac, **out["two_stage"]})
                plans.append({"seed": seed, "fraction": frac, **{k: v for k, v in out["plan"].items() if k != "funnel"},
                              **out["plan"]["funnel"], **(_limits(out, truth, lean, work) if frac == 1.0 else {})})
            done = pd.DataFrame(rows)
            last = done[(done["seed"] == seed) & (done["fraction"] == 1.0)].set_index("design")
            print(f"seed {seed}: " + ", ".join(f"{d} P {r.precision:.3f} R {r.recall:.3f} ({r.keyed})"
                                              for d, r in last.iterrows())
                  + f"  [{time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    equal = table[table["fraction"] == 1.0].groupby("design", sort=False)[["precision", "recall", "keyed", "ratings"]].mean()
    spread = table[table["fraction"] == 1.0].groupby("design", sort=False)[["precision", "recall"]].agg(["min", "max"])
    print(f"\nDesigns at equal cost, mean over seeds 0-{args.seeds - 1} (precision: keyed pairs with population "
          "rho >= 0.1; recall: pairs with population rho >= 0.3 that were keyed)")
    print(f"{'design':<16}{'precision':>10}{'recall':>9}{'keyed':>8}{'ratings':>9}   precision range   recall range")
    for design, r in equal.iterrows():
        sp = spread.loc[design]
        print(f"{design:<16}{r.precision:>10.3f}{r.recall:>9.3f}{r.keyed:>8.1f}{r.ratings:>9.0f}   "
              f"{sp[('precision', 'min')]:.3f}-{sp[('precision', 'max')]:.3f}       {sp[('recall', 'min')]:.3f}-{sp[('recall', 'max')]:.3f}")
    fdr, two = equal.loc["one_stage_fdr"], equal.loc["two_stage"]
    print(f"\ntarget 1 (23,040 ratings): two-stage precision {two.precision:.3f} (>= 0.9: "
          f"{'met' if two.precision >= 0.9 else 'missed'}), recall {two.recall:.3f} = "
          f"{two.recall / fdr.recall:.2f} x the one-stage FDR recall {fdr.recall:.3f} (>= 3x: "
          f"{'met' if two.recall >= 3 * fdr.recall else 'missed'})")
    curve = table[table["design"] == "two_stage"].groupby("fraction")[["recall", "precision", "ratings"]].mean()
    print("\ntwo-stage design by cost (mean over seeds):")
    print(f"{'ratings':>9}{'fraction':>10}{'precision':>11}{'recall':>9}")
    for frac, r in curve.iterrows():
        print(f"{r.ratings:>9.0f}{frac:>10.2f}{r.precision:>11.3f}{r.recall:>9.3f}")
    needed, relation = _crossing(curve["ratings"].to_numpy(), curve["recall"].to_numpy(), fdr.recall)
    one_cost = float(equal.loc["one_stage_fdr", "ratings"])
    verdict = "met" if relation != ">" and needed <= 0.5 * one_cost else "missed"
    half = curve.iloc[(curve.index.to_series() - 0.5).abs().argmin()]
    print(f"at {half.ratings:,.0f} ratings (the run nearest half the cost): two-stage recall {half.recall:.3f} "
          f"(one-stage FDR at full cost: {fdr.recall:.3f}), precision {half.precision:.3f}")
    word = {"=": "about", "<=": "at most", ">": "more than"}[relation]
    print(f"target 2: the two-stage design reaches the one-stage FDR recall {fdr.recall:.3f} with {word} "
          f"{needed:,.0f} ratings = {needed / one_cost:.2f} of the one-stage study's {one_cost:,.0f} (<= 0.5: {verdict})")
    plan = pd.DataFrame(plans)
    full_plan = plan[plan["fraction"] == 1.0]
    print(f"\nwhat limits the two-stage recall at full cost (mean over seeds): the screening carried "
          f"{full_plan['screen_recall'].mean():.2f} of the pairs with population rho >= 0.3 into the candidates, the "
          f"confirmation keyed {full_plan['confirm_recall'].mean():.2f} of those; the same confirmation wave given the "
          f"items with the strongest true relations (a perfect screen) keys recall {full_plan['oracle_recall'].mean():.3f} "
          f"(precision {full_plan['oracle_precision'].mean():.3f})")
    print(f"the planner's empirical-Bayes count of strong pairs among the candidates: {full_plan['expected_in_candidates'].mean():.1f} "
          f"expected, {full_plan['strong_in_candidates'].mean():.1f} true (it sizes the FDR level of the power calculation)")
    print(f"\nplans at full cost: candidates {full_plan['candidates'].mean():.0f} "
          f"({full_plan['candidates'].min()}-{full_plan['candidates'].max()}), confirmation groups "
          f"{full_plan['confirm_groups'].mean():.1f}, confirmed items {full_plan['confirmed'].mean():.1f}; "
          f"{time.perf_counter() - t0:.0f} s in all")


def _limits(out: dict, truth: pd.DataFrame, config, work: Path) -> dict:
    """Where the two-stage design loses the strong pairs, and what a perfect screen would give.

    ``screen_recall``: the share of pairs with population rho >= 0.3 whose item became a
    candidate; ``confirm_recall``: the share of those the confirmation keyed. ``oracle_recall``:
    the same confirmation wave (groups, raters) given the items with the strongest true
    relations instead of the screened ones, analysed the same way: the limit of the
    confirmation stage at this cost.
    """
    from analysis.pipeline import OPTIONAL_STEPS, analyze
    from analysis.recovery import selection_recovery
    from analysis.design import pack_groups
    from analysis.simulate import simulate_wave, write_to_db

    waves = out["waves"]
    strong = truth[truth["population_rho"] >= 0.3]
    layout = waves.plan.layout()
    kept = strong.merge(layout[["portrait_id", "option_id"]], on=["portrait_id", "option_id"])
    keyed = pd.read_csv(out["processed"] / "selection.csv", dtype={"portrait_id": str})
    hits = kept.merge(keyed[["portrait_id", "option_id", "dimension"]], on=["portrait_id", "option_id", "dimension"])
    best = truth.groupby(["portrait_id", "option_id"], as_index=False)["population_rho"].max()
    best = best.sort_values("population_rho", ascending=False, kind="stable")
    groups = layout.groupby("group_id", sort=False).agg(items=("portrait_id", "size"), raters=("raters", "first"))
    packed = pack_groups(best, len(groups), int(groups["items"].max()))
    oracle = pd.DataFrame([(gid, p, o, r) for (gid, r), grp in zip(groups["raters"].items(), packed) for p, o in grp],
                          columns=["group_id", "portrait_id", "option_id", "raters"])
    db = Path(out["manifest"]["database"])
    write_to_db(simulate_wave(config, oracle, raters_seed=99_999, id_prefix="OR"), db, "oracle", project=waves.screen_id)
    analyze(db, work / "oracle", design="two-stage", screen=waves.screen_id, confirm="oracle",
            skip=tuple(OPTIONAL_STEPS), jobs=1, log=lambda line: None)
    rec = selection_recovery(pd.read_csv(work / "oracle" / "selection.csv", dtype={"portrait_id": str}), truth)
    return {"screen_recall": len(kept) / len(strong), "confirm_recall": len(hits) / max(len(kept), 1),
            "strong_in_candidates": len(kept), "expected_in_candidates": waves.plan.figures["expected_strong_pairs"],
            "oracle_recall": rec["recall"], "oracle_precision": rec["precision"]}


def _crossing(x: np.ndarray, y: np.ndarray, level: float) -> tuple[float, str]:
    """Where the piecewise-linear curve y(x) (x increasing) first reaches `level`: (x, relation).

    relation is '=' for an interpolated crossing, '<=' when even the first point reaches it,
    and '>' (with x the last point) when no point does.
    """
    if y[0] >= level:
        return float(x[0]), "<="
    for i in range(1, len(y)):
        if y[i] >= level:
            return float(x[i - 1] + (level - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1])), "="
    return float(x[-1]), ">"


if __name__ == "__main__":
    main()
