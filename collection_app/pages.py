"""The study as a declared list of pages.

``flow(study)`` is the list a participant walks: consent, platform entry, the blocks in the
order the study file gives (demographics, PVQ-21, BFI-10, item ratings, with the attention
checks placed among them), then completion. A page contributes *steps* (one question each,
one form for the demographics, an introduction before a block, a query before its
responses); the participant's current step is the first one the database has no record of,
so a refresh, a new tab or a server restart lands on the right page with nothing but the
database to go on. Adding a page is one class and one entry in ``BLOCK_PAGES``.

Every answer is saved by the submit button's callback, in one short transaction, before the
next page is drawn: a page the participant sees means the previous answer is stored. A press
that reaches a session with no callbacks registered yet (the first press in a tab that was
open while the server restarted: the tab reconnects by itself, keeps its old page, and the
new server session has never drawn it) is caught in the script body instead, saved the same
way, and the next page drawn; it is never dropped.

Texts that come from outside (queries, responses) go through :func:`plain`, never through
Markdown: HTML, Markdown, LaTeX, ``:red[...]`` and links in them are shown as typed. The
researcher's own texts (title, consent, introductions) go through :func:`prose`: plain text
too, with the YAML file's line breaks inside a paragraph reflowed, so they read well on a phone.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import streamlit as st

from valueportrait.storage import StudyDB, open_db, pooled_db

from collection_app import store
from collection_app.study import Study

# Prolific's ids are 24-character hexadecimal object ids, in lower case: an id is read
# case-blind and stored lower-cased, so 'AAAA...' cannot take part again as a new person.
PROLIFIC_PID = re.compile(r"^[0-9a-f]{24}$")
PLATFORM_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
TEST_ID = re.compile(r"^test-[0-9a-f]{12}$")

GENDERS = ("Woman", "Man", "Non-binary or other", "Prefer not to say")
EDUCATION = ("No formal qualification", "Secondary school", "Vocational or technical qualification",
             "Bachelor's degree or equivalent", "Master's degree or equivalent", "Doctorate", "Prefer not to say")
POLITICS = ("Very liberal", "Liberal", "Slightly liberal", "Moderate", "Slightly conservative", "Conservative",
            "Very conservative", "Prefer not to say")
AGE_RANGE = (18, 110)

#: The kinds of step that ask something (the others are pages to read).
QUESTION_KINDS = ("pvq21", "bfi10", "check", "rating", "query_ratings")


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
    The id is lower-cased before anything else (Prolific's ids are lower-case hex), so the
    same person with the letters' case changed is the same participant.
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
    pid = pid.lower()
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
def plain(text: str, role: str, *, size: str = "1rem", weight: str = "normal", box: bool = False,
          attrs: str = "") -> None:
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
    st.html(f'<div class="vp-plain" data-vp-role="{role}"{attrs} style="{style}">{html.escape(str(text), quote=True)}</div>')


_LIST_LINE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")


def reflow(text: str) -> list[str]:
    """A researcher's text as paragraphs: blank lines separate paragraphs, single line breaks
    inside one (YAML block style) become spaces; a line that starts a list item keeps its
    own line."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", str(text).strip()):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        out: list[str] = []
        for ln in lines:
            if out and not _LIST_LINE.match(ln):
                out[-1] += " " + ln
            else:
                out.append(ln)
        if out:
            paragraphs.append("\n".join(out))
    return paragraphs


def prose(text: str, role: str, *, size: str = "1rem") -> None:
    """A researcher's text (consent, introductions, debrief) as plain text that reflows to the screen."""
    body = "".join(f'<p style="margin: 0 0 0.8rem 0; white-space: pre-line; overflow-wrap: anywhere; '
                   f'font-size: {size}; line-height: 1.55;">{html.escape(p, quote=True)}</p>' for p in reflow(text))
    st.html(f'<div class="vp-prose" data-vp-role="{role}">{body}</div>')


def heading(text: str, role: str = "heading", *, level: int = 1) -> None:
    """A heading as plain text: a study title with Markdown or a link in it is shown as typed."""
    size = {1: "1.9rem", 2: "1.4rem", 3: "1.15rem"}[level]
    st.html(f'<div role="heading" aria-level="{level}" data-vp-role="{role}" style="font-size: {size}; '
            f'font-weight: 700; line-height: 1.25; margin: 0.2rem 0 0.6rem 0; overflow-wrap: anywhere;">'
            f"{html.escape(str(text), quote=True)}</div>")


