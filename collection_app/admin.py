"""The researcher's admin page (``?admin=1``): live progress, exclusions, CSV exports.

Nothing is read from the database before the password matches. The password comes from
the environment (``VP_ADMIN_PASSWORD``) or Streamlit secrets (``admin_password``); with
neither set the page stays closed. Comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import os

import pandas as pd
import streamlit as st

from valueportrait.storage import StudyDB, open_db

from collection_app.store import group_load
from collection_app.study import Study


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


def participants_overview(db: StudyDB, study: Study, include_tests: bool = False) -> pd.DataFrame:
    """One row per participation: status, minutes taken, attention-check failures, straight-lining."""
    df = db.frame(
        """SELECT p.participant_id, p.group_id, p.status, p.test_mode, p.started_at, p.completed_at, p.completion_code,
                  p.last_seen_at, p.platform_study_id, p.platform_session_id,
                  q.age, q.gender, q.education, q.politics, q.country,
                  (SELECT COUNT(*) FROM attention_checks a WHERE a.study_id = p.study_id
                       AND a.participant_id = p.participant_id AND a.passed = 0) AS checks_failed,
                  (SELECT COUNT(*) FROM ratings r WHERE r.study_id = p.study_id
                       AND r.participant_id = p.participant_id) AS n_ratings,
                  (SELECT COUNT(DISTINCT r.rating) FROM ratings r WHERE r.study_id = p.study_id
                       AND r.participant_id = p.participant_id) AS distinct_ratings
           FROM participations p
           LEFT JOIN participants q ON q.study_id = p.study_id AND q.participant_id = p.participant_id
           WHERE p.study_id = ? ORDER BY p.started_at""", (study.study_id,))
    if not include_tests:
        df = df[df["test_mode"] == 0]
    start = pd.to_datetime(df["started_at"], utc=True, format="ISO8601")
    end = pd.to_datetime(df["completed_at"], utc=True, format="ISO8601")
    df = df.assign(minutes=(end - start).dt.total_seconds() / 60)
    straight = (df["n_ratings"] >= 5) & (df["distinct_ratings"] == 1)
    reasons = (df["checks_failed"].gt(0).map({True: "attention_check", False: ""}) + ";"
               + straight.map({True: "straight_lining", False: ""})).str.strip(";")
    return df.assign(excluded=reasons.ne(""), exclusion_reasons=reasons)


def summary(db: StudyDB, study: Study, include_tests: bool = False) -> dict:
    df = participants_overview(db, study, include_tests)
    done = df[df["status"] == "completed"]
    declined = db.query("SELECT COUNT(*) FROM events WHERE study_id = ? AND kind = 'declined'", (study.study_id,))[0][0]
    return dict(started=len(df), completed=len(done), active=int((df["status"] == "active").sum()),
                timed_out=int((df["status"] == "timed_out").sum()), declined=declined,
                excluded=int(done["excluded"].sum()),
                failed_attention=int((df["checks_failed"] > 0).sum()),
                codes={str(k): int(v) for k, v in done["completion_code"].value_counts().items()},
                median_minutes=float(done["minutes"].median()) if len(done) else float("nan"))


EXPORTS = ("participants", "participations", "instrument_answers", "ratings", "attention_checks", "events")


def export_csv(db: StudyDB, study: Study, table: str) -> bytes:
    if table == "events":
        df = db.frame("SELECT * FROM events WHERE study_id = ? ORDER BY event_id", (study.study_id,))
    else:
        df = db.table(table, study.study_id)
    return df.to_csv(index=False).encode("utf-8")


def prolific_section(db: StudyDB, study: Study) -> None:
    """What the last `vp prolific sync` (or `review`) found: the reconciliation and the review plan."""
    from collection_app.prolific import KINDS, latest_sync

    st.subheader("Prolific")
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


def render(study: Study, db_path: str) -> None:
    st.html('<div data-vp-page="admin"></div>')
    st.title(f"Admin: {study.spec.title}")
    expected = configured_password()
    if not expected:
        st.info("The admin page is closed: set VP_ADMIN_PASSWORD (or admin_password in Streamlit secrets).")
        return
    if not st.session_state.get("_admin_ok"):
        with st.form("admin-login"):
            given = st.text_input("Password", type="password", key="admin-password")
            if st.form_submit_button("Open"):
                if password_ok(given, expected):
                    st.session_state["_admin_ok"] = True
                    st.rerun()
                else:
                    st.error("Wrong password.")
        if not st.session_state.get("_admin_ok"):
            return
    include_tests = st.checkbox("Include test-mode runs", value=False)
    with open_db(db_path) as db:
        s = summary(db, study, include_tests)
        cols = st.columns(4)
        cols[0].metric("Completed", s["completed"])
        cols[1].metric("Active", s["active"])
        cols[2].metric("Excluded (of completed)", s["excluded"])
        cols[3].metric("Median minutes", "-" if pd.isna(s["median_minutes"]) else f"{s['median_minutes']:.1f}")
        st.caption(f"Started {s['started']}, declined {s['declined']}, timed out {s['timed_out']}, "
                   f"failed an attention check {s['failed_attention']}.")
        if study.spec.completion.failed_checks_code is not None:
            st.caption("Completion codes handed out: " + ", ".join(f"{c} {n}" for c, n in s["codes"].items()) + ".")
        st.subheader("Groups")
        st.dataframe(pd.DataFrame(group_load(db, study)), hide_index=True)
        st.subheader("Attention checks")
        checks = db.frame("""SELECT a.check_id, COUNT(*) AS answered, SUM(a.passed = 0) AS failed
                             FROM attention_checks a JOIN participations p USING (study_id, participant_id)
                             WHERE a.study_id = ? AND (? OR p.test_mode = 0) GROUP BY a.check_id""",
                          (study.study_id, int(include_tests)))
        st.dataframe(checks, hide_index=True)
        st.subheader("Participants")
        st.dataframe(participants_overview(db, study, include_tests), hide_index=True)
        prolific_section(db, study)
        st.subheader("Exports (CSV)")
        cols = st.columns(3)
        for n, table in enumerate(EXPORTS):
            cols[n % 3].download_button(table, export_csv(db, study, table), file_name=f"{study.study_id}_{table}.csv",
                                        mime="text/csv", key=f"dl-{table}")
