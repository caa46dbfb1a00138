"""Run the study on Prolific from the command line: create and publish it, reconcile its submissions
with the database, approve and reject them by the quality rules, pay bonuses.

``vp prolific create|sync|review|bonus``. The API token comes from ``PROLIFIC_TOKEN`` and is
never printed, logged or stored; ``--base-url`` points at another API root (staging, the
tests' fake server). Nothing that changes anything on Prolific is sent without ``--apply``.

What follows Prolific's documentation (docs.prolific.com, researcher-help.prolific.com):

* A study is created as a draft (``POST /api/v1/studies/``, status UNPUBLISHED) and published
  by a transition (``POST /api/v1/studies/{id}/transition/`` ``{"action": "PUBLISH"}``). The
  link carries ``PROLIFIC_PID``, ``STUDY_ID`` and ``SESSION_ID`` as ``{{%...%}}`` placeholders
  (``prolific_id_option: url_parameters``). Completion codes are ``COMPLETED`` and, when the
  study file has a failed-checks code, ``FAILED_ATTENTION_CHECK``, both with the action
  ``MANUALLY_REVIEW`` so that every submission waits for ``review``. Prolific's minimum pay
  is £6 / $8 an hour and it recommends £9 / $12: ``create`` refuses less than 6 an hour and
  warns below 9.
* Submissions are listed with ``GET /api/v1/submissions/?study=ID`` page by page
  (``_links.next``). Statuses: ACTIVE, AWAITING REVIEW, APPROVED, REJECTED, RETURNED,
  TIMED-OUT, and PROCESSING for a moment after a transition.
* Approvals go in one ``POST /api/v1/submissions/bulk-approve/`` with submission ids (the
  variant Prolific recommends); it is processed in the background.
* A rejection is ``POST /api/v1/submissions/{id}/transition/`` with ``action: REJECT``, a
  ``rejection_category`` (TOO_QUICKLY, TOO_SLOWLY, FAILED_INSTRUCTIONS, INCOMP_LONGITUDINAL,
  FAILED_CHECK, LOW_EFFORT, MALINGERING, NO_CODE, BAD_CODE, NO_DATA, UNSUPP_DEVICE, OTHER)
  and a message of at least 100 characters; a transition cannot be undone, and sending the
  same one twice is ignored.
* Fair rejection: Prolific allows rejecting for failed attention checks only under its
  attention-check policy (at least two failed checks in a study of five minutes or more, one
  in a shorter study) and for no data; speed is a reason only for statistical outliers and
  never for time on one page. This tool rejects only for failed checks (threshold in the
  study file, default 2, refused below 2 for studies of 5 minutes or more) and for no data at
  all. Speeders and straight-liners are excluded from the analysis (``analysis/quality.py``)
  but approved and paid. Everything else that looks wrong (a wrong completion code, data cut
  short, a declined consent, a duplicate) is left for the researcher to review by hand.
* The demographic export is ``POST /api/v1/studies/{id}/demographic-export/`` (CSV; the
  older ``GET .../export/`` is deprecated).
* Bonuses are set up (``POST /api/v1/submissions/bonus-payments/`` with ``csv_bonuses``
  lines ``<participant_id>,<amount>``, the amount in the study currency: 1.50 = £1.50) and then
  paid (``POST /api/v1/bulk-bonus-payments/{id}/pay/``), which Prolific documents as *not*
  idempotent: a pay request whose answer was lost is never sent again without the
  researcher's word (``--retry-unpaid``).

Crash safety: every state-changing request is written to the database (``prolific_actions``,
``prolific_bonus_batches``, ``prolific_studies``) before it is sent, and marked sent when
Prolific answers. A rerun first reads Prolific's state and marks what already happened, so
it sends only what did not: a second ``--apply`` sends nothing new.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import re
import secrets
import sys
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pandas as pd

from valueportrait.atomic import write_csv_atomic
from valueportrait.errors import InputError
from valueportrait.files import read_text
from valueportrait import options as opt
from valueportrait.spreadsheet import spreadsheet_safe
from valueportrait.storage import StudyDB, now, open_db

from collection_app import store
from collection_app.prolific_client import (DEFAULT_BASE_URL, TOKEN_ENV, AuthError, OutcomeUnknown, ProlificClient,
                                            ProlificError)
from collection_app.study import ProlificReview, ProlificSettings, load_study

DEFAULT_DB = Path("data/raw/study.db")
DEFAULT_OUT = Path("data/processed")
AWAITING = "AWAITING REVIEW"
#: Statuses that mean a transition has been made or is under way: never send another.
DECIDED = ("APPROVED", "REJECTED", "PROCESSING", "PARTIALLY APPROVED", "SCREENED OUT")
MIN_HOURLY, RECOMMENDED_HOURLY = 6.0, 9.0  # GBP (USD: 8 and 12)
PLACEHOLDERS = "PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"

MESSAGE_FAILED_CHECKS = (
    "Thank you for your time. We cannot approve this submission: it failed {failed} of the {checks} attention "
    "checks in the study, questions that each asked for one stated answer. Prolific's attention-check policy "
    "allows rejection in this case. If you think we made a mistake, please message us through Prolific.")
MESSAGE_NO_DATA = (
    "Thank you for your interest. We cannot approve this submission: our survey received no answers at all "
    "from your Prolific ID, so there is no data to pay for. If you did take part and think we made a mistake, "
    "please message us through Prolific with your completion code.")

# Seconds per page, to estimate a study's length before any pilot (a guess, said as one).
SECONDS = {"start": 120, "instrument_item": 8, "check": 10, "rating": 25}


def _say(*lines: str) -> None:
    print("\n".join(lines), flush=True)


def _warn(text: str) -> None:
    print(f"vp prolific: warning: {text}", file=sys.stderr, flush=True)


# -- settings and the token -------------------------------------------------------------------
def token_from_env() -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise InputError(f"{TOKEN_ENV}: not set: create an API token in Prolific's settings (API tokens) "
                         f"and export {TOKEN_ENV} before running this command")
    return token


def make_client(args) -> ProlificClient:
    def on_wait(seconds: float, why: str) -> None:
        print(f"vp prolific: {why}; waiting {seconds:.1f} s", file=sys.stderr, flush=True)

    try:
        return ProlificClient(args.base_url, token_from_env(), timeout=args.timeout, max_retries=args.max_retries,
                              backoff_base=args.backoff, on_wait=on_wait)
    except ValueError as exc:
        raise InputError(f"--base-url: {exc}") from None


def settings_from_db(db: StudyDB, study_id: str) -> ProlificSettings:
    """The study file's ``prolific`` section as stored with the study (the app stores the definition)."""
    rows = db.query("SELECT config_json FROM studies WHERE study_id = ?", (study_id,))
    spec = json.loads(rows[0][0]).get("spec", {}) if rows and rows[0][0] else {}
    return ProlificSettings.model_validate(spec.get("prolific") or {})


