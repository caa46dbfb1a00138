"""What a paid study needs from the app, page by page (AppTest, no browser): one person once,
waves of a project, places and overfill, the record of what each participant saw, changed
answers kept as revisions, time limits, the study's own wording, and researcher-facing errors.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from valueportrait.errors import InputError
from valueportrait.storage import open_db

from collection_app import pages, store
from collection_app.study import load_study
from collection_app.testing import write_small_study
from test_app_pages import (PID, answer_current, asking, db_path, fill_demographics, html_bodies,  # noqa: F401
                            read_on, shown_code, start, step_of, visit)

ITEMS = [{"portrait_id": 3001, "content": {"title": None, "text": "Q1?"},
          "outputs": [{"id": 1, "content": "R1"}, {"id": 2, "content": "R2"}, {"id": 3, "content": "R3"}]},
         {"portrait_id": 3002, "content": {"title": "A title", "text": "Q2?"},
          "outputs": [{"id": 1, "content": "S1"}, {"id": 2, "content": "S2"}]}]


def use_study(monkeypatch, tmp_path, name="s", **kw):
    kw.setdefault("items", ITEMS)
    kw.setdefault("checks", [])
    path = write_small_study(tmp_path / name, **kw)
    monkeypatch.setenv("VP_STUDY", str(path))
    return path


def finish(at):
    while asking(at):
        at = answer_current(at)
    return at


def until(at, page: str, limit: int = 200):
    """Go on through the study (reading introductions, answering questions) until `page` is on screen."""
    for _ in range(limit):
        kind = step_of(at)[0]
        if kind == page:
            return at
        if kind in ("intro", "query"):
            at = next(b for b in at.button if b.key and b.key.startswith("go-")).click().run()
        elif kind in ("question", "rating"):
            at = answer_current(at)
        else:
            raise AssertionError(f"reached {kind!r} before {page!r}")
    raise AssertionError(f"no {page!r} page within {limit} pages")


def radio_now(at):
    return next(r for r in at.radio if r.key and r.key.startswith(("q-", "r-")))


# -- one person, once (defect 2) ------------------------------------------------------------
def test_prolific_id_letter_case_is_one_person(db_path, tmp_path, monkeypatch):
    use_study(monkeypatch, tmp_path, target=5)
    lower = "aaaa" + "0" * 18 + "02"
    at = finish(fill_demographics(start(visit(lower))))
    assert shown_code(at) == ["TESTCODE1"]
    again = visit(lower.upper())  # the same id, letters in upper case: the same participation
    assert step_of(again)[0] == "completion" and shown_code(again) == ["TESTCODE1"]
    mixed = visit("AaAa" + "0" * 18 + "02")
    assert step_of(mixed)[0] == "completion"
    with open_db(db_path) as db:
        assert [r[0] for r in db.query("SELECT participant_id FROM participations")] == [lower]
    assert pages.parse_entry({"PROLIFIC_PID": " " + lower.upper() + " ", "STUDY_ID": "a", "SESSION_ID": "b"}
                             ).participant_id == lower
    assert pages.parse_entry({"PROLIFIC_PID": lower + "0", "STUDY_ID": "a", "SESSION_ID": "b"}).problem  # 25 chars


# -- waves of one project (issue 15) ----------------------------------------------------------
def test_a_participant_of_an_earlier_wave_is_refused(db_path, tmp_path, monkeypatch):
    use_study(monkeypatch, tmp_path, name="w1", study_id="proj-w1", project="proj")
    at = fill_demographics(start(visit()))
    at = answer_current(at)  # took part in wave 1, not even finished
    use_study(monkeypatch, tmp_path, name="w2", study_id="proj-w2", project="proj")
    back = visit()
    assert step_of(back)[0] == "earlier-wave"
    assert "earlier part of this study" in html_bodies(back) and not back.button
    back_upper = visit(PID.upper())  # not by changing the letters' case either
    assert step_of(back_upper)[0] == "earlier-wave"
    fresh = visit("0123456789abcdef01234567")
    assert step_of(fresh)[0] == "consent"
    # Another project in the same database does not count.
    use_study(monkeypatch, tmp_path, name="other", study_id="other-study", project="elsewhere")
    assert step_of(visit())[0] == "consent"
    with open_db(db_path) as db:
        projects = dict(db.query("SELECT study_id, project FROM studies"))
        assert projects == {"proj-w1": "proj", "proj-w2": "proj", "other-study": "elsewhere"}
        assert db.count("participations", "proj-w2") == 0
        study = load_study(tmp_path / "w2" / "study.yaml")
        # The same refusal holds in the assignment transaction (two tabs, a stale page).
        got = store.assign_group(db, study, PID, test_mode=False)
        assert got.group_id is None and got.earlier_wave == "proj-w1"
        assert db.count("participations", "proj-w2") == 0


def test_project_defaults_to_the_study_id(db_path, tmp_path, monkeypatch):
    use_study(monkeypatch, tmp_path, study_id="solo")
    visit()
    with open_db(db_path) as db:
        assert db.query("SELECT project FROM studies WHERE study_id = 'solo'")[0][0] == "solo"


# -- places (defect 4) --------------------------------------------------------------------------
def test_a_lapsed_place_can_still_finish_and_the_overfill_is_counted(db_path, tmp_path, monkeypatch):
    """Decision: someone idle past active_minutes loses their hold on the place (a newcomer may
    take it), but is not turned away after doing part of the work: they may finish, and the
    group's overfill is counted and shown."""
    from collection_app import admin, exports
    path = use_study(monkeypatch, tmp_path, target=1, time_limits={"active_minutes": 5, "max_minutes": 60})
    slow = "0" * 23 + "1"
    at_slow = fill_demographics(start(visit(slow)))
    with open_db(db_path) as db:  # 20 minutes without a press: the place lapses
        past = (datetime.now(timezone.utc) - timedelta(minutes=20)).isoformat(timespec="milliseconds")
        db.conn.execute("UPDATE participations SET last_seen_at = ?", (past,))
    quick = "0" * 23 + "2"
    at_quick = finish(fill_demographics(start(visit(quick))))
    assert shown_code(at_quick) == ["TESTCODE1"]
    assert step_of(visit("0" * 23 + "3"))[0] == "full"  # the one place is taken
    at_slow = finish(visit(slow))  # the lapsed participant comes back and finishes
    assert shown_code(at_slow) == ["TESTCODE1"]
    study = load_study(path)
    with open_db(db_path) as db:
        load = {g["group_id"]: g for g in store.group_load(db, study)}
        assert load["G1"]["completed"] == 2 and load["G1"]["overfill"] == 1
        table = exports.participations(db, study).set_index("participant_id")
    assert table.loc[quick, "over_target"] == False and table.loc[slow, "over_target"] == True  # noqa: E712
    assert admin.summary is not None