def marker(index: int, total: int, page: str) -> None:
    """The progress bar and a 'page n of N' line; its data attributes let bots follow the flow."""
    st.progress(min(index / max(total, 1), 1.0))
    st.html(f'<div data-vp-step="{index}" data-vp-page="{page}" style="color:#666;font-size:0.85rem">'
            f"Page {index + 1} of {total + 1}</div>")


def error_here(message: str) -> None:
    """An error drawn where it is shown (next to the button that was pressed): the page guard
    scrolls it into view, so it is seen on a phone too."""
    st.html(f'<div data-vp-error="1" role="alert" style="color:#8a1c1c;background:#fdecea;border-left:4px solid '
            f'#d93025;padding:0.55rem 0.8rem;border-radius:4px;font-weight:600;">{html.escape(message)}</div>')


# The page guard: one script per page (run once per tab) that keeps developer-facing text
# away from participants and keeps errors and new pages in view. Streamlit's own dialog when
# the connection drops ("Is Streamlit still running? ... streamlit run yourscript.py") is
# covered by the study's text; a part of the page whose code failed to load while the
# server was away ("Failed to fetch dynamically imported module ...") is replaced by a
# reload prompt, and the page reloads by itself once the server answers again (at most
# once a minute); a new page starts at its top; an error is scrolled into view.
_GUARD = """<style>
section[role="dialog"] > :not(button) { display: none !important; }
section[role="dialog"]::after { content: "%(lost_css)s"; white-space: pre-wrap; display: block;
  padding: 0.5rem 0.25rem; font-size: 1rem; line-height: 1.5; }
</style>
<script>
(function () {
  var T = %(texts_json)s;
  var w = window;
  if (w.__vpGuard) { w.__vpGuard.T = T; return; }
  var g = w.__vpGuard = {T: T, step: null, errorSeen: null, banner: null};
  var BROKEN = /Failed to fetch dynamically imported module|error loading dynamically imported module|Importing a module script failed|ChunkLoadError|Loading chunk/i;
  function banner() {
    if (g.banner) return;
    var b = document.createElement("div");
    b.setAttribute("data-vp-role", "reload-needed");
    b.setAttribute("role", "alert");
    b.style.cssText = "position:fixed;left:0;right:0;top:0;z-index:100000;background:#fff4e5;color:#5f3700;" +
      "padding:0.9rem 1rem;font:16px/1.5 sans-serif;border-bottom:2px solid #f0a020;text-align:center;";
    var p = document.createElement("div"); p.textContent = g.T.reload; b.appendChild(p);
    var k = document.createElement("button"); k.textContent = g.T.reload_button;
    k.style.cssText = "margin-top:0.5rem;padding:0.45rem 1.2rem;font-size:16px;";
    k.onclick = function () { w.location.reload(); };
    b.appendChild(k);
    document.body.appendChild(b);
    g.banner = b;
    waitAndReload();
  }
  function waitAndReload() {
    var last = +(w.sessionStorage.getItem("vpAutoReload") || 0);
    if (Date.now() - last < 60000) return;  // reloaded a moment ago: leave it to the button
    var tick = function () {
      fetch("./_stcore/health", {cache: "no-store"}).then(function (r) {
        if (r.ok) { w.sessionStorage.setItem("vpAutoReload", String(Date.now())); w.location.reload(); }
        else setTimeout(tick, 2000);
      }).catch(function () { setTimeout(tick, 2000); });
    };
    setTimeout(tick, 500);
  }
  function scan() {
    var nodes = document.querySelectorAll('[data-testid="stException"], [data-testid="stAlert"], [data-testid="stAlertContainer"], .stException');
    for (var i = 0; i < nodes.length; i++) {
      if (BROKEN.test(nodes[i].textContent || "")) { nodes[i].style.display = "none"; banner(); }
    }
    var m = document.querySelector("[data-vp-step]");
    var step = m ? m.getAttribute("data-vp-page") + ":" + m.getAttribute("data-vp-step") : null;
    var err = document.querySelector("[data-vp-error]");
    if (err && err !== g.errorSeen) {
      g.errorSeen = err;
      err.scrollIntoView({block: "center"});
    } else if (step && step !== g.step && !err) {
      var top = document.querySelector('[data-testid="stMain"]') || document.body;
      if (g.step !== null) { top.scrollIntoView({block: "start"}); w.scrollTo(0, 0); }
    }
    if (step) g.step = step;
  }
  new MutationObserver(function () { scan(); }).observe(document.body, {childList: true, subtree: true});
  scan();
})();
</script>"""