def resolve_our_study(db: StudyDB, prolific_study_id: str, study_id: str | None) -> str:
    """Our study that a Prolific study belongs to: named, created by `create`, or the one its links came from."""
    if study_id is not None:
        return db.resolve_study(study_id)
    rows = db.query("SELECT study_id FROM prolific_studies WHERE prolific_study_id = ?", (prolific_study_id,))
    if rows:
        return rows[0][0]
    rows = db.query("SELECT DISTINCT study_id FROM participations WHERE platform_study_id = ?", (prolific_study_id,))
    if len(rows) == 1:
        return rows[0][0]
    return db.resolve_study(None)


# -- what Prolific says ------------------------------------------------------------------------
SUBMISSION_COLUMNS = ["submission_id", "participant_id", "status", "study_code", "started_at", "completed_at",
                      "time_taken"]


def submissions_frame(submissions: list[dict]) -> pd.DataFrame:
    rows = [{"submission_id": str(s["id"]), "participant_id": str(s.get("participant_id") or s.get("participant") or ""),
             "status": str(s.get("status") or ""), "study_code": s.get("study_code") or None,
             "started_at": s.get("started_at"), "completed_at": s.get("completed_at"),
             "time_taken": s.get("time_taken"), "raw_json": json.dumps(s, sort_keys=True)} for s in submissions]
    # object columns: a missing code stays None (pandas would make it NaN in a text column)
    return pd.DataFrame(rows, columns=SUBMISSION_COLUMNS + ["raw_json"], dtype=object)


def demographics_rows(text: str) -> list[dict]:
    """Rows of Prolific's demographic export (CSV), keyed by its submission and participant id columns."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        return []
    norm = {re.sub(r"[^a-z]", "", name.lower()): name for name in reader.fieldnames}
    sub_col = norm.get("submissionid") or norm.get("sessionid")
    pid_col = norm.get("participantid")
    if sub_col is None:
        return []
    return [{"submission_id": row[sub_col], "participant_id": row.get(pid_col) if pid_col else None,
             "fields_json": json.dumps(row, ensure_ascii=False)} for row in reader if row.get(sub_col)]


def pull(client: ProlificClient, prolific_study_id: str, demographics: bool = True) -> tuple[pd.DataFrame, list[dict]]:
    """Every submission (all pages) and, if asked, the demographic export."""
    from tqdm import tqdm
    with tqdm(desc="submissions", unit=" sub", file=sys.stderr, disable=None) as bar:
        subs = []
        for s in client.pages("/api/v1/submissions/", {"study": prolific_study_id, "page_size": 200}):
            subs.append(s)
            bar.update(1)
    demo: list[dict] = []
    if demographics:
        try:
            demo = demographics_rows(client.demographic_export(prolific_study_id))
        except AuthError:
            raise
        except ProlificError as exc:  # an export limit or an older API: the reconciliation does not need it
            _warn(f"the demographic export was not read ({exc}); submissions were")
    return submissions_frame(subs), demo


def store_pull(db: StudyDB, prolific_study_id: str, subs: pd.DataFrame, demo: list[dict]) -> None:
    stamp = now()
    db.upsert("prolific_submissions", [dict(prolific_study_id=prolific_study_id, synced_at=stamp, **row)
                                       for row in subs.to_dict("records")])
    db.upsert("prolific_demographics", [dict(prolific_study_id=prolific_study_id, synced_at=stamp, **row) for row in demo])


# -- what the database says --------------------------------------------------------------------
def our_participations(db: StudyDB, study_id: str, prolific_study_id: str) -> pd.DataFrame:
    """The participations that came through this Prolific study (its STUDY_ID in the link), with answer counts."""
    return db.frame(
        """SELECT p.participant_id, p.group_id, p.status, p.completion_code, p.platform_session_id, p.started_at,
                  (SELECT COUNT(*) FROM instrument_answers a WHERE a.study_id = p.study_id AND a.participant_id = p.participant_id)
                + (SELECT COUNT(*) FROM ratings r WHERE r.study_id = p.study_id AND r.participant_id = p.participant_id)
                + (SELECT COUNT(*) FROM attention_checks c WHERE c.study_id = p.study_id AND c.participant_id = p.participant_id)
                  AS answers,
                  (SELECT COUNT(*) FROM attention_checks c WHERE c.study_id = p.study_id
                       AND c.participant_id = p.participant_id AND c.passed = 0) AS failed_checks,
                  (SELECT COUNT(*) FROM attention_checks c WHERE c.study_id = p.study_id
                       AND c.participant_id = p.participant_id) AS checks
           FROM participations p
           WHERE p.study_id = ? AND p.test_mode = 0 AND p.platform_study_id = ?
           ORDER BY p.participant_id, p.started_at""", (study_id, prolific_study_id))


def declined(db: StudyDB, study_id: str, participant_ids) -> set[str]:
    """The participant ids whose decline of consent the app recorded (as a one-way hash)."""
    tokens = {store.decline_token(study_id, pid): pid for pid in participant_ids}
    if not tokens:
        return set()
    rows = db.query(f"SELECT DISTINCT participant_id FROM events WHERE study_id = ? AND kind = 'declined' "
                    f"AND participant_id IN ({', '.join('?' * len(tokens))})", (study_id, *tokens))
    return {tokens[r[0]] for r in rows}


def quality_reasons(db: StudyDB, study_id: str, review: ProlificReview) -> pd.DataFrame:
    """``analysis/quality.py``'s verdict per participation (test runs left out), with the attention rule
    at the review's threshold: ``participant_id, group_id, reasons``."""
    from analysis.dataset import load_study as load_analysis_study
    from analysis.quality import QualityOptions, quality_control

    study = load_analysis_study(db, study_id)
    parts = study.participations
    study = replace(study, participations=parts[parts["test_mode"] == 0].reset_index(drop=True))
    if study.participations.empty:
        return pd.DataFrame(columns=["participant_id", "group_id", "reasons"])
    result = quality_control(study, QualityOptions(max_failed_checks=review.reject_failed_checks - 1))
    return result.table[["participant_id", "group_id", "reasons"]]


