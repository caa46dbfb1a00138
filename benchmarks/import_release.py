"""`vp import-release` on the shared release: the whole command's wall and CPU time (target <= 1.5 s).

Runs the command as a user would (a fresh database, then the same release again, which
reads the study's rows back to find stale ones), best and median of ``--repeat`` runs, with
user+system CPU and peak RSS beside the wall time (CPU time does not grow with other load
on the machine; wall time does). Then one in-process run split into its steps: the imports,
reading and validating the JSON, and writing the rows in one transaction.

    python benchmarks/import_release.py [--release ../shared/valueportrait-release] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from analysis.fetch_release import find_release

ROOT = Path(__file__).resolve().parents[1]
VP = str(Path(sys.executable).with_name("vp"))


def _timed(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user+system) and peak RSS (MiB) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 1024  # peak over the children so far


def _steps(release: Path, db_path: Path) -> list[tuple[str, float, float]]:
    """One in-process import, step by step: (step, wall s, CPU s)."""
    out, clock = [], (time.perf_counter(), time.process_time())

    def mark(step):
        nonlocal clock
        now = (time.perf_counter(), time.process_time())
        out.append((step, now[0] - clock[0], now[1] - clock[1]))
        clock = now

    code = ("import time, sys; t = time.perf_counter(), time.process_time(); import analysis.release; "
            "print(time.perf_counter() - t[0], time.process_time() - t[1])")
    wall, cpu = map(float, subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                          text=True).stdout.split())
    out.append(("imports (a fresh interpreter)", wall, cpu))
    from analysis import release as rel
    from valueportrait.storage import open_db

    clock = (time.perf_counter(), time.process_time())
    with open_db(db_path) as db:
        mark("open and create the database")
        data = rel.read_release(release)
        mark("read and validate the JSON")
        original, rel.read_release = rel.read_release, lambda *a, **k: data
        try:
            rel.import_release(release, db)
        finally:
            rel.read_release = original
        mark("write the rows (one transaction)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", type=Path, default=find_release() or ROOT.parent / "shared" / "valueportrait-release")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vp_import_") as tmp:
        fresh, again = [], []
        for i in range(args.repeat):
            db = Path(tmp) / f"run{i}.db"
            fresh.append(_timed([VP, "import-release", str(args.release), "--db", str(db)]))
            again.append(_timed([VP, "import-release", str(args.release), "--db", str(db)]))
        for name, runs in (("fresh database", fresh), ("re-import (no-op)", again)):
            walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
            print(f"vp import-release, {name}: wall best {min(walls):.2f} s, median {statistics.median(walls):.2f} s; "
                  f"CPU (user+sys) median {statistics.median(cpus):.2f} s over {args.repeat} runs (target wall <= 1.5 s)")
        print(f"peak RSS {max(r[2] for r in fresh + again):.0f} MiB; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
        print("where the time goes (one run in this process):")
        for step, wall, cpu in _steps(args.release, Path(tmp) / "steps.db"):
            print(f"  {step:<34} wall {wall:.3f} s  CPU {cpu:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
