"""End-to-end tests in headless Chromium against `vp app` started as a subprocess.

Needs Debian's Chromium at /usr/bin/chromium (the CI set-up installs it). Without it the
tests skip locally, and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from valueportrait.storage import open_db

from collection_app import bots, pages, store
from collection_app.study import load_study
from collection_app.testing import Server, kill_during, serve, stored_answers, write_small_study

pytestmark = pytest.mark.browser

NASTY = ('<b>bold</b> **stars** $x^2$ :red[red] [link](https://example.com) '
         '<a href="https://evil.example">click</a> <img src=x onerror=alert(1)> &amp; # not a heading')
PID = "5f0c1e2d3b4a5968778695a4"


@pytest.fixture(scope="module")
def chromium():
    if not Path(bots.CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{bots.CHROMIUM} is missing but CI is set: the set-up must install Debian's chromium")
        pytest.skip(f"{bots.CHROMIUM} not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=bots.CHROMIUM, args=bots.CHROMIUM_ARGS)
        yield browser
        browser.close()


def _items():
    return [
        {"portrait_id": 1001, "content": {"title": "Title " + NASTY, "text": "Text " + NASTY},
         "outputs": [{"id": 1, "content": NASTY}, {"id": 2, "content": "A plain answer."}]},
        {"portrait_id": 3001, "content": {"title": None, "text": "Is it fine?"},
         "outputs": [{"id": 1, "content": "Yes."}, {"id": 2, "content": "No."}]},
    ]


def _settled(page, prev: str = "") -> str:
    return page.wait_for_function(bots._SETTLED_JS, arg=prev, timeout=30_000, polling=50).json_value()


def _click(page, name: str, prev: str) -> str:
    page.get_by_role("button", name=name, exact=True).click()
    return _settled(page, prev)


def _answer(page, state: str, index: int = 2) -> str:
    page.locator("[data-testid='stForm'] [data-testid='stRadioOption']").nth(index).click()
    return _click(page, "Next", state)


def test_participant_from_consent_to_code_with_refresh_and_literal_text(chromium, tmp_path):
    study_file = write_small_study(tmp_path / "study", items=_items(), checks=[{"id": "ac_item_1", "after": 2}])
    with serve(tmp_path / "study.db", study=study_file, log=tmp_path / "server.log") as server:
        page = chromium.new_context().new_page()
        url = f"{server.url}/?PROLIFIC_PID={PID}&STUDY_ID=60aa11bb22cc33dd44ee55ff&SESSION_ID=s1"
        page.goto(url)
        page.wait_for_selector("[data-testid='stApp']")
        state = _settled(page)
        assert state == "consent:"
        assert "Traceback" not in page.inner_text("body")
        state = _click(page, "I agree", state)
        assert state == "platform:"
        assert PID in page.inner_text("body")
        state = _click(page, "Start the study", state)
        assert state == "demographics:0"
        page.get_by_label("Your age in years").fill("41")
        for group, option in (("Gender", "Man"), ("Highest education completed", "Secondary school"),
                              ("Political orientation", "Liberal")):
            page.locator(f"[role='radiogroup'][aria-label='{group}'] [data-testid='stRadioOption']",
                         has_text=option).first.click()
        page.get_by_label("Country you live in").fill("Chile")
        state = _click(page, "Next", state)
        assert state == "question:1"
        for _ in range(10):
            state = _answer(page, state)
        assert state == "question:11"

        # A refresh midway: a new Streamlit session, empty session_state; the database says where we are.
        page.reload()
        page.wait_for_selector("[data-testid='stApp']")
        assert _settled(page) == "question:11"
        # A second tab with the same link lands on the same page too.
        other = chromium.new_context().new_page()
        other.goto(url)
        assert _settled(other) == "question:11"
        other.context.close()

        saw_nasty = False
        while state.startswith(("question", "rating")):
            if state.startswith("rating"):
                response = page.locator("[data-vp-role='response']").inner_text()
                if response == NASTY:
                    saw_nasty = True
                    body = page.inner_text("[data-testid='stMain']")
                    assert NASTY in body and "Title " + NASTY in body and "Text " + NASTY in body
                    main = page.locator("[data-testid='stMain']")
                    assert main.locator("b").count() == 0 and main.locator("img").count() == 0
                    assert main.locator("a[href='https://example.com']").count() == 0
                    assert main.locator("a[href='https://evil.example']").count() == 0
                    assert main.locator(".katex, [data-testid='stMarkdownColoredText']").count() == 0
            state = _answer(page, state, index=1)
        assert saw_nasty
        assert state.startswith("completion")
        assert page.locator("[data-vp-role='completion-code']").inner_text().strip() == "TESTCODE1"
        link = page.get_by_role("link", name="Return to Prolific to finish")
        assert link.get_attribute("href") == "https://app.prolific.com/submissions/complete?cc=TESTCODE1"
        page.context.close()

    with open_db(tmp_path / "study.db") as db:
        assert db.count("ratings") == 4 and db.count("attention_checks") == 1
        assert db.count("instrument_answers") == 31
        assert db.query("SELECT status FROM participations")[0][0] == "completed"


@pytest.mark.slow
def test_kill_minus_nine_mid_study_loses_no_acknowledged_answer(chromium, tmp_path):
    """kill -9 the server while bots are mid-study, restart it on the same database and port:
    every bot finishes and every answer a bot saw acknowledged is in the database once."""
    study_file = write_small_study(tmp_path / "study", items=_items(), groups=2,
                                   checks=[{"id": "ac_pvq", "after": 5}, {"id": "ac_item_1", "after": 1}])
    db_path = tmp_path / "study.db"
    server = Server(db_path, study=study_file, log=tmp_path / "server.log").start()
    results: list = []
    behaviours = ("consistent", "refresher", "returner", "consistent", "speeder", "consistent")

    def play():
        results.extend(asyncio.run(bots.run_bots(server.url, len(behaviours), think=0.15, behaviours=behaviours,
                                                 seed=1, study_file=study_file, timeout=8, ramp=1.0)))

    t0 = time.monotonic()
    stored_at_kill = kill_during(server, db_path, play, after_answers=40, wait=120, down=1.5, finish=300)

    print(bots.summary(results, time.monotonic() - t0))
    assert stored_at_kill >= 40
    assert len(results) == len(behaviours)
    for r in results:
        assert r.completed, (r.behaviour, r.failures, r.end_page)
        assert r.code == "TESTCODE1"
        assert all(expected == seen for expected, seen in r.resume_checks), r.resume_checks

    study = load_study(study_file)
    with open_db(db_path) as db:
        for r in results:
            prog = store.load_progress(db, study, r.participant_id)
            assert prog.status == "completed"
            steps = pages.question_steps(study, prog)
            for index, given in r.answers.items():
                step = steps[index][1]
                assert stored_answers(db, r.participant_id, step) == [given["answer"]], (r.participant_id, index, step)
            counts = pages.expected_counts(study, prog.group_id)
            assert db.query("SELECT COUNT(*) FROM ratings WHERE participant_id=?", (r.participant_id,))[0][0] == counts["rating"]
            assert db.query("SELECT COUNT(*) FROM instrument_answers WHERE participant_id=?", (r.participant_id,))[0][0] == 31
        groups = [row[0] for row in db.query("SELECT COUNT(*) FROM participations GROUP BY group_id")]
        assert max(groups) - min(groups) <= 1