def _css_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\A ")


def guard(study: Study) -> None:
    t = study.texts
    lost = "\n\n".join(reflow(t.connection_lost))
    texts = {"reload": " ".join(reflow(t.reload_needed)), "reload_button": "Reload the page"}
    body = _GUARD % {"lost_css": _css_string(lost),
                     "texts_json": json.dumps(texts).replace("</", "<\\/")}
    st.html(body, unsafe_allow_javascript=True)


# -- per-run context -----------------------------------------------------------------------
@dataclass
class Ctx:
    study: Study
    db_path: str
    entry: Entry
    db: StudyDB
    prog: store.Progress
    handled: bool = False  # a callback handled a press in this run
    steps: list = field(default_factory=list)

    def connect(self) -> StudyDB:
        return open_db(self.db_path)


def _shown(key: str) -> float:
    shown = st.session_state.setdefault("_shown_at", {})
    return shown.setdefault(key, time.monotonic())


def _seconds(key: str) -> float | None:
    started = st.session_state.get("_shown_at", {}).get(key)
    return round(time.monotonic() - started, 3) if started is not None else None


def _errors() -> dict:
    return st.session_state.get("_errors") or {}


def _set_errors(**errors) -> None:
    st.session_state["_errors"] = errors


def _press(callback, *args) -> None:
    """A button's callback: run it and note that this run's press was handled."""
    st.session_state["_handled"] = True
    callback(*args)


def _caught(ctx: Ctx, pressed: bool, callback, *args) -> None:
    """A press the callback did not see (a session the server has not drawn this page in yet,
    e.g. the first press after a restart): handle it here and draw what follows."""
    if pressed and not ctx.handled:
        callback(*args)
        st.rerun()


def button(ctx: Ctx, label: str, callback, *args, key: str, primary: bool = True) -> None:
    pressed = st.button(label, type="primary" if primary else "secondary", key=key, on_click=_press,
                        args=(callback, *args))
    _caught(ctx, pressed, callback, *args)


def submit(ctx: Ctx, label: str, callback, *args, key: str, primary: bool = True) -> None:
    pressed = st.form_submit_button(label, type="primary" if primary else "secondary", key=key, on_click=_press,
                                    args=(callback, *args))
    _caught(ctx, pressed, callback, *args)


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
        heading(ctx.study.spec.title, "title")
        heading("Information and consent", level=2)
        prose(ctx.study.texts.consent, "consent")
        col1, col2 = st.columns(2)
        with col1:
            button(ctx, "I agree", _consent, True, ctx.db_path, ctx.study, ctx.entry, key="consent-yes")
        with col2:
            button(ctx, "I do not agree", _consent, False, ctx.db_path, ctx.study, ctx.entry, key="consent-no",
                   primary=False)


def _consent(agree: bool, db_path, study, entry) -> None:
    if agree:
        st.session_state["_consented"] = True
        return
    with pooled_db(db_path) as db:
        store.record_decline(db, study, entry.participant_id, entry.test_mode)
    st.session_state["_declined"] = True


class PlatformEntry(Page):
    name = "platform"

    def render(self, ctx, step=None, index=0, total=0):
        st.html('<div data-vp-page="platform"></div>')
        heading(ctx.study.spec.title, "title")
        heading("Your participant id", level=2)
        if ctx.entry.test_mode:
            st.write("This is a test run: the link has no Prolific id, so answers are stored as test data "
                     "under the id below and do not count towards the study's targets.")
        else:
            st.write("We received this Prolific id from your link. It is used only to pay you and to make sure "
                     "each person takes part once.")
        plain(ctx.entry.participant_id, "participant-id", size="1.2rem", weight="600", box=True)
        if "start" in _errors():
            error_here(st.session_state.pop("_errors")["start"])
        button(ctx, "Start the study", _start, ctx.db_path, ctx.study, ctx.entry, key="start")


