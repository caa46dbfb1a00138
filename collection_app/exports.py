"""The study's data for review on Prolific and for the record: tidy tables, one per question.

* :func:`participations`: one row per participation, ready for review: group, status, test
  mode, the completion code shown, times, speed (median seconds per answer), the quality
  verdict and its reasons (the rules of :mod:`analysis.quality`, the same ones ``vp analyze``
  applies, plus ``fast_answers``), and what to do on Prolific (``review``: approve / review).
* :func:`answers`: every answer in long format (participant, block, item, answer, time,
  revision), earlier answers changed with Back included as their own rows.
* :func:`events`: the audit trail (consents, declines, admin log-ins).

Test-mode runs are left out unless asked for. Every table leaves the app through
:func:`valueportrait.spreadsheet.csv_bytes`, so no cell opens as a formula in a spreadsheet.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd

from valueportrait.spreadsheet import csv_bytes
from valueportrait.storage import StudyDB

from collection_app.study import BLOCK_OF_SCALE, Study

#: A participation answers "fast" when its median seconds per answer is below this share of
#: the median over its group's completed participations (the fraction `vp analyze`'s speeder
#: rule uses for whole-study times).
FAST_FRACTION = 0.3

PARTICIPATION_COLUMNS = [
    "participant_id", "group_id", "status", "test_mode", "completion_code", "started_at", "completed_at",
    "last_seen_at", "minutes", "answers", "median_seconds_per_answer", "checks_failed", "qc_included", "qc_reasons",
    "review", "over_target", "study_version", "versions_seen", "revisions", "platform_study_id",
    "platform_session_id", "age", "gender", "education", "politics", "country", "project",
]
ANSWER_COLUMNS = ["participant_id", "group_id", "test_mode", "block", "kind", "item", "portrait_id", "option_id",
                  "answer", "passed", "position", "seconds", "answered_at", "revision", "current"]


def _answer_seconds(db: StudyDB, study_id: str) -> pd.DataFrame:
    return db.frame(
        """SELECT participant_id, seconds FROM instrument_answers WHERE study_id = :s
           UNION ALL SELECT participant_id, seconds FROM ratings WHERE study_id = :s
           UNION ALL SELECT participant_id, seconds FROM attention_checks WHERE study_id = :s""", {"s": study_id})


def participations(db: StudyDB, study: Study, include_tests: bool = False) -> pd.DataFrame:
    """One row per participation (columns :data:`PARTICIPATION_COLUMNS`), in start order.

    ``qc_included``/``qc_reasons`` come from :func:`analysis.quality.quality_control` with its
    default rules, run over the rows of this table (so test runs never move the thresholds of
    real participants); ``fast_answers`` is added when the median seconds per answer is below
    :data:`FAST_FRACTION` of the group's median (over completed participations). ``review``
    is ``approve`` for a completed participation with no reason, ``review`` for a completed
    one with a reason or a timed-out one that was given the partial code, empty otherwise.
    ``over_target``: completed after the group already had its target of completions.
    """
    from analysis.dataset import load_study
    from analysis.quality import quality_control

    sid = study.study_id
    df = db.frame(
        """SELECT p.participant_id, p.group_id, p.status, p.test_mode, p.completion_code, p.started_at, p.completed_at,
                  p.last_seen_at, p.study_version, p.platform_study_id, p.platform_session_id,
                  q.age, q.gender, q.education, q.politics, q.country, COALESCE(s.project, s.study_id) AS project,
                  (SELECT COUNT(*) FROM attention_checks a WHERE a.study_id = p.study_id
                       AND a.participant_id = p.participant_id AND a.passed = 0) AS checks_failed,
                  (SELECT COUNT(*) FROM participation_versions v WHERE v.study_id = p.study_id
                       AND v.participant_id = p.participant_id) AS versions_seen,
                  (SELECT COUNT(*) FROM answer_revisions r WHERE r.study_id = p.study_id
                       AND r.participant_id = p.participant_id) AS revisions
           FROM participations p
           LEFT JOIN participants q ON q.study_id = p.study_id AND q.participant_id = p.participant_id
           JOIN studies s ON s.study_id = p.study_id
           WHERE p.study_id = ? ORDER BY p.started_at, p.participant_id""", (sid,))
    if not include_tests:
        df = df[df["test_mode"] == 0].reset_index(drop=True)
    df["test_mode"] = df["test_mode"].astype(bool)
    start = pd.to_datetime(df["started_at"], utc=True, format="ISO8601")
    end = pd.to_datetime(df["completed_at"], utc=True, format="ISO8601")
    df["minutes"] = ((end - start).dt.total_seconds() / 60).round(2)

    secs = _answer_seconds(db, sid)
    per = secs.groupby("participant_id")["seconds"].agg(answers="size", median_seconds_per_answer="median")
    df = df.join(per, on="participant_id")
    df["answers"] = df["answers"].fillna(0).astype(int)

    # The quality verdict: the analysis's own rules, over exactly these participations.
    analysed = load_study(db, sid, include_tests=True)
    keep = analysed.participations["participant_id"].isin(df["participant_id"])
    analysed = dataclasses.replace(analysed, participations=analysed.participations[keep].reset_index(drop=True))
    verdict = quality_control(analysed).table.set_index(["participant_id", "group_id"])
    key = pd.MultiIndex.from_frame(df[["participant_id", "group_id"]])
    reasons = verdict["reasons"].reindex(key).fillna("").to_numpy().astype(object)

    done = df["status"] == "completed"
    group_median = df["median_seconds_per_answer"].where(done).groupby(df["group_id"]).transform("median")
    fast = (df["median_seconds_per_answer"] < FAST_FRACTION * group_median).fillna(False).to_numpy()
    reasons = np.where(fast, np.where(reasons == "", "fast_answers", reasons + ";fast_answers"), reasons)
    df["qc_reasons"] = reasons
    df["qc_included"] = df["qc_reasons"] == ""
    partial = (df["status"] == "timed_out") & df["completion_code"].notna()
    df["review"] = np.where(done & df["qc_included"], "approve", np.where(done | partial, "review", ""))

    # Completed beyond the group's target, in order of completion (test runs never count).
    targets = dict(db.query("SELECT group_id, target_n FROM item_groups WHERE study_id = ?", (sid,)))
    counted = db.frame("SELECT participant_id, group_id, completed_at FROM participations WHERE study_id = ? AND "
                       "status = 'completed' AND test_mode = 0 ORDER BY completed_at", (sid,))
    counted["n"] = counted.groupby("group_id").cumcount() + 1
    over = {r.participant_id for r in counted.itertuples() if r.n > targets.get(r.group_id, np.inf)}
    df["over_target"] = df["participant_id"].isin(over)
    return df[PARTICIPATION_COLUMNS]


def answers(db: StudyDB, study: Study, include_tests: bool = False) -> pd.DataFrame:
    """Every answer, one row each (columns :data:`ANSWER_COLUMNS`): the answer as it stands
    (``current`` true, ``revision`` = how often it was changed) and each earlier answer the
    participant replaced with Back (``current`` false, with its own time)."""
    sid = study.study_id
    parts = db.frame("SELECT participant_id, group_id, test_mode FROM participations WHERE study_id = ?", (sid,))
    instrument = db.frame("SELECT participant_id, instrument AS kind, CAST(item_id AS TEXT) AS item, answer, seconds, "
                          "answered_at, revision FROM instrument_answers WHERE study_id = ?", (sid,))
    instrument["block"] = instrument["kind"]
    checks = db.frame("SELECT participant_id, 'check' AS kind, check_id AS item, answer, passed, seconds, answered_at, "
                      "revision FROM attention_checks WHERE study_id = ?", (sid,))
    block_of = {cid: BLOCK_OF_SCALE[c.scale] for cid, c in study.checks.items()}
    checks["block"] = checks["item"].map(block_of).fillna("")
    ratings = db.frame("SELECT participant_id, 'rating' AS kind, portrait_id || '-' || option_id AS item, portrait_id, "
                       "option_id, rating AS answer, position, seconds, answered_at, revision FROM ratings "
                       "WHERE study_id = ?", (sid,))
    ratings["block"] = "items"
    current = pd.concat([instrument, checks, ratings], ignore_index=True).assign(current=True)
    earlier = db.frame("SELECT participant_id, kind, item, revision, answer, seconds, answered_at FROM answer_revisions "
                       "WHERE study_id = ?", (sid,)).assign(current=False)
    if len(earlier):
        earlier["block"] = np.where(earlier["kind"] == "rating", "items",
                                    np.where(earlier["kind"] == "check", earlier["item"].map(block_of).fillna(""),
                                             earlier["kind"]))
        split = earlier["item"].str.rsplit("-", n=1, expand=True) if (earlier["kind"] == "rating").any() else None
        if split is not None and split.shape[1] == 2:
            is_rating = earlier["kind"] == "rating"
            earlier.loc[is_rating, "portrait_id"] = split.loc[is_rating, 0]
            earlier.loc[is_rating, "option_id"] = pd.to_numeric(split.loc[is_rating, 1])
    df = pd.concat([current, earlier], ignore_index=True).merge(parts, on="participant_id", how="inner")
    if not include_tests:
        df = df[df["test_mode"] == 0]
    df["test_mode"] = df["test_mode"].astype(bool)
    df = df.reindex(columns=ANSWER_COLUMNS)
    df["option_id"] = df["option_id"].astype("Int64")
    df["passed"] = df["passed"].astype("boolean")
    df["position"] = df["position"].astype("Int64")
    return df.sort_values(["participant_id", "answered_at", "revision"], kind="stable").reset_index(drop=True)


def events(db: StudyDB, study: Study, include_tests: bool = False) -> pd.DataFrame:
    """The study's events (consents, declines, admin log-ins), oldest first."""
    df = db.frame("SELECT * FROM events WHERE study_id = ? ORDER BY event_id", (study.study_id,))
    if include_tests or df.empty:
        return df
    tests = {r[0] for r in db.query("SELECT participant_id FROM participations WHERE study_id = ? AND test_mode = 1",
                                    (study.study_id,))}
    declined_test = df["detail_json"].map(lambda d: isinstance(d, str) and json.loads(d).get("test_mode") is True)
    return df[~df["participant_id"].isin(tests) & ~declined_test].reset_index(drop=True)


def review_lists(table: pd.DataFrame) -> dict[str, list[str]]:
    """The participant ids to approve on Prolific, and those to look at first (from :func:`participations`)."""
    return {kind: table.loc[table["review"] == kind, "participant_id"].tolist() for kind in ("approve", "review")}


#: name -> (what it holds, the function that makes it). Each becomes `<study>_<name>.csv`.
EXPORTS = {
    "participations": ("one row per participation, for review", participations),
    "answers": ("every answer in long format, with revisions", answers),
    "events": ("the audit trail", events),
}


def export_csv(db: StudyDB, study: Study, name: str, include_tests: bool = False) -> bytes:
    """One export as CSV bytes, formula cells neutralised."""
    return csv_bytes(EXPORTS[name][1](db, study, include_tests))
