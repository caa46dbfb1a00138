"""How long `vp prolific sync` and `review --apply` take for a large study, against the loopback fake.

Builds a database of N participants (one in ten failing two attention checks, one in fifty
with no data at all) and the matching Prolific study in ``tests/prolific_server.py``
(Prolific's default page size of 20, so N / 20 pages), then times, in this process:

1. ``vp prolific sync`` (all pages, the demographic export, the reconciliation and the plan);
2. ``vp prolific review --apply`` (one bulk approval, one transition per rejection, and the
   re-read after sending);
3. the same ``--apply`` again, which must send nothing (the POST count is printed).

Prints seconds per step, requests per step and the peak memory of the process.

Run: ``.venv/bin/python benchmarks/prolific_review.py [--n 2000]``
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from prolific_server import ProlificServer  # noqa: E402
from test_prolific import PSTUDY, TOKEN, add_person, pid, small_study  # noqa: E402

from collection_app import store  # noqa: E402
from collection_app.study import load_study  # noqa: E402
from valueportrait.cli import main  # noqa: E402
from valueportrait.storage import open_db  # noqa: E402


def build(folder: Path, n: int, server: ProlificServer) -> Path:
    study = load_study(small_study(folder / "study"))
    db_path = folder / "study.db"
    fake = server.fake
    fake.add_study(PSTUDY)
    with open_db(db_path) as db, db.transaction():
        store.sync_study(db, study)
        for i in range(n):
            person = pid(f"p{i:06d}")
            if i % 50 == 49:
                fake.add_submission(PSTUDY, person)  # no data here at all
                continue
            failed = 2 if i % 10 == 9 else 0
            session = fake.add_submission(PSTUDY, person, study_code="FAILCODE1" if failed else "GOODCODE1")
            add_person(db, study, person, session=session, failed=failed, minutes=8 + i % 7)
    return db_path


def timed(label: str, args: list[str], server: ProlificServer) -> None:
    before = len(server.fake.requests)
    posts_before = sum(r[0] == "POST" and "demographic" not in r[1] for r in server.fake.requests)
    t0 = time.perf_counter()
    with redirect_stdout(io.StringIO()):
        status = main(["prolific", *args, "--base-url", server.url])
    seconds = time.perf_counter() - t0
    requests = len(server.fake.requests) - before
    posts = sum(r[0] == "POST" and "demographic" not in r[1] for r in server.fake.requests) - posts_before
    print(f"{label:<26} {seconds:7.2f} s   exit {status}   {requests:5d} requests, {posts:4d} of them changes")


def run(n: int) -> None:
    os.environ["PROLIFIC_TOKEN"] = TOKEN
    with tempfile.TemporaryDirectory() as tmp, ProlificServer(token=TOKEN, max_page_size=20) as server:
        t0 = time.perf_counter()
        db = build(Path(tmp), n, server)
        print(f"{n} participants, {len(server.fake.submissions)} submissions; built in {time.perf_counter() - t0:.1f} s")
        common = ["--db", str(db), "--prolific-study", PSTUDY]
        out = ["--out", str(Path(tmp) / "plan.csv")]
        timed("sync", ["sync", *common], server)
        timed("review --apply", ["review", *common, *out, "--apply"], server)
        timed("review --apply (again)", ["review", *common, *out, "--apply"], server)
        fake = server.fake
        print(f"approved {sum(s['status'] == 'APPROVED' for s in fake.submissions.values())}, rejected "
              f"{sum(s['status'] == 'REJECTED' for s in fake.submissions.values())}; most transition requests for one "
              f"submission: {max((len(v) for v in fake.transition_requests.values()), default=0)}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    run(parser.parse_args().n)
