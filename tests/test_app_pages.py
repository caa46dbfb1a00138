"""Page-level tests of the collection app with Streamlit's AppTest (no browser, no server)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from valueportrait.errors import InputError
from valueportrait.storage import open_db

from collection_app import admin, exports, store
from collection_app.pages import parse_entry
from collection_app.study import DEFAULT_STUDY, load_study
from collection_app.testing import write_small_study

APP = str(Path(__file__).resolve().parents[1] / "collection_app" / "app.py")
PID = "5f0c1e2d3b4a5968778695a4"


@pytest.fixture
def db_path(tmp_path, monkeypatch):
    path = tmp_path / "study.db"
    monkeypatch.setenv("VP_DB", str(path))
    monkeypatch.delenv("VP_STUDY", raising=False)
    monkeypatch.delenv("VP_ADMIN_PASSWORD", raising=False)
    return path


def visit(pid: str | None = PID, **extra) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    if pid is not None:
        at.query_params.update(PROLIFIC_PID=pid, STUDY_ID="60aa11bb22cc33dd44ee55ff", SESSION_ID="abc123")
    at.query_params.update(extra)
    return at.run()


def step_of(at: AppTest) -> tuple[str, int | None]:
    """The page kind and step index from the page's data-vp markers."""
    for el in at.main:
        if el.type == "html":
            m = re.search(r'data-vp-step="(\d+)" data-vp-page="([\w-]+)"', el.proto.body) or \
                re.search(r'data-vp-page="([\w-]+)" data-vp-step="(\d+)"', el.proto.body)
            if m and m.group(1).isdigit():
                return m.group(2), int(m.group(1))
            if m:
                return m.group(1), int(m.group(2))
            m = re.search(r'data-vp-page="([\w-]+)"', el.proto.body)
            if m:
                return m.group(1), None
    return "none", None


def start(at: AppTest) -> AppTest:
    at.button(key="consent-yes").click().run()
    return at.button(key="start").click().run()


def fill_demographics(at: AppTest) -> AppTest:
    at.number_input(key="d-age").set_value(34)
    at.radio(key="d-gender").set_value("Woman")
    at.radio(key="d-education").set_value("Doctorate")
    at.radio(key="d-politics").set_value("Moderate")
    at.text_input(key="d-country").set_value("Norway")
    return at.button[0].click().run()


def answer_current(at: AppTest, value: int = 3) -> AppTest:
    """Answer the question on screen (reading past an introduction or a query page first)."""
    at = read_on(at)
    radio = next(r for r in at.radio if r.key and r.key.startswith("q-"))
    radio.set_value(1 + (value - 1) % len(radio.options))  # BFI has five options, the others six
    return next(b for b in at.button if b.key and b.key.startswith("next-")).click().run()


def read_on(at: AppTest) -> AppTest:
    """Press Continue on introduction and query pages until a question is on screen."""
    while step_of(at)[0] in ("intro", "query"):
        at = next(b for b in at.button if b.key and b.key.startswith("go-")).click().run()
    return at


def asking(at: AppTest) -> bool:
    return step_of(at)[0] in ("intro", "query", "question", "rating")


def html_bodies(at: AppTest) -> str:
    return "\n".join(el.proto.body for el in at.main if el.type == "html")


def part_group(db_path) -> str:
    with open_db(db_path) as db:
        return db.query("SELECT group_id FROM participations")[0][0]


def shown_code(at: AppTest) -> list[str]:
    return re.findall(r'data-vp-role="completion-code"[^>]*>([^<]*)<', html_bodies(at))


