"""The study database: one SQLite file that the app, the importer, the simulator and the
analysis all go through.

Concurrency: WAL journal, a busy timeout, and every write in a ``BEGIN IMMEDIATE``
transaction, which takes the write lock up front, so two writers can never deadlock on a
read-to-write upgrade; they queue behind the busy timeout instead.

Idempotence: every answer table is keyed by who answered what, and saving is an upsert,
so the same answer saved twice is stored once (a double click, a retried request, a bot
that resends after a server restart).

Schema versions: ``PRAGMA user_version`` holds the version; ``MIGRATIONS[v]`` upgrades a
database from version v to v+1, inside one transaction.
"""

from __future__ import annotations

import contextlib
import json
import operator
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `vp import-release` and the app need neither (pandas alone is ~0.4 s)
    import pandas as pd
    import sqlite_utils

from valueportrait.errors import DATABASES, InputError
from valueportrait.files import check_can_create

SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 30_000

# Tables, keys and meaning. Timestamps are ISO 8601 UTC strings; `seconds` is time taken.
SCHEMA_V1 = """
CREATE TABLE studies (
    study_id TEXT PRIMARY KEY,
    title TEXT,
    source TEXT NOT NULL,            -- 'app', 'release' or 'simulation'
    config_json TEXT,                -- the study definition / import or simulation settings
    created_at TEXT NOT NULL
);
CREATE TABLE item_groups (
    study_id TEXT NOT NULL REFERENCES studies(study_id),
    group_id TEXT NOT NULL,
    position INTEGER NOT NULL,       -- order in the study (1-based)
    target_n INTEGER,                -- participants wanted
    PRIMARY KEY (study_id, group_id)
);
CREATE TABLE items (
    study_id TEXT NOT NULL,
    portrait_id TEXT NOT NULL,       -- the query (4 digits in the release)
    option_id INTEGER NOT NULL,      -- one of its candidate responses
    group_id TEXT NOT NULL,
    source TEXT,                     -- 'advice' (title + text) or 'chat' (text only)
    title TEXT,
    query_text TEXT NOT NULL,
    response TEXT NOT NULL,
    meta_json TEXT,                  -- e.g. the simulator's true loadings, the value it was written for
    PRIMARY KEY (study_id, portrait_id, option_id),
    FOREIGN KEY (study_id, group_id) REFERENCES item_groups(study_id, group_id)
);
CREATE TABLE participants (
    study_id TEXT NOT NULL,
    participant_id TEXT NOT NULL,    -- the platform id (Prolific PID) or a test id
    age INTEGER,
    gender TEXT,
    education TEXT,
    politics TEXT,                   -- political orientation
    country TEXT,
    demographics_json TEXT,          -- anything else the study asked
    created_at TEXT NOT NULL,
    PRIMARY KEY (study_id, participant_id)
);
CREATE TABLE participations (
    study_id TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    status TEXT NOT NULL,            -- 'active', 'completed', 'declined', 'timed_out', 'returned'
    platform_study_id TEXT,
    platform_session_id TEXT,
    test_mode INTEGER NOT NULL DEFAULT 0,
    item_order_json TEXT,            -- the participant's random item order, as stored
    started_at TEXT,
    last_seen_at TEXT,
    completed_at TEXT,
    completion_code TEXT,
    PRIMARY KEY (study_id, participant_id, group_id)
);
CREATE TABLE instrument_answers (
    study_id TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    instrument TEXT NOT NULL,        -- 'pvq21' or 'bfi10'
    item_id INTEGER NOT NULL,
    answer INTEGER NOT NULL,
    seconds REAL,
    answered_at TEXT,
    PRIMARY KEY (study_id, participant_id, instrument, item_id)
);
CREATE TABLE scores (                -- published scores where raw answers are not available (the release)
    study_id TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    family TEXT NOT NULL,            -- 'pvq', 'higher_pvq', 'bfi'
    dimension TEXT NOT NULL,
    score REAL NOT NULL,
    PRIMARY KEY (study_id, participant_id, family, dimension)
);
CREATE TABLE ratings (
    study_id TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    portrait_id TEXT NOT NULL,
    option_id INTEGER NOT NULL,
    group_id TEXT NOT NULL,
    rating INTEGER NOT NULL,         -- 1..6, 6 = very much like me
    position INTEGER,                -- where in the participant's order it was shown
    seconds REAL,
    answered_at TEXT,
    PRIMARY KEY (study_id, participant_id, portrait_id, option_id)
);
CREATE TABLE attention_checks (
    study_id TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    check_id TEXT NOT NULL,
    expected INTEGER NOT NULL,
    answer INTEGER NOT NULL,
    passed INTEGER NOT NULL,
    seconds REAL,
    answered_at TEXT,
    PRIMARY KEY (study_id, participant_id, check_id)
);
CREATE TABLE llm_answers (           -- LLM answers imported with a release
    study_id TEXT NOT NULL,
    model TEXT NOT NULL,
    portrait_id TEXT NOT NULL,
    option_id INTEGER NOT NULL,
    variant TEXT NOT NULL,
    answer REAL,
    PRIMARY KEY (study_id, model, portrait_id, option_id, variant)
);
CREATE TABLE events (                -- declines and other things worth an audit trail
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id TEXT,
    participant_id TEXT,
    kind TEXT NOT NULL,
    detail_json TEXT,
    at TEXT NOT NULL
);
CREATE INDEX ratings_by_group ON ratings (study_id, group_id);
CREATE INDEX participations_by_group ON participations (study_id, group_id, status);
"""

