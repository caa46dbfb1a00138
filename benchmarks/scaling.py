"""Benchmark: how the cost of a study grows with its items and raters (simulator + `vp analyze`).

    python benchmarks/scaling.py [--items 1,3,10] [--raters 1,3] [--bootstrap 2000] [--permutations 200]

The study's size is the release's: 520 items (13 groups of 8 queries x 5 responses; a
rater rates one group's 40 items, as in the study) and 48 raters per group. Larger
studies have more items in more groups (x3: 1,560 items in 39 groups; x10: 5,200 items
in 130 groups), as a study of thousands of generated candidate items would, and/or more
raters per group (x3: 144). Each size is simulated (`analysis.simulate`, no population
truth) and written to a fresh database in a child process, then analysed by
`vp analyze --bootstrap N` as a subprocess. Printed per size and step: wall seconds, CPU
seconds (user + sys of the process that ran it) and peak resident memory (of the process
that ran the step, so far; a worker's includes what it shares with its parent), then
per step the fitted exponent k of CPU time ~ size^k along each axis (least squares on
log-log, over the sizes run). Steps under 0.05 s CPU at the largest size are too small to
fit and shown as "-". Targets (issue 19, 2-core machine): every step k <= 1.2 in items;
at 10x items `vp analyze --bootstrap 2000` <= 30 s wall and < 4 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VP = [sys.executable, "-m", "valueportrait.cli"]
GROUPS, RATERS = 13, 48           # 13 groups x 40 items = 520 items, the release's count


def simulate_into(db: Path, items: int, raters: int, seed: int) -> dict:
    """Simulate a study `items` x / `raters` x the release's size into `db`, in a child process; its figures."""
    code = f"""
import json, resource, time
from analysis.simulate import SimulationConfig, simulate_study, write_to_db
t0, c0 = time.perf_counter(), time.process_time()
sim = simulate_study(SimulationConfig(seed={seed}, n_groups={GROUPS * items}, participants_per_group={RATERS * raters},
                                      population_n=0))
t1, c1 = time.perf_counter(), time.process_time()
peak1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
write_to_db(sim, {str(db)!r})
t2, c2 = time.perf_counter(), time.process_time()
peak2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"items": len(sim.items), "raters": int(sim.participants.shape[0]), "ratings": len(sim.ratings),
                  "simulate": [t1 - t0, c1 - c0, peak1], "write_to_db": [t2 - t1, c2 - c1, peak2]}}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def analyze(db: Path, out: Path, bootstrap: int, permutations: int) -> dict:
    """Run `vp analyze` on `db`; wall, CPU (all processes), peak memory and the manifest's steps."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([*VP, "analyze", "--db", str(db), "--out", str(out), "--no-progress", "--bootstrap", str(bootstrap),
                    "--permutations", str(permutations)], check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            # ru_maxrss of children is the largest child so far: sizes run in increasing order.
            "peak_mb": after.ru_maxrss / 1024, "steps": manifest["steps"]}


def step_figures(sim: dict, run: dict) -> dict[str, tuple[float, float, float | None]]:
    """step -> (wall s, CPU s, peak MB) for the simulator, every analysis step and the whole analysis."""
    out = {"simulate": tuple(sim["simulate"]), "write_to_db": tuple(sim["write_to_db"])}
    for name, info in run["steps"].items():
        if info.get("status") != "ok":
            continue
        out[name] = (info["seconds"], info.get("cpu_seconds", info["seconds"]), info.get("peak_rss_mb"))
        if "bootstrap_seconds" in info:
            out["bootstrap"] = (info["bootstrap_seconds"], info["bootstrap_cpu_seconds"], info.get("bootstrap_peak_rss_mb"))
    out["vp analyze (whole)"] = (run["wall"], run["cpu"], run["peak_mb"])
    return out


def exponent(sizes: list[float], times: list[float]) -> float | None:
    """k of time ~ size^k by least squares on log-log (None with fewer than two sizes or a zero time)."""
    import numpy as np

    if len(sizes) < 2 or min(times) <= 0:
        return None
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="1,3,10", help="item multiples of the release's 520 (comma-separated)")
    parser.add_argument("--raters", default="1,3", help="multiples of 48 raters per group, run at 1x items")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args(argv)
    item_sizes = sorted({int(x) for x in args.items.split(",")})
    rater_sizes = sorted({int(x) for x in args.raters.split(",")})
    # Increasing total size, so that RUSAGE_CHILDREN's largest child is the run just made.
    configs = sorted({(i, 1) for i in item_sizes} | {(1, r) for r in rater_sizes}, key=lambda c: c[0] * c[1])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for items, raters in configs:
            db = Path(tmp) / f"study_{items}x_{raters}x.db"
            sim = simulate_into(db, items, raters, args.seed)
            run = analyze(db, Path(tmp) / f"out_{items}x_{raters}x", args.bootstrap, args.permutations)
            results[(items, raters)] = {"sim": sim, "run": run, "steps": step_figures(sim, run)}
            print(f"{items:>2}x items, {raters}x raters: {sim['items']} items, {sim['raters']} raters, "
                  f"{sim['ratings']} ratings; vp analyze --bootstrap {args.bootstrap}: wall {run['wall']:.1f} s, "
                  f"CPU {run['cpu']:.1f} s, peak {run['peak_mb']:.0f} MB", flush=True)
            db.unlink()

    steps = list(dict.fromkeys(name for r in results.values() for name in r["steps"]))
    for axis, sizes, key in (("items", item_sizes, lambda s: (s, 1)), ("raters per group", rater_sizes, lambda s: (1, s))):
        sizes = [s for s in sizes if key(s) in results]
        if len(sizes) < 2:
            continue
        head = "".join(f"{f'{s}x wall/CPU/MB':>24}" for s in sizes)
        print(f"\nalong {axis} ({', '.join(f'{s}x' for s in sizes)}; raters per group 1x)" if axis == "items" else
              f"\nalong {axis} ({', '.join(f'{s}x' for s in sizes)}; items 1x)")
        print(f"{'step':<20}{head}{'k (CPU)':>10}")
        for name in steps:
            cells, cpus = [], []
            for s in sizes:
                fig = results[key(s)]["steps"].get(name)
                if fig is None:
                    cells.append(f"{'-':>24}")
                    continue
                wall, cpu, mb = fig
                cpus.append(cpu)
                cells.append(f"{f'{wall:.2f}/{cpu:.2f}/{mb:.0f}' if mb is not None else f'{wall:.2f}/{cpu:.2f}/-':>24}")
            k = exponent(sizes, cpus) if len(cpus) == len(sizes) and cpus[-1] >= 0.05 else None
            flag = " <- superlinear" if k is not None and k > 1.2 else ""
            print(f"{name:<20}{''.join(cells)}{(f'{k:.2f}' if k is not None else '-'):>10}{flag}")
    big = results.get((max(item_sizes), 1))
    if big:
        run = big["run"]
        print(f"\nat {max(item_sizes)}x items: vp analyze --bootstrap {args.bootstrap} wall {run['wall']:.1f} s "
              f"(target <= 30 s), peak {run['peak_mb']:.0f} MB (target < 4096 MB)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps({f"{i}x_items_{r}x_raters": v for (i, r), v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
