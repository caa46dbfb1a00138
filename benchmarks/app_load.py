"""Load benchmark of the collection app: many concurrent bots take the default study.

Starts `vp app` on a fresh database, runs N bots at the default think time (``--driver ws``:
light bots that speak Streamlit's websocket protocol, the default; ``--driver browser``:
headless Chromium contexts in one browser, about fifteen fit on two cores), then checks that
nothing was lost or duplicated (every answer a bot saw acknowledged is in the database, each participant has exactly the answers the study
asks) and that groups are balanced within one participant. Prints step latency (p50, p95,
max), server peak RSS and CPU, bots' peak RSS (this process, plus Chromium's when it runs).

With ``--processes K`` it starts K `vp app` processes on the one database (ports side by
side, as behind a reverse proxy with sticky sessions) and sends bot i to process i mod K:
what a study needs past one process's capacity (one Streamlit process runs its scripts
under one interpreter lock, so it uses about one core however many it is given).

    python benchmarks/app_load.py --n 50 --think 3
    python benchmarks/app_load.py --n 400 --think 3 --processes 2
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


def run_load(n: int, args, processes: int) -> dict:
    """One load run: `n` bots over `processes` `vp app` processes on a fresh database; prints its
    figures and returns them."""
    env = dict(item.split("=", 1) for item in args.env)
    tmp = Path(tempfile.mkdtemp(prefix="vp_load_"))
    study_file = _study_for(n, tmp)
    study = load_study(study_file)
    db_path = tmp / "study.db"
    servers = []
    try:
        for k in range(processes):
            servers.append(Server(db_path, study=study_file, env=env, log=tmp / f"server{k}.log").start())
    except BaseException:
        for server in servers:
            server.stop()
        raise
    pids = {server.proc.pid for server in servers}
    peak = {"server": 0, "bots": 0}
    cpu0 = sum(_cpu_seconds(pid) for pid in pids)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak["server"] = max(peak["server"], sum(server.rss_kb() for server in servers))
                peak["bots"] = max(peak["bots"], _tree_rss_kb(os.getpid(), pids))
            except OSError:
                pass
            stop.wait(0.5)

    async def run_all():
        # Bot i goes to process i mod K (sticky: a bot keeps its process, reloads included);
        # each process's bots have their own seed and arrive over the same ramp.
        runner = wsbot.run_bots if args.driver == "ws" else bots.run_bots
        shares = [len(range(k, n, processes)) for k in range(processes)]
        parts = await asyncio.gather(*(
            runner(server.url, share, think=args.think, seed=args.seed + k, timeout=args.timeout, ramp=args.ramp)
            for k, (server, share) in enumerate(zip(servers, shares)) if share))
        return [r for part in parts for r in part]

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        results = asyncio.run(run_all())
    finally:
        elapsed = time.perf_counter() - t0
        server_cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu0
        stop.set()
        sampler.join()
        for server in servers:
            server.stop()

    print(bots.summary(results, elapsed))
    steps = [s for r in results for k, s in r.latencies if k not in ("load", "reload")]
    check = verify(db_path, study, results)
    counts = list(check["groups"].values())
    n_runs = sum(len(r.latencies) for r in results)
    figures = dict(
        n=n, processes=processes, completed=sum(r.completed for r in results),
        p50=statistics.median(steps) if steps else float("nan"),
        p95=bots.percentile(steps, 95) if steps else float("nan"), max=max(steps, default=float("nan")),
        lost=check["lost"], duplicated=check["duplicated"], spread=max(counts) - min(counts) if counts else None,
        cores=server_cpu / elapsed, ms_per_run=1000 * server_cpu / max(n_runs, 1),
        rss=peak["server"] / 1024, load=os.getloadavg()[0])
    figures["ok"] = (figures["completed"] == n and check["lost"] == 0 and check["duplicated"] == 0
                     and figures["spread"] is not None and figures["spread"] <= 1)
    print(f"\ndriver {args.driver}, bots {n}, think {args.think} s, vp app processes {processes}, "
          f"machine cores {os.cpu_count()}, "
          f"load average at the end {figures['load']:.1f}" + (f", server env {env}" if env else ""))
    print(f"step latency p50 {figures['p50']:.3f} s, p95 {figures['p95']:.3f} s, "
          f"max {figures['max']:.3f} s over {len(steps)} steps")
    print(f"answers lost {check['lost']}, participants with duplicated answers {check['duplicated']}")
    print(f"completed per group {check['groups']} (spread {figures['spread'] if counts else 'n/a'})")
    print(f"peak RSS: server{'s' if processes > 1 else ''} {figures['rss']:.0f} MiB, "
          f"bots ({'Chromium + ' if args.driver == 'browser' else ''}driver) {peak['bots'] / 1024:.0f} MiB")
    print(f"server CPU {server_cpu:.1f} s over {elapsed:.0f} s ({figures['cores']:.2f} cores), "
          f"{figures['ms_per_run']:.0f} ms per script run ({n_runs} runs)")
    print("OK" if figures["ok"] else "NOT OK")
    return figures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="50", help="bots; a comma-separated list runs one load after another, "
                                               "e.g. 50,100,200,400, and ends with a table")
    ap.add_argument("--think", type=float, default=3.0)
    ap.add_argument("--ramp", type=float, default=10.0, help="seconds over which bots arrive")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--driver", choices=("ws", "browser"), default="ws")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment for the server, e.g. STREAMLIT_RUNNER_POST_SCRIPT_GC=false")
    ap.add_argument("--processes", default="1",
                    help="vp app processes sharing the database; a comma-separated list runs each load with each")
    args = ap.parse_args(argv)
    loads = [int(x) for x in args.n.split(",")]
    process_counts = [int(x) for x in args.processes.split(",")]
    rows = []
    for processes in process_counts:
        for n in loads:
            print(f"\n=== {n} bots, {processes} vp app process{'es' if processes > 1 else ''} ===", flush=True)
            rows.append(run_load(n, args, processes))
    if len(rows) > 1:
        print(f"\n{'bots':>5} {'procs':>5} {'done':>5} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'lost':>5} {'dup':>4} "
              f"{'spread':>6} {'cores':>6} {'ms/run':>7} {'RSS MiB':>8} {'load':>5}")
        for r in rows:
            print(f"{r['n']:>5} {r['processes']:>5} {r['completed']:>5} {r['p50']:>7.3f} {r['p95']:>7.3f} {r['max']:>7.3f} "
                  f"{r['lost']:>5} {r['duplicated']:>4} {r['spread'] if r['spread'] is not None else '-':>6} "
                  f"{r['cores']:>6.2f} {r['ms_per_run']:>7.0f} {r['rss']:>8.0f} {r['load']:>5.1f}")
    for processes in process_counts:
        held = [r["n"] for r in rows if r["processes"] == processes and r["ok"] and r["p95"] < 1.0]
        print(f"largest load held by {processes} process{'es' if processes > 1 else ''} (all complete, p95 < 1 s, "
              f"0 lost or duplicated, groups within 1): {max(held) if held else 'none of those tried'}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
