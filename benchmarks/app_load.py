"""Load benchmark of the collection app: many concurrent bots take the default study.

Starts `vp app` on a fresh database, runs N bots at the default think time (``--driver ws``:
light bots that speak Streamlit's websocket protocol, the default; ``--driver browser``:
headless Chromium contexts in one browser, about fifteen fit on two cores), then checks that
nothing was lost or duplicated (every answer a bot saw acknowledged is in the database, each participant has exactly the answers the study
asks) and that groups are balanced within one participant. Prints step latency (p50, p95,
max), server peak RSS and CPU, bots' peak RSS (this process, plus Chromium's when it runs).

    python benchmarks/app_load.py --n 50 --think 3
    python benchmarks/app_load.py --n 15 --driver browser
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from valueportrait.storage import open_db

from collection_app import bots, pages, store, wsbot
from collection_app.study import load_study
from collection_app.testing import Server, acknowledged, stored_answers


def _tree_rss_kb(root: int, exclude: set[int]) -> int:
    """RSS of a process and its descendants (Linux /proc), skipping the subtrees in `exclude`."""
    parent, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parent[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        if pid in exclude:
            continue
        total += rss.get(pid, 0)
        stack += [c for c, p in parent.items() if p == pid]
    return total


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _study_for(n: int, folder: Path) -> Path | None:
    """The default study, or a copy whose group targets admit `n` participants (None: the default does)."""
    import yaml

    from collection_app.study import DEFAULT_STUDY
    spec = yaml.safe_load(DEFAULT_STUDY.read_text())
    if sum(g["target"] for g in spec["groups"]) >= n:
        return None
    per_group = -(-n // len(spec["groups"]))
    for g in spec["groups"]:
        g["target"] = per_group
    spec["items_file"] = str((DEFAULT_STUDY.parent / spec["items_file"]).resolve())
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def verify(db_path: Path, study, results) -> dict:
    lost = dup = 0
    with open_db(db_path) as db:
        for r in results:
            prog = store.load_progress(db, study, r.participant_id)
            steps = pages.question_steps(study, prog)
            for index, given in r.answers.items():
                lost += stored_answers(db, r.participant_id, steps[index][1]) != acknowledged(given)
            if prog.group_id:
                want = pages.expected_counts(study, prog.group_id)
                got = db.query("SELECT COUNT(*) FROM ratings WHERE participant_id=?", (r.participant_id,))[0][0]
                dup += got > want["rating"]
        groups = {row[0]: row[1] for row in db.query(
            "SELECT group_id, COUNT(*) FROM participations WHERE status='completed' GROUP BY group_id")}
    return dict(lost=lost, duplicated=dup, groups=groups)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--think", type=float, default=3.0)
    ap.add_argument("--ramp", type=float, default=10.0, help="seconds over which bots arrive")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--driver", choices=("ws", "browser"), default="ws")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment for the server, e.g. STREAMLIT_RUNNER_POST_SCRIPT_GC=false")
    args = ap.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)

    tmp = Path(tempfile.mkdtemp(prefix="vp_load_"))
    study_file = _study_for(args.n, tmp)
    study = load_study(study_file)
    db_path = tmp / "study.db"
    server = Server(db_path, study=study_file, env=env, log=tmp / "server.log").start()
    peak = {"server": 0, "bots": 0}
    cpu0 = _cpu_seconds(server.proc.pid)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak["server"] = max(peak["server"], server.rss_kb())
                peak["bots"] = max(peak["bots"], _tree_rss_kb(os.getpid(), {server.proc.pid}))
            except OSError:
                pass
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        runner = wsbot.run_bots if args.driver == "ws" else bots.run_bots
        results = asyncio.run(runner(server.url, args.n, think=args.think, seed=args.seed,
                                     timeout=args.timeout, ramp=args.ramp))
    finally:
        elapsed = time.perf_counter() - t0
        server_cpu = _cpu_seconds(server.proc.pid) - cpu0
        stop.set()
        sampler.join()
        server.stop()

    print(bots.summary(results, elapsed))
    steps = [s for r in results for k, s in r.latencies if k not in ("load", "reload")]
    check = verify(db_path, study, results)
    counts = list(check["groups"].values())
    print(f"\ndriver {args.driver}, bots {args.n}, think {args.think} s, machine cores {os.cpu_count()}, "
          f"load average at the end {os.getloadavg()[0]:.1f}" + (f", server env {env}" if env else ""))
    print(f"step latency p50 {statistics.median(steps):.3f} s, p95 {bots.percentile(steps, 95):.3f} s, "
          f"max {max(steps):.3f} s over {len(steps)} steps")
    print(f"answers lost {check['lost']}, participants with duplicated answers {check['duplicated']}")
    print(f"completed per group {check['groups']} (spread {max(counts) - min(counts) if counts else 'n/a'})")
    print(f"peak RSS: server {peak['server'] / 1024:.0f} MiB, bots ({'Chromium + ' if args.driver == 'browser' else ''}"
          f"driver) {peak['bots'] / 1024:.0f} MiB")
    n_runs = sum(len(r.latencies) for r in results)
    print(f"server CPU {server_cpu:.1f} s over {elapsed:.0f} s ({server_cpu / elapsed:.2f} cores), "
          f"{1000 * server_cpu / max(n_runs, 1):.0f} ms per script run ({n_runs} runs)")
    ok = (all(r.completed for r in results) and check["lost"] == 0 and check["duplicated"] == 0
          and counts and max(counts) - min(counts) <= 1)
    print("OK" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