#: Tables every study database has (from the first schema on): a file at a schema version
#: above 0 without them is not ours.
CORE_TABLES = ("studies", "items", "participants", "ratings")

# Prolific (`vp prolific`, collection_app/prolific.py): what the platform says, and every
# state-changing request we make, written down before it is sent (the crash guard). The API
# token is never stored.
SCHEMA_V2_PROLIFIC = """
CREATE TABLE prolific_studies (          -- our study and the Prolific study `vp prolific create` made for it
    study_id TEXT PRIMARY KEY,
    prolific_study_id TEXT UNIQUE,       -- NULL between sending the create request and reading its answer
    internal_name TEXT NOT NULL,         -- carries a one-off marker, so a create whose answer was lost is found again
    status TEXT,                         -- Prolific's study status as last seen (UNPUBLISHED, ACTIVE, ...)
    request_json TEXT NOT NULL,          -- the body sent to create it
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE prolific_submissions (      -- every submission of a Prolific study, as of the last sync
    prolific_study_id TEXT NOT NULL,
    submission_id TEXT NOT NULL,         -- Prolific's SESSION_ID
    participant_id TEXT NOT NULL,        -- Prolific's PROLIFIC_PID
    status TEXT NOT NULL,                -- ACTIVE, AWAITING REVIEW, APPROVED, REJECTED, RETURNED, TIMED-OUT, ...
    study_code TEXT,                     -- the completion code the participant entered
    started_at TEXT,
    completed_at TEXT,
    time_taken REAL,                     -- seconds
    raw_json TEXT NOT NULL,
    synced_at TEXT NOT NULL,
    PRIMARY KEY (prolific_study_id, submission_id)
);
CREATE TABLE prolific_demographics (     -- Prolific's demographic export, one row per submission
    prolific_study_id TEXT NOT NULL,
    submission_id TEXT NOT NULL,
    participant_id TEXT,
    fields_json TEXT NOT NULL,           -- the export's columns as they came
    synced_at TEXT NOT NULL,
    PRIMARY KEY (prolific_study_id, submission_id)
);
CREATE TABLE prolific_actions (          -- one review decision per submission, ever: intended -> sent -> confirmed
    prolific_study_id TEXT NOT NULL,
    submission_id TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    action TEXT NOT NULL,                -- APPROVE or REJECT
    rejection_category TEXT,
    message TEXT,                        -- what a rejected participant is told
    reason TEXT NOT NULL,                -- why we decided it
    request TEXT,                        -- 'bulk-approve <batch>' or 'transition'
    state TEXT NOT NULL,                 -- intended, sent, confirmed, refused, superseded
    detail TEXT,                         -- Prolific's answer when refused, or what superseded it
    intended_at TEXT NOT NULL,
    sent_at TEXT,
    confirmed_at TEXT,
    PRIMARY KEY (prolific_study_id, submission_id)
);
CREATE TABLE prolific_bonus_batches (    -- one bonus CSV = one batch (paying is not idempotent on Prolific)
    prolific_study_id TEXT NOT NULL,
    batch_key TEXT NOT NULL,             -- sha256 of the validated rows: the same file is the same batch
    csv_bonuses TEXT NOT NULL,           -- `participant_id,amount` lines as sent
    total_amount TEXT NOT NULL,          -- sum of the amounts, study currency
    bulk_id TEXT,                        -- Prolific's bulk bonus payment id, once set up
    state TEXT NOT NULL,                 -- intended, set_up, paying, paid, refused
    detail TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (prolific_study_id, batch_key)
);
CREATE TABLE prolific_syncs (            -- the last sync of a Prolific study: what the admin page shows
    prolific_study_id TEXT PRIMARY KEY,
    study_id TEXT NOT NULL,
    synced_at TEXT NOT NULL,
    submissions INTEGER NOT NULL,
    reconciliation_json TEXT NOT NULL,
    plan_json TEXT NOT NULL
);
CREATE INDEX prolific_submissions_by_participant ON prolific_submissions (prolific_study_id, participant_id)
"""

