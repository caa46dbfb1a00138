"""The app's reads and writes, on top of :mod:`valueportrait.storage` (the only way the app
reaches the database).

Every write is one short ``BEGIN IMMEDIATE`` transaction. Answers are inserted only if that
participant has not answered that question yet (first answer wins): a double click, a stale
second tab or a request replayed after a server restart stores nothing new, and an answer
once acknowledged is never silently changed. The one way to change an answer is the Back
button (:func:`revise_answer`): the earlier answer is kept in ``answer_revisions`` with its
time, and the answer row counts its revisions. Each answer also refreshes the
participation's ``last_seen_at``, which is what keeps its place in the group, and links the
participation to the version of the study it was shown (``participation_versions``).
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
    researcher can raise a target while the study runs. The whole definition is also kept
    under its hash in ``study_versions`` (a version once stored is never changed), so what
    each participant was shown can be read back after any later edit.
    """
    with db.transaction():
        db.insert_new("studies", [dict(study_id=study.study_id, title=study.spec.title, source="app",
                                       config_json=None, created_at=now(), project=study.project)])
        db.conn.execute("UPDATE studies SET title = ?, config_json = ?, project = ? WHERE study_id = ?",
                        (study.spec.title, json.dumps({"spec": study.spec.model_dump(mode="json"),
                                                       "fingerprint": study.fingerprint,
                                                       "version": study.version}), study.project, study.study_id))
        db.insert_new("study_versions", [dict(study_id=study.study_id, version=study.version,
                                              definition_json=study.definition_json, created_at=now())])
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
    """Per group: target, completed, active (seen within the time-out), free places and overfill."""
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
    # `overfill`: completed beyond the target (someone whose place lapsed came back and
    # finished after a newcomer took the place; see TimeLimits.active_minutes).
    return [dict(group_id=r["group_id"], target=r["target_n"], completed=r["completed"], active=r["active"],
                 free=r["target_n"] - r["completed"] - r["active"],
                 overfill=max(0, r["completed"] - r["target_n"])) for r in rows if r["group_id"] in live]


def is_full(db: StudyDB, study: Study) -> bool:
    return all(g["free"] <= 0 for g in group_load(db, study))


@dataclass
class Assignment:
    group_id: str | None  # None: every group is full, or (earlier_wave) this person took part before
    new: bool
    earlier_wave: str | None = None  # the study id of an earlier wave of the project they took part in


def earlier_wave(db: StudyDB, study: Study, participant_id: str) -> str | None:
    """The study id of another wave of the same project that this participant took part in
    (any participation there, whatever its status), or None. Test ids are never shared."""
    rows = db.query(
        """SELECT p.study_id FROM participations p JOIN studies s ON s.study_id = p.study_id
           WHERE p.participant_id = ? AND p.study_id != ? AND p.test_mode = 0
             AND COALESCE(s.project, s.study_id) = ? LIMIT 1""",
        (participant_id, study.study_id, study.project))
    return rows[0][0] if rows else None


def _link_version(db: StudyDB, study: Study, participant_id: str, stamp: str) -> None:
    db.conn.execute("INSERT OR IGNORE INTO participation_versions (study_id, participant_id, version, first_seen_at) "
                    "VALUES (?, ?, ?, ?)", (study.study_id, participant_id, study.version, stamp))


def build_order(study: Study, group_id: str, rng: random.Random) -> list[dict]:
    """A participant's rating sequence: the group's items in a random order, the item checks
    placed in it (``after`` ratings come before each).

    With ``ratings.by_query`` (the default) the queries come in a random order and each
    query's responses together, shuffled among themselves; a check is shown as one more
    response to the query around it. Otherwise every item is shuffled on its own and a check
    is shown as a response to a query of the group drawn at random, so it looks like the pages
    around it.
    """
    items = list(study.items_by_group[group_id])
    if study.spec.ratings.by_query:
        by_query: dict[str, list] = {}
        for i in items:
            by_query.setdefault(i.portrait_id, []).append(i)
        queries = sorted(by_query)
        rng.shuffle(queries)
        items = []
        for q in queries:
            responses = by_query[q]
            rng.shuffle(responses)
            items += responses
    else:
        rng.shuffle(items)
    order: list[dict] = [{"portrait_id": i.portrait_id, "option_id": i.option_id} for i in items]
    portraits = sorted({i.portrait_id for i in items})
    # Insert from the last placement backwards so earlier `after` counts stay true.
    for after, check_id in sorted(study.checks_in("items"), reverse=True):
        if study.spec.ratings.by_query:
            # Into the query being rated at that point (the one before it; at the very start, the first).
            portrait = order[after - 1]["portrait_id"] if after > 0 else order[0]["portrait_id"]
        else:
            portrait = rng.choice(portraits)
        order.insert(after, {"check": check_id, "portrait_id": portrait})
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
        if not test_mode:
            other = earlier_wave(db, study, participant_id)
            if other is not None:
                return Assignment(None, new=False, earlier_wave=other)
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
            started_at=stamp, last_seen_at=stamp, completed_at=None, completion_code=None,
            study_version=study.version)])
        _link_version(db, study, participant_id, stamp)
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
    pages: set[str] = field(default_factory=set)  # pages without a question that were read
    last_seen_at: str | None = None