def _start(db_path, study, entry) -> None:
    try:
        with pooled_db(db_path) as db:
            got = store.assign_group(db, study, entry.participant_id, test_mode=entry.test_mode,
                                     platform_study_id=entry.platform_study_id,
                                     platform_session_id=entry.platform_session_id)
    except Exception:  # noqa: BLE001 - any failure: tell the participant, never advance
        _set_errors(start="The study could not be started just now. Please press the button again.")
        return
    if got.earlier_wave is not None:
        st.session_state["_earlier_wave"] = True
    elif got.group_id is None:
        st.session_state["_full"] = True


class Intro(Page):
    """A page in plain words before a block; read once (recorded), then the block's questions."""

    name = "intro"

    def __init__(self, block: str):
        self.block = block

    def steps(self, study, prog):
        return [{"kind": "intro", "key": f"intro:{self.block}", "block": self.block, "page": "intro"}]

    def render(self, ctx, step, index, total):
        study, t = ctx.study, ctx.study.texts
        _shown(step["key"])
        heading(getattr(t, f"heading_{self.block}"), level=2)
        prose(getattr(t, f"intro_{self.block}"), "intro")
        if self.block == "items":
            r = study.spec.ratings
            prose(t.layout_shuffled if not r.by_query else getattr(t, f"layout_{r.layout}"), "layout")
            scale = study.scales["similarity"]
            heading(t.example_heading, level=3)
            with st.container(border=True):
                st.caption("Someone asked:")
                plain(t.example_query, "example-query")
                st.caption("One possible answer:")
                plain(t.example_response, "example-response", box=True)
                explanation = t.example_explanation.replace("{high}", scale.labels[-1]).replace("{low}", scale.labels[0])
                prose(explanation, "example-explanation")
            st.caption(f"{scale.question} The answers run from \u201c{scale.labels[0]}\u201d to "
                       f"\u201c{scale.labels[-1]}\u201d.")
        _pending_errors()
        button(ctx, "Continue", _page_read, ctx.db_path, ctx.study, ctx.entry, step, key=f"go-{step['key']}")


def _pending_errors() -> None:
    for message in (st.session_state.pop("_errors", None) or {}).values():
        error_here(message)


def _page_read(db_path, study, entry, step) -> None:
    _save(db_path, lambda db: store.save_page_view(db, study, entry.participant_id, step["key"], _seconds(step["key"])),
          "continue")


class Demographics(Page):
    name = "demographics"

    def steps(self, study, prog):
        return [{"kind": "demographics", "key": "demographics", "block": "demographics", "page": self.name}]

    def render(self, ctx, step, index, total):
        t = ctx.study.texts
        _shown(step["key"])
        heading(t.heading_demographics, level=2)
        prose(t.demographics_note, "note")
        errors = _errors()
        with st.form("f-demographics", border=False):
            st.number_input("Your age in years", value=None, step=1, key="d-age")
            if "age" in errors:
                error_here(errors["age"])
            st.radio("Gender", GENDERS, index=None, key="d-gender")
            if "gender" in errors:
                error_here(errors["gender"])
            st.radio("Highest education completed", EDUCATION, index=None, key="d-education")
            if "education" in errors:
                error_here(errors["education"])
            st.radio("Political orientation", POLITICS, index=None, key="d-politics")
            if "politics" in errors:
                error_here(errors["politics"])
            st.text_input("Country you live in", max_chars=60, key="d-country")
            if "country" in errors:
                error_here(errors["country"])
            if "form" in errors:
                error_here(errors["form"])
            submit(ctx, "Next", _submit_demographics, ctx.db_path, ctx.study, ctx.entry, key="next-demographics")
        st.session_state.pop("_errors", None)


#: What each demographics field is called in an error message.
_FIELD_NAMES = {"age": "your age", "gender": "gender", "education": "education", "politics": "political orientation",
                "country": "the country you live in"}