# Version 3, for the collection app: waves of one project, a record of what each participant
# saw (every version of the study definition, hash-addressed), answers changed with Back kept
# as revisions, and the pages without a question that a participant has read.
SCHEMA_V3_APP = """
ALTER TABLE studies ADD COLUMN project TEXT;   -- waves of one project share it (default: the study id)
UPDATE studies SET project = study_id WHERE project IS NULL;
CREATE TABLE study_versions (
    study_id TEXT NOT NULL,
    version TEXT NOT NULL,           -- sha256 of definition_json
    definition_json TEXT NOT NULL,   -- all a participant could see: settings, item texts, wording, scales, texts
    created_at TEXT NOT NULL,
    PRIMARY KEY (study_id, version)
);
ALTER TABLE participations ADD COLUMN study_version TEXT;   -- the version the participation started under
CREATE TABLE participation_versions (   -- every version a participation saw pages of
    study_id TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    version TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    PRIMARY KEY (study_id, participant_id, version)
);
ALTER TABLE instrument_answers ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ratings ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attention_checks ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
CREATE TABLE answer_revisions (      -- an answer as it was before the participant changed it (Back)
    revision_id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    kind TEXT NOT NULL,              -- 'pvq21', 'bfi10', 'check' or 'rating'
    item TEXT NOT NULL,              -- item id, check id, or 'portrait-option'
    revision INTEGER NOT NULL,       -- its revision number (0 = the first answer)
    answer INTEGER NOT NULL,
    seconds REAL,
    answered_at TEXT,
    replaced_at TEXT NOT NULL
);
CREATE TABLE page_views (            -- pages without a question (introductions, a query before its responses)
    study_id TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    page TEXT NOT NULL,
    seconds REAL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (study_id, participant_id, page)
);
CREATE INDEX participations_by_participant ON participations (participant_id);
CREATE INDEX revisions_by_participant ON answer_revisions (study_id, participant_id)
"""

#: MIGRATIONS[v] takes a database at schema version v to v + 1.
MIGRATIONS: dict[int, str] = {0: SCHEMA_V1, 1: SCHEMA_V2_PROLIFIC, 2: SCHEMA_V3_APP}

