"""The study as a declared list of pages.

``flow(study)`` is the list a participant walks: consent, platform entry, the blocks in the
order the study file gives (demographics, PVQ-21, BFI-10, item ratings, with the attention
checks placed among them), then completion. A page contributes *steps* (one question each,
or one form for the demographics); the participant's current step is the first one the
database has no answer for, so a refresh, a new tab or a server restart lands on the right
page with nothing but the database to go on. Adding a page is one class and one entry in
``BLOCK_PAGES``.

Every answer is saved by the submit button's callback, in one short transaction, before the
next page is drawn: a page the participant sees means the previous answer is stored.

Texts that come from outside (queries, responses) go through :func:`plain`, never through
Markdown: HTML, Markdown, LaTeX, ``:red[...]`` and links in them are shown as typed.
"""

from __future__ import annotations

import html
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import streamlit as st

from valueportrait.storage import StudyDB, open_db

from collection_app import store
from collection_app.study import Study

# Prolific's ids are 24-character hexadecimal object ids.
PROLIFIC_PID = re.compile(r"^[0-9a-fA-F]{24}$")
PLATFORM_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
TEST_ID = re.compile(r"^test-[0-9a-f]{12}$")

GENDERS = ("Woman", "Man", "Non-binary or other", "Prefer not to say")
EDUCATION = ("No formal qualification", "Secondary school", "Vocational or technical qualification",
             "Bachelor's degree or equivalent", "Master's degree or equivalent", "Doctorate", "Prefer not to say")
POLITICS = ("Very liberal", "Liberal", "Slightly liberal", "Moderate", "Slightly conservative", "Conservative",
            "Very conservative", "Prefer not to say")


# -- who is this ------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    participant_id: str | None  # None: the link is broken (see `problem`)
    test_mode: bool
    platform_study_id: str | None = None
    platform_session_id: str | None = None
    problem: str | None = None


def parse_entry(params: dict) -> Entry:
    """The participant's identity from the URL (Prolific's PROLIFIC_PID, STUDY_ID, SESSION_ID).

    Without PROLIFIC_PID the app runs in test mode under a generated ``test-...`` id that is
    kept in the URL (``test_id``) so a refresh resumes it too. A PROLIFIC_PID that is present
    but malformed is an error, never silently test mode: the participant would not be paid.
    """
    def one(name):
        value = params.get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        return value.strip() if isinstance(value, str) else value

    pid = one("PROLIFIC_PID")
    if pid is None:
        test_id = one("test_id")
        if test_id is not None and not TEST_ID.match(test_id):
            return Entry(None, True, problem="The test id in this link is not valid.")
        return Entry(test_id, True)
    if not PROLIFIC_PID.match(pid):
        return Entry(None, False, problem="The participant id in this link is not valid.")
    study_id, session_id = one("STUDY_ID"), one("SESSION_ID")
    for name, value in (("STUDY_ID", study_id), ("SESSION_ID", session_id)):
        if value is None or not PLATFORM_ID.match(value):
            return Entry(None, False, problem=f"The link is missing a valid {name}.")
    return Entry(pid, False, study_id, session_id)


def new_test_id() -> str:
    return f"test-{secrets.token_hex(6)}"


# -- rendering helpers -------------------------------------------------------------------
def plain(text: str, role: str, *, size: str = "1rem", weight: str = "normal", box: bool = False) -> None:
    """Show text from outside exactly as typed.

    ``st.html`` of an HTML-escaped string inside a ``white-space: pre-wrap`` block: escaping
    makes every ``<``, ``&`` and quote literal, and Streamlit never runs Markdown, LaTeX or
    its ``:color[]`` syntax over ``st.html`` content. (``st.markdown`` would need all three
    escaped reliably; ``st.text`` is plain too but its layout is awkward for long text.)
    """
    style = (f"white-space: pre-wrap; overflow-wrap: anywhere; font-size: {size}; font-weight: {weight}; "
             "line-height: 1.5;")
    if box:
        style += " border-left: 4px solid #8aa4c8; background: #f4f7fb; padding: 0.6rem 0.9rem; border-radius: 4px;"
    st.html(f'<div class="vp-plain" data-vp-role="{role}" style="{style}">{html.escape(str(text), quote=True)}</div>')


