"""Benchmark: what guarding the output folder adds to `vp analyze` (lock, staging, checksums, swap).

    python benchmarks/outdir_commit.py [RELEASE_DIR] [--repeats 20]

Analyses the release once (psychometric steps left out, so it is quick), then times, on
those tables, what `valueportrait.outdir` does around every run: taking the folder's lock
and making the staging folder, and the commit (sha256 and row count of every table, the
manifest, the swap). Prints the median of `--repeats` rounds beside the size of the tables;
compare it with `benchmarks/analyze_release.py`'s time for the whole analysis.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from analysis.fetch_release import find_release
from valueportrait.outdir import StagedOutput

RELEASE = find_release() or Path(__file__).resolve().parents[1].parent / "shared" / "valueportrait-release"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("release", nargs="?", type=Path, default=RELEASE)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    from analysis.pipeline import OPTIONAL_STEPS, analyze
    from analysis.release import import_release
    from valueportrait.storage import open_db

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with open_db(tmp / "study.db") as db:
            import_release(args.release, db)
        skip = tuple(s for s in OPTIONAL_STEPS if s not in ("power", "circumplex"))
        analyze(tmp / "study.db", tmp / "source", skip=skip, jobs=1, log=lambda _: None)
        tables = [p for p in (tmp / "source").iterdir() if not p.name.startswith(".") and p.name != "manifest.json"]
        size = sum(p.stat().st_size for p in tables) / 1e6
        enter, commit = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with StagedOutput(tmp / "out", "benchmark") as out:
                enter.append(time.perf_counter() - t0)
                for p in tables:
                    shutil.copy(p, out.staging / p.name)
                t0 = time.perf_counter()
                out.commit({"settings": {}})
                commit.append(time.perf_counter() - t0)
    print(f"{len(tables)} tables, {size:.1f} MB (the release's core analysis)")
    print(f"lock + staging folder: median {statistics.median(enter) * 1000:.1f} ms")
    print(f"commit (sha256 + rows of every table, manifest, swap): median {statistics.median(commit) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