def _submit_demographics(db_path, study, entry) -> None:
    s = st.session_state
    answers = dict(age=s.get("d-age"), gender=s.get("d-gender"), education=s.get("d-education"),
                   politics=s.get("d-politics"), country=(s.get("d-country") or "").strip())
    errors = {name: f"Please answer this question ({_FIELD_NAMES[name]})." for name, v in answers.items()
              if v in (None, "")}
    lo, hi = AGE_RANGE
    if answers["age"] is not None and (answers["age"] != int(answers["age"]) or not lo <= answers["age"] <= hi):
        errors["age"] = f"Please enter your age in whole years, from {lo} to {hi} (you entered {answers['age']:g})."
    if errors:
        missing = [_FIELD_NAMES[n] for n in answers if n in errors]
        errors["form"] = "Please check: " + ", ".join(missing) + "."
        _set_errors(**errors)
        return
    answers["age"] = int(answers["age"])
    _save(db_path, lambda db: store.save_demographics(db, study, entry.participant_id, answers, _seconds("demographics")))


class Questionnaire(Page):
    """PVQ-21 or BFI-10, one statement per page, with the block's attention checks among them."""

    def __init__(self, instrument: str):
        self.name = instrument

    def steps(self, study, prog):
        inst = study.pvq if self.name == "pvq21" else study.bfi
        out = [{"kind": self.name, "key": f"{self.name}:{i.id}", "item_id": i.id, "block": self.name,
                "page": "question"} for i in inst.items]
        for after, check_id in sorted(study.checks_in(self.name), reverse=True):
            out.insert(after, {"kind": "check", "key": f"check:{check_id}", "check": check_id, "block": self.name,
                               "page": "question"})
        return out

    def render(self, ctx, step, index, total, *, revise: bool = False):
        study = ctx.study
        inst = study.pvq if self.name == "pvq21" else study.bfi
        scale = study.scales[inst.scale]
        if step["kind"] == "check":
            text = study.checks[step["check"]].text
        else:
            text = inst.items[step["item_id"] - 1].text
            if self.name == "bfi10":
                text = "I see myself as someone who " + text
        heading(getattr(study.texts, f"heading_{self.name}"), level=3)
        plain(text, "statement", size="1.1rem", box=True)
        _question_form(ctx, step, index, scale, revise=revise)


class ItemRatings(Page):
    """The item ratings: by query (the query first, then its responses one per page, or all on
    one page), or every response on its own in a random order, each with its query."""

    name = "items"

    def steps(self, study, prog):
        ratings = study.spec.ratings
        out, n, runs = [], 0, []
        for entry in prog.order:
            if "check" in entry:
                sub = {"kind": "check", "key": f"check:{entry['check']}", "check": entry["check"],
                       "portrait_id": entry["portrait_id"], "block": "items", "page": "rating"}
            else:
                n += 1
                sub = {"kind": "rating", "key": f"{entry['portrait_id']}-{entry['option_id']}", "position": n,
                       "portrait_id": entry["portrait_id"], "block": "items", "page": "rating"}
            if not runs or runs[-1][0] != entry["portrait_id"]:
                runs.append((entry["portrait_id"], []))
            runs[-1][1].append(sub)
        if not ratings.by_query:
            return [sub for _, subs in runs for sub in subs]
        for portrait, subs in runs:
            if ratings.layout == "side_by_side":
                out.append({"kind": "query_ratings", "key": f"ratings:{portrait}", "portrait_id": portrait,
                            "subs": subs, "block": "items", "page": "ratings"})
            else:
                out.append({"kind": "query", "key": f"query:{portrait}", "portrait_id": portrait, "n": len(subs),
                            "block": "items", "page": "query"})
                out += [dict(sub, compact=True) for sub in subs]
        return out

    def render(self, ctx, step, index, total, *, revise: bool = False):
        study = ctx.study
        if step["kind"] == "query":
            return self._query(ctx, step)
        if step["kind"] == "query_ratings":
            return self._side_by_side(ctx, step, index, revise=revise)
        heading(study.texts.heading_items, level=3)
        query = study.queries[step["portrait_id"]]
        response = study.checks[step["check"]].text if step["kind"] == "check" else study.item_by_key[step["key"]].response
        if step.get("compact"):
            _query_reminder(query)
        else:
            st.caption("Someone asked this question:")
            _query_text(query)
        st.caption("One possible response:")
        plain(response, "response", box=True)
        _question_form(ctx, step, index, study.scales["similarity"], revise=revise)

    def _query(self, ctx, step):
        query = ctx.study.queries[step["portrait_id"]]
        _shown(step["key"])
        heading(ctx.study.texts.heading_items, level=3)
        st.caption("Someone asked this question:")
        _query_text(query)
        n = step["n"]
        st.write(f"Next you will read {n} possible response{'s' if n != 1 else ''} to it, one at a time.")
        _pending_errors()
        button(ctx, "Continue", _page_read, ctx.db_path, ctx.study, ctx.entry, step, key=f"go-{step['key']}")

    def _side_by_side(self, ctx, step, index, *, revise: bool = False):
        study = ctx.study
        heading(study.texts.heading_items, level=3)
        st.caption("Someone asked this question:")
        _query_text(study.queries[step["portrait_id"]])
        st.caption(f"{len(step['subs'])} possible responses:")
        _question_form(ctx, step, index, study.scales["similarity"], revise=revise)


