"""Load benchmark of the collection app: many concurrent bots take the default study.

Starts `vp app` on a fresh database, runs N bots (headless Chromium contexts in one browser)
at the default think time, then checks that nothing was lost or duplicated (every answer a
bot saw acknowledged is in the database, each participant has exactly the answers the study
asks) and that groups are balanced within one participant. Prints step latency (p50, p95,
max), server peak RSS, bots' peak RSS (Chromium processes plus this process).

    python benchmarks/app_load.py --n 50 --think 3
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

from collection_app import bots, pages, store
from collection_app.study import load_study
from collection_app.testing import Server


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


def verify(db_path: Path, study, results) -> dict:
    lost = dup = 0
    with open_db(db_path) as db:
        for r in results:
            prog = store.load_progress(db, study, r.participant_id)
            steps = pages.question_steps(study, prog)
            for index, given in r.answers.items():
                step = steps[index][1]
                if step["kind"] in ("pvq21", "bfi10"):
                    rows = db.query("SELECT answer FROM instrument_answers WHERE participant_id=? AND instrument=? AND item_id=?",
                                    (r.participant_id, step["kind"], step["item_id"]))
                elif step["kind"] == "check":
                    rows = db.query("SELECT answer FROM attention_checks WHERE participant_id=? AND check_id=?",
                                    (r.participant_id, step["check"]))
                else:
                    portrait, option = step["key"].split("-")
                    rows = db.query("SELECT rating FROM ratings WHERE participant_id=? AND portrait_id=? AND option_id=?",
                                    (r.participant_id, portrait, int(option)))
                lost += [row[0] for row in rows] != [given["answer"]]
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
    args = ap.parse_args(argv)

    study = load_study()
    tmp = Path(tempfile.mkdtemp(prefix="vp_load_"))
    db_path = tmp / "study.db"
    server = Server(db_path, log=tmp / "server.log").start()
    peak = {"server": 0, "bots": 0}
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
        results = asyncio.run(bots.run_bots(server.url, args.n, think=args.think, seed=args.seed,
                                            timeout=args.timeout, ramp=args.ramp))
    finally:
        elapsed = time.perf_counter() - t0
        stop.set()
        sampler.join()
        server.stop()

    print(bots.summary(results, elapsed))
    steps = [s for r in results for k, s in r.latencies if k not in ("load", "reload")]
    check = verify(db_path, study, results)
    counts = list(check["groups"].values())
    print(f"\nbots {args.n}, think {args.think} s, machine cores {os.cpu_count()}")
    print(f"step latency p50 {statistics.median(steps):.3f} s, p95 {bots.percentile(steps, 95):.3f} s, "
          f"max {max(steps):.3f} s over {len(steps)} steps")
    print(f"answers lost {check['lost']}, participants with duplicated answers {check['duplicated']}")
    print(f"completed per group {check['groups']} (spread {max(counts) - min(counts) if counts else 'n/a'})")
    print(f"peak RSS: server {peak['server'] / 1024:.0f} MiB, bots (Chromium + driver) {peak['bots'] / 1024:.0f} MiB")
    ok = (all(r.completed for r in results) and check["lost"] == 0 and check["duplicated"] == 0
          and counts and max(counts) - min(counts) <= 1)
    print("OK" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
