"""The researcher's side: the review table and long answers exported, test runs kept apart,
spreadsheet-safe cells, the admin page's password limit and its exports."""

from __future__ import annotations

import csv
import io
import statistics
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from valueportrait.spreadsheet import csv_bytes, spreadsheet_safe
from valueportrait.storage import open_db

from collection_app import admin, exports, pages, store
from collection_app.study import load_study
from collection_app.testing import write_small_study
from test_app_pages import APP

ITEMS = [{"portrait_id": 3001, "content": {"title": None, "text": "Q1?"},
          "outputs": [{"id": o, "content": f"R{o}"} for o in range(1, 5)]}]
EVIL = '=HYPERLINK("https://evil.example","click")'


def participate(db, study, pid, *, seconds, answer=lambda i: 1 + i % 4, test_mode=False, fail_checks=False,
                country="Chile", minutes=None):
    """Walk every page of the study through the store (as the app's callbacks do), each answer
    taking `seconds` (a number, or a function of the step's index); the whole participation
    `minutes` long from start to completion."""
    store.assign_group(db, study, pid, test_mode=test_mode, seed=1)
    prog = store.load_progress(db, study, pid)
    for index, (_, step) in enumerate(pages.question_steps(study, prog)):
        secs = seconds(index) if callable(seconds) else seconds
        if step["kind"] in ("intro", "query"):
            store.save_page_view(db, study, pid, step["key"], secs)
        elif step["kind"] == "demographics":
            store.save_demographics(db, study, pid, dict(age=30, gender="Man", education="Doctorate",
                                                         politics="Moderate", country=country), secs)
        elif step["kind"] == "check":
            expected = study.checks[step["check"]].expected
            store.save_answer(db, study, pid, step, expected % 5 + 1 if fail_checks else expected, secs)
        else:
            store.save_answer(db, study, pid, step, answer(index) if callable(answer) else answer, secs)
    code = store.complete(db, study, pid, pages.expected_counts(study, prog.group_id))
    if minutes is not None:
        start = datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)
        db.conn.execute("UPDATE participations SET started_at = ?, completed_at = ? WHERE participant_id = ?",
                        (start.isoformat(), (start + timedelta(minutes=minutes)).isoformat(), pid))
    return code


@pytest.fixture
def filled(tmp_path):
    """A study with three real participants (one fast, one failing the checks), a test run, a revision."""
    path = write_small_study(tmp_path / "s", items=ITEMS, checks=[{"id": "ac_pvq", "after": 2},
                                                                  {"id": "ac_item_1", "after": 1}])
    study = load_study(path)
    db = open_db(tmp_path / "study.db")
    store.sync_study(db, study)
    ids = {"slow": "a" * 24, "fast": "b" * 24, "failer": "c" * 24, "test": "test-0123456789ab"}
    participate(db, study, ids["slow"], seconds=lambda i: 4.0 + i % 3, country=EVIL, minutes=3.5)  # 4, 5, 6 s
    # Quick answers with a long break between: the whole time looks normal, the answers do not.
    participate(db, study, ids["fast"], seconds=0.5, answer=lambda i: 2 + i % 3, minutes=3.3)
    participate(db, study, ids["failer"], seconds=5.0, fail_checks=True, minutes=3.8)
    participate(db, study, ids["test"], seconds=3.0, test_mode=True, minutes=2.5)
    step = {"kind": "pvq21", "item_id": 1}
    assert not store.revise_answer(db, study, ids["slow"], step, 6, 2.5)  # after completion: refused ...
    db.conn.execute("UPDATE participations SET status='active' WHERE participant_id = ?", (ids["slow"],))
    assert store.revise_answer(db, study, ids["slow"], step, 6, 2.5)  # (... so reopen it to change one answer)
    db.conn.execute("UPDATE participations SET status='completed' WHERE participant_id = ?", (ids["slow"],))
    yield db, study, ids
    db.close()