def _query_text(query) -> None:
    if query.title:
        plain(query.title, "query-title", size="1.15rem", weight="600")
    plain(query.query_text, "query-text")


def _query_reminder(query) -> None:
    """The query the participant has just read, folded: its title (or its opening) and the whole text on demand."""
    st.caption("The question:")
    text = query.query_text
    short = query.title or (text if len(text) <= 140 else text[:140].rsplit(" ", 1)[0] + " \u2026")
    plain(short, "query-title", weight="600")
    if query.title or short != text:
        with st.expander("Read the whole question again"):
            _query_text(query)


def _default(ctx: Ctx, step: dict) -> int | None:
    return store.stored_answer(ctx.db, ctx.study, ctx.prog.participant_id, step)


def _question_form(ctx: Ctx, step: dict, index: int, scale, *, revise: bool = False) -> None:
    """The answer scale of a question and its buttons, in one form; on a side-by-side page one
    scale per response, each under its text. When changing an earlier answer, the stored one is chosen."""
    key = step["key"]
    _shown(("revise:" if revise else "") + key)
    prefix = "r-" if revise else "q-"
    side_by_side = step["kind"] == "query_ratings"
    errors = _errors()
    with st.form(f"{prefix}f-{key}", border=False):
        for n, sub in enumerate(step["subs"] if side_by_side else [step]):
            if side_by_side:
                text = ctx.study.checks[sub["check"]].text if sub["kind"] == "check" else \
                    ctx.study.item_by_key[sub["key"]].response
                plain(text, "response", box=True, attrs=f' data-vp-item="{n}"')
            default = _default(ctx, sub) if revise else None
            st.radio(scale.question, list(scale.values), index=None if default is None else default - scale.min,
                     format_func=scale.label, key=f"{prefix}{sub['key']}")
        if "answer" in errors:
            error_here(errors["answer"])
        _nav(ctx, step, index, revise=revise)
    st.session_state.pop("_errors", None)


def _nav(ctx: Ctx, step: dict, index: int, *, revise: bool) -> None:
    """Next (or, when changing an earlier answer, Save), and Back when the previous question is in the same block."""
    if revise:
        submit(ctx, "Save and go on", _submit_answer, ctx.db_path, ctx.study, ctx.entry, step, True,
               key=f"save-{step['key']}")
        return
    submit(ctx, "Next", _submit_answer, ctx.db_path, ctx.study, ctx.entry, step, key=f"next-{step['key']}")
    back = previous_question(ctx.steps, index)
    if back is not None:
        submit(ctx, "Back", _go_back, step["key"], back, key=f"back-{step['key']}", primary=False)


def previous_question(steps: list[tuple[Page, dict]], index: int) -> int | None:
    """The index of the question before step `index` in the same block, if there is one."""
    block = steps[index][1]["block"]
    for j in range(index - 1, -1, -1):
        step = steps[j][1]
        if step["block"] != block:
            return None
        if step["kind"] in QUESTION_KINDS:
            return j
    return None


def _go_back(current_key: str, back_index: int) -> None:
    st.session_state["_revise"] = (current_key, back_index)
    st.session_state.pop("_errors", None)


def _answers_of(step: dict, prefix: str) -> list[tuple[dict, int | None]]:
    subs = step["subs"] if step["kind"] == "query_ratings" else [step]
    return [(sub, st.session_state.get(f"{prefix}{sub['key']}")) for sub in subs]


def _missing_message(answers) -> str | None:
    missing = [n + 1 for n, (_, a) in enumerate(answers) if a is None]
    if not missing:
        return None
    if len(answers) == 1:
        return "Please choose one of the answers to continue."
    return ("Please choose an answer for every response (missing: response "
            + ", ".join(str(m) for m in missing) + ").")