# -- what each participant saw (defect 7) -----------------------------------------------------
def test_every_version_is_kept_and_each_participation_linked_to_what_it_saw(db_path, tmp_path, monkeypatch):
    path = use_study(monkeypatch, tmp_path)
    at = fill_demographics(start(visit()))
    at = answer_current(at)
    v1 = load_study(path)
    # The researcher fixes a typo in a response while the study runs.
    items = json.loads((tmp_path / "s" / "items.json").read_text())
    items[0]["outputs"][0]["content"] = "R1, corrected"
    (tmp_path / "s" / "items.json").write_text(json.dumps(items))
    spec = json.loads(path.read_text())
    path.write_text(json.dumps({**spec, "title": "A test study (v2)"}))  # new mtime: the app reloads it
    v2 = load_study(path)
    assert v1.version != v2.version
    late = "fedcba9876543210fedcba98"
    at = answer_current(visit())       # the first participant goes on under v2
    fill_demographics(start(visit(late)))  # a newcomer starts under v2
    with open_db(db_path) as db:
        versions = dict(db.query("SELECT version, definition_json FROM study_versions"))
        assert set(versions) == {v1.version, v2.version}
        # Each stored definition is the one its hash names, with the texts as shown.
        import hashlib
        for version, blob in versions.items():
            assert hashlib.sha256(blob.encode()).hexdigest() == version
        old_items = {i["response"] for i in json.loads(versions[v1.version])["items"]}
        assert "R1" in old_items and "R1, corrected" in {i["response"] for i in json.loads(versions[v2.version])["items"]}
        started = dict(db.query("SELECT participant_id, study_version FROM participations"))
        assert started == {PID: v1.version, late: v2.version}
        seen = db.query("SELECT participant_id, version FROM participation_versions ORDER BY first_seen_at")
        assert {(r[0], r[1]) for r in seen} == {(PID, v1.version), (PID, v2.version), (late, v2.version)}