def marker(index: int, total: int, page: str) -> None:
    """The progress bar and a 'question n of N' line; its data attributes let bots follow the flow."""
    st.progress(min(index / max(total, 1), 1.0))
    st.html(f'<div data-vp-step="{index}" data-vp-page="{page}" style="color:#666;font-size:0.85rem">'
            f"Page {index + 1} of {total + 1}</div>")


# -- per-run context -----------------------------------------------------------------------
@dataclass
class Ctx:
    study: Study
    db_path: str
    entry: Entry
    db: StudyDB
    prog: store.Progress

    def connect(self) -> StudyDB:
        return open_db(self.db_path)


def _shown(key: str) -> float:
    shown = st.session_state.setdefault("_shown_at", {})
    return shown.setdefault(key, time.monotonic())


def _seconds(key: str) -> float | None:
    started = st.session_state.get("_shown_at", {}).get(key)
    return round(time.monotonic() - started, 3) if started is not None else None


def _error_box() -> None:
    msg = st.session_state.pop("_error", None)
    if msg:
        st.error(msg)


# -- pages -------------------------------------------------------------------------------
class Page:
    """One kind of page. ``steps`` lists what it asks; ``render`` draws one step."""

    name = "page"

    def steps(self, study: Study, prog: store.Progress) -> list[dict]:
        return []

    def render(self, ctx: Ctx, step: dict, index: int, total: int) -> None:  # pragma: no cover
        raise NotImplementedError


class Consent(Page):
    name = "consent"

    def render(self, ctx, step=None, index=0, total=0):
        st.html('<div data-vp-page="consent"></div>')
        st.title(ctx.study.spec.title)
        st.subheader("Information and consent")
        plain(ctx.study.texts.consent, "consent")
        col1, col2 = st.columns(2)
        col1.button("I agree", type="primary", key="consent-yes", on_click=_consent, args=(True, ctx.db_path, ctx.study, ctx.entry))
        col2.button("I do not agree", key="consent-no", on_click=_consent, args=(False, ctx.db_path, ctx.study, ctx.entry))


def _consent(agree: bool, db_path, study, entry) -> None:
    if agree:
        st.session_state["_consented"] = True
        return
    with open_db(db_path) as db:
        store.record_decline(db, study, entry.participant_id, entry.test_mode)
    st.session_state["_declined"] = True


class PlatformEntry(Page):
    name = "platform"

    def render(self, ctx, step=None, index=0, total=0):
        st.html('<div data-vp-page="platform"></div>')
        st.title(ctx.study.spec.title)
        st.subheader("Your participant id")
        if ctx.entry.test_mode:
            st.write("This is a test run: the link has no Prolific id, so answers are stored as test data "
                     "under the id below and do not count towards the study's targets.")
        else:
            st.write("We received this Prolific id from your link. It is used only to pay you and to make sure "
                     "each person takes part once.")
        plain(ctx.entry.participant_id, "participant-id", size="1.2rem", weight="600", box=True)
        _error_box()
        st.button("Start the study", type="primary", key="start", on_click=_start, args=(ctx.db_path, ctx.study, ctx.entry))


def _start(db_path, study, entry) -> None:
    with open_db(db_path) as db:
        got = store.assign_group(db, study, entry.participant_id, test_mode=entry.test_mode,
                                 platform_study_id=entry.platform_study_id, platform_session_id=entry.platform_session_id)
    if got.group_id is None:
        st.session_state["_full"] = True


class Demographics(Page):
    name = "demographics"

    def steps(self, study, prog):
        return [{"kind": "demographics", "key": "demographics", "page": self.name}]

    def render(self, ctx, step, index, total):
        _shown(step["key"])
        st.subheader("About you")
        st.write("A few questions about your background. They help us check that answers do not depend on "
                 "who happened to rate which texts.")
        _error_box()
        with st.form("f-demographics", border=False):
            st.number_input("Your age in years", min_value=18, max_value=110, value=None, step=1, key="d-age")
            st.radio("Gender", GENDERS, index=None, key="d-gender")
            st.radio("Highest education completed", EDUCATION, index=None, key="d-education")
            st.radio("Political orientation", POLITICS, index=None, key="d-politics")
            st.text_input("Country you live in", max_chars=60, key="d-country")
            st.form_submit_button("Next", type="primary", on_click=_submit_demographics, args=(ctx.db_path, ctx.study, ctx.entry))