def _none(value):
    """None for a missing value (None or NaN), else the value."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


PEOPLE_COLUMNS = ["groups", "n_participations", "app_status", "app_code", "session_ids", "answers", "failed_checks",
                  "checks", "quality"]


def participants_view(ours: pd.DataFrame, quality: pd.DataFrame) -> dict[str, dict]:
    """participant id -> their participations folded together (groups, status, the code the app
    showed, session ids, answers, failed checks, the quality rules they broke)."""
    if ours.empty:
        return {}
    q = ours.merge(quality, on=["participant_id", "group_id"], how="left")
    q["reasons"] = q["reasons"].fillna("")
    g = q.groupby("participant_id", sort=True)
    people = pd.DataFrame({"groups": g["group_id"].agg(";".join), "n_participations": g.size(),
                           "answers": g["answers"].sum(), "failed_checks": g["failed_checks"].sum(),
                           "checks": g["checks"].sum(), "first_status": g["status"].first()})
    done = q[q["status"] == "completed"].drop_duplicates("participant_id").set_index("participant_id")
    people["app_status"] = people["first_status"].where(~people.index.isin(done.index), "completed")
    people["app_code"] = done["completion_code"].reindex(people.index)
    sessions = q.dropna(subset=["platform_session_id"]).groupby("participant_id")["platform_session_id"].unique()
    sessions = sessions.to_dict()
    people["session_ids"] = [sorted(sessions.get(p, ())) for p in people.index]
    broken = q[["participant_id"]].assign(rule=q["reasons"].str.split(";")).explode("rule")
    broken = broken[broken["rule"].fillna("") != ""].groupby("participant_id")["rule"].unique().to_dict()
    people["quality"] = [";".join(sorted(broken.get(p, ()))) for p in people.index]
    out = people[PEOPLE_COLUMNS].astype(object)
    return out.where(out.notna(), None).to_dict("index")  # a missing code is None, not NaN (which is truthy)


def _joined(subs: pd.DataFrame, people: dict[str, dict]) -> list[tuple[dict, dict | None]]:
    """(submission, its participant's view or None) for every submission."""
    return [(s, people.get(s["participant_id"])) for s in subs.to_dict("records")]


# -- reconciliation ----------------------------------------------------------------------------
RECONCILIATION_COLUMNS = ["kind", "participant_id", "submission_id", "prolific_status", "detail"]
KINDS = {
    "no_data": "submissions with no data in the database",
    "no_submission": "data with no submission on Prolific",
    "code_mismatch": "completion codes that do not match what the app showed",
    "session_mismatch": "submissions whose session id differs from the one the app received",
    "returned": "returned submissions",
    "timed_out": "timed-out submissions",
    "duplicate": "duplicates",
}


def reconcile(subs: pd.DataFrame, people: dict[str, dict], declined_ids: set[str]) -> pd.DataFrame:
    """Every disagreement between Prolific's submissions and the database, one row each."""
    rows = []

    def add(kind, pid, sid, status, detail):
        rows.append(dict(kind=kind, participant_id=pid, submission_id=sid, prolific_status=status, detail=detail))

    for s, me in _joined(subs, people):
        pid, sid, status, code = s["participant_id"], s["submission_id"], s["status"], _none(s["study_code"])
        answers = 0 if me is None else me["answers"]
        if answers == 0:
            why = ("declined consent in the app" if pid in declined_ids else
                   "never reached the app" if me is None else "reached the app but gave no answer")
            add("no_data", pid, sid, status, why)
        if status == "RETURNED":
            add("returned", pid, sid, status, f"{answers} answers stored")
        elif status == "TIMED-OUT":
            add("timed_out", pid, sid, status, f"{answers} answers stored")
        if me is None:
            continue
        if code is not None and code != me["app_code"]:
            shown = f"the app showed {me['app_code']!r}" if me["app_code"] else "the app showed no code (not completed)"
            add("code_mismatch", pid, sid, status, f"entered {code!r}; {shown}")
        elif code is None and me["app_code"] and status in (AWAITING, "APPROVED", "REJECTED"):
            add("code_mismatch", pid, sid, status, f"no code entered; the app showed {me['app_code']!r}")
        if me["session_ids"] and sid not in me["session_ids"]:
            add("session_mismatch", pid, sid, status, f"the app received session {', '.join(me['session_ids'])}")
    counts = subs["participant_id"].value_counts()
    for pid, n in counts[counts > 1].items():
        add("duplicate", pid, ";".join(subs.loc[subs["participant_id"] == pid, "submission_id"]), "",
            f"{n} submissions from one participant")
    submitted = set(subs["participant_id"])
    for pid, me in people.items():
        if me["n_participations"] > 1:
            add("duplicate", pid, "", "", f"in {me['n_participations']} groups here ({me['groups']})")
        if pid not in submitted:
            add("no_submission", pid, ";".join(me["session_ids"]), "",
                f"{me['answers']} answers stored, status {me['app_status']}")
    table = pd.DataFrame(rows, columns=RECONCILIATION_COLUMNS)
    order = {k: i for i, k in enumerate(KINDS)}
    return table.sort_values(["kind", "participant_id"], key=lambda c: c.map(order) if c.name == "kind" else c,
                             kind="stable").reset_index(drop=True)


# -- the review plan ---------------------------------------------------------------------------
PLAN_COLUMNS = ["submission_id", "participant_id", "prolific_status", "decision", "rejection_category", "reason",
                "state", "groups", "entered_code", "app_code", "failed_checks", "checks", "quality"]


def decide(s: dict, me: dict | None, is_declined: bool, n_submissions: int,
           review: ProlificReview) -> tuple[str, str | None, str]:
    """(decision, rejection category, reason) for one submission awaiting review."""
    answers = 0 if me is None else me["answers"]
    if is_declined and answers == 0:
        return "manual", None, "declined consent in the app: ask them to return the submission (not a reason to reject)"
    if answers == 0:
        if review.reject_no_data:
            return "reject", "NO_DATA", "no data at all in the database for this participant"
        return "manual", None, "no data at all in the database (reject_no_data is off)"
    if n_submissions > 1 or me["n_participations"] > 1:
        return "manual", None, "duplicate: several submissions or groups for one participant"
    if "attention" in me["quality"].split(";"):
        return ("reject", "FAILED_CHECK",
                f"failed {me['failed_checks']} of {me['checks']} attention checks "
                f"(policy threshold {review.reject_failed_checks})")
    if me["app_status"] != "completed":
        return "manual", None, (f"data cut short: {answers} answers stored, status {me['app_status']} here "
                                "(ask them to return the submission, or approve)")
    code = _none(s["study_code"])
    if code != me["app_code"]:
        entered = "no code" if code is None else f"code {code!r}"
        return "manual", None, f"entered {entered}, the app showed {me['app_code']!r}"
    if me["session_ids"] and s["submission_id"] not in me["session_ids"]:
        return "manual", None, "the session id differs from the one the app received"
    excluded = [r for r in me["quality"].split(";") if r]
    if excluded:
        return "approve", None, f"completed with data; excluded from the analysis ({', '.join(excluded)}) but paid"
    return "approve", None, "completed with data"


def review_plan(subs: pd.DataFrame, people: dict[str, dict], declined_ids: set[str], actions: pd.DataFrame,
                review: ProlificReview) -> pd.DataFrame:
    """Per submission: approve, reject (with Prolific's category), manual or none, and why.

    ``state`` says where an earlier decision stands: ``new`` (nothing sent yet), ``intended``
    (recorded, not known to have reached Prolific: sent again), ``sent`` (Prolific took it,
    not yet processed), ``confirmed`` (Prolific shows it), ``superseded`` (decided elsewhere).
    """
    n_subs = subs["participant_id"].value_counts().to_dict()
    acted = {a["submission_id"]: a for a in actions.to_dict("records")}
    rows = []
    for s, me in _joined(subs, people):
        pid, sid, status = s["participant_id"], s["submission_id"], s["status"]
        row = dict(submission_id=sid, participant_id=pid, prolific_status=status, decision="none",
                   rejection_category=None, reason="", state="", entered_code=_none(s["study_code"]),
                   **{k: None if me is None else me[k] for k in ("groups", "app_code", "failed_checks", "checks",
                                                               "quality")})
        prior = acted.get(sid)
        if prior is not None and prior["state"] in ("intended", "sent", "confirmed", "superseded"):
            row.update(decision=prior["action"].lower(), rejection_category=prior["rejection_category"],
                       reason=prior["reason"], state=prior["state"])
            if prior["state"] == "superseded":
                row.update(decision="none", reason=f"decided elsewhere: {prior['detail']}")
        elif status == AWAITING:
            decision, category, reason = decide(s, me, pid in declined_ids, n_subs[pid], review)
            row.update(decision=decision, rejection_category=category, reason=reason,
                       state="new" if decision in ("approve", "reject") else "")
        else:
            row.update(reason=f"not awaiting review ({status})")
        rows.append(row)
    plan = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    order = {"reject": 0, "manual": 1, "approve": 2, "none": 3}
    return plan.sort_values(["decision", "participant_id"], key=lambda c: c.map(order) if c.name == "decision" else c,
                            kind="stable").reset_index(drop=True)


def rejection_message(row, review: ProlificReview) -> str:
    if row["rejection_category"] == "FAILED_CHECK":
        text = review.message_failed_checks or MESSAGE_FAILED_CHECKS
        return text.format(failed=row["failed_checks"], checks=row["checks"])
    return review.message_no_data or MESSAGE_NO_DATA


# -- the actions' bookkeeping ------------------------------------------------------------------
def load_actions(db: StudyDB, prolific_study_id: str) -> pd.DataFrame:
    return db.frame("SELECT * FROM prolific_actions WHERE prolific_study_id = ?", (prolific_study_id,))


def refresh_actions(db: StudyDB, prolific_study_id: str, subs: pd.DataFrame) -> dict[str, int]:
    """Mark decisions Prolific now shows as confirmed, and those decided otherwise as superseded."""
    status = dict(zip(subs["submission_id"], subs["status"]))
    changed = {"confirmed": 0, "superseded": 0}
    stamp = now()
    # A refused decision counts too: once the submission is decided by hand, it is not left over.
    for a in db.query("SELECT * FROM prolific_actions WHERE prolific_study_id = ? "
                      "AND state IN ('intended', 'sent', 'refused')", (prolific_study_id,)):
        st = status.get(a["submission_id"])
        target = "APPROVED" if a["action"] == "APPROVE" else "REJECTED"
        if st == target:
            db.conn.execute("UPDATE prolific_actions SET state = 'confirmed', confirmed_at = ? WHERE prolific_study_id = ? "
                            "AND submission_id = ?", (stamp, prolific_study_id, a["submission_id"]))
            changed["confirmed"] += 1
        elif st == "PROCESSING":
            db.conn.execute("UPDATE prolific_actions SET state = 'sent', sent_at = COALESCE(sent_at, ?) WHERE "
                            "prolific_study_id = ? AND submission_id = ?", (stamp, prolific_study_id, a["submission_id"]))
        elif st is not None and st != AWAITING:
            db.conn.execute("UPDATE prolific_actions SET state = 'superseded', detail = ? WHERE prolific_study_id = ? "
                            "AND submission_id = ?", (f"Prolific shows {st}", prolific_study_id, a["submission_id"]))
            changed["superseded"] += 1
    return changed


def _mark(db: StudyDB, prolific_study_id: str, submission_ids, state: str, detail: str | None = None) -> None:
    stamp = now()
    column = {"sent": "sent_at", "confirmed": "confirmed_at"}.get(state)
    with db.transaction():
        for sid in submission_ids:
            db.conn.execute(
                f"UPDATE prolific_actions SET state = ?, detail = COALESCE(?, detail)"
                + (f", {column} = COALESCE({column}, ?)" if column else "")
                + " WHERE prolific_study_id = ? AND submission_id = ?",
                (state, detail, *((stamp,) if column else ()), prolific_study_id, sid))


# -- the snapshot the admin page shows ---------------------------------------------------------
def save_sync(db: StudyDB, prolific_study_id: str, study_id: str, subs: pd.DataFrame, reconciliation: pd.DataFrame,
              plan: pd.DataFrame) -> None:
    db.upsert("prolific_syncs", [dict(prolific_study_id=prolific_study_id, study_id=study_id, synced_at=now(),
                                      submissions=len(subs),
                                      reconciliation_json=reconciliation.to_json(orient="records"),
                                      plan_json=plan.to_json(orient="records"))])


def latest_sync(db: StudyDB, study_id: str) -> list[dict] | None:
    """The last sync of each Prolific study of `study_id` (newest first), for the admin page."""
    rows = db.query("SELECT * FROM prolific_syncs WHERE study_id = ? ORDER BY synced_at DESC", (study_id,))
    return [dict(prolific_study_id=r["prolific_study_id"], synced_at=r["synced_at"], submissions=r["submissions"],
                 reconciliation=pd.read_json(io.StringIO(r["reconciliation_json"]), orient="records", dtype=False),
                 plan=pd.read_json(io.StringIO(r["plan_json"]), orient="records", dtype=False)) for r in rows] or None


# -- sync and review ---------------------------------------------------------------------------
def _review_settings(args, db: StudyDB, study_id: str) -> ProlificReview:
    if getattr(args, "study", None):
        spec = load_study(args.study).spec
        if spec.study_id != study_id:
            raise InputError(f"{args.study}: study_id: {spec.study_id!r} is not the study of Prolific study "
                             f"{args.prolific_study} in the database ({study_id!r})")
        return (spec.prolific or ProlificSettings()).review
    return settings_from_db(db, study_id).review


@dataclass
class Synced:
    """What one pull from Prolific gave, and what was made of it."""

    study_id: str
    subs: pd.DataFrame
    reconciliation: pd.DataFrame
    plan: pd.DataFrame
    review: ProlificReview
    n_demographics: int
    people: dict[str, dict]
    declined: set[str]


def _existing_db(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"--db: {path}: no such database (give the one `vp app --db` writes)")
    return path


def sync_and_plan(args, client: ProlificClient, db: StudyDB) -> Synced:
    """Pull from Prolific, then store, reconcile and plan in one transaction."""
    pid = args.prolific_study
    study_id = resolve_our_study(db, pid, args.study_id)
    review = _review_settings(args, db, study_id)
    subs, demo = pull(client, pid, demographics=not getattr(args, "no_demographics", False))
    ours = our_participations(db, study_id, pid)
    if ours.empty:
        _warn(f"no participation in {args.db} came through Prolific study {pid} (the STUDY_ID in the app's link): "
              "check the id")
    gone = declined(db, study_id, set(subs["participant_id"]))
    people = participants_view(ours, quality_reasons(db, study_id, review))
    with db.transaction():
        store_pull(db, pid, subs, demo)
        changed = refresh_actions(db, pid, subs)
        reconciliation = reconcile(subs, people, gone)
        plan = review_plan(subs, people, gone, load_actions(db, pid), review)
        save_sync(db, pid, study_id, subs, reconciliation, plan)
    if changed["confirmed"] or changed["superseded"]:
        _say(f"earlier decisions now shown by Prolific: {changed['confirmed']} confirmed, "
             f"{changed['superseded']} decided otherwise on Prolific")
    return Synced(study_id, subs, reconciliation, plan, review, len(demo), people, gone)


def _table(frame: pd.DataFrame, columns: list[str], width: int = 90) -> str:
    shown = frame[columns].fillna("").astype(str)
    shown = shown.apply(lambda col: col.map(lambda v: v if len(v) <= width else v[: width - 1] + "…"))
    return shown.to_string(index=False)


def print_reconciliation(subs: pd.DataFrame, reconciliation: pd.DataFrame, n_demo: int, pid: str, study_id: str) -> None:
    by_status = ", ".join(f"{k} {v}" for k, v in subs["status"].value_counts().sort_index().items()) or "none"
    _say(f"Prolific study {pid} (study {study_id}): {len(subs)} submissions ({by_status}); "
         f"demographic export: {n_demo} rows")
    for kind, title in KINDS.items():
        part = reconciliation[reconciliation["kind"] == kind]
        _say(f"{title}: {len(part)}")
        if len(part):
            _say("  " + _table(part, ["participant_id", "submission_id", "prolific_status", "detail"]).replace("\n", "\n  "))


def print_plan(plan: pd.DataFrame) -> None:
    counts = plan["decision"].value_counts()
    _say(f"review plan: approve {counts.get('approve', 0)}, reject {counts.get('reject', 0)}, "
         f"manual review {counts.get('manual', 0)}, nothing to do {counts.get('none', 0)}")
    shown = plan[plan["decision"] != "none"]
    if len(shown):
        _say(_table(shown, ["participant_id", "decision", "rejection_category", "state", "reason"]))


def cmd_sync(args) -> int:
    with make_client(args) as client, open_db(_existing_db(args.db)) as db:
        got = sync_and_plan(args, client, db)
    print_reconciliation(got.subs, got.reconciliation, got.n_demographics, args.prolific_study, got.study_id)
    print_plan(got.plan)
    _say(f"stored in {args.db}; the admin page shows the reconciliation and the plan")
    return 0


def _send_approvals(client: ProlificClient, db: StudyDB, pid: str, ids: list[str]) -> str:
    """One bulk approval; '' when Prolific took it, else what went wrong."""
    try:
        client.bulk_approve(ids)
    except OutcomeUnknown as exc:
        return f"approvals: {exc}; the next run checks which went through and sends the rest"
    except AuthError:
        raise
    except ProlificError as exc:
        _mark(db, pid, ids, "refused", str(exc))
        return f"approvals refused by Prolific: {exc}"
    _mark(db, pid, ids, "sent")
    return ""


def _send_rejection(client: ProlificClient, db: StudyDB, pid: str, row, body: dict) -> str:
    """One rejection; after an unclear answer, look at the submission before sending it again."""
    sid = row["submission_id"]
    for attempt in range(client.max_retries + 1):
        try:
            answer = client.transition_submission(sid, body)
        except OutcomeUnknown as exc:
            status = client.submission(sid).get("status")  # look before sending again
            if status in DECIDED:
                _mark(db, pid, [sid], "confirmed" if status == "REJECTED" else "sent")
                return ""
            if status != AWAITING:
                _mark(db, pid, [sid], "superseded", f"Prolific shows {status}")
                return f"{row['participant_id']}: Prolific shows {status}"
            if attempt == client.max_retries:
                return f"{row['participant_id']}: {exc}"
            client.wait(attempt, None, f"POST /api/v1/submissions/{sid}/transition/: {exc}")
            continue
        except AuthError:
            raise
        except ProlificError as exc:
            _mark(db, pid, [sid], "refused", str(exc))
            return f"{row['participant_id']}: refused by Prolific: {exc}"
        _mark(db, pid, [sid], "confirmed" if answer.get("status") == "REJECTED" else "sent")
        return ""
    return ""  # pragma: no cover


def apply_plan(client: ProlificClient, db: StudyDB, pid: str, plan: pd.DataFrame,
               review: ProlificReview) -> tuple[dict[str, int], list[str]]:
    """Record every decision to send, then send: one bulk approval, one transition per rejection.

    Returns how many of each this run got through to Prolific, and what went wrong.
    """
    from tqdm import tqdm
    todo = plan[plan["decision"].isin(("approve", "reject")) & plan["state"].isin(("new", "intended"))
                & (plan["prolific_status"] == AWAITING)]
    sent = {"approvals": 0, "rejections": 0}
    if todo.empty:
        return sent, []
    batch = f"bulk-approve {now()}"
    stamp = now()
    with db.transaction():
        for _, row in todo.iterrows():
            reject = row["decision"] == "reject"
            db.conn.execute(
                """INSERT INTO prolific_actions (prolific_study_id, submission_id, participant_id, action, rejection_category,
                       message, reason, request, state, intended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'intended', ?)
                   ON CONFLICT (prolific_study_id, submission_id) DO UPDATE SET action = excluded.action,
                       rejection_category = excluded.rejection_category, message = excluded.message,
                       reason = excluded.reason, request = excluded.request, state = 'intended', detail = NULL
                   WHERE prolific_actions.state IN ('intended', 'refused')""",
                (pid, row["submission_id"], row["participant_id"], "REJECT" if reject else "APPROVE",
                 row["rejection_category"], rejection_message(row, review) if reject else None, row["reason"],
                 "transition" if reject else batch, stamp))
    problems = []
    approvals = list(todo.loc[todo["decision"] == "approve", "submission_id"])
    if approvals:
        problem = _send_approvals(client, db, pid, approvals)
        if problem:
            problems.append(problem)
        else:
            sent["approvals"] = len(approvals)
    rejections = todo[todo["decision"] == "reject"]
    for _, row in tqdm(list(rejections.iterrows()), desc="rejections", unit=" sub", file=sys.stderr, disable=None):
        body = {"action": "REJECT", "rejection_category": row["rejection_category"],
                "message": rejection_message(row, review)}
        problem = _send_rejection(client, db, pid, row, body)
        if problem:
            problems.append(problem)
        else:
            sent["rejections"] += 1
    return sent, problems


def cmd_review(args) -> int:
    out = args.out or DEFAULT_OUT / f"prolific_review_{args.prolific_study}.csv"
    with make_client(args) as client, open_db(_existing_db(args.db)) as db:
        got = sync_and_plan(args, client, db)
        plan = got.plan
        write_csv_atomic(spreadsheet_safe(plan), out, index=False)
        print_plan(plan)
        _say(f"plan written to {out}")
        waiting = plan["state"].isin(("new", "intended")) & plan["decision"].isin(("approve", "reject"))
        if not args.apply:
            _say(f"dry run: nothing sent ({int(waiting.sum())} decisions would be); run again with --apply to send them")
            return 0
        sent, problems = apply_plan(client, db, args.prolific_study, plan, got.review)
        # Reconcile after: read Prolific's state back and mark what it now shows.
        after, _ = pull(client, args.prolific_study, demographics=False)
        with db.transaction():
            store_pull(db, args.prolific_study, after, [])
            refresh_actions(db, args.prolific_study, after)
            actions = load_actions(db, args.prolific_study)
            # Our side has not changed since the plan: only Prolific's statuses and our actions have.
            final = review_plan(after, got.people, got.declined, actions, got.review)
            save_sync(db, args.prolific_study, got.study_id, after, reconcile(after, got.people, got.declined), final)
    states = actions["state"].value_counts()
    if sent["approvals"] or sent["rejections"]:
        _say(f"sent now: {sent['approvals']} approvals in one bulk request, {sent['rejections']} rejections")
    else:
        _say("sent now: nothing" + (" new: every decision was already sent" if not waiting.any() else ""))
    _say(f"all decisions so far: {int(states.get('confirmed', 0))} shown by Prolific, "
         f"{int(states.get('sent', 0))} still processing, {int(states.get('intended', 0))} not sent yet, "
         f"{int(states.get('refused', 0))} refused, {int(states.get('superseded', 0))} decided elsewhere")
    for p in problems:
        _say(f"  {p}")
    if states.get("intended", 0) or states.get("refused", 0):
        _say("run the same command again to send what is left (nothing already sent is sent twice)")
        return 1
    return 0


# -- create ------------------------------------------------------------------------------------
def estimated_minutes(study) -> tuple[int, str]:
    """Minutes the longest group takes, from the number of pages (a guess until a pilot)."""
    longest = max(len(items) for items in study.items_by_group.values())
    seconds = SECONDS["start"] + 31 * SECONDS["instrument_item"] + len(study.checks) * SECONDS["check"] \
        + longest * SECONDS["rating"]
    return math.ceil(seconds / 60), (f"estimated from the study's length: 31 questionnaire items, {len(study.checks)} "
                                     f"checks, {longest} ratings; run a pilot and pass --minutes, as Prolific "
                                     "judges pay by the median time")


def study_link(url: str) -> str:
    if not re.match(r"^https?://[^\s]+$", url):
        raise InputError(f"--url: {url!r}: must be the app's public http(s) address")
    if "PROLIFIC_PID" in url:
        raise InputError(f"--url: {url!r}: give the address without parameters; the Prolific ones are added")
    return url + ("&" if "?" in url else "?") + PLACEHOLDERS


def create_body(args, study) -> tuple[dict, list[str]]:
    """The draft study Prolific is asked to create, and notes on where each figure came from."""
    spec, settings = study.spec, study.spec.prolific or ProlificSettings()
    notes = []
    reward = args.reward if args.reward is not None else settings.reward
    if reward is None:
        raise InputError(f"{study.path}: prolific.reward: not set: give --reward (per participant, study currency)")
    if reward <= 0 or reward != reward:
        raise InputError(f"--reward: {reward!r}: must be a positive amount")
    if args.minutes is not None:
        minutes, why = args.minutes, "--minutes"
    elif settings.minutes is not None:
        minutes, why = settings.minutes, "the study file"
    else:
        minutes, why = estimated_minutes(study)
    if minutes < 1:
        raise InputError(f"--minutes: {minutes}: must be at least 1")
    if settings.review.reject_failed_checks < 2 and minutes >= 5:
        raise InputError(f"{study.path}: prolific.review.reject_failed_checks: 1 is allowed only for studies under 5 "
                         f"minutes; this one takes {minutes}")
    target = sum(g.target for g in spec.groups)
    places = args.places or settings.places or target
    if places < 1:
        raise InputError(f"--places: {places}: must be at least 1")
    if places != target:
        notes.append(f"places {places} differ from the groups' targets ({target}): the app stops at the targets")
    hourly = reward / minutes * 60
    if hourly < MIN_HOURLY:
        raise InputError(f"--reward: {reward:.2f} for {minutes} min is {hourly:.2f} an hour, below Prolific's minimum "
                         f"(6.00 GBP / 8.00 USD an hour)")
    if hourly < RECOMMENDED_HOURLY:
        notes.append(f"{hourly:.2f} an hour is below the 9.00 GBP / 12.00 USD Prolific recommends")
    codes = [{"code": spec.completion.code, "code_type": "COMPLETED", "actions": [{"action": "MANUALLY_REVIEW"}]}]
    if spec.completion.failed_checks_code:
        codes.append({"code": spec.completion.failed_checks_code, "code_type": "FAILED_ATTENTION_CHECK",
                      "actions": [{"action": "MANUALLY_REVIEW"}]})
    if spec.completion.partial_code:  # the app's code for a participant whose time ran out part-way
        codes.append({"code": spec.completion.partial_code, "code_type": "OTHER",
                      "actions": [{"action": "MANUALLY_REVIEW"}]})
    if not (spec.completion.url or "").startswith("https://app.prolific.com/submissions/complete"):
        notes.append(f"completion.url is {spec.completion.url!r}: participants will not be sent back to Prolific "
                     "with their code by the app")
    description = settings.description or (
        "A survey about what matters to people. You will answer two short questionnaires about your values and "
        "your personality, then read answers to everyday questions and rate how similar each one is to your own "
        f"thoughts. It takes about {minutes} minutes.")
    body = {
        "name": settings.name or spec.title,
        "internal_name": None,  # set with the marker by `create`
        "description": description,
        "external_study_url": study_link(args.url),
        "prolific_id_option": "url_parameters",
        "completion_codes": codes,
        "total_available_places": int(places),
        "estimated_completion_time": int(minutes),
        "reward": int(round(reward * 100)),  # Prolific counts rewards in cents / pence
        "device_compatibility": list(settings.devices),
    }
    notes.insert(0, f"reward {reward:.2f} per participant for {minutes} min ({why}): {hourly:.2f} an hour; "
                    f"{places} places")
    return body, notes


def _publish(client: ProlificClient, prolific_study_id: str) -> str:
    try:
        answer = client.transition_study(prolific_study_id, "PUBLISH")
    except OutcomeUnknown:
        answer = client.study(prolific_study_id)  # look: did it go through?
    return str(answer.get("status"))


def cmd_create(args) -> int:
    study = load_study(args.study)
    body, notes = create_body(args, study)
    sid = study.study_id
    existing = None
    if args.db.exists():
        with open_db(args.db) as db:
            rows = db.query("SELECT * FROM prolific_studies WHERE study_id = ?", (sid,))
            existing = dict(rows[0]) if rows else None
    for note in notes:
        _say(note)
    if not args.apply:
        if existing and existing["prolific_study_id"]:
            _say(f"study {sid} already has Prolific study {existing['prolific_study_id']} ({existing['status']}): "
                 "nothing would be created" + (" (--publish would publish it)" if args.publish else ""))
        else:
            shown = dict(body, internal_name=f"{sid} (vp ...)")
            _say("dry run: this draft would be created" + (" and published" if args.publish else "") + ":",
                 json.dumps(shown, indent=1, ensure_ascii=False), "run again with --apply to send it")
        return 0
    with make_client(args) as client, open_db(args.db) as db:
        store.sync_study(db, study)  # the definition (and its review thresholds) in the database
        rows = db.query("SELECT * FROM prolific_studies WHERE study_id = ?", (sid,))
        row = dict(rows[0]) if rows else None
        if row is None:
            row = dict(study_id=sid, prolific_study_id=None, internal_name=f"{sid} (vp {secrets.token_hex(4)})",
                       status=None, created_at=now(), updated_at=now())
            row["request_json"] = json.dumps(dict(body, internal_name=row["internal_name"]))
            db.upsert("prolific_studies", [row])  # the intent, before anything is sent
        if row["prolific_study_id"] is None:
            # A create whose answer was lost is found again by its marker, not made twice.
            found = [s for s in client.studies() if s.get("internal_name") == row["internal_name"]]
            if found:
                created = found[0]
            else:  # nothing was made before: send what this run asks for (options may have changed)
                request = dict(body, internal_name=row["internal_name"])
                with db.transaction():
                    db.conn.execute("UPDATE prolific_studies SET request_json = ?, updated_at = ? WHERE study_id = ?",
                                    (json.dumps(request), now(), sid))
                created = client.create_study(request)
            with db.transaction():
                db.conn.execute("UPDATE prolific_studies SET prolific_study_id = ?, status = ?, updated_at = ? "
                                "WHERE study_id = ?", (created["id"], created.get("status"), now(), sid))
            _say(f"{'found the draft made by an earlier run' if found else 'created draft'}: Prolific study "
                 f"{created['id']} ({created.get('status')})")
            row.update(prolific_study_id=created["id"], status=created.get("status"))
        else:
            current = client.study(row["prolific_study_id"])
            row["status"] = current.get("status")
            _say(f"study {sid} already has Prolific study {row['prolific_study_id']} ({row['status']}): not created again")
        if args.publish:
            if row["status"] == "UNPUBLISHED":
                row["status"] = _publish(client, row["prolific_study_id"])
                _say(f"published: status {row['status']}")
            else:
                _say(f"not published again: status {row['status']}")
        with db.transaction():
            db.conn.execute("UPDATE prolific_studies SET status = ?, updated_at = ? WHERE study_id = ?",
                            (row["status"], now(), sid))
    _say(f"Prolific study id {row['prolific_study_id']} stored in {args.db}; "
         f"next: vp prolific sync --db {args.db} --prolific-study {row['prolific_study_id']}")
    return 0


# -- bonus -------------------------------------------------------------------------------------
def read_bonus_csv(path: Path, max_amount: Decimal) -> list[tuple[int, tuple[str, Decimal]]]:
    """``(line, (participant_id, amount))`` for each row, checked; an error names the line, column and value."""
    reader = csv.DictReader(io.StringIO(read_text(path, encoding="utf-8-sig")))  # a spreadsheet's BOM is fine
    missing = {"participant_id", "amount"} - set(reader.fieldnames or ())
    if missing:
        raise InputError(f"{path}: line 1: missing column {', '.join(sorted(missing))} (need participant_id,amount)")
    rows, seen = [], {}
    for line, row in enumerate(reader, start=2):
        pid = (row["participant_id"] or "").strip()
        if not re.fullmatch(r"[0-9a-fA-F]{24}", pid):
            raise InputError(f"{path}: line {line}, column participant_id: {pid!r} is not a Prolific id (24 hex digits)")
        raw = (row["amount"] or "").strip()
        try:
            amount = Decimal(raw)
        except InvalidOperation:
            raise InputError(f"{path}: line {line}, column amount: {raw!r} is not a number") from None
        if not amount.is_finite() or amount <= 0:
            raise InputError(f"{path}: line {line}, column amount: {raw!r} must be above 0")
        if amount != amount.quantize(Decimal("0.01")):
            raise InputError(f"{path}: line {line}, column amount: {raw!r} has more than 2 decimals")
        if amount > max_amount:
            raise InputError(f"{path}: line {line}, column amount: {raw!r} is above --max-amount {max_amount} "
                             "(amounts are in the study currency: 30 pays 30.00)")
        if pid in seen:
            raise InputError(f"{path}: line {line}, column participant_id: {pid} is already on line {seen[pid]}")
        seen[pid] = line
        rows.append((line, (pid, amount.quantize(Decimal("0.01")))))
    if not rows:
        raise InputError(f"{path}: no bonus rows")
    return rows


def cmd_bonus(args) -> int:
    try:
        max_amount = Decimal(str(args.max_amount))
    except InvalidOperation:
        raise InputError(f"--max-amount: {args.max_amount!r} is not a number") from None
    rows_lines = read_bonus_csv(args.csv, max_amount)
    rows = [r for _, r in rows_lines]
    pid = args.prolific_study
    csv_bonuses = "".join(f"{p},{a}\n" for p, a in sorted(rows))
    key = hashlib.sha256(csv_bonuses.encode()).hexdigest()[:16]
    total = sum(a for _, a in rows)
    with make_client(args) as client, open_db(_existing_db(args.db)) as db:
        subs, _ = pull(client, pid, demographics=False)
        statuses = dict(zip(subs["participant_id"], subs["status"]))
        for line, (p, _) in rows_lines:
            if p not in statuses:
                raise InputError(f"{args.csv}: line {line}, column participant_id: {p} has no submission in "
                                 f"Prolific study {pid}")
        with db.transaction():
            store_pull(db, pid, subs, [])
        table = pd.DataFrame([dict(participant_id=p, amount=str(a), status=statuses[p]) for p, a in rows])
        _say(table.to_string(index=False),
             f"{len(rows)} bonuses, {total} in total in the study currency (Prolific adds its fees)")
        odd = table[table["status"] != "APPROVED"]
        if len(odd):
            _warn(f"{len(odd)} of them are for submissions that are not approved")
        batch = db.query("SELECT * FROM prolific_bonus_batches WHERE prolific_study_id = ? AND batch_key = ?", (pid, key))
        batch = dict(batch[0]) if batch else None
        if not args.apply:
            state = f" (this file was seen before: {batch['state']})" if batch else ""
            _say(f"dry run: nothing sent{state}; run again with --apply to set up and pay these bonuses")
            return 0
        if batch and batch["state"] == "paid":
            _say(f"already paid on {batch['updated_at']} (bulk bonus {batch['bulk_id']}): nothing sent")
            return 0
        if batch and batch["state"] == "paying" and not args.retry_unpaid:
            _say(f"the pay request for bulk bonus {batch['bulk_id']} was sent but its answer was lost, and Prolific "
                 "documents that paying twice pays twice. Check the participants' bonuses on Prolific: if they were "
                 "not paid, run again with --retry-unpaid; if they were, nothing more is needed.")
            return 1

        def set_state(state: str, **fields) -> None:
            cols = ", ".join(f"{k} = ?" for k in fields)
            with db.transaction():
                db.conn.execute(f"UPDATE prolific_bonus_batches SET state = ?, updated_at = ?{', ' + cols if cols else ''} "
                                "WHERE prolific_study_id = ? AND batch_key = ?",
                                (state, now(), *fields.values(), pid, key))

        if batch is None:
            db.upsert("prolific_bonus_batches", [dict(prolific_study_id=pid, batch_key=key, csv_bonuses=csv_bonuses,
                                                      total_amount=str(total), bulk_id=None, state="intended",
                                                      detail=None, created_at=now(), updated_at=now())])
            batch = {"bulk_id": None}
        if not batch["bulk_id"]:
            try:
                setup = client.set_up_bonuses(pid, csv_bonuses)
            except AuthError:
                raise
            except ProlificError as exc:
                set_state("refused", detail=str(exc))
                _say(f"Prolific refused the bonuses: {exc}")
                return 1
            set_state("set_up", bulk_id=str(setup["id"]),
                      detail=json.dumps({k: setup.get(k) for k in ("amount", "fees", "vat", "total_amount")}))
            batch["bulk_id"] = str(setup["id"])
            cost = setup.get("total_amount")
            _say(f"set up bulk bonus {setup['id']}" + (f": {cost / 100:.2f} will be taken from the balance, fees "
                                                       f"included" if isinstance(cost, (int, float)) else ""))
        set_state("paying")  # written before the request: a lost answer is never paid again by itself
        try:
            client.pay_bonuses(batch["bulk_id"])
        except OutcomeUnknown as exc:
            _say(f"paying: {exc}. Check the bonuses on Prolific before anything else (see --retry-unpaid)")
            return 1
        except AuthError:
            raise
        except ProlificError as exc:
            set_state("set_up", detail=str(exc))
            _say(f"Prolific refused to pay: {exc}")
            return 1
        set_state("paid")
    _say(f"paid: bulk bonus {batch['bulk_id']} ({len(rows)} participants); Prolific pays it in the next minutes")
    return 0


# -- command line ------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from valueportrait.cli import _HelpFormatter
    sub = parser.add_subparsers(dest="action", required=True, metavar="SUBCOMMAND")

    def common(p, apply: bool = True):
        p.add_argument("--db", type=Path, default=DEFAULT_DB, help="the study database")
        p.add_argument("--base-url", default=DEFAULT_BASE_URL, help="Prolific's API root (staging, a test server)")
        p.add_argument("--timeout", type=opt.seconds(), default=30.0, help="seconds per HTTP call")
        p.add_argument("--max-retries", type=opt.count(0), default=6, help="retries after a 429, a 5xx or a lost connection")
        p.add_argument("--backoff", type=opt.seconds(allow_zero=True), default=1.0, help="seconds before the first retry (doubling)")
        if apply:
            p.add_argument("--apply", action="store_true", help="send it (default: a dry run that sends nothing)")

    kw = dict(formatter_class=_HelpFormatter)
    about = "a draft Prolific study from the study file (--publish publishes it)"
    p = sub.add_parser("create", help=about, description=about, **kw)
    p.add_argument("--study", type=Path, required=True, help="the study file (YAML)")
    p.add_argument("--url", required=True, help="the app's public address, e.g. https://survey.example.org/")
    p.add_argument("--reward", type=opt.NumberType(0, low_open=True), help="per participant, in the study currency (2.5 = 2.50); "
                   "default: prolific.reward in the study file")
    p.add_argument("--minutes", type=opt.count(1), help="estimated completion time; default: the study file, or an "
                   "estimate from the study's length (a pilot's median is better)")
    p.add_argument("--places", type=opt.count(1), help="participants wanted; default: the sum of the groups' targets")
    p.add_argument("--publish", action="store_true", help="publish the draft too")
    common(p)
    for name, help_ in (("sync", "pull every submission and the demographic export; print the reconciliation"),
                        ("review", "approve, reject or leave each submission awaiting review, by the quality rules")):
        p = sub.add_parser(name, help=help_, description=help_, **kw)
        p.add_argument("--prolific-study", required=True, help="the Prolific study id")
        p.add_argument("--study-id", help="our study in the database (default: the one this Prolific study belongs to)")
        p.add_argument("--study", type=Path, help="the study file whose review thresholds to use "
                       "(default: the definition stored in the database)")
        if name == "review":
            p.add_argument("--out", type=Path, help="the plan as CSV (default data/processed/prolific_review_ID.csv)")
            p.add_argument("--no-demographics", action="store_true", help="skip the demographic export")
        common(p, apply=name == "review")
    about = "pay bonuses from a CSV of participant_id,amount (set up, then paid once)"
    p = sub.add_parser("bonus", help=about, description=about, **kw)
    p.add_argument("--prolific-study", required=True, help="the Prolific study id")
    p.add_argument("--csv", type=Path, required=True, help="columns participant_id, amount (study currency)")
    p.add_argument("--max-amount", default="25", help="refuse any single bonus above this")
    p.add_argument("--retry-unpaid", action="store_true", help="pay again a batch whose pay request got no answer, "
                   "after checking on Prolific that it was not paid")
    common(p)


def run(args: argparse.Namespace) -> int:
    if args.max_retries < 0:
        raise InputError(f"--max-retries: {args.max_retries}: must be >= 0")
    if getattr(args, "prolific_study", None) is not None and not re.fullmatch(r"[0-9a-fA-F]{24}", args.prolific_study):
        raise InputError(f"--prolific-study: {args.prolific_study!r}: not a Prolific study id (24 hex digits)")
    command = {"create": cmd_create, "sync": cmd_sync, "review": cmd_review, "bonus": cmd_bonus}[args.action]
    try:
        return command(args)
    except AuthError as exc:
        raise InputError(str(exc)) from None
    except ProlificError as exc:
        print(f"vp prolific {args.action}: {exc}", file=sys.stderr)
        print(f"vp prolific {args.action}: what was sent before this is recorded; run the same command again "
              "to carry on", file=sys.stderr)
        return 1