# -- Back: a changed answer is a revision (kinder flow) -------------------------------------------
def test_back_changes_the_previous_answer_as_a_revision(db_path, tmp_path, monkeypatch):
    use_study(monkeypatch, tmp_path)
    at = read_on(fill_demographics(start(visit())))
    assert not any(b.key and b.key.startswith("back-") for b in at.button)  # the first question: no Back
    at = answer_current(at, value=2)
    assert step_of(at) == ("question", 3)
    at.button(key="back-pvq21:2").click().run()
    assert step_of(at) == ("revise", 2)
    radio = radio_now(at)
    assert radio.key == "r-pvq21:1" and radio.value == 2  # the stored answer, chosen
    radio.set_value(5)
    at.button(key="save-pvq21:1").click().run()
    assert step_of(at) == ("question", 3)  # back where the participant was
    at = answer_current(at, value=4)
    with open_db(db_path) as db:
        rows = {r["item_id"]: (r["answer"], r["revision"]) for r in
                db.query("SELECT item_id, answer, revision FROM instrument_answers WHERE instrument = 'pvq21'")}
        assert rows == {1: (5, 1), 2: (4, 0)}
        rev = db.query("SELECT kind, item, revision, answer, answered_at, replaced_at FROM answer_revisions")
        assert [(r["kind"], r["item"], r["revision"], r["answer"]) for r in rev] == [("pvq21", "1", 0, 2)]
        assert rev[0]["answered_at"] < rev[0]["replaced_at"]
        first = db.query("SELECT answered_at FROM instrument_answers WHERE item_id = 1")[0][0]
        assert first == rev[0]["replaced_at"]  # the answer row carries the time of the change
    # Back goes one question back only, and never into another block.
    at.button(key="back-pvq21:3").click().run()
    assert step_of(at) == ("revise", 3) and not any(b.key and b.key.startswith("back-") for b in at.button)


def test_back_does_not_leave_the_block(db_path, tmp_path, monkeypatch):
    use_study(monkeypatch, tmp_path)
    at = read_on(fill_demographics(start(visit())))
    for _ in range(21):  # through the 21 values statements to the next introduction
        at = answer_current(at)
    assert step_of(at) == ("intro", 23)
    at = read_on(at)
    assert step_of(at)[0] == "question"
    assert not any(b.key and b.key.startswith("back-") for b in at.button)  # first BFI statement


# -- responses to one query together ---------------------------------------------------------------
def test_side_by_side_stores_a_query_s_responses_together(db_path, tmp_path, monkeypatch):
    use_study(monkeypatch, tmp_path, ratings={"by_query": True, "layout": "side_by_side"},
              checks=[{"id": "ac_item_1", "after": 1}])
    at = until(fill_demographics(start(visit())), "ratings")
    radios = [r for r in at.radio if r.key.startswith("q-")]
    responses = [m for m in html_bodies(at).split("data-vp-role=\"response\"")[1:]]
    assert len(radios) == len(responses) >= 2
    first_query = step_of(at)[1]
    radios[0].set_value(3)
    next(b for b in at.button if b.key.startswith("next-")).click().run()
    assert step_of(at) == ("ratings", first_query) and "missing: response 2" in html_bodies(at)
    with open_db(db_path) as db:
        assert db.count("ratings") == 0 and db.count("attention_checks") == 0  # nothing half-stored
    for r in [r for r in at.radio if r.key.startswith("q-")]:
        r.set_value(4)
    next(b for b in at.button if b.key.startswith("next-")).click().run()
    assert step_of(at) == ("ratings", first_query + 1)
    with open_db(db_path) as db:
        assert db.count("ratings") + db.count("attention_checks") == len(radios)