def _submit_answer(db_path, study, entry, step, revise: bool = False) -> None:
    """Store the answer(s) of a step in one transaction: as first answers (Next), or as
    changes of earlier ones (Save, after Back)."""
    answers = _answers_of(step, "r-" if revise else "q-")
    message = _missing_message(answers)
    if message:
        _set_errors(answer=message)
        return
    shown_key = ("revise:" if revise else "") + step["key"]
    seconds = _seconds(shown_key)
    share = None if seconds is None else round(seconds / len(answers), 3)  # a page's time split over its answers
    keep = store.revise_answer if revise else store.save_answer

    def write(db):
        with db.transaction():
            for sub, answer in answers:
                keep(db, study, entry.participant_id, sub, answer, share)

    if _save(db_path, write) and revise:
        st.session_state.pop("_revise", None)
        st.session_state.get("_shown_at", {}).pop(shown_key, None)


def _save(db_path, write, field_name: str = "answer") -> bool:
    """Run one write; on a database failure keep the participant on the same page, with a message."""
    try:
        with pooled_db(db_path) as db:
            write(db)
        return True
    except Exception:  # noqa: BLE001 - any failure: tell the participant, never advance
        _set_errors(**{field_name: "Your answer could not be saved just now. Please press the button again."})
        return False


#: The pages of each block a study may order (study.BLOCKS).
BLOCK_PAGES: dict[str, list[Page]] = {
    "demographics": [Demographics()],
    "pvq21": [Intro("pvq21"), Questionnaire("pvq21")],
    "bfi10": [Intro("bfi10"), Questionnaire("bfi10")],
    "items": [Intro("items"), ItemRatings()],
}


class Completion(Page):
    name = "completion"


def flow(study: Study) -> list[Page]:
    """The pages in the order a participant meets them."""
    return [Consent(), PlatformEntry(), *(p for b in study.spec.blocks for p in BLOCK_PAGES[b]), Completion()]


def question_steps(study: Study, prog: store.Progress) -> list[tuple[Page, dict]]:
    return [(page, step) for page in flow(study) for step in page.steps(study, prog)]


def is_done(step: dict, prog: store.Progress) -> bool:
    kind = step["kind"]
    if kind in ("intro", "query"):
        return step["key"] in prog.pages
    if kind == "demographics":
        return prog.demographics
    if kind == "pvq21":
        return step["item_id"] in prog.pvq
    if kind == "bfi10":
        return step["item_id"] in prog.bfi
    if kind == "check":
        return step["check"] in prog.checks
    if kind == "query_ratings":
        return all(is_done(sub, prog) for sub in step["subs"])
    return step["key"] in prog.ratings


def answered_share(steps: list[tuple[Page, dict]], prog: store.Progress) -> float:
    """The share of the study's questions answered (a side-by-side page counts each response)."""
    subs = [sub for _, s in steps if s["kind"] in QUESTION_KINDS + ("demographics",)
            for sub in (s["subs"] if s["kind"] == "query_ratings" else [s])]
    return sum(is_done(s, prog) for s in subs) / max(len(subs), 1)


def expected_counts(study: Study, group_id: str) -> dict[str, int]:
    return {"pvq21": 21, "bfi10": 10, "check": len(study.checks), "demographics": 1,
            "rating": len(study.items_by_group[group_id])}


# -- end pages ---------------------------------------------------------------------------
def show_message(title: str, text: str, role: str) -> None:
    heading(title, "title")
    prose(text, role)
    st.html(f'<div data-vp-page="{role}"></div>')


def _code_box(ctx: Ctx, code: str) -> None:
    st.write("Your completion code:")
    plain(code, "completion-code", size="1.6rem", weight="700", box=True)
    url = ctx.study.completion_url(code)
    if url and not ctx.entry.test_mode:
        st.link_button("Return to Prolific to finish", url, type="primary")
    elif url:
        st.caption("Test mode: in a real run a link back to Prolific appears here.")


def show_completion(ctx: Ctx, code: str, total: int) -> None:
    st.progress(1.0)
    st.html(f'<div data-vp-page="completion" data-vp-step="{total}"></div>')
    heading("Thank you!", "title")
    st.success("All your answers are saved.")
    _code_box(ctx, code)
    prose(ctx.study.texts.debrief, "debrief")


