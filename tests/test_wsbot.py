"""Websocket bots against `vp app` started as a subprocess: the real server, no browser."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

import instruments
from valueportrait.storage import open_db

from collection_app import bots, pages, store, wsbot
from collection_app.study import load_study
from collection_app.testing import Server, acknowledged, kill_during, serve, stored_answers, write_small_study

NASTY = ('<b>bold</b> **stars** $x^2$ :red[red] [link](https://example.com) '
         '<a href="https://evil.example">click</a> <img src=x onerror=alert(1)> &amp; "quoted" # not a heading')


def _items():
    return [
        {"portrait_id": 1001, "content": {"title": "Title", "text": "Text " + NASTY},
         "outputs": [{"id": 1, "content": NASTY, "value": "Security"}, {"id": 2, "content": "A plain answer."}]},
        {"portrait_id": 3001, "content": {"title": None, "text": "Is it fine?"},
         "outputs": [{"id": 1, "content": "Yes."}, {"id": 2, "content": "No."}]},
    ]


def _study(tmp_path, target=50):
    return write_small_study(tmp_path / "study", items=_items(), groups=2, target=target,
                             checks=[{"id": "ac_pvq", "after": 5}, {"id": "ac_item_1", "after": 1}])


def _check_db(db_path, study_file, results, *, all_acknowledged=True):
    """Every acknowledged answer is in the database exactly once, with the value the bot gave."""
    study = load_study(study_file)
    with open_db(db_path) as db:
        for r in results:
            prog = store.load_progress(db, study, r.participant_id)
            assert prog.status == "completed", (r.behaviour, r.failures, r.end_page)
            steps = pages.question_steps(study, prog)
            counts = pages.expected_counts(study, prog.group_id)
            if all_acknowledged:  # (a kill can take the acknowledgement of a stored answer)
                # Every question step was acknowledged to the bot (the demographics form has no value,
                # introductions and query pages none either).
                asked = [i for i, (_, s) in enumerate(steps) if s["kind"] in pages.QUESTION_KINDS]
                assert sorted(r.answers) == asked, (r.behaviour, sorted(r.answers))
            for index, given in r.answers.items():
                assert stored_answers(db, r.participant_id, steps[index][1]) == acknowledged(given), (r.behaviour, index)
            n = {t: db.query(f"SELECT COUNT(*) FROM {t} WHERE participant_id=?", (r.participant_id,))[0][0]
                 for t in ("ratings", "instrument_answers", "attention_checks")}
            assert n == {"ratings": counts["rating"], "instrument_answers": 31, "attention_checks": counts["check"]}
        groups = [row[0] for row in db.query("SELECT COUNT(*) FROM participations GROUP BY group_id")]
        assert max(groups) - min(groups) <= 1
    return study


def test_view_reads_markers_roles_and_unescapes_text():
    from streamlit.proto.Html_pb2 import Html
    import html
    marker, statement = Html(), Html()
    marker.body = '<div data-vp-step="7" data-vp-page="question" style="x">Page 8 of 40</div>'
    statement.body = f'<div class="vp-plain" data-vp-role="statement" style="a: b;">{html.escape(NASTY, quote=True)}</div>'
    view = wsbot.View.from_run({(0, 3): ("html", statement), (0, 1): ("html", marker)})
    assert (view.page, view.step, view.key) == ("question", 7, "question:7")
    assert view.roles == {"statement": NASTY}
    assert wsbot.View.from_run({}).key == ""


@pytest.mark.slow
def test_ws_bots_of_every_behaviour_complete_and_store_each_answer_once(tmp_path):
    study_file = _study(tmp_path)
    behaviours = ("consistent", "random", "straightliner", "speeder", "attention_failer", "consistent")
    with serve(tmp_path / "study.db", study=study_file, log=tmp_path / "server.log") as server:
        results = asyncio.run(wsbot.run_bots(server.url, len(behaviours), think=0, behaviours=behaviours, seed=3,
                                             study_file=study_file, timeout=20, ramp=0.5))
    print(bots.summary(results, 0))
    assert [r.behaviour for r in results] == list(behaviours)
    for r in results:
        assert r.completed and not r.failures, (r.behaviour, r.failures, r.end_page)
        assert r.code == "TESTCODE1"  # the study file's code, read from the completion page
        kinds = {k for k, _ in r.latencies}
        assert {"load", "consent", "platform", "demographics", "question", "rating"} <= kinds
    study = _check_db(tmp_path / "study.db", study_file, results)

    # The bots read the texts as the study file has them: HTML and Markdown arrive literally.
    seen = {a["text"] for r in results for a in r.answers.values()}
    assert NASTY in seen and "A plain answer." in seen  # group G1 (half the bots) rates them
    shown_items = {a["text"] for r in results for a in r.answers.values() if a["page"] == "rating"}
    assert shown_items <= {i.response for i in study.items} | {c.text for c in study.checks.values()}
    # Behaviours reach the database: the failer gets every check wrong, the consistent bots none.
    expected = {c.id: c.expected for c in instruments.load_attention_checks()}
    with open_db(tmp_path / "study.db") as db:
        for r in results:
            rows = db.query("SELECT check_id, answer FROM attention_checks WHERE participant_id=?", (r.participant_id,))
            right = [answer == expected[check] for check, answer in rows]
            if r.behaviour == "attention_failer":
                assert not any(right)
            elif r.behaviour == "consistent":
                assert all(right)
        straight = next(r for r in results if r.behaviour == "straightliner")
        answers = db.query("SELECT DISTINCT answer FROM instrument_answers WHERE participant_id=? AND instrument='pvq21'",
                           (straight.participant_id,))
        assert len(answers) == 1


def test_refresh_and_return_resume_at_the_first_unanswered_page(tmp_path):
    study_file = _study(tmp_path)
    value_of_response = bots._responses_by_text(study_file)
    with serve(tmp_path / "study.db", study=study_file, log=tmp_path / "server.log") as server:
        async def go():
            out = []
            for i, (behaviour, at) in enumerate((("refresher", 5), ("returner", 30))):
                bot = wsbot.WsBot(server.url, behaviour, 0.0, random.Random(i), value_of_response, 20)
                bot.disruption_at = at
                out.append(await bot.play())
            # The same link after completion shows the completion page again, with the same code.
            again = wsbot.WsBot(server.url, "consistent", 0.0, random.Random(9), value_of_response, 20,
                                participant_id=out[0].participant_id)
            out.append(await again.play())
            return out
        results = asyncio.run(go())
    refresher, returner, again = results
    for r in (refresher, returner):
        assert r.completed and not r.failures, (r.behaviour, r.failures)
        assert r.reloads == 1 and len(r.resume_checks) == 1
        left, seen = r.resume_checks[0]
        assert seen == left  # a new session lands on the page it left, from the database alone
    assert refresher.resume_checks[0][0] == 5 and returner.resume_checks[0][0] == 30
    assert again.completed and again.code == refresher.code and not again.answers
    _check_db(tmp_path / "study.db", study_file, [refresher, returner])


@pytest.mark.slow
def test_kill_minus_nine_mid_study_ws_bots_finish_and_lose_nothing(tmp_path):
    """kill -9 the server while websocket bots are mid-study, restart it: all finish, nothing lost."""
    study_file = _study(tmp_path)
    db_path = tmp_path / "study.db"
    server = Server(db_path, study=study_file, log=tmp_path / "server.log").start()
    behaviours = ("consistent", "refresher", "returner", "consistent", "speeder", "random")
    results: list = []

    def play():
        results.extend(asyncio.run(wsbot.run_bots(server.url, len(behaviours), think=0.05, behaviours=behaviours,
                                                  seed=1, study_file=study_file, timeout=8, ramp=0.5)))

    stored_at_kill = kill_during(server, db_path, play, after_answers=60, wait=60, down=1.0, finish=120)
    print(bots.summary(results, 0))
    assert 60 <= stored_at_kill < 6 * 35  # killed mid-study, not after
    assert len(results) == len(behaviours)
    for r in results:
        assert r.completed and r.code == "TESTCODE1", (r.behaviour, r.failures, r.end_page)
        assert all(expected == seen for expected, seen in r.resume_checks), r.resume_checks
    # The kill was felt: bots whose connection dropped reconnected as a browser tab does (no new
    # page load) and pressed again; that first press after the restart was stored every time.
    presses = [(r.participant_id, p) for r in results for p in r.reconnect_presses]
    assert presses and all(ok for _, (_, ok) in presses), presses
    _check_db(db_path, study_file, results, all_acknowledged=False)


def test_ws_bots_rate_side_by_side_pages(tmp_path):
    """A study that shows a query's responses on one page: bots answer every scale on it, and
    each response's answer is stored once with the value given."""
    study_file = write_small_study(tmp_path / "study", items=_items(), groups=1, target=10,
                                   checks=[{"id": "ac_item_1", "after": 1}],
                                   ratings={"by_query": True, "layout": "side_by_side"})
    behaviours = ("consistent", "random")
    with serve(tmp_path / "study.db", study=study_file, log=tmp_path / "server.log") as server:
        results = asyncio.run(wsbot.run_bots(server.url, 2, think=0, behaviours=behaviours, seed=5,
                                             study_file=study_file, timeout=20, ramp=0.2))
    for r in results:
        assert r.completed and not r.failures, (r.behaviour, r.failures, r.end_page)
        side = [a for a in r.answers.values() if a["page"] == "ratings"]
        assert len(side) == 2 and sorted(len(a["answers"]) for a in side) == [2, 3]  # 2 + 2 responses, 1 check
    _check_db(tmp_path / "study.db", study_file, results)


