"""The answer cache of ``vp run-llm``: one SQLite row per answered question.

A question is keyed by ``(model, persona, portrait_id, option_id, variant, prompt_hash)``;
the prompt hash covers the rendered messages and the settings that shape the answer, so
a changed template or item text is asked afresh. Every answer is committed as it arrives
(WAL journal, ``synchronous=NORMAL``: a committed row survives the process being killed),
so a run that is stopped and started again asks only what is missing.

Several processes may share one cache file. Right before asking, a run *claims* the
question (``claims`` table, one ``BEGIN IMMEDIATE`` transaction): if it is answered
already, it is not asked; if another live process holds the claim, the run asks the
rest first and then waits for that answer (or for the claim to go stale: its owner died,
or the lease ran out). So two runs never ask the same question twice, and a killed run's
claims do not block the next one. The first answer stored for a key is kept
(``INSERT OR IGNORE``).

Only answers are cached. A question that failed after all retries (network, 5xx) is not
stored, so the next run asks it again; an answer that could not be parsed *is* stored
(with its raw text): the model did answer.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
import uuid
from pathlib import Path

from valueportrait.errors import DATABASES, InputError
from valueportrait.files import check_can_create

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    model TEXT NOT NULL,
    persona TEXT NOT NULL,          -- '' without a persona (NULL would defeat the key)
    portrait_id TEXT NOT NULL,
    option_id INTEGER NOT NULL,
    variant TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    raw TEXT,
    value REAL,                     -- parsed when stored; NULL if unparseable
    attempts INTEGER NOT NULL,
    latency_s REAL,
    backend TEXT NOT NULL,
    answered_at REAL NOT NULL,
    PRIMARY KEY (model, persona, portrait_id, option_id, variant, prompt_hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims (
    model TEXT NOT NULL, persona TEXT NOT NULL, portrait_id TEXT NOT NULL, option_id INTEGER NOT NULL,
    variant TEXT NOT NULL, prompt_hash TEXT NOT NULL,
    host TEXT NOT NULL, pid INTEGER NOT NULL, owner TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (model, persona, portrait_id, option_id, variant, prompt_hash)
) WITHOUT ROWID;
"""

_KEY_WHERE = "model=? AND persona=? AND portrait_id=? AND option_id=? AND variant=? AND prompt_hash=?"


def _alive(host: str, pid: int) -> bool:
    """Whether a claim's owner may still be running (a process on another host is assumed so)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

Key = tuple  # (model, persona, portrait_id, option_id, variant, prompt_hash)


class AnswerCache:
    """A small wrapper over one SQLite connection (used from the event-loop thread only)."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 30_000, lease_s: float = 900.0):
        self.path = Path(path)
        self.lease_s = lease_s
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.owner = uuid.uuid4().hex  # this run (several runs may share a process in tests)
        DATABASES.append(str(self.path))
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder; the answer cache is a file (e.g. {self.path / 'llm_cache.sqlite'})")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_can_create(self.path)
        # Autocommit mode: each INSERT is its own transaction, committed at once.
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._open(busy_timeout_ms)
        except BaseException as exc:
            self.conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                hint = " (not an SQLite file: a damaged cache, or another file?)" if "not a database" in str(exc) else ""
                raise InputError(f"{self.path}: cannot use it as the answer cache: {exc}{hint}") from None
            raise

    def _open(self, busy_timeout_ms: int) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        # Another run may be creating the tables this moment (one of them may be missing yet):
        # only a file with none of ours is someone else's.
        if tables and not tables & {"answers", "claims"}:
            raise InputError(f"{self.path}: not an answer cache of vp run-llm (it holds other tables: "
                             f"{', '.join(sorted(tables)[:5])}); choose another --cache")
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # Switching to WAL ignores the busy timeout when two runs open a new file at once: retry.
        deadline = time.monotonic() + busy_timeout_ms / 1000
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
                self.conn.executescript(SCHEMA)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        # WAL + NORMAL: a commit survives a killed process (only a power cut may lose the last ones).
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("DELETE FROM claims WHERE expires < ?", (time.time(),))

    def close(self) -> None:
        try:
            self.release_all()
        finally:
            self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def done_keys(self, model: str, persona: str) -> set[Key]:
        """Keys of every answer stored for one model and persona."""
        rows = self.conn.execute(
            "SELECT model, persona, portrait_id, option_id, variant, prompt_hash FROM answers "
            "WHERE model = ? AND persona = ?",
            (model, persona),
        )
        return {tuple(r) for r in rows}

    def has(self, key: Key) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM answers WHERE model=? AND persona=? AND portrait_id=? AND option_id=? "
            "AND variant=? AND prompt_hash=?",
            key,
        ).fetchone()
        return row is not None

    def claim(self, key: Key) -> str:
        """Try to take a question before asking it: ``"mine"``, ``"done"`` or ``"taken"``.

        ``"taken"``: another live run holds an unexpired claim on it. A stale claim (dead
        owner or expired lease) is taken over.
        """
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                f"SELECT EXISTS (SELECT 1 FROM answers WHERE {_KEY_WHERE}), "
                f"(SELECT host || char(31) || pid || char(31) || owner || char(31) || expires FROM claims WHERE {_KEY_WHERE})",
                (*key, *key),
            ).fetchone()
            if row[0]:
                conn.execute("COMMIT")
                return "done"
            if row[1] is not None:
                host, pid, owner, expires = row[1].split("\x1f")
                if owner != self.owner and float(expires) > time.time() and _alive(host, int(pid)):
                    conn.execute("COMMIT")
                    return "taken"
            conn.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (*key, self.host, self.pid, self.owner, time.time() + self.lease_s))
            conn.execute("COMMIT")
            return "mine"
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def release(self, key: Key) -> None:
        """Give up a claim without an answer (the question failed; another run may try)."""
        self.conn.execute(f"DELETE FROM claims WHERE {_KEY_WHERE} AND owner=?", (*key, self.owner))

    def release_all(self) -> None:
        """Drop every claim of this run (at its end, however it ends)."""
        self.conn.execute("DELETE FROM claims WHERE owner=?", (self.owner,))

    def put(self, key: Key, raw: str | None, value: float | None, attempts: int, latency_s: float | None, backend: str) -> None:
        """Store one answer, committed on return. An answer already stored for the key wins.

        The question's claim stays until the run ends (:meth:`release_all`): an answered
        question is never asked again whatever its claim says, and one statement per
        answer keeps the cache cheap at hundreds of answers a second.
        """
        self.conn.execute("INSERT OR IGNORE INTO answers VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                          (*key, raw, value, attempts, latency_s, backend, time.time()))

    def get_many(self, model: str, persona: str) -> dict[Key, dict]:
        """Every stored answer of one model and persona, by key."""
        cur = self.conn.execute(
            "SELECT model, persona, portrait_id, option_id, variant, prompt_hash, raw, value, attempts, "
            "latency_s, backend, answered_at FROM answers WHERE model = ? AND persona = ?",
            (model, persona),
        )
        out = {}
        for row in cur:
            out[tuple(row[:6])] = {
                "raw": row[6], "value": row[7], "attempts": row[8], "latency_s": row[9],
                "backend": row[10], "answered_at": row[11],
            }
        return out