def show_timed_out(ctx: Ctx, code: str | None) -> None:
    texts = ctx.study.texts
    if code is None:
        show_message("The time for this study has run out", texts.timed_out, "timed-out")
        return
    st.html('<div data-vp-page="timed-out-partial"></div>')
    heading("The time for this study has run out", "title")
    prose(texts.timed_out_partial, "timed-out-partial")
    _code_box(ctx, code)


def minutes_left(study: Study, prog: store.Progress) -> float | None:
    if not prog.started_at:
        return None
    started = datetime.fromisoformat(prog.started_at)
    limit = timedelta(minutes=study.spec.time_limits.max_minutes)
    return (started + limit - datetime.now(timezone.utc)).total_seconds() / 60


def expired(study: Study, prog: store.Progress) -> bool:
    left = minutes_left(study, prog)
    return left is not None and left < 0


def run(study: Study, db_path: str, params: dict) -> None:
    """Draw the page this participant is on (the body of app.py)."""
    handled = bool(st.session_state.pop("_handled", False))
    guard(study)
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
    with pooled_db(db_path) as db:
        prog = store.load_progress(db, study, entry.participant_id)
        ctx = Ctx(study, db_path, entry, db, prog, handled)
        _route(ctx)


def _route(ctx: Ctx) -> None:
    study, prog, db = ctx.study, ctx.prog, ctx.db
    texts = study.texts
    if prog.status is None:
        if st.session_state.get("_declined") or store.has_declined(db, study, ctx.entry.participant_id):
            show_message("You declined", texts.declined, "declined")
        elif not ctx.entry.test_mode and (st.session_state.get("_earlier_wave")
                                          or store.earlier_wave(db, study, ctx.entry.participant_id)):
            show_message("You have taken part already", texts.earlier_wave, "earlier-wave")
        elif st.session_state.get("_full") or (not ctx.entry.test_mode and store.is_full(db, study)):
            show_message("This study is full", texts.study_full, "full")
        elif not st.session_state.get("_consented"):
            Consent().render(ctx)
        else:
            PlatformEntry().render(ctx)
        return
    ctx.steps = steps = question_steps(study, prog)
    if prog.status == "completed":
        show_completion(ctx, prog.completion_code, len(steps))
        return
    if prog.status == "timed_out":
        show_timed_out(ctx, prog.completion_code)
        return
    if prog.status != "active" or expired(study, prog):
        code = store.time_out(db, study, prog.participant_id, answered_share(steps, prog))
        show_timed_out(ctx, code)
        return
    for index, (page, step) in enumerate(steps):
        if not is_done(step, prog):
            _warn_time(ctx)
            revise = st.session_state.get("_revise")
            if revise and revise[0] == step["key"] and revise[1] < index and \
                    steps[revise[1]][1]["block"] == step["block"]:
                back_page, back_step = steps[revise[1]]
                marker(revise[1], len(steps), "revise")
                prose(texts.revise_note, "revise-note")
                back_page.render(ctx, back_step, revise[1], len(steps), revise=True)
                return
            st.session_state.pop("_revise", None)
            marker(index, len(steps), step["page"])
            page.render(ctx, step, index, len(steps))
            return
    code = store.complete(db, study, prog.participant_id, expected_counts(study, prog.group_id))
    if code is None:  # pragma: no cover - every step is done, so every answer is there
        st.error("Some answers seem to be missing. Please reload the page.")
        return
    show_completion(ctx, code, len(steps))


def _warn_time(ctx: Ctx) -> None:
    warn = ctx.study.spec.time_limits.warn_minutes
    left = minutes_left(ctx.study, ctx.prog)
    if warn and left is not None and left <= warn:
        text = ctx.study.texts.time_warning.replace("{minutes}", str(max(1, int(left + 0.999))))
        st.html(f'<div data-vp-role="time-warning" role="status" style="background:#fff4e5;color:#5f3700;'
                f'border-left:4px solid #f0a020;padding:0.5rem 0.8rem;border-radius:4px;">'
                f"{html.escape(text)}</div>")


def db_path_from_env() -> str:
    from valueportrait import DEFAULT_DB
    return os.environ.get("VP_DB") or str(DEFAULT_DB)