def _submit_demographics(db_path, study, entry) -> None:
    s = st.session_state
    answers = dict(age=s.get("d-age"), gender=s.get("d-gender"), education=s.get("d-education"),
                   politics=s.get("d-politics"), country=(s.get("d-country") or "").strip())
    missing = [name for name, v in answers.items() if v in (None, "")]
    if missing:
        s["_error"] = "Please answer every question (" + ", ".join(missing) + ")."
        return
    answers["age"] = int(answers["age"])
    _save(db_path, lambda db: store.save_demographics(db, study, entry.participant_id, answers, _seconds("demographics")))


class Questionnaire(Page):
    """PVQ-21 or BFI-10, one statement per page, with the block's attention checks among them."""

    def __init__(self, instrument: str):
        self.name = instrument

    def steps(self, study, prog):
        inst = study.pvq if self.name == "pvq21" else study.bfi
        out = [{"kind": self.name, "key": f"{self.name}:{i.id}", "item_id": i.id, "page": "question"} for i in inst.items]
        for after, check_id in sorted(study.checks_in(self.name), reverse=True):
            out.insert(after, {"kind": "check", "key": f"check:{check_id}", "check": check_id, "page": "question"})
        return out

    def render(self, ctx, step, index, total):
        study = ctx.study
        inst = study.pvq if self.name == "pvq21" else study.bfi
        scale = study.scales[inst.scale]
        if step["kind"] == "check":
            text = study.checks[step["check"]].text
        else:
            text = inst.items[step["item_id"] - 1].text
            if self.name == "bfi10":
                text = "I see myself as someone who " + text
        _shown(step["key"])
        st.subheader(inst.title)
        st.caption(inst.instructions)
        plain(text, "statement", size="1.1rem", box=True)
        _question_form(ctx, step, scale)


class ItemRatings(Page):
    name = "items"

    def steps(self, study, prog):
        out, n = [], 0
        for entry in prog.order:
            if "check" in entry:
                out.append({"kind": "check", "key": f"check:{entry['check']}", "check": entry["check"],
                            "portrait_id": entry["portrait_id"], "page": "rating"})
            else:
                n += 1
                out.append({"kind": "rating", "key": f"{entry['portrait_id']}-{entry['option_id']}", "position": n,
                            "page": "rating"})
        return out

    def render(self, ctx, step, index, total):
        study = ctx.study
        if step["kind"] == "check":
            query = study.queries[step["portrait_id"]]
            response = study.checks[step["check"]].text
        else:
            query = study.item_by_key[step["key"]]
            response = query.response
        _shown(step["key"])
        st.caption("Someone asked this question:")
        if query.title:
            plain(query.title, "query-title", size="1.15rem", weight="600")
        plain(query.query_text, "query-text")
        st.caption("One possible response:")
        plain(response, "response", box=True)
        _question_form(ctx, step, study.scales["similarity"])


class Completion(Page):
    name = "completion"


def _question_form(ctx: Ctx, step: dict, scale) -> None:
    _error_box()
    key = step["key"]
    with st.form(f"f-{key}", border=False):
        st.radio(scale.question, list(scale.values), index=None, format_func=scale.label, key=f"q-{key}")
        st.form_submit_button("Next", type="primary", on_click=_submit_answer, args=(ctx.db_path, ctx.study, ctx.entry, step))


def _submit_answer(db_path, study, entry, step) -> None:
    answer = st.session_state.get(f"q-{step['key']}")
    if answer is None:
        st.session_state["_error"] = "Please choose one of the answers to continue."
        return
    _save(db_path, lambda db: store.save_answer(db, study, entry.participant_id, step, answer, _seconds(step["key"])))


def _save(db_path, write) -> None:
    """Run one write; on a database failure keep the participant on the same page."""
    try:
        with open_db(db_path) as db:
            write(db)
    except Exception:  # noqa: BLE001 - any failure: tell the participant, never advance
        st.session_state["_error"] = "Your answer could not be saved just now. Please press Next again."


#: The pages of each block a study may order (study.BLOCKS).
BLOCK_PAGES: dict[str, Page] = {
    "demographics": Demographics(),
    "pvq21": Questionnaire("pvq21"),
    "bfi10": Questionnaire("bfi10"),
    "items": ItemRatings(),
}


def flow(study: Study) -> list[Page]:
    """The pages in the order a participant meets them."""
    return [Consent(), PlatformEntry(), *(BLOCK_PAGES[b] for b in study.spec.blocks), Completion()]