def test_review_table_has_one_row_per_participation_with_the_verdict(filled):
    db, study, ids = filled
    table = exports.participations(db, study).set_index("participant_id")
    assert list(exports.participations(db, study).columns) == exports.PARTICIPATION_COLUMNS
    assert set(table.index) == {ids["slow"], ids["fast"], ids["failer"]}  # test runs left out by default
    assert (~table["test_mode"]).all()
    with_tests = exports.participations(db, study, include_tests=True).set_index("participant_id")
    assert with_tests.loc[ids["test"], "test_mode"] == True  # noqa: E712
    # Speed: the median seconds per stored answer, by hand from the times given.
    n_answers = 21 + 10 + 4 + 2  # PVQ, BFI, ratings, checks
    assert (table["answers"] == n_answers).all()
    prog = store.load_progress(db, study, ids["slow"])
    steps = [s for _, s in pages.question_steps(study, prog)]
    slow_secs = [4.0 + i % 3 for i, s in enumerate(steps) if s["kind"] in ("pvq21", "bfi10", "check", "rating")]
    slow_secs[[i for i, s in enumerate(s for s in steps if s["kind"] in ("pvq21", "bfi10", "check", "rating"))
               if s.get("item_id") == 1 and s["kind"] == "pvq21"][0]] = 2.5  # the revised answer's time
    assert table.loc[ids["slow"], "median_seconds_per_answer"] == pytest.approx(statistics.median(slow_secs))
    assert table.loc[ids["fast"], "median_seconds_per_answer"] == pytest.approx(0.5)
    # 0.5 s < 0.3 x the group's median of medians (5 s): fast; the others are not. vp analyze's
    # speeder rule (whole time) misses it: 3.3 min is no less than 0.3 x the median 3.5 min.
    assert table.loc[ids["fast"], "qc_reasons"] == "fast_answers"
    assert table.loc[ids["failer"], "qc_reasons"] == "attention"  # vp analyze's rule: any failed check
    assert table.loc[ids["slow"], "qc_reasons"] == "" and table.loc[ids["slow"], "qc_included"]
    assert table.loc[ids["failer"], "checks_failed"] == 2
    assert dict(table["review"]) == {ids["slow"]: "approve", ids["fast"]: "review", ids["failer"]: "review"}
    assert exports.review_lists(table.reset_index()) == {"approve": [ids["slow"]],
                                                         "review": sorted([ids["fast"], ids["failer"]],
                                                                          key=list(table.index).index)}
    assert table.loc[ids["slow"], "revisions"] == 1 and table.loc[ids["fast"], "revisions"] == 0
    assert table.loc[ids["slow"], "study_version"] == study.version and (table["versions_seen"] == 1).all()
    assert (table["completion_code"] == "TESTCODE1").all() and (table["project"] == "test-study").all()


def test_answers_in_long_format_keep_every_revision(filled):
    db, study, ids = filled
    long = exports.answers(db, study)
    assert list(long.columns) == exports.ANSWER_COLUMNS
    assert set(long["participant_id"]) == {ids["slow"], ids["fast"], ids["failer"]}
    slow = long[long["participant_id"] == ids["slow"]]
    assert len(slow) == 21 + 10 + 4 + 2 + 1  # every answer, plus the one it replaced
    item1 = slow[(slow["kind"] == "pvq21") & (slow["item"] == "1")].sort_values("revision")
    assert item1[["answer", "revision", "current"]].values.tolist() == [[3, 0, False], [6, 1, True]]
    assert item1["answered_at"].is_monotonic_increasing
    ratings = slow[slow["kind"] == "rating"]
    assert sorted(ratings["option_id"].tolist()) == [1, 2, 3, 4] and (ratings["portrait_id"] == "3001").all()
    checks = long[(long["kind"] == "check") & (long["participant_id"] == ids["failer"])]
    assert set(checks["block"]) == {"pvq21", "items"} and not checks["passed"].any()
    assert len(exports.answers(db, study, include_tests=True)) == len(long) + 37