# -- the link -----------------------------------------------------------------------------
def test_parse_entry_validates_prolific_ids():
    ok = parse_entry({"PROLIFIC_PID": PID, "STUDY_ID": "60aa11bb22cc33dd44ee55ff", "SESSION_ID": "s1"})
    assert ok.participant_id == PID and not ok.test_mode and ok.problem is None
    assert parse_entry({"PROLIFIC_PID": "123", "STUDY_ID": "a", "SESSION_ID": "b"}).problem
    assert parse_entry({"PROLIFIC_PID": PID[:-1] + "g", "STUDY_ID": "a", "SESSION_ID": "b"}).problem  # not hex
    assert parse_entry({"PROLIFIC_PID": "<script>" + PID[8:], "STUDY_ID": "a", "SESSION_ID": "b"}).problem
    assert "SESSION_ID" in parse_entry({"PROLIFIC_PID": PID, "STUDY_ID": "a"}).problem
    assert "STUDY_ID" in parse_entry({"PROLIFIC_PID": PID, "STUDY_ID": "a b", "SESSION_ID": "c"}).problem
    test = parse_entry({})
    assert test.test_mode and test.participant_id is None and test.problem is None
    assert parse_entry({"test_id": "test-0123456789ab"}).participant_id == "test-0123456789ab"
    assert parse_entry({"test_id": "../../etc"}).problem


def test_bad_link_stores_nothing(db_path):
    at = visit("not-a-prolific-id")
    assert step_of(at)[0] == "bad-link"
    assert not at.button
    with open_db(db_path) as db:
        assert db.count("participations") == 0 and db.count("events") == 0


def test_test_mode_is_marked_and_kept_in_the_url(db_path):
    at = visit(None)
    assert any("TEST MODE" in w.value for w in at.warning)
    test_id = at.query_params["test_id"]
    assert re.fullmatch(r"test-[0-9a-f]{12}", test_id)
    start(at)
    with open_db(db_path) as db:
        row = db.query("SELECT test_mode FROM participations WHERE participant_id = ?", (test_id,))
    assert row and row[0]["test_mode"] == 1


# -- the whole flow -------------------------------------------------------------------------
def test_full_participation_stores_everything_once(db_path):
    study = load_study(DEFAULT_STUDY)
    at = start(visit())
    assert step_of(at) == ("demographics", 0)
    at = fill_demographics(at)
    n = 0
    while asking(at):
        at = read_on(at)
        before = step_of(at)[1]
        at = answer_current(at, value=1 + n % 6)
        assert step_of(at)[1] in (before + 1, None)
        n += 1
    assert step_of(at)[0] == "completion"
    assert shown_code(at) == ["VPDEMO01"]
    assert any(b.proto.url.endswith("cc=VPDEMO01") for b in at.get("link_button"))
    # 21 PVQ + 10 BFI + 20 ratings + 3 checks, as the default study defines.
    assert n == 21 + 10 + 20 + 3
    # Read once each: the three block introductions and the group's four queries.
    with open_db(db_path) as db:
        pages = [r[0] for r in db.query("SELECT page FROM page_views ORDER BY seen_at")]
    assert pages[:2] == ["intro:pvq21", "intro:bfi10"] and pages[2] == "intro:items"
    assert sorted(p for p in pages if p.startswith("query:")) == sorted(f"query:{p}" for p in
                                                                        {i.portrait_id for i in study.items_by_group[
                                                                            part_group(db_path)]})
    with open_db(db_path) as db:
        part = db.query("SELECT * FROM participations")[0]
        assert part["status"] == "completed" and part["completion_code"] == "VPDEMO01"
        assert db.count("instrument_answers") == 31 and db.count("attention_checks") == 3
        assert db.count("ratings") == 20
        people = db.query("SELECT age, gender, country FROM participants")[0]
        assert tuple(people) == (34, "Woman", "Norway")
        order = json.loads(part["item_order_json"])
        # The stored order is a permutation of the group's items with the item checks where the study puts them.
        rated = [(o["portrait_id"], o["option_id"]) for o in order if "check" not in o]
        group = study.items_by_group[part["group_id"]]
        assert sorted(rated) == sorted((i.portrait_id, i.option_id) for i in group)
        assert [i for i, o in enumerate(order) if "check" in o] == [6, 15]
        # By query (the default): each query's five responses in one run, each check inside the query around it.
        runs = [o["portrait_id"] for i, o in enumerate(order) if i == 0 or o["portrait_id"] != order[i - 1]["portrait_id"]]
        assert len(runs) == len(set(runs)) == 4
        assert order[6]["portrait_id"] == order[5]["portrait_id"] and order[15]["portrait_id"] == order[14]["portrait_id"]
        positions = db.query("SELECT portrait_id, option_id, position FROM ratings ORDER BY position")
        assert [(r[0], r[1]) for r in positions] == rated
        assert all(r["seconds"] is not None and r["seconds"] >= 0 for r in db.query("SELECT seconds FROM ratings"))


