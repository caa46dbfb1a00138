"""Helpers to run the real app in a subprocess (tests, benchmarks, a researcher's pilot)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from valueportrait.storage import open_db


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`vp app` as a child process; `kill()` is kill -9, `start()` brings it back on the same port."""

    def __init__(self, db: Path, port: int | None = None, study: Path | None = None, env: dict | None = None,
                 log: Path | None = None):
        self.db, self.study, self.port = Path(db), study, port or free_port()
        self.env = dict(os.environ, **(env or {}))
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Server:
        cmd = [sys.executable, "-m", "valueportrait.cli", "app", "--db", str(self.db), "--port", str(self.port),
               "--address", "127.0.0.1"]
        if self.study:
            cmd += ["--study", str(self.study)]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vp app exited with {self.proc.returncode} (log: {self.log})")
            try:
                if httpx.get(self.url + "/_stcore/health", timeout=1).text.strip() == "ok":
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"vp app did not answer on {self.url} within {timeout} s")

    def kill(self) -> None:
        """kill -9: no shutdown code runs, exactly like a crash."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_kb(self) -> int:
        """Resident memory of the server process (Linux), in kB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


@contextlib.contextmanager
def serve(db: Path, study: Path | None = None, **kw) -> Iterator[Server]:
    server = Server(db, study=study, **kw).start()
    try:
        yield server
    finally:
        server.stop()


def write_small_study(folder: Path, *, items: list[dict], target: int = 50, groups: int = 1,
                      checks: list[dict] | None = None, completion: dict | None = None, **extra) -> Path:
    """A study file over the given queries (tagged shape), split into `groups` groups; `extra`
    sets (or replaces) any other top-level field of the study file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.json").write_text(json.dumps(items))
    ids = [q["portrait_id"] for q in items]
    spec = {
        "study_id": "test-study", "title": "A test study", "items_file": "items.json",
        "groups": [{"id": f"G{g + 1}", "portraits": ids[g::groups], "target": target} for g in range(groups)],
        "attention_checks": checks if checks is not None else [{"id": "ac_pvq", "after": 3}, {"id": "ac_item_1", "after": 1}],
        "completion": completion or {"code": "TESTCODE1"},
        **extra,
    }
    path = folder / "study.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def kill_during(server: Server, db_path: Path, play, *, after_answers: int, wait: float = 60,
                down: float = 1.0, finish: float = 300) -> int:
    """Run `play()` in a thread; once `after_answers` instrument answers are stored, kill -9
    the server, restart it on the same database and port, and wait for `play` to end.

    Returns the number of answers (instrument answers + ratings) stored at the kill.
    """
    thread = threading.Thread(target=play)
    thread.start()
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with open_db(db_path) as db:
                if db.count("instrument_answers") >= after_answers:
                    break
            time.sleep(0.1)
        server.kill()
        with open_db(db_path) as db:
            stored = db.count("instrument_answers") + db.count("ratings")
        time.sleep(down)
        server.start()
        thread.join(timeout=finish)
        if thread.is_alive():
            raise AssertionError(f"the bots did not finish within {finish} s of the restart")
    finally:
        server.stop()
    return stored


def acknowledged(given: dict) -> list:
    """The answers a bot saw acknowledged on one step (one, or one per response side by side)."""
    return list(given["answers"]) if "answers" in given else [given["answer"]]


def stored_answers(db, participant_id: str, step: dict) -> list:
    """Every answer stored for one question step of a participant (a PVQ/BFI item, an
    attention check or an item rating; a side-by-side page: its responses in order): exactly
    :func:`acknowledged` when nothing was lost or doubled."""
    kind = step["kind"]
    if kind == "query_ratings":
        return [a for sub in step["subs"] for a in stored_answers(db, participant_id, sub)]
    if kind in ("pvq21", "bfi10"):
        rows = db.query("SELECT answer FROM instrument_answers WHERE participant_id=? AND instrument=? AND item_id=?",
                        (participant_id, kind, step["item_id"]))
    elif kind == "check":
        rows = db.query("SELECT answer FROM attention_checks WHERE participant_id=? AND check_id=?",
                        (participant_id, step["check"]))
    else:
        portrait, option = step["key"].split("-")
        rows = db.query("SELECT rating FROM ratings WHERE participant_id=? AND portrait_id=? AND option_id=?",
                        (participant_id, portrait, int(option)))
    return [row[0] for row in rows]
