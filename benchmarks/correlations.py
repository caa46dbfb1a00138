"""Benchmark: the vectorised item x dimension Spearman table against a per-pair scipy loop, on the release.

    python benchmarks/correlations.py [RELEASE_DIR]

Both compute the same 9880 rho/p pairs (520 items x 19 dimensions, each over its group's
raters) in one process; prints both times, their ratio and the largest difference.
Target on the 2-core machine: the vectorised table at least 50x faster.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from analysis.correlations import correlation_table
from analysis.dataset import load_study
from analysis.fetch_release import find_release
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


def main(argv=None) -> int:
    root = Path((argv or sys.argv[1:] or [RELEASE])[0])
    with tempfile.TemporaryDirectory() as tmp:
        with open_db(Path(tmp) / "study.db") as db:
            import_release(root, db)
            study = load_study(db)
    included = study.participations[["participant_id", "group_id"]]
    correlation_table(study, included)  # warm-up (imports, caches)
    vec_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        table = correlation_table(study, included)
        vec_times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    loop = per_pair_loop(study, included)
    loop_time = time.perf_counter() - t0
    ref = np.array([loop[k] for k in zip(table.portrait_id, table.option_id, table.family, table.dimension)])
    diff = max(np.nanmax(np.abs(table["rho"].to_numpy() - ref[:, 0])), np.nanmax(np.abs(table["p_value"].to_numpy() - ref[:, 1])))
    vec = min(vec_times)
    print(f"pairs: {len(table)} (items x dimensions over {len(study.groups)} groups)")
    print(f"vectorised table (rho, p, q, n; best of 5): {vec * 1000:.1f} ms")
    print(f"per-pair scipy.stats.spearmanr loop:        {loop_time * 1000:.1f} ms")
    print(f"ratio: {loop_time / vec:.0f}x   largest |difference| in rho or p: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
