"""Time the default simulated study and print the figures that describe it.

Prints the time of `simulate_study` (with the population truth) and of `write_to_db`,
then the simulated study's keyed share, rho spread and rating distribution (the study's
rule on the participants the quality rules keep), and how much real signal the truth holds
(pairs with population rho >= 0.1 and >= 0.3).

Run: ``.venv/bin/python benchmarks/simulate.py [--seed 0] [--population-n 100000]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

import instruments as inst
from analysis.scoring import score_pvq
from analysis.simulate import SimulationConfig, simulate_study, write_to_db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--population-n", type=int, default=SimulationConfig.population_n)
    args = parser.parse_args()

    t0, c0 = time.perf_counter(), time.process_time()
    sim = simulate_study(SimulationConfig(seed=args.seed, population_n=args.population_n))
    t1, c1 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        write_to_db(sim, Path(tmp) / "study.db")
        t2 = time.perf_counter()
    print(f"simulate_study: {t1 - t0:.2f} s wall, {c1 - c0:.2f} s CPU (population_n={args.population_n}); "
          f"write_to_db: {t2 - t1:.2f} s wall")

    values = list(inst.PVQ_VALUES)
    scores = score_pvq(sim.answers_wide())[values]
    good = sim.truth.participants.index[sim.truth.participants["kind"] == "good"]
    r = sim.ratings[sim.ratings["participant_id"].isin(good)]
    rhos, ps = [], []
    for _, sub in r.groupby("group_id"):
        m = sub.pivot(index="participant_id", columns=["portrait_id", "option_id"], values="rating")
        rho, p = stats.spearmanr(m.to_numpy(), scores.loc[m.index].to_numpy())
        k = m.shape[1]
        rhos.append(rho[:k, k:].ravel())
        ps.append(p[:k, k:].ravel())
    rho, p = np.concatenate(rhos), np.concatenate(ps)
    print(f"PVQ pairs keyed (rho >= .3, p < .05): {np.mean((rho >= 0.3) & (p < 0.05)):.2%} (release 5.52%)")
    print(f"rho SD {rho.std(ddof=1):.3f} (release 0.183); quantiles 5/50/95%: "
          f"{np.quantile(rho, [0.05, 0.5, 0.95]).round(3).tolist()} (release [-0.303, 0.006, 0.307])")
    shares = r["rating"].value_counts(normalize=True).sort_index()
    print("rating shares 1..6:", shares.round(3).tolist(), "(release [0.065, 0.12, 0.14, 0.229, 0.277, 0.168])")
    pop = sim.truth.population
    for fam, sub in pop.groupby("family"):
        print(f"truth {fam}: population rho >= 0.1: {np.mean(sub['rho'] >= 0.1):.1%}, >= 0.3: {np.mean(sub['rho'] >= 0.3):.1%}")
    print("planted:", sim.truth.participants["kind"].value_counts().to_dict(),
          "two-group participant:", sim.truth.participants.index[sim.truth.participants["two_groups"]].tolist())


if __name__ == "__main__":
    main()
