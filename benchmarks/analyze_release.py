"""Benchmark: `vp analyze --bootstrap 2000` on the release, wall time and peak memory.

    python benchmarks/analyze_release.py [RELEASE_DIR] [--bootstrap N] [--skip STEPS]

Imports the release into a temporary database, then runs `vp analyze` as a subprocess and
reports its wall time, CPU time, peak resident memory (getrusage RUSAGE_CHILDREN
ru_maxrss) and each step's time from the manifest. Targets on the 2-core machine: under
10 s and under 1 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from analysis.fetch_release import find_release

# The shared copy beside the project, or `vp fetch-release --for-tests`'s.
RELEASE = find_release() or Path(__file__).resolve().parents[1].parent / "shared" / "valueportrait-release"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("release", nargs="?", type=Path, default=RELEASE)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--skip", default="", help="optional steps to leave out, passed to vp analyze")
    args = parser.parse_args(argv)
    vp = [sys.executable, "-m", "valueportrait.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        db, out = Path(tmp) / "study.db", Path(tmp) / "processed"
        t0 = time.perf_counter()
        subprocess.run([*vp, "import-release", str(args.release), "--db", str(db)], check=True, capture_output=True)
        import_time = time.perf_counter() - t0
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        command = [*vp, "analyze", "--db", str(db), "--out", str(out), "--bootstrap", str(args.bootstrap),
                   "--no-progress"] + (["--skip", args.skip] if args.skip else [])
        t0 = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        manifest = json.loads((out / "manifest.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ru_maxrss is the largest child so far (KiB on Linux): the analysis is the biggest child.
    peak_mb = after.ru_maxrss / 1024
    print(f"import-release: {import_time:.2f} s")
    print(f"vp analyze --bootstrap {args.bootstrap}{' --skip ' + args.skip if args.skip else ''}: "
          f"wall {wall:.2f} s, CPU {cpu:.2f} s, peak memory {peak_mb:.0f} MB")
    for step, info in manifest["steps"].items():
        print(f"  {step:<13} {info.get('seconds', '-')!s:>7} s  {info['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
