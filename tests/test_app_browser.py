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
from collection_app.testing import Server, acknowledged, kill_during, serve, stored_answers, write_small_study

pytestmark = pytest.mark.browser

NASTY = ('<b>bold</b> **stars** $x^2$ :red[red] [link](https://example.com) '
         '<a href="https://evil.example">click</a> <img src=x onerror=alert(1)> &amp; # not a heading')
PID = "5f0c1e2d3b4a5968778695a4"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # screenshots (git-ignored)


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


def _demographics(page, state: str) -> str:
    """Fill the demographics form and press Next; the page that follows."""
    page.get_by_label("Your age in years").fill("41")
    for group, option in (("Gender", "Man"), ("Highest education completed", "Secondary school"),
                          ("Political orientation", "Liberal")):
        page.locator(f"[role='radiogroup'][aria-label='{group}'] [data-testid='stRadioOption']",
                     has_text=option).first.click()
    page.get_by_label("Country you live in").fill("Chile")
    return _click(page, "Next", state)


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
        state = _demographics(page, state)
        assert state == "intro:1"
        state = _click(page, "Continue", state)
        assert state == "question:2"
        for _ in range(10):
            state = _answer(page, state)
        assert state == "question:12"

        # A refresh midway: a new Streamlit session, empty session_state; the database says where we are.
        page.reload()
        page.wait_for_selector("[data-testid='stApp']")
        assert _settled(page) == "question:12"
        # A second tab with the same link lands on the same page too.
        other = chromium.new_context().new_page()
        other.goto(url)
        assert _settled(other) == "question:12"
        other.context.close()

        saw_nasty = False
        while state.startswith(("question", "rating", "intro", "query")):
            if state.startswith(("intro", "query")):
                if state.startswith("query"):
                    body = page.inner_text("[data-testid='stMain']")
                    assert "Title " + NASTY in body or "Is it fine?" in body
                state = _click(page, "Continue", state)
                continue
            if state.startswith("rating"):
                response = page.locator("[data-vp-role='response']").inner_text()
                if response == NASTY:
                    saw_nasty = True
                    page.get_by_text("Read the whole question again").click()  # the query, unfolded
                    page.locator("[data-vp-role='query-text']").wait_for()
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
        # A bot whose tab lost the connection waited for it to come back and pressed again:
        # that first press after the restart was stored, every time.
        assert all(ok for _, ok in r.reconnect_presses), r.reconnect_presses

    study = load_study(study_file)
    with open_db(db_path) as db:
        for r in results:
            prog = store.load_progress(db, study, r.participant_id)
            assert prog.status == "completed"
            steps = pages.question_steps(study, prog)
            for index, given in r.answers.items():
                step = steps[index][1]
                assert stored_answers(db, r.participant_id, step) == acknowledged(given), (r.participant_id, index, step)
            counts = pages.expected_counts(study, prog.group_id)
            assert db.query("SELECT COUNT(*) FROM ratings WHERE participant_id=?", (r.participant_id,))[0][0] == counts["rating"]
            assert db.query("SELECT COUNT(*) FROM instrument_answers WHERE participant_id=?", (r.participant_id,))[0][0] == 31
        groups = [row[0] for row in db.query("SELECT COUNT(*) FROM participations GROUP BY group_id")]
        assert max(groups) - min(groups) <= 1


# -- a paid study's participants: restarts, failed loads, phones (issue 16) ----------------------------
def _to_first_question(page, url: str) -> str:
    page.goto(url)
    state = _settled(page)
    state = _click(page, "I agree", state)
    state = _click(page, "Start the study", state)
    return _click(page, "Continue", _demographics(page, state))


DEVELOPER_TEXT = ("streamlit", "yourscript", "failed to fetch", "dynamically imported", "typeerror", "traceback")


def _visible_text(page) -> str:
    return page.evaluate("() => document.body.innerText").lower()


def test_first_press_after_a_server_restart_is_stored(chromium, tmp_path):
    """kill -9 while a participant is on a question; the tab stays open, reconnects by itself
    after the restart and keeps its page: the first Next pressed there is stored. While the
    server is down the participant reads our words, never Streamlit's developer text."""
    study_file = write_small_study(tmp_path / "study", items=_items(), checks=[])
    db_path = tmp_path / "study.db"
    server = Server(db_path, study=study_file, log=tmp_path / "server.log").start()
    try:
        page = chromium.new_context().new_page()
        state = _to_first_question(page, f"{server.url}/?PROLIFIC_PID={PID}&STUDY_ID=60aa11bb22cc33dd44ee55ff&SESSION_ID=s1")
        assert state == "question:2"
        server.kill()
        dialog = page.wait_for_selector("section[role='dialog']", timeout=60_000)
        shown = page.evaluate("(d) => getComputedStyle(d, '::after').content", dialog)
        assert "connection to the study was lost" in shown and "Your answers so far are saved" in shown
        assert not any(text in _visible_text(page) for text in DEVELOPER_TEXT), _visible_text(page)
        server.start()
        page.wait_for_selector("section[role='dialog']", state="detached", timeout=60_000)  # reconnected
        page.locator("[data-testid='stForm'] [data-testid='stRadioOption']").nth(4).click()
        state = _click(page, "Next", state)  # the first press after the restart
        assert state == "question:3"
        with open_db(db_path) as db:
            assert [tuple(r) for r in db.query("SELECT instrument, item_id, answer FROM instrument_answers")] == \
                [("pvq21", 1, 5)]
        assert not any(text in _visible_text(page) for text in DEVELOPER_TEXT)
    finally:
        server.stop()


