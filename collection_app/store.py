"""The app's reads and writes, on top of :mod:`valueportrait.storage` (the only way the app
reaches the database).

Every write is one short ``BEGIN IMMEDIATE`` transaction. Answers are inserted only if that
participant has not answered that question yet (first answer wins): a double click, a stale
second tab or a request replayed after a server restart stores nothing new, and an answer
once acknowledged is never silently changed. Each answer also refreshes the participation's
``last_seen_at``, which is what keeps its place in the group.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from valueportrait.storage import StudyDB, now

from collection_app.study import Study


def sync_study(db: StudyDB, study: Study) -> None:
    """Write the study, its groups and its items into the database (idempotent).

    Groups and items already there keep their keys; targets and texts follow the file, so a
    researcher can raise a target while the study runs.
    """
    with db.transaction():
        db.insert_new("studies", [dict(study_id=study.study_id, title=study.spec.title, source="app",
                                       config_json=None, created_at=now())])
        db.conn.execute("UPDATE studies SET title = ?, config_json = ? WHERE study_id = ?",
                        (study.spec.title, json.dumps({"spec": study.spec.model_dump(mode="json"),
                                                       "fingerprint": study.fingerprint}), study.study_id))
        db.upsert("item_groups", [dict(study_id=study.study_id, group_id=g.id, position=n + 1, target_n=g.target)
                                  for n, g in enumerate(study.spec.groups)])
        db.upsert("items", [dict(study_id=study.study_id, portrait_id=i.portrait_id, option_id=i.option_id,
                                 group_id=i.group_id, source="advice" if i.title else "chat", title=i.title,
                                 query_text=i.query_text, response=i.response,
                                 meta_json=json.dumps({"value": i.value}) if i.value else None)
                            for i in study.items])


def _ago(minutes: float) -> str:
    t = datetime.now(timezone.utc) - timedelta(minutes=minutes)
    return t.isoformat(timespec="milliseconds")


def group_load(db: StudyDB, study: Study) -> list[dict]:
    """Per group: target, completed, active (seen within the time-out) and free places."""
    cutoff = _ago(study.spec.time_limits.active_minutes)
    rows = db.query(
        """SELECT g.group_id, g.position, g.target_n,
                  COALESCE(SUM(p.status = 'completed'), 0) AS completed,
                  COALESCE(SUM(p.status = 'active' AND p.last_seen_at >= :cutoff), 0) AS active
           FROM item_groups g
           LEFT JOIN participations p ON p.study_id = g.study_id AND p.group_id = g.group_id
                                      AND p.test_mode = 0
           WHERE g.study_id = :study
           GROUP BY g.group_id ORDER BY g.position""",
        {"cutoff": cutoff, "study": study.study_id},
    )
    live = {g.id for g in study.spec.groups}
    return [dict(group_id=r["group_id"], target=r["target_n"], completed=r["completed"], active=r["active"],
                 free=r["target_n"] - r["completed"] - r["active"]) for r in rows if r["group_id"] in live]


def is_full(db: StudyDB, study: Study) -> bool:
    return all(g["free"] <= 0 for g in group_load(db, study))


@dataclass
class Assignment:
    group_id: str | None  # None: every group is full
    new: bool


def build_order(study: Study, group_id: str, rng: random.Random) -> list[dict]:
    """A participant's rating sequence: the group's items shuffled, the item checks placed in it.

    A similarity check is shown as the response to a query of the group (drawn at random),
    so it looks like the pages around it.
    """
    items = list(study.items_by_group[group_id])
    rng.shuffle(items)
    order: list[dict] = [{"portrait_id": i.portrait_id, "option_id": i.option_id} for i in items]
    portraits = sorted({i.portrait_id for i in items})
    # Insert from the last placement backwards so earlier `after` counts stay true.
    for after, check_id in sorted(study.checks_in("items"), reverse=True):
        order.insert(after, {"check": check_id, "portrait_id": rng.choice(portraits)})
    return order


def assign_group(db: StudyDB, study: Study, participant_id: str, *, test_mode: bool,
                 platform_study_id: str | None = None, platform_session_id: str | None = None,
                 seed: int | None = None) -> Assignment:
    """Give a participant a group, in one write transaction.

    The group is the open one with the fewest completed-plus-active participants (ties: the
    first in the study), so two arrivals at once cannot both take a last place: the second
    waits for the first's ``BEGIN IMMEDIATE`` and then sees it. A participant who already has
    a group in this study keeps it (one platform id, one group). Test-mode participants are
    not counted against targets and always get a group.
    """
    rng = random.Random(seed)
    with db.transaction():
        existing = db.query("SELECT group_id FROM participations WHERE study_id = ? AND participant_id = ?",
                            (study.study_id, participant_id))
        if existing:
            return Assignment(existing[0]["group_id"], new=False)
        load = group_load(db, study)
        open_groups = [g for g in load if g["free"] > 0]
        if test_mode and not open_groups:
            open_groups = load
        if not open_groups:
            return Assignment(None, new=False)
        group = min(open_groups, key=lambda g: g["completed"] + g["active"])["group_id"]
        stamp = now()
        db.insert_new("participants", [dict(study_id=study.study_id, participant_id=participant_id,
                                            created_at=stamp)])
        db.upsert("participations", [dict(
            study_id=study.study_id, participant_id=participant_id, group_id=group, status="active",
            platform_study_id=platform_study_id, platform_session_id=platform_session_id,
            test_mode=int(test_mode), item_order_json=json.dumps(build_order(study, group, rng)),
            started_at=stamp, last_seen_at=stamp, completed_at=None, completion_code=None)])
        db.conn.execute("INSERT INTO events (study_id, participant_id, kind, detail_json, at) VALUES (?, ?, ?, ?, ?)",
                        (study.study_id, participant_id, "consented", json.dumps({"group_id": group}), stamp))
        return Assignment(group, new=True)


def decline_token(study: Study | str, participant_id: str) -> str:
    """What a decline stores instead of the platform id: a one-way hash, enough to know the
    same link again, not to read who it was. `study` is the study or its id."""
    study_id = study if isinstance(study, str) else study.study_id
    digest = hashlib.sha256(f"{study_id}\0{participant_id}".encode()).hexdigest()
    return f"declined-{digest[:32]}"


def record_decline(db: StudyDB, study: Study, participant_id: str, test_mode: bool) -> None:
    """Declining keeps only this event, under `decline_token`: no participant row, no answers, no id."""
    db.log_event("declined", study.study_id, decline_token(study, participant_id), test_mode=bool(test_mode))


def has_declined(db: StudyDB, study: Study, participant_id: str) -> bool:
    return bool(db.query("SELECT 1 FROM events WHERE study_id = ? AND participant_id = ? AND kind = 'declined' LIMIT 1",
                         (study.study_id, decline_token(study, participant_id))))


@dataclass
class Progress:
    """What the database knows about one participant: enough to find their current page."""

    participant_id: str
    group_id: str | None = None
    status: str | None = None
    test_mode: bool = False
    order: list[dict] = field(default_factory=list)
    started_at: str | None = None
    completion_code: str | None = None
    demographics: bool = False
    pvq: set[int] = field(default_factory=set)
    bfi: set[int] = field(default_factory=set)
    checks: set[str] = field(default_factory=set)
    ratings: set[str] = field(default_factory=set)


def load_progress(db: StudyDB, study: Study, participant_id: str) -> Progress:
    sid = study.study_id
    prog = Progress(participant_id)
    rows = db.query("SELECT * FROM participations WHERE study_id = ? AND participant_id = ?", (sid, participant_id))
    if not rows:
        return prog
    p = rows[0]
    prog.group_id, prog.status, prog.test_mode = p["group_id"], p["status"], bool(p["test_mode"])
    prog.order = json.loads(p["item_order_json"] or "[]")
    prog.started_at, prog.completion_code = p["started_at"], p["completion_code"]
    demo = db.query("SELECT demographics_json FROM participants WHERE study_id = ? AND participant_id = ?",
                    (sid, participant_id))
    prog.demographics = bool(demo and demo[0]["demographics_json"])
    for r in db.query("SELECT instrument, item_id FROM instrument_answers WHERE study_id = ? AND participant_id = ?",
                      (sid, participant_id)):
        (prog.pvq if r["instrument"] == "pvq21" else prog.bfi).add(r["item_id"])
    prog.checks = {r["check_id"] for r in db.query(
        "SELECT check_id FROM attention_checks WHERE study_id = ? AND participant_id = ?", (sid, participant_id))}
    prog.ratings = {f"{r['portrait_id']}-{r['option_id']}" for r in db.query(
        "SELECT portrait_id, option_id FROM ratings WHERE study_id = ? AND participant_id = ?", (sid, participant_id))}
    return prog


def _touch(db: StudyDB, study_id: str, participant_id: str) -> None:
    db.conn.execute("UPDATE participations SET last_seen_at = ? WHERE study_id = ? AND participant_id = ?",
                    (now(), study_id, participant_id))


def _active(db: StudyDB, study_id: str, participant_id: str) -> bool:
    return bool(db.query("SELECT 1 FROM participations WHERE study_id = ? AND participant_id = ? AND status = 'active'",
                         (study_id, participant_id)))


def save_demographics(db: StudyDB, study: Study, participant_id: str, answers: dict, seconds: float | None) -> bool:
    """Store the demographics page; False if the participant is not active (nothing stored)."""
    with db.transaction():
        if not _active(db, study.study_id, participant_id):
            return False
        db.conn.execute(
            """UPDATE participants SET age = ?, gender = ?, education = ?, politics = ?, country = ?,
                      demographics_json = ? WHERE study_id = ? AND participant_id = ? AND demographics_json IS NULL""",
            (answers["age"], answers["gender"], answers["education"], answers["politics"], answers["country"],
             json.dumps({"seconds": seconds, "answered_at": now()}), study.study_id, participant_id))
        _touch(db, study.study_id, participant_id)
    return True


def save_answer(db: StudyDB, study: Study, participant_id: str, step: dict, answer: int, seconds: float | None) -> bool:
    """Store one answer to a question step (``kind`` pvq21/bfi10/check/rating); first answer wins.

    Returns False (and stores nothing) if the participant is not active any more.
    """
    sid, stamp = study.study_id, now()
    with db.transaction():
        if not _active(db, sid, participant_id):
            return False
        kind = step["kind"]
        if kind in ("pvq21", "bfi10"):
            db.insert_new("instrument_answers", [dict(study_id=sid, participant_id=participant_id, instrument=kind,
                                                      item_id=step["item_id"], answer=int(answer), seconds=seconds,
                                                      answered_at=stamp)])
        elif kind == "check":
            expected = study.checks[step["check"]].expected
            db.insert_new("attention_checks", [dict(study_id=sid, participant_id=participant_id, check_id=step["check"],
                                                    expected=expected, answer=int(answer),
                                                    passed=int(int(answer) == expected), seconds=seconds,
                                                    answered_at=stamp)])
        elif kind == "rating":
            item = study.item_by_key[step["key"]]
            db.insert_new("ratings", [dict(study_id=sid, participant_id=participant_id, portrait_id=item.portrait_id,
                                           option_id=item.option_id, group_id=item.group_id, rating=int(answer),
                                           position=step["position"], seconds=seconds, answered_at=stamp)])
        else:  # pragma: no cover - the page list only makes the kinds above
            raise ValueError(f"not a question step: {kind}")
        _touch(db, sid, participant_id)
    return True


def complete(db: StudyDB, study: Study, participant_id: str, expected_counts: dict[str, int]) -> str | None:
    """Mark a participation completed and return its code, only if every answer is stored.

    The check and the status change are one transaction, so the code is never handed out
    for a participation whose answers are not all in the database.
    """
    sid = study.study_id
    with db.transaction():
        rows = db.query("SELECT status, completion_code, group_id FROM participations WHERE study_id = ? AND participant_id = ?",
                        (sid, participant_id))
        if not rows:
            return None
        if rows[0]["status"] == "completed":
            return rows[0]["completion_code"]
        if rows[0]["status"] != "active":
            return None
        have = {
            "pvq21": db.query("SELECT COUNT(*) FROM instrument_answers WHERE study_id=? AND participant_id=? AND instrument='pvq21'", (sid, participant_id))[0][0],
            "bfi10": db.query("SELECT COUNT(*) FROM instrument_answers WHERE study_id=? AND participant_id=? AND instrument='bfi10'", (sid, participant_id))[0][0],
            "check": db.query("SELECT COUNT(*) FROM attention_checks WHERE study_id=? AND participant_id=?", (sid, participant_id))[0][0],
            "rating": db.query("SELECT COUNT(*) FROM ratings WHERE study_id=? AND participant_id=?", (sid, participant_id))[0][0],
            "demographics": db.query("SELECT COUNT(*) FROM participants WHERE study_id=? AND participant_id=? AND demographics_json IS NOT NULL", (sid, participant_id))[0][0],
        }
        if any(have[k] < n for k, n in expected_counts.items()):
            return None
        code = completion_code(db, study, participant_id)
        stamp = now()
        db.conn.execute("UPDATE participations SET status='completed', completed_at=?, last_seen_at=?, completion_code=? "
                        "WHERE study_id=? AND participant_id=? AND status='active'", (stamp, stamp, code, sid, participant_id))
        return code


def completion_code(db: StudyDB, study: Study, participant_id: str) -> str:
    """The study's code, or its failed-checks code for someone who failed enough attention checks."""
    done = study.spec.completion
    if done.failed_checks_code is None:
        return done.code
    failed = db.query("SELECT COUNT(*) FROM attention_checks WHERE study_id=? AND participant_id=? AND passed=0",
                      (study.study_id, participant_id))[0][0]
    return done.failed_checks_code if failed >= done.failed_checks_min else done.code


def time_out(db: StudyDB, study: Study, participant_id: str) -> None:
    with db.transaction():
        db.conn.execute("UPDATE participations SET status='timed_out' WHERE study_id=? AND participant_id=? AND status='active'",
                        (study.study_id, participant_id))