def question_steps(study: Study, prog: store.Progress) -> list[tuple[Page, dict]]:
    return [(page, step) for page in flow(study) for step in page.steps(study, prog)]


def is_done(step: dict, prog: store.Progress) -> bool:
    kind = step["kind"]
    if kind == "demographics":
        return prog.demographics
    if kind == "pvq21":
        return step["item_id"] in prog.pvq
    if kind == "bfi10":
        return step["item_id"] in prog.bfi
    if kind == "check":
        return step["check"] in prog.checks
    return step["key"] in prog.ratings


def expected_counts(study: Study, group_id: str) -> dict[str, int]:
    return {"pvq21": 21, "bfi10": 10, "check": len(study.checks), "demographics": 1,
            "rating": len(study.items_by_group[group_id])}


# -- end pages ---------------------------------------------------------------------------
def show_message(title: str, text: str, role: str) -> None:
    st.title(title)
    plain(text, role)
    st.html(f'<div data-vp-page="{role}"></div>')


def show_completion(ctx: Ctx, code: str, total: int) -> None:
    st.progress(1.0)
    st.html(f'<div data-vp-page="completion" data-vp-step="{total}"></div>')
    st.title("Thank you!")
    st.success("All your answers are saved.")
    st.write("Your completion code:")
    plain(code, "completion-code", size="1.6rem", weight="700", box=True)
    url = ctx.study.completion_url(code)
    if url and not ctx.entry.test_mode:
        st.link_button("Return to Prolific to finish", url, type="primary")
    elif url:
        st.caption("Test mode: in a real run a link back to Prolific appears here.")
    plain(ctx.study.texts.debrief, "debrief")


def expired(study: Study, prog: store.Progress) -> bool:
    if not prog.started_at:
        return False
    started = datetime.fromisoformat(prog.started_at)
    return datetime.now(timezone.utc) - started > timedelta(minutes=study.spec.time_limits.max_minutes)


def run(study: Study, db_path: str, params: dict) -> None:
    """Draw the page this participant is on (the body of app.py)."""
    entry = parse_entry(params)
    if entry.test_mode and entry.participant_id is None and entry.problem is None:
        entry = Entry(st.session_state.setdefault("_test_id", new_test_id()), True)
        st.query_params["test_id"] = entry.participant_id
    if entry.test_mode:
        st.warning("TEST MODE: no Prolific id in the link. Answers are stored as test data.", icon="🧪")
    if entry.problem:
        show_message("This link does not work", entry.problem + " Please go back to Prolific and open the study "
                     "from there again. If this keeps happening, message the researchers.", "bad-link")
        return
    with open_db(db_path) as db:
        prog = store.load_progress(db, study, entry.participant_id)
        ctx = Ctx(study, db_path, entry, db, prog)
        _route(ctx)


def _route(ctx: Ctx) -> None:
    study, prog, db = ctx.study, ctx.prog, ctx.db
    if prog.status is None:
        if st.session_state.get("_declined") or store.has_declined(db, study, ctx.entry.participant_id):
            show_message("You declined", study.texts.declined, "declined")
        elif st.session_state.get("_full") or (not ctx.entry.test_mode and store.is_full(db, study)):
            show_message("This study is full", study.texts.study_full, "full")
        elif not st.session_state.get("_consented"):
            Consent().render(ctx)
        else:
            PlatformEntry().render(ctx)
        return
    if prog.status == "completed":
        show_completion(ctx, prog.completion_code, len(question_steps(study, prog)))
        return
    if prog.status != "active" or expired(study, prog):
        store.time_out(db, study, prog.participant_id)
        show_message("The time for this study has run out", "Your place was released because the time limit "
                     "passed. Please return the study on Prolific. Thank you for your time.", "timed-out")
        return
    steps = question_steps(study, prog)
    for index, (page, step) in enumerate(steps):
        if not is_done(step, prog):
            marker(index, len(steps), step["page"])
            page.render(ctx, step, index, len(steps))
            return
    code = store.complete(db, study, prog.participant_id, expected_counts(study, prog.group_id))
    if code is None:  # pragma: no cover - every step is done, so every answer is there
        st.error("Some answers seem to be missing. Please reload the page.")
        return
    show_completion(ctx, code, len(steps))


def db_path_from_env() -> str:
    from valueportrait import DEFAULT_DB
    return os.environ.get("VP_DB") or str(DEFAULT_DB)
