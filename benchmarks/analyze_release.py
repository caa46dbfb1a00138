"""Benchmark: `vp analyze --bootstrap 2000` on the release, wall time and peak memory, and
what the chance baseline (`--permutations 200`, the default) adds to it.

    python benchmarks/analyze_release.py [RELEASE_DIR] [--bootstrap N] [--skip STEPS] [--repeat N]

Imports the release into a temporary database, then runs `vp analyze` as a subprocess and
reports its wall time, CPU time, peak resident memory (getrusage RUSAGE_CHILDREN
ru_maxrss) and each step's time from the manifest. Then the same analysis with
`--permutations 0` (no chance step): the difference in wall time is what the chance
baseline adds (the step runs in a worker process beside the other psychometric steps).
Each run is repeated `--repeat` times and the fastest kept. Targets on the 2-core machine
(issue 19): at most 4 s and under 1 GB; the chance baseline at most 2 s more. Per step
the manifest's wall and CPU seconds are printed (the psychometric steps run in two
worker processes while the main process computes the bootstrap intervals), and the load
average: wall time means little while others use the machine.
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

from analysis.fetch_release import find_release

# The shared copy beside the project, or `vp fetch-release --for-tests`'s.
RELEASE = find_release() or Path(__file__).resolve().parents[1].parent / "shared" / "valueportrait-release"
VP = [sys.executable, "-m", "valueportrait.cli"]


def run_analyze(db: Path, out: Path, args: list[str]) -> tuple[float, float, float, dict]:
    """(wall s, CPU s, peak MB so far among children, manifest) of one `vp analyze` run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([*VP, "analyze", "--db", str(db), "--out", str(out), "--no-progress", *args], check=True,
                   capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ru_maxrss is the largest child so far (KiB on Linux): the analysis is the biggest child.
    return wall, cpu, after.ru_maxrss / 1024, json.loads((out / "manifest.json").read_text())


def chance_step_alone(db: Path, permutations: int = 200) -> tuple[float, float]:
    """(wall s, CPU s) of the chance baseline alone, in this process with one BLAS thread as in vp analyze.

    CPU time says what the step costs even when other jobs share the machine.
    """
    from threadpoolctl import threadpool_limits

    from analysis.chance import chance_baseline, study_groups
    from analysis.dataset import load_study
    from analysis.quality import quality_control
    from valueportrait.storage import open_db

    with open_db(db, readonly=True) as con:
        study = load_study(con)
    included = quality_control(study).included
    with threadpool_limits(limits=1):
        t0, c0 = time.perf_counter(), time.process_time()
        chance_baseline(study_groups(study, included), permutations=permutations)
        return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("release", nargs="?", type=Path, default=RELEASE)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--skip", default="", help="optional steps to leave out, passed to vp analyze")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration; the fastest is kept")
    args = parser.parse_args(argv)
    base = ["--bootstrap", str(args.bootstrap)] + (["--skip", args.skip] if args.skip else [])
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "study.db"
        t0 = time.perf_counter()
        subprocess.run([*VP, "import-release", str(args.release), "--db", str(db)], check=True, capture_output=True)
        import_time = time.perf_counter() - t0
        runs = {}
        for label, extra in (("with", ["--permutations", "200"]), ("without", ["--permutations", "0"])):
            results = [run_analyze(db, Path(tmp) / f"{label}{k}", base + extra) for k in range(args.repeat)]
            runs[label] = min(results, key=lambda r: r[0])
        alone = min((chance_step_alone(db) for _ in range(args.repeat)), key=lambda r: r[1])
    wall, cpu, peak_mb, manifest = runs["with"]
    print(f"import-release: {import_time:.2f} s")
    print(f"vp analyze --bootstrap {args.bootstrap}{' --skip ' + args.skip if args.skip else ''}: "
          f"wall {wall:.2f} s, CPU {cpu:.2f} s, peak memory {peak_mb:.0f} MB")
    for step, info in manifest["steps"].items():
        print(f"  {step:<13} {info.get('seconds', '-')!s:>7} s wall {info.get('cpu_seconds', '-')!s:>7} s CPU  {info['status']}")
        if "bootstrap_seconds" in info:
            print(f"  {'  bootstrap':<13} {info['bootstrap_seconds']!s:>7} s wall {info['bootstrap_cpu_seconds']!s:>7} s CPU"
                  "  (in the main process, beside the workers)")
    wall0, cpu0 = runs["without"][:2]
    chance = manifest["steps"].get("chance", {})
    print(f"chance baseline (--permutations 200 against 0): wall +{wall - wall0:.2f} s ({wall0:.2f} -> {wall:.2f} s), "
          f"CPU +{cpu - cpu0:.2f} s; the step itself {chance.get('seconds', '-')} s in a worker (target: +2 s at most)")
    print(f"chance baseline alone, 200 permutations, in this process: CPU {alone[1]:.2f} s, wall {alone[0]:.2f} s")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
