"""The study database under concurrent writers, idempotent saves, one-transaction writes."""

import sqlite3
import threading

import pytest

from valueportrait.errors import InputError
from valueportrait.storage import SCHEMA_VERSION, StudyDB, now, open_db


def _run_threads(target, n: int) -> None:
    """Run target(0) .. target(n - 1), each in its own thread, and wait for all of them."""
    threads = [threading.Thread(target=target, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def _study(db, study_id="s1"):
    db.upsert("studies", [{"study_id": study_id, "source": "app", "created_at": now()}])


def test_schema_and_pragmas(tmp_path):
    db = open_db(tmp_path / "study.db")
    assert db.schema_version == SCHEMA_VERSION
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    db.close()
    # Reopening does not migrate again or lose data.
    db = open_db(tmp_path / "study.db")
    _study(db)
    db.close()
    assert open_db(tmp_path / "study.db").count("studies") == 1


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "future.db"
    sqlite3.connect(path).execute("PRAGMA user_version = 99")
    with pytest.raises(InputError, match="newer than this tool"):
        open_db(path)


def test_same_answer_saved_twice_is_stored_once(tmp_path):
    db = open_db(tmp_path / "study.db")
    _study(db)
    db.save_instrument_answer("s1", "P1", "pvq21", 3, 4)
    db.save_instrument_answer("s1", "P1", "pvq21", 3, 4)
    db.save_instrument_answer("s1", "P1", "pvq21", 3, 5)  # changed their mind: the last answer counts
    rows = db.query("SELECT answer FROM instrument_answers")
    assert [r["answer"] for r in rows] == [5]


def test_numpy_scalars_and_mappings_are_stored_as_sqlite_values(tmp_path):
    """Rows with numpy scalars or dicts (the simulator's, the app's meta) are stored as the
    Python int / float / JSON text they stand for; plain rows beside them are unchanged."""
    import numpy as np

    db = open_db(tmp_path / "study.db")
    _study(db)
    db.upsert("item_groups", [dict(study_id="s1", group_id="g01", position=np.int64(1), target_n=None),
                              dict(study_id="s1", group_id="g02", position=2, target_n=np.int32(40))])
    db.upsert("scores", [dict(study_id="s1", participant_id="P1", family="pvq", dimension="Power", score=np.float32(0.25))])
    db.upsert("studies", [dict(study_id="s2", source="app", created_at=now(), config_json={"a": [1, 2]})])
    rows = db.conn.execute("SELECT position, typeof(position), target_n, typeof(target_n) FROM item_groups "
                           "ORDER BY group_id").fetchall()
    assert [tuple(r) for r in rows] == [(1, "integer", None, "null"), (2, "integer", 40, "integer")]
    assert tuple(db.conn.execute("SELECT score, typeof(score) FROM scores").fetchone()) == (0.25, "real")
    assert db.query("SELECT config_json FROM studies WHERE study_id = 's2'")[0][0] == '{"a": [1, 2]}'


def test_transaction_rolls_back_everything(tmp_path):
    db = open_db(tmp_path / "study.db")
    _study(db)
    with pytest.raises(ZeroDivisionError):
        with db.transaction():
            db.save_rating("s1", "P1", "1001", 1, "g01", 4)
            db.save_rating("s1", "P1", "1001", 2, "g01", 5)
            1 / 0
    assert db.count("ratings") == 0


def test_eight_threads_2000_answers_each(tmp_path):
    """Every answer stored exactly once, no 'database is locked', under 8 concurrent writers."""
    path = tmp_path / "study.db"
    setup = open_db(path)
    _study(setup)
    setup.close()
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(t: int) -> None:
        try:
            db = StudyDB(path)  # one connection per thread, as the app's sessions have
            start.wait()
            for i in range(2000):
                # Each answer in its own short transaction, as the app saves them; every
                # 10th is sent twice, as a double click or a retried request would.
                db.save_rating("s1", f"T{t}", f"{1000 + i // 5}", i % 5 + 1, "g01", i % 6 + 1, position=i)
                if i % 10 == 0:
                    db.save_rating("s1", f"T{t}", f"{1000 + i // 5}", i % 5 + 1, "g01", i % 6 + 1, position=i)
            db.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    _run_threads(writer, 8)
    assert errors == []
    db = open_db(path)
    assert db.count("ratings") == 16_000
    per_thread = db.query("SELECT participant_id, COUNT(*) AS n, SUM(rating) AS s FROM ratings GROUP BY participant_id")
    expected_sum = sum(i % 6 + 1 for i in range(2000))
    assert {(r["participant_id"], r["n"], r["s"]) for r in per_thread} == {(f"T{t}", 2000, expected_sum) for t in range(8)}


def test_resolve_study(tmp_path):
    from valueportrait.errors import InputError

    db = open_db(tmp_path / "study.db")
    with pytest.raises(InputError, match="no study"):
        db.resolve_study()
    _study(db, "a")
    assert db.resolve_study() == "a"
    _study(db, "b")
    with pytest.raises(InputError, match="several studies"):
        db.resolve_study()
    with pytest.raises(InputError, match="'c' is not in the database"):
        db.resolve_study("c")


def test_migration_statements_split_as_sqlite_parses_them():
    # A ';' in a comment or a string literal used to cut a migration into broken pieces
    # ("incomplete input"). SQLite's own executescript is the reference.
    from valueportrait.storage import sql_statements

    script = """
    CREATE TABLE a (x TEXT);  -- first; with a semicolon in the comment
    /* a block comment; also with one */
    CREATE TABLE b (y TEXT DEFAULT 'p;q');
    INSERT INTO b (y) VALUES ('one;two');
    -- a trailing comment; nothing after it
    """
    ours = sqlite3.connect(":memory:")
    for statement in sql_statements(script):
        ours.execute(statement)
    reference = sqlite3.connect(":memory:")
    reference.executescript(script)
    dump = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    assert ours.execute(dump).fetchall() == reference.execute(dump).fetchall()
    assert ours.execute("SELECT y FROM b").fetchall() == [("one;two",)]
    assert len(sql_statements(script)) == 4


def test_pooled_connections_are_reused_one_thread_at_a_time_and_dropped_after_a_failure(tmp_path):
    from valueportrait.storage import pooled_db

    path = tmp_path / "study.db"
    with pooled_db(path) as db:
        _study(db)
        first = db
    with pooled_db(path) as db:
        assert db is first  # given back and taken again: no new connection
    with pytest.raises(sqlite3.OperationalError):
        with pooled_db(path) as db:
            db.query("SELECT * FROM no_such_table")
    with pooled_db(path) as db:
        assert db is not first  # a failed block's connection is closed, not kept
        second = db
    with pooled_db(path) as db:
        db.conn.execute("BEGIN IMMEDIATE")  # left open by mistake: closed, its writes rolled back
        db.save_rating("s1", "P1", "1001", 1, "g01", 4)
    with pooled_db(path) as db:
        assert db is not second and db.count("ratings") == 0
        third = db

    class Rerun(BaseException):  # what Streamlit raises through a script to rerun it
        pass

    with pytest.raises(Rerun):
        with pooled_db(path) as db:
            raise Rerun()
    with pooled_db(path) as db:
        assert db is third

    # Eight threads at once: no connection is used by two of them, every answer is stored once.
    in_use: set[int] = set()
    clashes, errors = [], []
    guard = threading.Lock()
    start = threading.Barrier(8)

    def writer(t: int) -> None:
        try:
            start.wait()
            for i in range(200):
                with pooled_db(path) as db:
                    with guard:
                        clashes.append(id(db) in in_use)
                        in_use.add(id(db))
                    db.save_rating("s1", f"T{t}", "1001", i + 1, "g01", i % 6 + 1)
                    with guard:
                        in_use.discard(id(db))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    _run_threads(writer, 8)
    assert not errors and not any(clashes) and len(clashes) == 1600
    with open_db(path) as db:
        assert db.count("ratings") == 1600