def test_exported_cells_never_run_as_formulas(filled):
    db, study, ids = filled
    rows = list(csv.DictReader(io.StringIO(exports.export_csv(db, study, "participations").decode())))
    country = {r["participant_id"]: r["country"] for r in rows}
    assert country[ids["slow"]] == "'" + EVIL and country[ids["fast"]] == "Chile"
    # OWASP's list, checked cell by cell; numbers stay numbers.
    frame = pd.DataFrame({"t": ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "plain", None], "n": range(-4, 4)})
    safe = spreadsheet_safe(frame)
    assert safe["t"].tolist()[:7] == ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\t=1", "'\r=1", "plain"]
    assert pd.isna(safe["t"].iloc[7])
    assert safe["n"].tolist() == list(range(-4, 4))
    assert csv_bytes(frame).decode().splitlines()[1] == "'=1+1,-4"


def test_events_export_leaves_test_runs_out(filled):
    db, study, ids = filled
    assert ids["test"] not in set(exports.events(db, study)["participant_id"])
    assert ids["test"] in set(exports.events(db, study, include_tests=True)["participant_id"])


# -- the admin page -------------------------------------------------------------------------------
@pytest.fixture
def admin_env(tmp_path, monkeypatch):
    path = write_small_study(tmp_path / "s", items=ITEMS, checks=[])
    monkeypatch.setenv("VP_DB", str(tmp_path / "study.db"))
    monkeypatch.setenv("VP_STUDY", str(path))
    monkeypatch.setenv("VP_ADMIN_PASSWORD", "correct horse")
    return tmp_path / "study.db", load_study(path)


def _admin():
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params.update(admin="1")
    return at.run()


def _login(at, password):
    at.text_input(key="admin-password").set_value(password)
    at.button[0].click().run()
    return at


def test_password_guessing_is_limited(admin_env):
    db_path, study = admin_env
    at = _admin()
    answers = [(_login(at, f"guess {i}").error[0].value) for i in range(25)]
    assert answers[:admin.MAX_FAILURES] == ["Wrong password."] * admin.MAX_FAILURES
    assert all(a.startswith("Too many wrong passwords") for a in answers[admin.MAX_FAILURES:])
    # Locked means locked: the right password does not open it either, from a new browser too.
    other = _login(_admin(), "correct horse")
    assert other.error and other.error[0].value.startswith("Too many") and not other.metric
    with open_db(db_path) as db:
        assert db.query("SELECT COUNT(*) FROM events WHERE kind = 'admin_login_failed'")[0][0] == admin.MAX_FAILURES
        assert 14 < admin.locked_for(db, study) <= admin.LOCK_MINUTES
        past = (datetime.now(timezone.utc) - timedelta(minutes=admin.LOCK_MINUTES + 1)).isoformat()
        db.conn.execute("UPDATE events SET at = ?", (past,))
        assert admin.locked_for(db, study) == 0
    opened = _login(_admin(), "correct horse")
    assert not opened.error and {m.label for m in opened.metric} >= {"Completed"}


def test_admin_exports_follow_the_test_runs_box_and_go_on_log_out(admin_env):
    db_path, study = admin_env
    with open_db(db_path) as db:
        store.sync_study(db, study)
        participate(db, study, "d" * 24, seconds=4.0)
        participate(db, study, "test-aaaaaaaaaaaa", seconds=4.0, test_mode=True)
    at = _login(_admin(), "correct horse")
    assert "d" * 24 in "".join(c.value for c in at.code) and "test-aaaaaaaaaaaa" not in "".join(c.value for c in at.code)
    at.button(key="prepare-exports").click().run()
    names = [b.proto.label for b in at.get("download_button")]
    assert names == ["participations.csv", "answers.csv", "events.csv"]
    first = {b.proto.label: b for b in at.get("download_button")}
    # The files carry the box's choice: test runs left out, then included.
    at.checkbox(key="include-tests").check().run()
    assert not at.get("download_button")  # prepared without test runs: they must be made again
    at.button(key="prepare-exports").click().run()
    assert "test-aaaaaaaaaaaa" in "".join(c.value for c in at.code)
    urls = {b.proto.label: b.proto.url for b in at.get("download_button")}
    assert urls["participations.csv"] != first["participations.csv"].proto.url
    other = _login(_admin(), "correct horse")  # another session: another random file name, another address
    other.checkbox(key="include-tests").check().run()
    other.button(key="prepare-exports").click().run()
    assert {b.proto.url for b in other.get("download_button")}.isdisjoint(urls.values())
    at.button(key="log-out").click().run()
    assert not at.get("download_button") and not at.metric and at.text_input(key="admin-password")