#: Primary keys of the tables answers are upserted into.
KEYS: dict[str, tuple[str, ...]] = {
    "studies": ("study_id",),
    "item_groups": ("study_id", "group_id"),
    "items": ("study_id", "portrait_id", "option_id"),
    "participants": ("study_id", "participant_id"),
    "participations": ("study_id", "participant_id", "group_id"),
    "instrument_answers": ("study_id", "participant_id", "instrument", "item_id"),
    "scores": ("study_id", "participant_id", "family", "dimension"),
    "ratings": ("study_id", "participant_id", "portrait_id", "option_id"),
    "attention_checks": ("study_id", "participant_id", "check_id"),
    "llm_answers": ("study_id", "model", "portrait_id", "option_id", "variant"),
    "prolific_studies": ("study_id",),
    "prolific_submissions": ("prolific_study_id", "submission_id"),
    "prolific_demographics": ("prolific_study_id", "submission_id"),
    "prolific_actions": ("prolific_study_id", "submission_id"),
    "prolific_bonus_batches": ("prolific_study_id", "batch_key"),
    "prolific_syncs": ("prolific_study_id",),
    "study_versions": ("study_id", "version"),
    "participation_versions": ("study_id", "participant_id", "version"),
    "page_views": ("study_id", "participant_id", "page"),
}


def sql_statements(script: str) -> list[str]:
    """The statements of an SQL script, in order.

    A semicolon ends a statement only where SQLite itself would end one
    (``sqlite3.complete_statement``): one inside a comment or a string literal does not.
    """
    statements, current = [], ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            statements.append(current)
            current = ""
    rest = current[:-1]  # the ';' added after the last piece
    if rest.strip():
        statements.append(rest)
    return statements