def load_progress(db: StudyDB, study: Study, participant_id: str) -> Progress:
    sid = study.study_id
    prog = Progress(participant_id)
    rows = db.query("SELECT * FROM participations WHERE study_id = ? AND participant_id = ?", (sid, participant_id))
    if not rows:
        return prog
    p = rows[0]
    prog.group_id, prog.status, prog.test_mode = p["group_id"], p["status"], bool(p["test_mode"])
    prog.order = json.loads(p["item_order_json"] or "[]")
    prog.started_at, prog.completion_code, prog.last_seen_at = p["started_at"], p["completion_code"], p["last_seen_at"]
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
    prog.pages = {r[0] for r in db.query("SELECT page FROM page_views WHERE study_id = ? AND participant_id = ?",
                                         (sid, participant_id))}
    return prog


def _touch(db: StudyDB, study_id: str, participant_id: str) -> None:
    db.conn.execute("UPDATE participations SET last_seen_at = ? WHERE study_id = ? AND participant_id = ?",
                    (now(), study_id, participant_id))


def _active(db: StudyDB, study_id: str, participant_id: str) -> bool:
    return bool(db.query("SELECT 1 FROM participations WHERE study_id = ? AND participant_id = ? AND status = 'active'",
                         (study_id, participant_id)))


def save_page_view(db: StudyDB, study: Study, participant_id: str, page: str, seconds: float | None) -> bool:
    """Record that a page without a question (an introduction, a query) was read; first view wins."""
    stamp = now()
    with db.transaction():
        if not _active(db, study.study_id, participant_id):
            return False
        db.insert_new("page_views", [dict(study_id=study.study_id, participant_id=participant_id, page=page,
                                          seconds=seconds, seen_at=stamp)])
        _touch(db, study.study_id, participant_id)
        _link_version(db, study, participant_id, stamp)
    return True


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
        _link_version(db, study, participant_id, now())
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
        _link_version(db, study, participant_id, stamp)
    return True


def _answer_row(step: dict) -> tuple[str, str, tuple]:
    """(table, answer column, key columns and values as a WHERE clause's parameters) of a question step."""
    kind = step["kind"]
    if kind in ("pvq21", "bfi10"):
        return "instrument_answers", "answer", (("instrument", kind), ("item_id", int(step["item_id"])))
    if kind == "check":
        return "attention_checks", "answer", (("check_id", step["check"]),)
    portrait, option = step["key"].rsplit("-", 1)
    return "ratings", "rating", (("portrait_id", portrait), ("option_id", int(option)))


def item_label(step: dict) -> str:
    """How ``answer_revisions.item`` names a question step: item id, check id or 'portrait-option'."""
    return str(step["item_id"]) if step["kind"] in ("pvq21", "bfi10") else step["check"] if step["kind"] == "check" else step["key"]


def stored_answer(db: StudyDB, study: Study, participant_id: str, step: dict) -> int | None:
    table, column, key = _answer_row(step)
    where = " AND ".join(f"{k} = ?" for k, _ in key)
    rows = db.query(f"SELECT {column} FROM {table} WHERE study_id = ? AND participant_id = ? AND {where}",
                    (study.study_id, participant_id, *(v for _, v in key)))
    return rows[0][0] if rows else None


def revise_answer(db: StudyDB, study: Study, participant_id: str, step: dict, answer: int, seconds: float | None) -> bool:
    """Change an answer the participant gave (the Back button): the earlier answer goes to
    ``answer_revisions`` with its time, the answer row takes the new one and counts up its
    ``revision``. The same answer again changes nothing. An answer not stored yet is saved
    as a first answer. False (nothing stored) if the participant is not active any more."""
    sid, stamp = study.study_id, now()
    table, column, key = _answer_row(step)
    where = " AND ".join(f"{k} = ?" for k, _ in key)
    params = (sid, participant_id, *(v for _, v in key))
    with db.transaction():
        if not _active(db, sid, participant_id):
            return False
        rows = db.query(f"SELECT {column} AS answer, seconds, answered_at, revision FROM {table} "
                        f"WHERE study_id = ? AND participant_id = ? AND {where}", params)
        if not rows:
            return save_answer(db, study, participant_id, step, answer, seconds)
        old = rows[0]
        if int(old["answer"]) == int(answer):
            return True
        db.conn.execute(
            "INSERT INTO answer_revisions (study_id, participant_id, kind, item, revision, answer, seconds, answered_at, "
            "replaced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (sid, participant_id, step["kind"], item_label(step), old["revision"], old["answer"], old["seconds"],
             old["answered_at"], stamp))
        extra = ", passed = ?" if table == "attention_checks" else ""
        values = (int(answer), seconds, stamp) + ((int(int(answer) == study.checks[step["check"]].expected),)
                                                  if table == "attention_checks" else ())
        db.conn.execute(f"UPDATE {table} SET {column} = ?, seconds = ?, answered_at = ?, revision = revision + 1{extra} "
                        f"WHERE study_id = ? AND participant_id = ? AND {where}", values + params)
        _touch(db, sid, participant_id)
        _link_version(db, study, participant_id, stamp)
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


def time_out(db: StudyDB, study: Study, participant_id: str, answered_share: float) -> str | None:
    """End an active participation whose time ran out; returns the code it was given.

    With ``completion.partial_code``, someone who had answered at least
    ``partial_min_share`` of the study's questions gets it (stored as the participation's
    completion code, decided once, in the same transaction); anyone else gets None.
    """
    done = study.spec.completion
    code = done.partial_code if done.partial_code and answered_share >= done.partial_min_share else None
    with db.transaction():
        db.conn.execute("UPDATE participations SET status='timed_out', completion_code=? "
                        "WHERE study_id=? AND participant_id=? AND status='active'",
                        (code, study.study_id, participant_id))
        rows = db.query("SELECT completion_code FROM participations WHERE study_id=? AND participant_id=?",
                        (study.study_id, participant_id))
    return rows[0][0] if rows else None