def test_a_part_of_the_page_that_did_not_load_asks_for_a_reload(chromium, tmp_path):
    """The answer scale's code cannot be fetched (the server went away while the page loaded):
    the participant sees a reload prompt, not 'TypeError: Failed to fetch dynamically imported
    module', and the page is whole again after the reload."""
    import re
    study_file = write_small_study(tmp_path / "study", items=_items(), checks=[])
    with serve(tmp_path / "study.db", study=study_file, log=tmp_path / "server.log") as server:
        page = chromium.new_context().new_page()
        radio_js = re.compile(r".*/Radio\.[^/]*\.js")
        page.route(radio_js, lambda route: route.abort())
        page.goto(f"{server.url}/?PROLIFIC_PID={PID}&STUDY_ID=60aa11bb22cc33dd44ee55ff&SESSION_ID=s1")
        state = _click(page, "I agree", _settled(page))
        _click(page, "Start the study", state)  # the demographics form needs the radio's code
        page.wait_for_selector("[data-vp-role='reload-needed']", timeout=30_000)
        page.wait_for_timeout(1500)  # the guard's own reload, once, lands on the same failure
        banner = page.wait_for_selector("[data-vp-role='reload-needed']", timeout=30_000)
        assert "Please reload the page" in banner.inner_text()
        assert not any(text in _visible_text(page) for text in DEVELOPER_TEXT), _visible_text(page)
        page.unroute(radio_js)
        page.get_by_role("button", name="Reload the page").click()
        page.locator("[role='radiogroup'][aria-label='Gender'] [data-testid='stRadioOption']").first.wait_for()
        assert page.locator("[data-vp-role='reload-needed']").count() == 0
        assert _settled(page) == "demographics:0"


def _in_view(page, selector: str) -> bool:
    return page.evaluate("""(sel) => { const els = [...document.querySelectorAll(sel)];
        return els.some(e => { const r = e.getBoundingClientRect();
                               return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight; }); }""", selector)


def test_errors_are_seen_on_a_phone(chromium, tmp_path):
    """At 390 x 844, Next with a missing field or an age out of range shows the error where
    the participant is looking (next to the button, scrolled into view), on every page."""
    study_file = write_small_study(tmp_path / "study", items=_items(), checks=[])
    with serve(tmp_path / "study.db", study=study_file, log=tmp_path / "server.log") as server:
        page = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
        page.goto(f"{server.url}/?PROLIFIC_PID={PID}&STUDY_ID=60aa11bb22cc33dd44ee55ff&SESSION_ID=s1")
        state = _click(page, "I agree", _settled(page))
        state = _click(page, "Start the study", state)
        page.get_by_label("Your age in years").fill("150")
        page.get_by_role("button", name="Next", exact=True).scroll_into_view_if_needed()
        page.get_by_role("button", name="Next", exact=True).click()
        page.wait_for_selector("[data-vp-error]")
        page.wait_for_timeout(500)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "phone_demographics_error.png"))
        assert _in_view(page, "[data-vp-error]")
        errors = page.locator("[data-vp-error]").all_inner_texts()
        assert any("from 18 to 110 (you entered 150)" in e for e in errors)
        assert any("gender" in e for e in errors)
        # Put it right, and the next page's error is in view too.
        page.get_by_label("Your age in years").fill("41")
        for group in ("Gender", "Highest education completed", "Political orientation"):
            page.locator(f"[role='radiogroup'][aria-label='{group}'] [data-testid='stRadioOption']").first.click()
        page.get_by_label("Country you live in").fill("Chile")
        state = _click(page, "Next", "demographics:0")
        state = _click(page, "Continue", state)
        page.get_by_role("button", name="Next", exact=True).click()
        page.wait_for_selector("[data-vp-error]")
        page.wait_for_timeout(500)
        assert _in_view(page, "[data-vp-error]")
        assert "choose one of the answers" in page.locator("[data-vp-error]").inner_text()