def now() -> str:
    """The current time as an ISO 8601 UTC string (the database's timestamp format)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StudyDB:
    """A connection to the study database. One per thread (SQLite connections are not shared).

    >>> db = StudyDB(":memory:")
    >>> with db.transaction():
    ...     _ = db.upsert("studies", [{"study_id": "s", "source": "app", "created_at": now()}])
    >>> db.count("studies")
    1
    """

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path) if str(path) != ":memory:" else None
        if self.path is not None and str(self.path) not in DATABASES:  # (a server opens it thousands of times)
            DATABASES.append(str(self.path))
            if self.path.is_dir():
                raise InputError(f"{self.path}: is a folder; the study database is a file (e.g. {self.path / 'study.db'})")
            if readonly and not self.path.exists():
                raise InputError(f"{self.path}: no such database (run `vp import-release` or collect data first)")
            if not readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                check_can_create(self.path)
        target = f"file:{self.path}?mode=ro" if readonly else str(path)
        self.conn = None
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
            self.conn = sqlite3.connect(target, uri=readonly, timeout=BUSY_TIMEOUT_MS / 1000,
                                        isolation_level=None, check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._check_schema(readonly)
            if not readonly:
                if self.path is not None:
                    self.conn.execute("PRAGMA journal_mode = WAL")
                # In WAL, NORMAL still never loses a committed transaction to an application
                # crash (kill -9); only a power cut can take the last ones back.
                self.conn.execute("PRAGMA synchronous = NORMAL")
                self.migrate()
        except sqlite3.DatabaseError as exc:
            if self.conn is not None:
                self.conn.close()
            hint = (": not an SQLite database (a damaged file, or another kind of file?)" if "not a database" in str(exc)
                    else ": check the path and its permissions" if "unable to open" in str(exc) else "")
            raise InputError(f"{self.path or ':memory:'}: cannot open the study database: {exc}{hint}") from None
        except BaseException:
            if self.conn is not None:
                self.conn.close()
            raise

    def _check_schema(self, readonly: bool) -> None:
        """Refuse a file that is not a study database of this tool's (a foreign or empty one)."""
        where = self.path or ":memory:"
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
        if version > SCHEMA_VERSION:
            raise InputError(f"{where}: database schema version {version} is newer than this tool's ({SCHEMA_VERSION}): "
                             "upgrade valueportrait")
        if version == 0 and tables:
            raise InputError(f"{where}: not a valueportrait study database (it holds other tables: "
                             f"{', '.join(sorted(tables)[:5])}{', ...' if len(tables) > 5 else ''}); choose another --db")
        missing = sorted(set(CORE_TABLES) - tables) if version > 0 else []
        if missing:
            raise InputError(f"{where}: not a valueportrait study database (schema version {version}, but no table "
                             f"{', '.join(missing[:5])})")
        if readonly and version == 0:
            raise InputError(f"{where}: an empty database, with no study in it (run `vp import-release` or collect data first)")

    @property
    def utils(self) -> sqlite_utils.Database:
        """sqlite-utils' view of the same connection (introspection, exports).

        Its write methods nest as savepoints inside our transactions (sqlite-utils 4.x).
        """
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    # -- transactions -----------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[StudyDB]:
        """One write transaction (``BEGIN IMMEDIATE``): all of it is stored, or none of it.

        Nested calls join the outer transaction.
        """
        if self.conn.in_transaction:
            yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            # SQLite may have rolled back already (a full disk, an I/O error): then a second
            # ROLLBACK fails with "no transaction is active" and would hide the real error.
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise
        else:
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                raise

    def migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise InputError(f"{self.path}: database schema version {version} is newer than this tool's ({SCHEMA_VERSION})")
        while version < SCHEMA_VERSION:
            with self.transaction():
                # executescript would commit our transaction: run statements one by one.
                for statement in sql_statements(MIGRATIONS[version]):
                    self.conn.execute(statement)
                version += 1
                self.conn.execute(f"PRAGMA user_version = {version}")

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> StudyDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------
    def upsert(self, table: str, rows: Iterable[Mapping]) -> int:
        """Insert rows, replacing the non-key columns of any row with the same key.

        Runs inside the caller's transaction when there is one, else in its own.
        Returns the number of rows given.
        """
        rows = list(rows)
        if not rows:
            return 0
        key = KEYS[table]
        columns = list(rows[0])
        updates = [c for c in columns if c not in key]
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            + (f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in updates)
               if updates else f"ON CONFLICT ({', '.join(key)}) DO NOTHING")
        )
        with self.transaction():
            self.conn.executemany(sql, _values(rows, columns))
        return len(rows)

    def insert_new(self, table: str, rows: Iterable[Mapping]) -> int:
        """Insert rows whose key is not there yet; keep existing ones as they are. Returns rows added."""
        rows = list(rows)
        if not rows:
            return 0
        columns = list(rows[0])
        before = self.conn.total_changes
        with self.transaction():
            self.conn.executemany(
                f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                _values(rows, columns),
            )
        return self.conn.total_changes - before

    def log_event(self, kind: str, study_id: str | None = None, participant_id: str | None = None, **detail) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO events (study_id, participant_id, kind, detail_json, at) VALUES (?, ?, ?, ?, ?)",
                (study_id, participant_id, kind, json.dumps(detail) if detail else None, now()),
            )

    # -- one-answer helpers for the app (one short transaction each) --------------------
    def save_instrument_answer(self, study_id, participant_id, instrument, item_id, answer, seconds=None) -> None:
        self.upsert("instrument_answers", [dict(study_id=study_id, participant_id=participant_id, instrument=instrument,
                                                item_id=int(item_id), answer=int(answer), seconds=seconds, answered_at=now())])

    def save_rating(self, study_id, participant_id, portrait_id, option_id, group_id, rating, position=None, seconds=None) -> None:
        self.upsert("ratings", [dict(study_id=study_id, participant_id=participant_id, portrait_id=str(portrait_id),
                                     option_id=int(option_id), group_id=group_id, rating=int(rating), position=position,
                                     seconds=seconds, answered_at=now())])

    def save_attention_check(self, study_id, participant_id, check_id, expected, answer, seconds=None) -> None:
        self.upsert("attention_checks", [dict(study_id=study_id, participant_id=participant_id, check_id=check_id,
                                              expected=int(expected), answer=int(answer), passed=int(int(answer) == int(expected)),
                                              seconds=seconds, answered_at=now())])

    # -- reading ----------------------------------------------------------------------
    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def frame(self, sql: str, params: tuple | dict = ()) -> pd.DataFrame:
        import pandas as pd

        return pd.read_sql_query(sql, self.conn, params=params)

    def count(self, table: str, study_id: str | None = None) -> int:
        if study_id is None:
            return self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        return self.conn.execute(f"SELECT COUNT(*) FROM {table} WHERE study_id = ?", (study_id,)).fetchone()[0]

    def studies(self) -> pd.DataFrame:
        return self.frame("SELECT * FROM studies ORDER BY created_at, study_id")

    def table(self, name: str, study_id: str) -> pd.DataFrame:
        """A whole table for one study, in key order."""
        order = ", ".join(KEYS.get(name, ("rowid",)))
        return self.frame(f"SELECT * FROM {name} WHERE study_id = ? ORDER BY {order}", (study_id,))

    def resolve_study(self, study_id: str | None = None) -> str:
        """The study to work on: the one named, or the only one in the database."""
        ids = [r[0] for r in self.query("SELECT study_id FROM studies ORDER BY created_at, study_id")]
        where = self.path or ":memory:"
        if study_id is not None:
            if study_id not in ids:
                raise InputError(f"{where}: study_id: {study_id!r} is not in the database (it has {', '.join(ids) or 'none'})")
            return study_id
        if len(ids) != 1:
            raise InputError(f"{where}: studies: {'no study' if not ids else 'several studies (' + ', '.join(ids) + ')'}: name one with --study")
        return ids[0]