def test_refresh_resumes_at_first_unanswered_page(db_path):
    at = fill_demographics(start(visit()))
    assert step_of(at) == ("intro", 1)
    for _ in range(7):
        at = answer_current(at)
    assert step_of(at) == ("question", 9)
    again = visit()  # a refresh or new tab: a new session, empty session_state
    assert step_of(again) == ("question", 9)
    assert not any(b.key in ("consent-yes", "start") for b in again.button)
    with open_db(db_path) as db:
        assert db.count("instrument_answers") == 7
        assert db.count("participations") == 1


def test_next_without_an_answer_stores_nothing(db_path):
    at = read_on(fill_demographics(start(visit())))
    at.button(key="next-pvq21:1").click().run()
    assert "choose one of the answers" in html_bodies(at)
    assert step_of(at) == ("question", 2)
    with open_db(db_path) as db:
        assert db.count("instrument_answers") == 0


def test_demographics_require_every_field(db_path):
    at = start(visit())
    at.number_input(key="d-age").set_value(40)
    at.button[0].click().run()
    assert "gender" in html_bodies(at) and step_of(at)[0] == "demographics"
    with open_db(db_path) as db:
        assert db.query("SELECT demographics_json FROM participants")[0][0] is None


def test_decline_keeps_only_the_decline(db_path):
    at = visit()
    at.button(key="consent-no").click().run()
    assert step_of(at)[0] == "declined"
    with open_db(db_path) as db:
        assert db.count("participants") == 0 and db.count("participations") == 0
        events = db.query("SELECT kind, study_id, participant_id FROM events")
    assert [r["kind"] for r in events] == ["declined"]
    # Not the Prolific id, but its SHA-256 with the study id (hashlib here, by hand).
    study_id = events[0]["study_id"]
    assert PID not in events[0]["participant_id"]
    assert events[0]["participant_id"] == "declined-" + hashlib.sha256(f"{study_id}\0{PID}".encode()).hexdigest()[:32]
    assert step_of(visit())[0] == "declined"  # coming back does not reopen the study
    assert step_of(visit(pid="5f0e1d2c3b4a59687766aabb"))[0] == "consent"  # someone else may still take part


def test_completed_participant_cannot_start_again(db_path, tmp_path, monkeypatch):
    items = [{"portrait_id": 3001, "content": {"title": None, "text": "Q?"},
              "outputs": [{"id": 1, "content": "R1"}, {"id": 2, "content": "R2"}]},
             {"portrait_id": 3002, "content": {"title": None, "text": "Q2?"},
              "outputs": [{"id": 1, "content": "S1"}, {"id": 2, "content": "S2"}]}]
    monkeypatch.setenv("VP_STUDY", str(write_small_study(tmp_path / "s", items=items, groups=2, target=1, checks=[])))
    at = fill_demographics(start(visit()))
    while asking(at):
        at = answer_current(at)
    assert shown_code(at) == ["TESTCODE1"]
    back = visit()
    assert step_of(back)[0] == "completion" and shown_code(back) == ["TESTCODE1"]
    with open_db(db_path) as db:
        assert db.count("participations") == 1 and db.count("ratings") == 2
    # The second group still has a place; once it is taken too the study is full for a newcomer.
    other = start(visit("0" * 24))
    assert step_of(other)[0] == "demographics"
    assert step_of(visit("1" * 24))[0] == "full"


