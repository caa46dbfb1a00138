"""The answer cache of ``vp run-llm``: one SQLite row per answered question.

A question is keyed by ``(model, persona, portrait_id, option_id, variant, prompt_hash)``;
the prompt hash covers the rendered messages and the settings that shape the answer, so
a changed template or item text is asked afresh. Every answer is committed as it arrives
(WAL journal, ``synchronous=NORMAL``: a committed row survives the process being killed),
so a run that is stopped and started again asks only what is missing. Several processes
may share one cache file: each checks the cache right before asking, and the first answer
stored for a key is kept (``INSERT OR IGNORE``).

Only answers are cached. A question that failed after all retries (network, 5xx) is not
stored, so the next run asks it again; an answer that could not be parsed *is* stored
(with its raw text): the model did answer.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

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
"""

Key = tuple  # (model, persona, portrait_id, option_id, variant, prompt_hash)


class AnswerCache:
    """A small wrapper over one SQLite connection (used from the event-loop thread only)."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 30_000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: each INSERT is its own transaction, committed at once.
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: a commit survives a killed process (only a power cut may lose the last ones).
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
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

    def put(self, key: Key, raw: str | None, value: float | None, attempts: int, latency_s: float | None, backend: str) -> None:
        """Store one answer (committed on return). An answer already stored for the key wins."""
        self.conn.execute(
            "INSERT OR IGNORE INTO answers VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (*key, raw, value, attempts, latency_s, backend, time.time()),
        )

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