# -- the real server: what /media serves (no browser: Streamlit's websocket protocol) ------------
def test_export_files_are_gone_after_log_out_and_after_the_tab_closes(tmp_path):
    """Downloads are served at /media/<id> to anyone with the address. The address must not
    follow from the data (a random part in the file name), the files exist only once asked for,
    and they are gone soon after the admin logs out or closes the tab, with nobody else about."""
    import asyncio
    import hashlib

    import httpx

    from collection_app.testing import serve
    from collection_app.wsbot import Connection

    study_file = write_small_study(tmp_path / "s", items=ITEMS, checks=[])
    env = {"VP_ADMIN_PASSWORD": "correct horse", "VP_MEDIA_SWEEP_SECONDS": "1",
           "STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": "2"}
    with serve(tmp_path / "study.db", study=study_file, env=env, log=tmp_path / "server.log") as server:
        async def admin_session():
            conn = Connection(server.url, "admin=1", 30)
            view = await conn.open()
            assert not view.widgets("download_button")
            view = await conn.rerun([(view.widget("text_input", "Password").id, "string_value", "correct horse"),
                                     (view.widget("button", "Open").id, "trigger_value", True)])
            assert not view.widgets("download_button")  # nothing made before it is asked for
            view = await conn.rerun([(view.widget("button", "Prepare the exports").id, "trigger_value", True)])
            return conn, view

        async def scenario():
            conn, view = await admin_session()
            urls = {b.label: b.url for b in view.widgets("download_button")}
            assert set(urls) == {"participations.csv", "answers.csv", "events.csv"}
            async with httpx.AsyncClient(base_url=server.url) as http:
                got = await http.get(urls["participations.csv"])
                assert got.status_code == 200 and got.text.startswith("participant_id,group_id,status,test_mode")
                # Not the hash of the content and type alone (Streamlit's id without a file name).
                plain = hashlib.blake2b(digest_size=16)
                for part in (f"{len(got.content)}:".encode(), got.content, b"text/csv"):
                    plain.update(part)
                assert plain.hexdigest() not in urls["participations.csv"]
                view = await conn.rerun([(view.widget("button", "Log out").id, "trigger_value", True)])
                assert not view.widgets("download_button")
                await asyncio.sleep(3.5)  # two sweeps
                assert (await http.get(urls["participations.csv"])).status_code == 404
                await conn.close()

                conn, view = await admin_session()  # again, then the tab is closed without logging out
                url = next(b.url for b in view.widgets("download_button"))
                assert (await http.get(url)).status_code == 200
                await conn.close()
                for _ in range(40):
                    await asyncio.sleep(0.5)
                    if (await http.get(url)).status_code == 404:
                        break
                assert (await http.get(url)).status_code == 404

        asyncio.run(scenario())


def test_analysis_leaves_test_runs_out(filled):
    """`vp analyze` reads studies through analysis.dataset: a test-mode run (no Prolific id)
    is not a rater, whatever it answered."""
    from analysis.dataset import load_study as load_for_analysis
    db, study, ids = filled
    data = load_for_analysis(db, study.study_id)
    assert set(data.participations["participant_id"]) == {ids["slow"], ids["fast"], ids["failer"]}
    assert ids["test"] not in set(data.ratings["participant_id"]) and ids["test"] not in data.raw_answers.index
    assert ids["test"] not in data.scores.index
    assert "1 test-mode participations (no Prolific id) left out" in data.notes
    everyone = load_for_analysis(db, study.study_id, include_tests=True)
    assert ids["test"] in set(everyone.participations["participant_id"]) and len(everyone.ratings) == 4 * 4