_SQLITE_TYPES = frozenset({str, int, float, bytes, type(None)})


def _values(rows: list[Mapping], columns: list[str]) -> list[tuple]:
    """The rows as tuples of `columns` for ``executemany``, each value made :func:`_plain`.

    Rows whose values are all of SQLite's own types (the usual case: 45,000 rows of the
    release) are taken as they are, without a function call per value.
    """
    if len(columns) == 1:
        values = [(row[columns[0]],) for row in rows]
    else:
        get = operator.itemgetter(*columns)
        values = [get(row) for row in rows]
    if {type(v) for row in values for v in row} <= _SQLITE_TYPES:
        return values
    return [tuple(map(_plain, row)) for row in values]


def _plain(value):
    """SQLite takes str/int/float/None/bytes: turn numpy scalars and dicts into those."""
    if value is None or isinstance(value, (str, int, float, bytes)):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return str(value)


def open_db(path: str | Path, readonly: bool = False) -> StudyDB:
    """Open (and create or migrate) the study database at `path`."""
    return StudyDB(path, readonly=readonly)


#: Idle connections kept per database by :func:`pooled_db` (more in use at once are opened and closed).
POOL_IDLE_MAX = 16
_pool: dict[str, list[StudyDB]] = {}
_pool_lock = threading.Lock()


@contextlib.contextmanager
def pooled_db(path: str | Path) -> Iterator[StudyDB]:
    """A connection to the study database from this process's pool, given back after the block.

    For a server that opens the database for every page (the app): a new connection
    parses the whole schema on its first statement, and closing the last one checkpoints
    the WAL and deletes it; that was 40 % of the app's CPU per page under load. A kept
    connection does neither. One thread uses a connection at a time (they are opened with
    ``check_same_thread=False``). A connection left inside a transaction or whose block
    failed with a database or OS error is closed, not kept; Streamlit's rerun and stop
    (exceptions that pass through the block) give it back as it is.
    """
    key = str(Path(path).resolve())
    with _pool_lock:
        idle = _pool.get(key)
        db = idle.pop() if idle else None
    if db is None:
        db = open_db(path)
    keep = True
    try:
        yield db
    except (sqlite3.Error, OSError, InputError):
        keep = False
        raise
    finally:
        if not keep or db.conn.in_transaction:
            db.close()
        else:
            with _pool_lock:
                idle = _pool.setdefault(key, [])
                if len(idle) < POOL_IDLE_MAX:
                    idle.append(db)
                    db = None
            if db is not None:
                db.close()