def test_one_per_page_shows_the_query_once_then_its_responses(db_path, tmp_path, monkeypatch):
    use_study(monkeypatch, tmp_path)
    at = until(fill_demographics(start(visit())), "query")
    body = html_bodies(at)
    assert 'data-vp-role="query-text"' in body
    n = 3 if "Q1?" in body else 2
    at = next(b for b in at.button if b.key.startswith("go-")).click().run()
    for _ in range(n):
        assert step_of(at)[0] == "rating"
        assert 'data-vp-role="query-title"' in html_bodies(at)  # the query is recalled, folded
        at = answer_current(at)
    assert step_of(at)[0] == "query"  # the next query


# -- time limits (kinder flow) ---------------------------------------------------------------------
def _age(db_path, minutes):
    with open_db(db_path) as db:
        t = (datetime.now(timezone.utc) - timedelta(minutes=minutes)).isoformat(timespec="milliseconds")
        db.conn.execute("UPDATE participations SET started_at = ?", (t,))


def test_warning_before_the_time_runs_out_then_a_partial_code(db_path, tmp_path, monkeypatch):
    use_study(monkeypatch, tmp_path, time_limits={"active_minutes": 30, "max_minutes": 60, "warn_minutes": 10},
              completion={"code": "TESTCODE1", "partial_code": "PARTIAL1", "partial_min_share": 0.5})
    at = read_on(fill_demographics(start(visit())))
    assert 'data-vp-role="time-warning"' not in html_bodies(at)
    for _ in range(10):
        at = answer_current(at)
    _age(db_path, 53)
    at = visit()
    assert 'data-vp-role="time-warning"' in html_bodies(at)
    assert "About 7 minutes are left" in html_bodies(at)
    _age(db_path, 61)
    at = visit()
    # 1 + 10 of 1 + 31 + 5 questions answered (0.30): under half, so no code, asked to return.
    assert step_of(at)[0] == "timed-out" and not shown_code(at)
    with open_db(db_path) as db:
        assert tuple(db.query("SELECT status, completion_code FROM participations")[0]) == ("timed_out", None)

    other = "abcdef0123456789abcdef01"
    at = read_on(fill_demographics(start(visit(other))))
    for _ in range(25):  # 26 of 37 (0.70)
        at = answer_current(at)
    with open_db(db_path) as db:
        t = (datetime.now(timezone.utc) - timedelta(minutes=61)).isoformat(timespec="milliseconds")
        db.conn.execute("UPDATE participations SET started_at = ? WHERE participant_id = ?", (t, other))
    at = visit(other)
    assert step_of(at)[0] == "timed-out-partial" and shown_code(at) == ["PARTIAL1"]
    assert any(b.proto.url.endswith("cc=PARTIAL1") for b in at.get("link_button"))
    assert shown_code(visit(other)) == ["PARTIAL1"]  # decided once, shown again on return
    with open_db(db_path) as db:
        assert tuple(db.query("SELECT status, completion_code FROM participations WHERE participant_id = ?",
                              (other,))[0]) == ("timed_out", "PARTIAL1")


# -- the study's own wording --------------------------------------------------------------------------
def test_scale_labels_come_from_the_study_and_checks_follow_them(db_path, tmp_path, monkeypatch):
    labels = ["nothing like my view", "far from my view", "a bit like my view", "fairly like my view",
              "close to my view", "exactly my view"]
    path = use_study(monkeypatch, tmp_path, checks=[{"id": "ac_item_1", "after": 0}],
                     scales={"similarity": {"question": "How close is this to what you think?", "labels": labels}})
    study = load_study(path)
    assert study.checks["ac_item_1"].text.endswith('choose "far from my view" for this response.')
    assert study.scales["pvq"].labels[0] == "not like me at all"  # other blocks keep theirs
    at = read_on(until(fill_demographics(start(visit())), "query"))
    radio = radio_now(at)
    assert radio.label == "How close is this to what you think?"
    assert list(radio.options) == labels  # AppTest shows the options as formatted
    bad = write_small_study(tmp_path / "bad", items=ITEMS, checks=[], scales={"bfi": {"labels": ["a", "b"]}})
    with pytest.raises(InputError, match=r"scales\.bfi\.labels: 2 labels for a scale 1\.\.5"):
        load_study(bad)