# -- the database layer ----------------------------------------------------------------------
def test_assignment_is_balanced_and_atomic_under_concurrency(tmp_path):
    study = load_study(DEFAULT_STUDY)
    path = tmp_path / "s.db"
    with open_db(path) as db:
        store.sync_study(db, study)
        db.conn.execute("UPDATE item_groups SET target_n = 7")
    # The study object carries the file's targets (50); the database's 7 is what assignment reads.
    got: list[str | None] = []

    def arrive(i):
        with open_db(path) as db:
            got.append(store.assign_group(db, study, f"{i:024x}", test_mode=False).group_id)

    threads = [threading.Thread(target=arrive, args=(i,)) for i in range(25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(g for g in got if g) == ["A"] * 7 + ["B"] * 7 + ["C"] * 7
    assert got.count(None) == 4
    with open_db(path) as db:
        assert db.count("participations") == 21
        again = store.assign_group(db, study, f"{0:024x}", test_mode=False)
        assert not again.new and db.count("participations") == 21


SMALL_ITEMS = [{"portrait_id": 3001, "content": {"title": None, "text": "Q?"},
                "outputs": [{"id": 1, "content": "R1"}, {"id": 2, "content": "R2"}]}]


@pytest.mark.parametrize("failed, code", [((), "TESTCODE1"), (("ac_pvq",), "TESTCODE1"),
                                          (("ac_pvq", "ac_item_1"), "CHECKFAIL1")])
def test_failed_checks_get_their_own_code(db_path, tmp_path, monkeypatch, failed, code):
    """With failed_checks_code, someone who failed at least failed_checks_min (2) checks gets it."""
    import instruments

    path = write_small_study(tmp_path / "s", items=SMALL_ITEMS, completion={
        "code": "TESTCODE1", "failed_checks_code": "CHECKFAIL1", "failed_checks_min": 2})
    monkeypatch.setenv("VP_STUDY", str(path))
    expected = {c.id: c.expected for c in instruments.load_attention_checks()}
    at = fill_demographics(start(visit()))
    while asking(at):
        at = read_on(at)
        radio = next(r for r in at.radio if r.key and r.key.startswith("q-"))
        check = radio.key.removeprefix("q-check:") if radio.key.startswith("q-check:") else None
        radio.set_value(4 if check is None else expected[check] % 5 + 1 if check in failed else expected[check])
        at = next(b for b in at.button if b.key and b.key.startswith("next-")).click().run()
    assert shown_code(at) == [code]
    assert any(b.proto.url.endswith(f"cc={code}") for b in at.get("link_button"))
    study = load_study(path)
    with open_db(db_path) as db:
        assert db.query("SELECT SUM(passed = 0) FROM attention_checks")[0][0] == len(failed)
        assert admin.summary(db, study)["codes"] == {code: 1}
    assert step_of(visit())[0] == "completion" and shown_code(visit()) == [code]  # coming back: the same code


def test_failed_checks_code_is_validated(tmp_path):
    for completion, field in (({"code": "SAMECODE", "failed_checks_code": "SAMECODE"}, "failed_checks_code"),
                              ({"code": "TESTCODE1", "failed_checks_code": "CHECKFAIL1", "failed_checks_min": 3},
                               "completion.failed_checks_min: 3")):
        path = write_small_study(tmp_path / field[:12], items=SMALL_ITEMS, completion=completion)
        with pytest.raises(InputError, match=field):
            load_study(path)


def test_answers_are_first_write_wins(tmp_path):
    study = load_study(DEFAULT_STUDY)
    with open_db(tmp_path / "s.db") as db:
        store.sync_study(db, study)
        group = store.assign_group(db, study, PID, test_mode=False).group_id
        item = study.items_by_group[group][0]
        step = {"kind": "rating", "key": item.key, "position": 1}
        assert store.save_answer(db, study, PID, step, 2, 1.5)
        assert store.save_answer(db, study, PID, step, 5, 0.1)  # a stale tab, a replay
        rows = db.query("SELECT rating, seconds FROM ratings")
        assert [tuple(r) for r in rows] == [(2, 1.5)]
        assert store.complete(db, study, PID, {"rating": 20}) is None  # 19 ratings missing: no code


# -- safe rendering ----------------------------------------------------------------------------
NASTY = '<b>bold</b> **stars** $x^2$ :red[red] [link](https://example.com) <a href="https://evil.example">x</a> & done'


def test_item_text_is_escaped_not_rendered(db_path, tmp_path, monkeypatch):
    items = [{"portrait_id": 1001, "content": {"title": "# " + NASTY, "text": NASTY},
              "outputs": [{"id": 1, "content": NASTY}]}]
    monkeypatch.setenv("VP_STUDY", str(write_small_study(tmp_path / "s", items=items, checks=[])))
    at = fill_demographics(start(visit()))
    while step_of(at)[0] != "rating":
        at = answer_current(at) if step_of(at)[0] == "question" else read_on(at)
    assert step_of(at)[0] == "rating"
    bodies = html_bodies(at)
    assert "&lt;b&gt;bold&lt;/b&gt;" in bodies and "<b>" not in bodies and "<a " not in bodies
    assert all(NASTY not in m.value for m in at.markdown)  # never through Markdown
    assert "How similar is this response to your own thoughts?" in at.radio[0].label


# -- the study file -------------------------------------------------------------------------------
def test_study_errors_name_file_and_field(tmp_path):
    items = [{"portrait_id": 1001, "content": {"title": None, "text": "Q"}, "outputs": [{"id": 1, "content": "R"}]}]
    path = write_small_study(tmp_path, items=items, checks=[])
    good = json.loads(path.read_text())

    def broken(**change):
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(InputError) as err:
            load_study(path)
        return str(err.value)

    assert "groups.0.portraits.0" in broken(groups=[{"id": "G1", "portraits": [9999], "target": 5}])
    assert "groups.0.target" in broken(groups=[{"id": "G1", "portraits": [1001], "target": 0}])
    assert "attention_checks.0.id" in broken(attention_checks=[{"id": "nope", "after": 1}])
    assert "attention_checks.0.after" in broken(attention_checks=[{"id": "ac_pvq", "after": 30}])
    assert "completion.code" in broken(completion={"code": "a b"})
    assert "items_file" in broken(items_file="missing.json")
    assert "blocks" in broken(blocks=["pvq21", "pvq21", "bfi10", "items"])
    assert "texts.welcome" in broken(texts={"welcome": "hi"})
    assert str(path) in broken(title="")


def test_default_study_has_our_items():
    study = load_study()
    assert len(study.items) == 60 and len(study.spec.groups) >= 3
    by_query: dict[str, set] = {}
    for item in study.items:
        by_query.setdefault(item.portrait_id, set()).add(item.value)
    assert len(by_query) == 12 and all(len(v) == 5 for v in by_query.values())


# -- admin --------------------------------------------------------------------------------------
def test_admin_needs_the_password(db_path, monkeypatch):
    at = visit(None, admin="1")
    assert not at.metric and not at.dataframe and not at.text_input  # closed: no password configured
    monkeypatch.setenv("VP_ADMIN_PASSWORD", "correct horse")
    at = visit(None, admin="1")
    at.text_input(key="admin-password").set_value("wrong").run()
    at.button[0].click().run()
    assert at.error and not at.metric and not at.dataframe and not at.get("download_button")
    at.text_input(key="admin-password").set_value("correct horse")
    at.button[0].click().run()
    assert {m.label for m in at.metric} >= {"Completed", "Active", "Median minutes"}
    assert not at.get("download_button")  # files are made only when asked for
    at.button(key="prepare-exports").click().run()
    assert len(at.get("download_button")) == len(exports.EXPORTS)
    assert admin.password_ok("a", "a") and not admin.password_ok("a", "b") and not admin.password_ok("", "")
