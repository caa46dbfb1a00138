"""Benchmark: the vectorised item x dimension Spearman table against a per-pair scipy loop, on the release.

    python benchmarks/correlations.py [RELEASE_DIR] [--repeat N]

Both compute the same 9880 rho/p pairs (520 items x 19 dimensions, each over its group's
raters) in one process; prints both times (wall and CPU), their ratios and the largest
difference. The table is timed `--repeat` times and the fastest kept (the loop once: it
takes seconds); CPU time says more than wall time on a machine others are using.
Target on the 2-core machine (issue 19): the vectorised table at least 300x faster.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from analysis.correlations import correlation_table
from analysis.dataset import load_study
from analysis.fetch_release import find_release
from analysis.pipeline import _one_blas_thread
from analysis.release import import_release
from valueportrait.storage import open_db

# The shared copy beside the project, or `vp fetch-release --for-tests`'s.
RELEASE = find_release() or Path(__file__).resolve().parents[1].parent / "shared" / "valueportrait-release"


def per_pair_loop(study, included):
    """The plain way: for every item and dimension, build the two vectors and call spearmanr."""
    out = {}
    dims = list(study.scores.columns)
    for gid in study.groups["group_id"]:
        people = included.loc[included["group_id"] == gid, "participant_id"]
        ratings = study.ratings[(study.ratings["group_id"] == gid) & study.ratings["participant_id"].isin(people)]
        for (pid, oid), item in ratings.groupby(["portrait_id", "option_id"]):
            scores = study.scores.loc[item["participant_id"]].to_numpy(float)
            x = item["rating"].to_numpy(float)
            for j, dim in enumerate(dims):
                r = spearmanr(x, scores[:, j])
                out[(pid, oid, dim[0], dim[1])] = (r.statistic, r.pvalue)
    return out


def timed(func):
    """(result, wall s, CPU s) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = func()
    return result, time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("release", nargs="?", type=Path, default=RELEASE)
    parser.add_argument("--repeat", type=int, default=20, help="timings of the vectorised table; the fastest is kept")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        with open_db(Path(tmp) / "study.db") as db:
            import_release(args.release, db)
            study = load_study(db)
    included = study.participations[["participant_id", "group_id"]]
    correlation_table(study, included)  # warm-up (imports, caches)
    # One BLAS thread, as `vp analyze` runs its steps: multithreaded BLAS on these small
    # products spends its time synchronising (and spins on a busy machine).
    with _one_blas_thread():
        runs = [timed(lambda: correlation_table(study, included)) for _ in range(args.repeat)]
    table = runs[0][0]
    vec_wall, vec_cpu = min(r[1] for r in runs), min(r[2] for r in runs)
    loop, loop_wall, loop_cpu = timed(lambda: per_pair_loop(study, included))
    ref = np.array([loop[k] for k in zip(table.portrait_id, table.option_id, table.family, table.dimension)])
    diff = max(np.nanmax(np.abs(table["rho"].to_numpy() - ref[:, 0])), np.nanmax(np.abs(table["p_value"].to_numpy() - ref[:, 1])))
    print(f"pairs: {len(table)} (items x dimensions over {len(study.groups)} groups)")
    print(f"vectorised table (rho, p, q, n; best of {args.repeat}): wall {vec_wall * 1000:.1f} ms, CPU {vec_cpu * 1000:.1f} ms")
    print(f"per-pair scipy.stats.spearmanr loop:        wall {loop_wall * 1000:.1f} ms, CPU {loop_cpu * 1000:.1f} ms")
    print(f"ratio: {loop_wall / vec_wall:.0f}x wall, {loop_cpu / vec_cpu:.0f}x CPU (target >= 300x)   "
          f"largest |difference| in rho or p: {diff:.2e}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