@pytest.mark.slow
def test_two_app_processes_on_one_database_lose_nothing_and_keep_groups_balanced(tmp_path):
    """Past one process's capacity: two `vp app` processes on one SQLite database (WAL), the
    participants split over their ports as a reverse proxy with sticky sessions would split
    them. Every acknowledged answer is stored once, and group assignment is one queue across
    both processes: read in commit order, the groups never differ by more than one
    participant, none passes its target, and the late arrivals get the full page."""
    items = [{"portrait_id": 1001 + q, "content": {"title": f"Title {q}", "text": f"Question {q}?"},
              "outputs": [{"id": 1, "content": f"Yes to {q}."}, {"id": 2, "content": f"No to {q}."}]}
             for q in range(3)]
    study_file = write_small_study(tmp_path / "study", items=items, groups=3, target=3,
                                   checks=[{"id": "ac_pvq", "after": 5}])
    db_path = tmp_path / "study.db"
    servers = [Server(db_path, study=study_file, log=tmp_path / f"server{k}.log").start() for k in range(2)]
    try:
        async def both():
            return await asyncio.gather(*(
                wsbot.run_bots(server.url, 6, think=0, seed=10 + k, study_file=study_file, timeout=30, ramp=0)
                for k, server in enumerate(servers)))
        by_process = asyncio.run(both())
    finally:
        for server in servers:
            server.stop()
    results = [r for part in by_process for r in part]
    done = [r for r in results if r.completed]
    assert len(done) == 9 and all(any(r.completed for r in part) for part in by_process)
    full = [r for r in results if not r.completed]
    assert [r.end_page for r in full] == ["full:"] * 3, [(r.end_page, r.failures) for r in full]
    _check_db(db_path, study_file, done)
    with open_db(db_path) as db:
        order = [json.loads(row[0])["group_id"] for row in db.query(
            "SELECT detail_json FROM events WHERE kind = 'consented' ORDER BY event_id")]
        per_group = db.query("SELECT group_id, COUNT(*), SUM(status = 'completed') FROM participations GROUP BY group_id")
        people = db.query("SELECT COUNT(DISTINCT participant_id), COUNT(*) FROM participations")[0]
    assert len(order) == 9
    for k in range(1, len(order) + 1):
        counts = [order[:k].count(g) for g in ("G1", "G2", "G3")]
        assert max(counts) - min(counts) <= 1, order
    assert sorted(tuple(row) for row in per_group) == [("G1", 3, 3), ("G2", 3, 3), ("G3", 3, 3)]
    assert tuple(people) == (9, 9)
