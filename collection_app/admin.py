"""The researcher's admin page (``?admin=1``): live progress, who to approve and review, exports.

Nothing is read from the database before the password matches. The password comes from
the environment (``VP_ADMIN_PASSWORD``) or Streamlit secrets (``admin_password``); with
neither set the page stays closed. Comparison is constant-time (``hmac.compare_digest``);
after :data:`MAX_FAILURES` wrong passwords within :data:`LOCK_MINUTES` (from any browser:
the failures are counted in the database) the page refuses every password, the right one
too, until the window has passed.

The page is a list of :class:`Section` s (``SECTIONS``): a section is a title and a function
that draws it; ``live`` sections are redrawn every :data:`REFRESH_SECONDS` while the page is
open. Adding a section (e.g. Prolific's reconciliation) is one entry in that list.

Exports exist only once asked for ("Prepare the exports"), for this browser session and at
most :data:`EXPORT_MINUTES`, under a file name with a random part (Streamlit serves downloads
at ``/media/<hash of content and name>`` to anyone with the address, so the address must not
follow from the data). "Log out" drops them; so does closing the tab: Streamlit keeps a
closed tab's session for a reconnect and then forgets it without releasing its files, so a
sweeper releases the files of every admin session that is no longer connected, and removes
released files within a minute or two even when no one else uses the app. An admin session
is never resumed after its connection drops: a reconnect opens a new one, logged out.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pandas as pd
import streamlit as st

from valueportrait.storage import StudyDB, now, open_db

from collection_app import exports
from collection_app.pages import heading
from collection_app.store import group_load
from collection_app.study import Study

MAX_FAILURES = 5
LOCK_MINUTES = 15
REFRESH_SECONDS = 15
EXPORT_MINUTES = 10
#: How often dropped export files are removed from Streamlit's media store (seconds).
SWEEP_SECONDS = float(os.environ.get("VP_MEDIA_SWEEP_SECONDS", "30"))


def configured_password() -> str | None:
    password = os.environ.get("VP_ADMIN_PASSWORD")
    if password:
        return password
    try:
        return st.secrets.get("admin_password") or None
    except Exception:  # noqa: BLE001 - no secrets file at all
        return None


def password_ok(given: str | None, expected: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


# -- log-in attempts ----------------------------------------------------------------------------
def locked_for(db: StudyDB, study: Study, at: datetime | None = None) -> float:
    """Minutes the log-in stays locked (0: open): MAX_FAILURES wrong passwords within LOCK_MINUTES."""
    at = at or datetime.now(timezone.utc)
    since = (at - timedelta(minutes=LOCK_MINUTES)).isoformat(timespec="milliseconds")
    rows = db.query("SELECT at FROM events WHERE study_id = ? AND kind = 'admin_login_failed' AND at >= ? "
                    "ORDER BY at DESC LIMIT ?", (study.study_id, since, MAX_FAILURES))
    if len(rows) < MAX_FAILURES:
        return 0.0
    oldest = datetime.fromisoformat(rows[-1][0])
    return max(0.0, (oldest + timedelta(minutes=LOCK_MINUTES) - at).total_seconds() / 60)


def try_login(db_path: str, study: Study, given: str | None, expected: str) -> str | None:
    """Check a password, counting failures; returns an error message, or None when it matched."""
    with open_db(db_path) as db:
        with db.transaction():  # the count and the check in one write transaction: no race past the limit
            left = locked_for(db, study)
            if left > 0:
                return (f"Too many wrong passwords: the admin page is locked for {max(1, round(left))} more "
                        "minute(s).")
            if password_ok(given, expected):
                db.log_event("admin_login", study.study_id)
                return None
            db.log_event("admin_login_failed", study.study_id)
            return "Wrong password."


# -- the page -------------------------------------------------------------------------------------
@dataclass
class AdminCtx:
    study: Study
    db_path: str
    include_tests: bool


@dataclass
class Section:
    title: str
    render: Callable[[AdminCtx, StudyDB], None]
    live: bool = True  # redrawn every REFRESH_SECONDS


def participants_overview(db: StudyDB, study: Study, include_tests: bool = False) -> pd.DataFrame:
    """The review table (:func:`collection_app.exports.participations`)."""
    return exports.participations(db, study, include_tests)


def summary(db: StudyDB, study: Study, include_tests: bool = False) -> dict:
    df = participants_overview(db, study, include_tests)
    done = df[df["status"] == "completed"]
    declined = len(exports.events(db, study, include_tests).query("kind == 'declined'"))
    return dict(started=len(df), completed=len(done), active=int((df["status"] == "active").sum()),
                timed_out=int((df["status"] == "timed_out").sum()), declined=declined,
                excluded=int((~done["qc_included"]).sum()),
                failed_attention=int((df["checks_failed"] > 0).sum()),
                codes={str(k): int(v) for k, v in df["completion_code"].dropna().value_counts().items()},
                over_target=int(df["over_target"].sum()),
                median_minutes=float(done["minutes"].median()) if len(done) else float("nan"))


def _progress(ctx: AdminCtx, db: StudyDB) -> None:
    s = summary(db, ctx.study, ctx.include_tests)
    cols = st.columns(5)
    cols[0].metric("Completed", s["completed"])
    cols[1].metric("Active", s["active"])
    cols[2].metric("To review (of completed)", s["excluded"])
    cols[3].metric("Over target", s["over_target"])
    cols[4].metric("Median minutes", "-" if pd.isna(s["median_minutes"]) else f"{s['median_minutes']:.1f}")
    st.caption(f"Started {s['started']}, declined {s['declined']}, timed out {s['timed_out']}, "
               f"failed an attention check {s['failed_attention']}. Completion codes handed out: "
               + (", ".join(f"{c} {n}" for c, n in s["codes"].items()) or "none") + ".")


def _groups(ctx: AdminCtx, db: StudyDB) -> None:
    st.dataframe(pd.DataFrame(group_load(db, ctx.study)), hide_index=True, width="stretch")
    st.caption("Overfill: completions beyond the target, from participants whose place lapsed (idle longer than "
               "active_minutes) and who came back and finished after a newcomer had taken it.")


def _review(ctx: AdminCtx, db: StudyDB) -> None:
    lists = exports.review_lists(participants_overview(db, ctx.study, ctx.include_tests))
    cols = st.columns(2)
    with cols[0]:
        st.write(f"To approve ({len(lists['approve'])}): completed, no quality flag.")
        st.code("\n".join(lists["approve"]) or "(none)", language=None)
    with cols[1]:
        st.write(f"To review ({len(lists['review'])}): a quality flag, or the partial code.")
        st.code("\n".join(lists["review"]) or "(none)", language=None)


def _checks(ctx: AdminCtx, db: StudyDB) -> None:
    checks = db.frame("""SELECT a.check_id, COUNT(*) AS answered, SUM(a.passed = 0) AS failed
                         FROM attention_checks a JOIN participations p USING (study_id, participant_id)
                         WHERE a.study_id = ? AND (? OR p.test_mode = 0) GROUP BY a.check_id""",
                      (ctx.study.study_id, int(ctx.include_tests)))
    st.dataframe(checks, hide_index=True, width="stretch")


def _participants(ctx: AdminCtx, db: StudyDB) -> None:
    st.dataframe(participants_overview(db, ctx.study, ctx.include_tests), hide_index=True, width="stretch")


def _exports(ctx: AdminCtx, db: StudyDB) -> None:
    prepared = st.session_state.get("_exports")
    if prepared and datetime.now(timezone.utc) - prepared["at"] > timedelta(minutes=EXPORT_MINUTES):
        st.session_state.pop("_exports")
        prepared = None
    if not prepared or prepared["include_tests"] != ctx.include_tests:
        st.caption("Files are made when you ask for them, for this browser session only"
                   + (" (test runs included)." if ctx.include_tests else " (test runs left out)."))
        if st.button("Prepare the exports", key="prepare-exports"):
            nonce = secrets.token_hex(8)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            _sessions_with_files().add(_session_id())
            st.session_state["_exports"] = {
                "include_tests": ctx.include_tests, "stamp": stamp, "at": datetime.now(timezone.utc),
                "files": {name: (f"{ctx.study.study_id}_{name}_{stamp}_{nonce}.csv",
                                 exports.export_csv(db, ctx.study, name, ctx.include_tests)) for name in exports.EXPORTS},
            }
            st.rerun()
        return
    st.caption(f"Prepared at {prepared['stamp']} (UTC)" + (", test runs included" if prepared["include_tests"]
                                                          else ", test runs left out")
               + f"; dropped after {EXPORT_MINUTES} minutes or when you log out or close this tab.")
    cols = st.columns(len(prepared["files"]))
    for col, (name, (file_name, data)) in zip(cols, prepared["files"].items()):
        col.download_button(f"{name}.csv", data, file_name=file_name, mime="text/csv", key=f"dl-{name}",
                            help=exports.EXPORTS[name][0])
    if st.button("Drop the prepared files", key="drop-exports"):
        st.session_state.pop("_exports", None)
        st.rerun()


def prolific_section(db: StudyDB, study: Study) -> None:
    """What the last `vp prolific sync` (or `review`) found: the reconciliation and the review plan."""
    from collection_app.prolific import KINDS, latest_sync

    syncs = latest_sync(db, study.study_id)
    if not syncs:
        st.caption("No Prolific sync yet: run `vp prolific sync --db FILE --prolific-study ID`.")
        return
    for sync in syncs:
        plan, rec = sync["plan"], sync["reconciliation"]
        counts = plan["decision"].value_counts() if len(plan) else {}
        st.caption(f"Prolific study {sync['prolific_study_id']}, synced {sync['synced_at']}: {sync['submissions']} "
                   f"submissions. Review plan: approve {counts.get('approve', 0)}, reject {counts.get('reject', 0)}, "
                   f"manual review {counts.get('manual', 0)}.")
        found = {KINDS[k]: int((rec["kind"] == k).sum()) if len(rec) else 0 for k in KINDS}
        st.dataframe(pd.DataFrame({"check": list(found), "found": list(found.values())}), hide_index=True)
        if len(rec):
            st.dataframe(rec, hide_index=True)
        if len(plan):
            st.dataframe(plan[plan["decision"] != "none"], hide_index=True)


#: The admin page, top to bottom. Append a Section to add one.
SECTIONS: list[Section] = [
    Section("Progress", _progress),
    Section("Groups", _groups),
    Section("Who to approve, who to review", _review),
    Section("Prolific", lambda ctx, db: prolific_section(db, ctx.study)),
    Section("Attention checks", _checks),
    Section("Participants", _participants),
    Section("Exports (CSV)", _exports, live=False),
]


def _session_id() -> str | None:
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx else None


@st.cache_resource(show_spinner=False)
def _sessions_with_files() -> set:
    """Ids of the admin sessions that were given export files (shared by the whole server)."""
    return set()


def sweep_exports() -> None:
    """Release the files of admin sessions that are no longer connected, then let Streamlit
    remove files no session holds (its rule: marked on one pass, removed on the next)."""
    from streamlit import runtime
    if not runtime.exists():
        return
    rt = runtime.get_instance()
    sessions = _sessions_with_files()
    for session_id in list(sessions):
        if session_id is None or not rt.is_active_session(session_id):
            rt.media_file_mgr.clear_session_refs(session_id)
            sessions.discard(session_id)
    rt.media_file_mgr.remove_orphaned_files()


@st.cache_resource(show_spinner=False)
def _start_sweeper(interval: float) -> threading.Thread:
    """Run :func:`sweep_exports` every `interval` seconds: Streamlit on its own forgets a
    closed tab's session without releasing its files, and removes released files only at the
    end of some later script run, which with no participant about could be never."""

    def sweep():
        while True:
            threading.Event().wait(interval)
            try:
                sweep_exports()
            except Exception:  # noqa: BLE001 - a failed sweep is retried at the next tick
                pass

    thread = threading.Thread(target=sweep, name="vp-media-sweeper", daemon=True)
    thread.start()
    return thread


def _log_out() -> None:
    for key in ("_admin_ok", "_exports"):
        st.session_state.pop(key, None)


def render(study: Study, db_path: str) -> None:
    st.html('<div data-vp-page="admin"></div>')
    heading(f"Admin: {study.spec.title}", "title")
    expected = configured_password()
    if not expected:
        st.info("The admin page is closed: set VP_ADMIN_PASSWORD (or admin_password in Streamlit secrets).")
        return
    _start_sweeper(SWEEP_SECONDS)
    try:  # a dropped connection comes back as a new, logged-out session
        from streamlit import runtime
        if runtime.exists() and _session_id():
            runtime.get_instance().mark_session_nonresumable(_session_id())
    except Exception:  # noqa: BLE001 - not under a server (AppTest): nothing to resume anyway
        pass
    if not st.session_state.get("_admin_ok"):
        with st.form("admin-login"):
            given = st.text_input("Password", type="password", key="admin-password")
            if st.form_submit_button("Open"):
                problem = try_login(db_path, study, given, expected)
                if problem is None:
                    st.session_state["_admin_ok"] = True
                    st.rerun()
                st.error(problem)
        return
    top = st.columns([4, 1])
    include_tests = top[0].checkbox("Include test-mode runs (in the tables and the exports)", value=False,
                                    key="include-tests")
    top[1].button("Log out", on_click=_log_out, key="log-out")
    ctx = AdminCtx(study, db_path, include_tests)

    @st.fragment(run_every=REFRESH_SECONDS)
    def live():
        with open_db(db_path) as db:
            for section in (s for s in SECTIONS if s.live):
                st.subheader(section.title)
                section.render(ctx, db)
        st.caption(f"Updated {now()[11:19]} UTC; this part refreshes every {REFRESH_SECONDS} s while the page is open.")

    live()
    with open_db(db_path) as db:
        for section in (s for s in SECTIONS if not s.live):
            st.subheader(section.title)
            section.render(ctx, db)