def test_researcher_texts_reflow_and_the_title_is_plain_text(db_path, tmp_path, monkeypatch):
    consent = "First line of a paragraph\nthat goes on here.\n\nSecond paragraph:\n- one point\n- another point\n"
    use_study(monkeypatch, tmp_path, title="A [link](https://evil.example) **bold** $x$ study",
              texts={"consent": consent})
    at = visit()
    body = html_bodies(at)
    assert "First line of a paragraph that goes on here." in body  # the YAML line break reflowed
    assert "Second paragraph:\n- one point\n- another point" in body  # list items keep their lines
    assert "A [link](https://evil.example) **bold** $x$ study" in body  # shown as typed
    assert all("evil.example" not in m.value for m in at.markdown) and not at.title


# -- researcher-facing errors (defect 6) ------------------------------------------------------------
@pytest.mark.parametrize("limits, message", [
    ({"active_minutes": 200, "max_minutes": 10}, "time_limits: active_minutes 200 is more than max_minutes 10"),
    ({"active_minutes": 5, "max_minutes": 10, "warn_minutes": 10}, "time_limits: warn_minutes 10 is not less than"),
    ({"active_minutes": float("nan"), "max_minutes": 10}, "time_limits.active_minutes"),
])
def test_time_limits_that_cannot_work_are_refused(tmp_path, limits, message):
    path = write_small_study(tmp_path, items=ITEMS, checks=[], time_limits=limits)
    with pytest.raises(InputError, match=message):
        load_study(path)


@pytest.mark.parametrize("completion, field", [
    ({"code": "SAMECODE", "partial_code": "SAMECODE"}, "partial_code: 'SAMECODE' is the same as code"),
    ({"code": "TESTCODE1", "partial_code": "PARTIAL1", "partial_min_share": 0}, "partial_min_share"),
])
def test_partial_code_is_validated(tmp_path, completion, field):
    path = write_small_study(tmp_path, items=ITEMS, checks=[], completion=completion)
    with pytest.raises(InputError, match=field):
        load_study(path)


def test_vp_app_bad_db_is_one_line(tmp_path, capsys):
    from valueportrait.cli import main
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, just some bytes " * 100)
    folder = tmp_path / "folder.db"
    folder.mkdir()
    blocked = tmp_path / "file"
    blocked.write_text("x")
    for bad in (garbage, folder, blocked / "sub" / "study.db"):
        assert main(["app", "--db", str(bad), "--port", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("vp app: error: ") and str(bad) in err, err
        assert "Traceback" not in err
    assert garbage.read_bytes().startswith(b"this is not a database")  # left as it was
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(garbage).execute("SELECT * FROM sqlite_master").fetchall()


def test_vp_prolific_create_registers_the_partial_code(tmp_path):
    """A study file with a partial code: the draft Prolific study lists it, for manual review."""
    from argparse import Namespace

    from collection_app.prolific import create_body
    path = write_small_study(tmp_path, items=ITEMS, checks=[], completion={"code": "TESTCODE1",
                                                                          "partial_code": "PARTIAL1"})
    args = Namespace(reward=2.5, minutes=20, places=None, url="https://survey.example.org/", publish=False)
    body, _ = create_body(args, load_study(path))
    assert [(c["code"], c["code_type"], c["actions"]) for c in body["completion_codes"]] == [
        ("TESTCODE1", "COMPLETED", [{"action": "MANUALLY_REVIEW"}]),
        ("PARTIAL1", "OTHER", [{"action": "MANUALLY_REVIEW"}])]
