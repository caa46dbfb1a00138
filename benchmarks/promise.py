"""Which screening score finds the items worth confirming? The promise of `vp plan-wave` against simpler ones.

One large simulated study (300 raters per group, no bad respondents) is the pool: for each
sample of raters, the first `--screen` raters of every group screen all items, the next
`--confirm` raters (disjoint) confirm the `--keep` most promising items by each score, keyed
as `vp analyze --design two-stage` keys them (rho >= 0.3, p < .05, BH q < .05 within each
family over the candidate pairs). Prints, per score, the pairs with population rho >= 0.3
among the candidates (of all such pairs) and the recall and precision after confirmation,
averaged over the samples. The scores: the circle peak alone, the largest correlation alone,
the larger of the two standardised ones, and the promise (their factor-score combination).

Run: ``.venv/bin/python benchmarks/promise.py [--seed 0] [--samples 6]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.correlations import add_q_values, correlation_table
from analysis.dataset import load_study
from analysis.design import promise_scores
from analysis.recovery import selection_recovery
from analysis.simulate import SimulationConfig, simulate_study, write_to_db
from valueportrait.storage import open_db

ITEM = ["portrait_id", "option_id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=6, help="samples of raters drawn from the pool")
    parser.add_argument("--screen", type=int, default=20, help="screening raters per group")
    parser.add_argument("--confirm", type=int, default=112, help="confirmation raters per item")
    parser.add_argument("--keep", type=int, default=120, help="candidates kept")
    args = parser.parse_args()
    t0 = time.perf_counter()
    config = SimulationConfig(seed=args.seed, participants_per_group=300, straight_liner_share=0, speeder_share=0,
                              attention_failer_share=0, two_group_participant=False)
    sim = simulate_study(config)
    population = sim.truth.population.rename(columns={"rho": "population_rho"})
    strong = population[population["population_rho"] >= 0.3]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_to_db(sim, Path(tmp) / "pool.db", study_id="pool")
        with open_db(Path(tmp) / "pool.db", readonly=True) as db:
            study = load_study(db, "pool")
    parts = study.participations[["participant_id", "group_id"]]
    for sample in range(args.samples):
        rng = np.random.default_rng([args.seed, sample])
        order = parts.assign(_key=rng.random(len(parts))).sort_values(["group_id", "_key"])[["participant_id", "group_id"]]
        rank = order.groupby("group_id").cumcount()
        screen = order[rank < args.screen]
        confirm = order[(rank >= args.screen) & (rank < args.screen + args.confirm)]
        table = promise_scores(study, screen, seed=sample)
        scores = {"circle peak": table["z_circle"], "largest correlation": table["z_single"],
                  "larger of the two": table[["z_circle", "z_single"]].max(axis=1), "promise (vp plan-wave)": table["promise"]}
        corr = correlation_table(study, confirm)
        for name, score in scores.items():
            cand = table.loc[score.sort_values(ascending=False, kind="stable").index[: args.keep], ITEM]
            found = strong.merge(cand, on=ITEM)
            tested = add_q_values(corr.merge(cand, on=ITEM))
            keyed = tested[(tested["rho"] >= 0.3) & (tested["p_value"] < 0.05) & (tested["q_value"] < 0.05)]
            rec = selection_recovery(keyed, population)
            rows.append({"sample": sample, "score": name, "strong_in_candidates": len(found), "recall": rec["recall"],
                         "precision": rec["precision"], "keyed": rec["keyed"]})
    frame = pd.DataFrame(rows)
    mean = frame.groupby("score", sort=False)[["strong_in_candidates", "recall", "precision", "keyed"]].mean()
    print(f"seed {args.seed}: {len(strong)} pairs with population rho >= 0.3; {args.screen} screening raters per group, "
          f"{args.keep} candidates confirmed on {args.confirm} fresh raters; mean over {args.samples} samples of raters")
    print(f"{'score':<24}{'strong pairs kept':>18}{'recall':>8}{'precision':>11}{'keyed':>7}")
    for name, r in mean.iterrows():
        print(f"{name:<24}{r.strong_in_candidates:>18.1f}{r.recall:>8.3f}{r.precision:>11.3f}{r.keyed:>7.1f}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
