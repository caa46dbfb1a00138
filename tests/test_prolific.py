"""`vp prolific` against a fake Prolific server on loopback (tests/prolific_server.py), written from
Prolific's public documentation: pagination, error bodies, rate limits, transitions, bulk
approval, bonuses. The expected decisions come from the scenarios as written here (who failed
how many checks, who has no data), never from the code under test."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from valueportrait.cli import main
from valueportrait.storage import now, open_db

from collection_app import prolific, store
from collection_app.prolific_client import OutcomeUnknown, ProlificClient, ProlificError
from collection_app.study import load_study
from collection_app.testing import write_small_study

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prolific_server import AWAITING, Fault, ProlificServer  # noqa: E402

TOKEN = "pt-7Hq2-unique-token-do-not-print-91x"
PSTUDY = "60aa11bb22cc33dd44ee55ff"
ROOT = Path(__file__).resolve().parents[1]


# -- a study and a database written by hand ---------------------------------------------------
def _items(n=4):
    return [{"portrait_id": 1001 + i, "content": {"title": None, "text": f"Question {i}?"},
             "outputs": [{"id": 1, "content": f"Answer A{i}."}, {"id": 2, "content": f"Answer B{i}."}]} for i in range(n)]


def small_study(folder: Path, groups: int = 1, prolific_section: dict | None = None) -> Path:
    path = write_small_study(folder, items=_items(4 * groups), groups=groups, target=20,
                             checks=[{"id": "ac_pvq", "after": 5}, {"id": "ac_item_1", "after": 2},
                                     {"id": "ac_item_2", "after": 6}],
                             completion={"code": "GOODCODE1", "failed_checks_code": "FAILCODE1", "failed_checks_min": 2})
    if prolific_section is not None:
        spec = json.loads(path.read_text())
        spec["prolific"] = prolific_section
        path.write_text(json.dumps(spec))
    return path


def pid(tag: str) -> str:
    """A Prolific-shaped id (24 hex digits) that reads as its tag in test output."""
    return tag.encode().hex().ljust(24, "0")[:24]


def add_person(db, study, participant_id, *, session=None, answers="all", failed=0, straight=False, minutes=10.0,
               status="completed", code=None, group=None):
    """A participant as the app would have stored them: all answers, some, or none."""
    sid, group = study.study_id, group or study.spec.groups[0].id
    start = pd.Timestamp("2026-11-20T09:00:00Z") + pd.Timedelta(minutes=len(participant_id) % 7)
    stamp = start.isoformat()
    db.upsert("participants", [dict(study_id=sid, participant_id=participant_id, age=30, gender="Woman",
                                    education="Doctorate", politics="Moderate", country="UK",
                                    demographics_json=json.dumps({"seconds": 5}), created_at=stamp)])
    done = status == "completed"
    if done and code is None:
        code = "FAILCODE1" if failed >= 2 else "GOODCODE1"
    db.upsert("participations", [dict(study_id=sid, participant_id=participant_id, group_id=group, status=status,
                                      platform_study_id=PSTUDY, platform_session_id=session, test_mode=0,
                                      item_order_json="[]", started_at=stamp, last_seen_at=stamp,
                                      completed_at=(start + pd.Timedelta(minutes=minutes)).isoformat() if done else None,
                                      completion_code=code if done else None)])
    if answers == "none":
        return
    k = sum(map(ord, participant_id))
    value = (lambda i, hi: 3) if straight else (lambda i, hi: 1 + (i * 7 + k) % hi)
    pvq = range(1, 22) if answers == "all" else range(1, 6)
    rows = [dict(study_id=sid, participant_id=participant_id, instrument="pvq21", item_id=i, answer=value(i, 6),
                 seconds=3.0, answered_at=stamp) for i in pvq]
    if answers == "all":
        rows += [dict(study_id=sid, participant_id=participant_id, instrument="bfi10", item_id=i, answer=value(i, 5),
                      seconds=3.0, answered_at=stamp) for i in range(1, 11)]
    db.upsert("instrument_answers", rows)
    if answers != "all":
        return
    items = study.items_by_group[group]
    db.upsert("ratings", [dict(study_id=sid, participant_id=participant_id, portrait_id=it.portrait_id,
                               option_id=it.option_id, group_id=group, rating=value(n, 6), position=n, seconds=5.0,
                               answered_at=stamp) for n, it in enumerate(items)])
    checks = list(study.checks.values())
    db.upsert("attention_checks", [dict(study_id=sid, participant_id=participant_id, check_id=c.id, expected=c.expected,
                                        answer=c.expected if n >= failed else (c.expected % 5) + 1,
                                        passed=int(n >= failed), seconds=4.0, answered_at=stamp)
                                   for n, c in enumerate(checks)])


# Who is who in the hand-written scenario, and what Prolific's policy allows for each.
APPROVE = ["A1", "A2", "A3", "B1-one-fail", "D1-straight"]
REJECT = {"C1-two-fails": "FAILED_CHECK", "C2-two-fails": "FAILED_CHECK", "C3-three": "FAILED_CHECK",
          "E1-nodata": "NO_DATA"}
MANUAL = ["F1-declined", "G1-partial", "H1-wrongcode", "K1-twice", "M1-session"]
NONE = ["I1-returned", "L1-timedout"]


@pytest.fixture
def scenario(tmp_path):
    """A database with every case of the review policy, and the matching fake Prolific server."""
    study_file = small_study(tmp_path / "study")
    study = load_study(study_file)
    db_path = tmp_path / "study.db"
    server = ProlificServer(token=TOKEN, max_page_size=4)
    fake = server.fake
    fake.add_study(PSTUDY)
    with open_db(db_path) as db:
        store.sync_study(db, study)
        for tag in ("A1", "A2", "A3"):
            add_person(db, study, pid(tag), session=fake.add_submission(PSTUDY, pid(tag), study_code="GOODCODE1"))
        add_person(db, study, pid("B1-one-fail"), failed=1,
                   session=fake.add_submission(PSTUDY, pid("B1-one-fail"), study_code="GOODCODE1"))
        for tag, failed in (("C1-two-fails", 2), ("C2-two-fails", 2), ("C3-three", 3)):
            add_person(db, study, pid(tag), failed=failed,
                       session=fake.add_submission(PSTUDY, pid(tag), study_code="FAILCODE1"))
        add_person(db, study, pid("D1-straight"), straight=True,
                   session=fake.add_submission(PSTUDY, pid("D1-straight"), study_code="GOODCODE1"))
        fake.add_submission(PSTUDY, pid("E1-nodata"), study_code=None)
        store.record_decline(db, study, pid("F1-declined"), test_mode=False)
        fake.add_submission(PSTUDY, pid("F1-declined"))
        add_person(db, study, pid("G1-partial"), answers="some", status="active",
                   session=fake.add_submission(PSTUDY, pid("G1-partial")))
        add_person(db, study, pid("H1-wrongcode"), session=fake.add_submission(PSTUDY, pid("H1-wrongcode"), study_code="=1+1"))
        add_person(db, study, pid("I1-returned"), answers="some", status="active",
                   session=fake.add_submission(PSTUDY, pid("I1-returned"), status="RETURNED"))
        add_person(db, study, pid("J1-nosub"), session="0" * 24)
        k1 = fake.add_submission(PSTUDY, pid("K1-twice"), study_code="GOODCODE1")
        fake.add_submission(PSTUDY, pid("K1-twice"), study_code="GOODCODE1")
        add_person(db, study, pid("K1-twice"), session=k1)
        fake.add_submission(PSTUDY, pid("L1-timedout"), status="TIMED-OUT")
        fake.add_submission(PSTUDY, pid("M1-session"), study_code="GOODCODE1")
        add_person(db, study, pid("M1-session"), session="1" * 24)
    with server:
        yield dict(server=server, fake=fake, db=db_path, study=study, study_file=study_file, tmp=tmp_path)


def vp(*args, base_url, env_token=TOKEN, monkeypatch=None):
    """Run `vp prolific ...` in this process; returns the exit status."""
    if env_token is None:
        os.environ.pop("PROLIFIC_TOKEN", None)
    else:
        os.environ["PROLIFIC_TOKEN"] = env_token
    try:
        return main(["prolific", *args, "--base-url", base_url, "--backoff", "0.01"])
    finally:
        os.environ.pop("PROLIFIC_TOKEN", None)


def sub_of(fake, tag):
    return [s["id"] for s in fake.submissions.values() if s["participant_id"] == pid(tag)]


# -- the client and the fake server: documented HTTP behaviour --------------------------------
def test_client_reads_every_page_by_next_links(scenario):
    fake, server = scenario["fake"], scenario["server"]
    with ProlificClient(server.url, TOKEN) as client:
        subs = client.submissions(PSTUDY, page_size=3)
    assert [s["id"] for s in subs] == [s["id"] for s in fake.submissions.values()]  # all 17, in order
    pages = [r for r in fake.requests if r[1] == "/api/v1/submissions/"]
    assert len(pages) == -(-len(fake.submissions) // 3) == 6


def test_client_never_follows_a_link_to_another_host(scenario):
    fake, server = scenario["fake"], scenario["server"]
    fake.base = "http://evil.example"
    with ProlificClient(server.url, TOKEN) as client, pytest.raises(ProlificError, match="another host"):
        client.submissions(PSTUDY, page_size=3)
    assert all(h.get("host", "").startswith("127.0.0.1") for h in fake.headers_seen)


def test_429_waits_as_long_as_retry_after_asks(scenario):
    fake, server = scenario["fake"], scenario["server"]
    fake.faults.append(Fault("GET", "/api/v1/submissions/", status=429, times=2, retry_after="7"))
    waits = []
    with ProlificClient(server.url, TOKEN, sleep=waits.append, backoff_base=0.01) as client:
        assert len(client.submissions(PSTUDY)) == len(fake.submissions)
    assert waits == [pytest.approx(7.0), pytest.approx(7.0)]
    assert [r[2] for r in fake.requests[:3]] == [429, 429, 200]


def test_429_retry_after_is_honoured_on_the_wire(scenario, capsys):
    fake, server = scenario["fake"], scenario["server"]
    fake.faults.append(Fault("GET", "/api/v1/submissions/", status=429, times=1, retry_after="1"))
    t0 = time.monotonic()
    assert vp("sync", "--db", str(scenario["db"]), "--prolific-study", PSTUDY, base_url=server.url) == 0
    assert time.monotonic() - t0 >= 1.0
    assert "HTTP 429" in capsys.readouterr().err


def test_5xx_on_a_read_is_retried_but_a_change_is_never_resent_blindly(scenario):
    fake, server = scenario["fake"], scenario["server"]
    fake.faults.append(Fault("GET", "/api/v1/submissions/", status=503, times=2))
    sid = sub_of(fake, "C1-two-fails")[0]
    fake.faults.append(Fault("POST", f"/api/v1/submissions/{sid}/transition/", status=500, when="after"))
    with ProlificClient(server.url, TOKEN, sleep=lambda s: None) as client:
        assert len(client.submissions(PSTUDY)) == len(fake.submissions)
        with pytest.raises(OutcomeUnknown):
            client.transition_submission(sid, {"action": "REJECT", "rejection_category": "FAILED_CHECK",
                                               "message": "x" * 100})
    assert fake.transitions_sent(sid) == 1 and fake.status_of(sid) == "REJECTED"


def test_prolific_error_bodies_become_one_line(scenario):
    server = scenario["server"]
    with ProlificClient(server.url, TOKEN) as client:
        with pytest.raises(ProlificError) as err:
            client.transition_submission(sub_of(scenario["fake"], "A1")[0],
                                         {"action": "REJECT", "rejection_category": "RUDE", "message": "short"})
    text = str(err.value)
    assert "HTTP 400" in text and "rejection_category" in text and "at least 100 characters" in text
    assert "\n" not in text


def test_a_refused_or_missing_token_is_one_line_and_never_shown(scenario, capsys):
    server, db = scenario["server"], str(scenario["db"])
    assert vp("sync", "--db", db, "--prolific-study", PSTUDY, base_url=server.url, env_token="wrong-token-xyz") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HTTP 401" in err and "PROLIFIC_TOKEN" in err and "wrong-token-xyz" not in err
    assert vp("sync", "--db", db, "--prolific-study", PSTUDY, base_url=server.url, env_token=None) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PROLIFIC_TOKEN: not set" in err


def test_a_missing_database_is_one_line_and_not_created(scenario, capsys):
    missing = scenario["tmp"] / "typo.db"
    assert vp("review", "--db", str(missing), "--prolific-study", PSTUDY, base_url=scenario["server"].url) == 2
    assert "--db: " in capsys.readouterr().err and not missing.exists()


def test_the_token_is_never_sent_unencrypted(scenario, capsys):
    assert vp("sync", "--db", str(scenario["db"]), "--prolific-study", PSTUDY,
              base_url="http://api.example.org") == 2
    err = capsys.readouterr().err
    assert "--base-url: http://api.example.org: the token would travel unencrypted" in err and TOKEN not in err
    assert scenario["fake"].requests == []


# -- reconciliation and the review policy -----------------------------------------------------
def test_sync_reconciles_every_anomaly(scenario, capsys):
    fake, server = scenario["fake"], scenario["server"]
    assert vp("sync", "--db", str(scenario["db"]), "--prolific-study", PSTUDY, base_url=server.url) == 0
    out = capsys.readouterr().out
    assert fake.transition_requests == {} and fake.bulk_approvals == []  # sync sends nothing
    with open_db(scenario["db"]) as db:
        [sync] = prolific.latest_sync(db, scenario["study"].study_id)
        stored = db.count("prolific_submissions")
        demo = db.query("SELECT fields_json FROM prolific_demographics WHERE participant_id = ?", (pid("A1"),))
    assert stored == len(fake.submissions) == 17 and json.loads(demo[0][0])["Age"]
    found = {(r["kind"], r["participant_id"]) for r in sync["reconciliation"].to_dict("records")}
    expected = {("no_data", pid("E1-nodata")), ("no_data", pid("F1-declined")), ("no_data", pid("L1-timedout")),
                ("no_submission", pid("J1-nosub")), ("code_mismatch", pid("H1-wrongcode")),
                ("session_mismatch", pid("M1-session")), ("session_mismatch", pid("K1-twice")),
                ("returned", pid("I1-returned")), ("timed_out", pid("L1-timedout")), ("duplicate", pid("K1-twice"))}
    assert found == expected
    for title in prolific.KINDS.values():
        assert title in out


def test_review_dry_run_plans_by_the_policy_and_sends_nothing(scenario, capsys):
    fake, server, tmp = scenario["fake"], scenario["server"], scenario["tmp"]
    out_csv = tmp / "plan.csv"
    assert vp("review", "--db", str(scenario["db"]), "--prolific-study", PSTUDY, "--out", str(out_csv),
              base_url=server.url) == 0
    assert "dry run: nothing sent" in capsys.readouterr().out
    assert fake.transition_requests == {} and fake.bulk_approvals == []
    assert all(r[0] == "GET" or r[1].endswith("/demographic-export/") for r in fake.requests)
    plan = pd.read_csv(out_csv, dtype=str, keep_default_na=False)
    by_pid = plan.groupby("participant_id")["decision"].agg(set)
    assert {t for t in APPROVE + list(REJECT) + MANUAL + NONE if by_pid[pid(t)] == {"approve"}} == set(APPROVE)
    assert {t for t in by_pid.index if by_pid[t] == {"reject"}} == {pid(t) for t in REJECT}
    assert {t for t in by_pid.index if by_pid[t] == {"manual"}} == {pid(t) for t in MANUAL}
    assert {t for t in by_pid.index if by_pid[t] == {"none"}} == {pid(t) for t in NONE}
    cats = dict(zip(plan.loc[plan.decision == "reject", "participant_id"], plan.loc[plan.decision == "reject",
                                                                                    "rejection_category"]))
    assert cats == {pid(t): c for t, c in REJECT.items()}
    # A participant-typed code cannot run as a spreadsheet formula.
    assert plan.loc[plan.participant_id == pid("H1-wrongcode"), "entered_code"].item() == "'=1+1"
    # Speed and straight-lining are never reasons to reject: the straight-liner is paid.
    assert "straightlining" in plan.loc[plan.participant_id == pid("D1-straight"), "reason"].item()


def test_review_apply_sends_each_decision_once_and_a_second_apply_nothing(scenario, capsys):
    fake, server, db = scenario["fake"], scenario["server"], str(scenario["db"])
    assert vp("review", "--db", db, "--prolific-study", PSTUDY, "--apply", "--out", str(scenario["tmp"] / "p.csv"),
              base_url=server.url) == 0
    out = capsys.readouterr().out
    assert f"sent now: {len(APPROVE)} approvals in one bulk request, {len(REJECT)} rejections" in out
    assert len(fake.bulk_approvals) == 1
    approved = {fake.submissions[s]["participant_id"] for s in fake.bulk_approvals[0]}
    assert approved == {pid(t) for t in APPROVE}
    rejected = {fake.submissions[s]["participant_id"]: body[0]["rejection_category"]
                for s, body in fake.transition_requests.items()}
    assert rejected == {pid(t): c for t, c in REJECT.items()}
    for bodies in fake.transition_requests.values():
        assert len(bodies) == 1 and len(bodies[0]["message"]) >= 100
    untouched = {s["participant_id"] for s in fake.submissions.values() if s["status"] in (AWAITING, "RETURNED", "TIMED-OUT")}
    assert untouched == {pid(t) for t in MANUAL + NONE}
    before = list(fake.requests)
    assert vp("review", "--db", db, "--prolific-study", PSTUDY, "--apply", "--out", str(scenario["tmp"] / "p.csv"),
              base_url=server.url) == 0
    assert "sent now: nothing new" in capsys.readouterr().out
    assert [r for r in fake.requests[len(before):] if r[0] == "POST" and "demographic" not in r[1]] == []
    with open_db(db) as d:
        states = {r[0]: r[1] for r in d.query("SELECT state, COUNT(*) FROM prolific_actions GROUP BY state")}
    assert states == {"confirmed": len(APPROVE) + len(REJECT)}


def test_a_500_midway_and_a_rerun_make_no_double_transition(scenario, capsys):
    fake, server, db = scenario["fake"], scenario["server"], str(scenario["db"])
    c1, c2, c3, e1 = (sub_of(fake, t)[0] for t in ("C1-two-fails", "C2-two-fails", "C3-three", "E1-nodata"))
    # The bulk approval and one rejection are made, but their answers are lost; then the
    # server fails every further rejection before acting, beyond the retries.
    fake.faults += [Fault("POST", "/api/v1/submissions/bulk-approve/", status=500, when="after"),
                    Fault("POST", f"/api/v1/submissions/{c1}/transition/", status=500, when="after"),
                    Fault("POST", f"/api/v1/submissions/({c2}|{c3}|{e1})/transition/", status=502, times=99)]
    args = ("review", "--db", db, "--prolific-study", PSTUDY, "--apply", "--max-retries", "1",
            "--out", str(scenario["tmp"] / "p.csv"))
    assert vp(*args, base_url=server.url) == 1
    assert "run the same command again" in capsys.readouterr().out
    assert fake.status_of(c1) == "REJECTED" and fake.status_of(c2) == AWAITING
    fake.faults.clear()
    assert vp(*args, base_url=server.url) == 0
    assert len(fake.bulk_approvals) == 1  # the lost answer was checked, not sent again
    assert fake.transitions_sent(c1) == 1  # looked at after the 500, not sent again
    for sid, moves in fake.transitions_applied.items():
        assert len(moves) == 1, (sid, moves)
    assert {fake.submissions[s]["participant_id"] for s in fake.transitions_applied} == \
        {pid(t) for t in APPROVE + list(REJECT)}


def test_a_refused_rejection_is_reported_and_settled_when_decided_by_hand(scenario, capsys):
    fake, server, db = scenario["fake"], scenario["server"], str(scenario["db"])
    c3 = sub_of(fake, "C3-three")[0]
    refusal = Fault("POST", f"/api/v1/submissions/{c3}/transition/", status=400)
    fake.faults.append(refusal)
    args = ("review", "--db", db, "--prolific-study", PSTUDY, "--apply", "--out", str(scenario["tmp"] / "p.csv"))
    assert vp(*args, base_url=server.url) == 1
    assert "refused by Prolific: POST" in capsys.readouterr().out
    fake.submissions[c3]["status"] = "APPROVED"  # the researcher decided on Prolific's website
    assert vp(*args, base_url=server.url) == 0
    assert "1 decided elsewhere" in capsys.readouterr().out
    assert refusal.seen == 1  # the refused rejection was sent once, and not again after the hand decision


def test_a_crash_halfway_resumes_without_double_transitions(scenario):
    fake, server, db = scenario["fake"], scenario["server"], str(scenario["db"])
    c2 = sub_of(fake, "C2-two-fails")[0]
    hang = Fault("POST", f"/api/v1/submissions/{c2}/transition/", when="hang")
    fake.faults.append(hang)
    cmd = [sys.executable, "-m", "valueportrait.cli", "prolific", "review", "--db", db, "--prolific-study", PSTUDY,
           "--apply", "--base-url", server.url, "--out", str(scenario["tmp"] / "p.csv")]
    proc = subprocess.Popen(cmd, env=dict(os.environ, PROLIFIC_TOKEN=TOKEN), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not fake.transitions_sent(c2) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.status_of(c2) == "REJECTED"  # Prolific made it; the client never heard back
    os.kill(proc.pid, signal.SIGKILL)  # the crash
    proc.wait()
    hang.release.set()
    with open_db(db) as d:
        state = d.query("SELECT state FROM prolific_actions WHERE submission_id = ?", (c2,))[0][0]
    assert state == "intended"  # written before sending, never marked sent
    fake.faults.clear()
    assert vp("review", "--db", db, "--prolific-study", PSTUDY, "--apply", "--out", str(scenario["tmp"] / "p.csv"),
              base_url=server.url) == 0
    for sid, bodies in fake.transition_requests.items():
        assert len(bodies) == 1, (fake.submissions[sid]["participant_id"], len(bodies))
    for sid, moves in fake.transitions_applied.items():
        assert len(moves) == 1
    assert {fake.submissions[s]["participant_id"] for s in fake.transitions_applied} == \
        {pid(t) for t in APPROVE + list(REJECT)}


def test_review_thresholds_come_from_the_study_file(scenario, capsys):
    study_file = small_study(scenario["tmp"] / "strict", prolific_section={"review": {"reject_failed_checks": 3,
                                                                                       "reject_no_data": False}})
    out_csv = scenario["tmp"] / "plan3.csv"
    assert vp("review", "--db", str(scenario["db"]), "--prolific-study", PSTUDY, "--study", str(study_file),
              "--out", str(out_csv), base_url=scenario["server"].url) == 0
    plan = pd.read_csv(out_csv, dtype=str, keep_default_na=False).set_index("participant_id")
    assert plan.loc[pid("C3-three"), "decision"] == "reject"     # 3 of 3 failed
    assert plan.loc[pid("C1-two-fails"), "decision"] == "approve"  # 2 are below this study's threshold
    assert plan.loc[pid("E1-nodata"), "decision"] == "manual"


def test_study_file_refuses_rejecting_for_one_check_in_a_long_study(tmp_path):
    from valueportrait.errors import InputError
    with pytest.raises(InputError, match="reject_failed_checks: 1: Prolific's attention-check policy"):
        load_study(small_study(tmp_path / "a", prolific_section={"review": {"reject_failed_checks": 1}}))
    assert load_study(small_study(tmp_path / "b", prolific_section={"minutes": 4, "review": {"reject_failed_checks": 1}}))
    with pytest.raises(InputError, match="more than the 3 attention checks"):
        load_study(small_study(tmp_path / "c", prolific_section={"review": {"reject_failed_checks": 4}}))
    with pytest.raises(InputError, match=r"message_failed_checks: may use only \{failed\} and \{checks\}"):
        load_study(small_study(tmp_path / "d", prolific_section={"review": {"message_failed_checks": "x" * 99 + "{who}"}}))
    with pytest.raises(InputError, match="message_no_data: String should have at least 100 characters"):
        load_study(small_study(tmp_path / "e", prolific_section={"review": {"message_no_data": "Sorry."}}))


def test_the_token_is_in_no_output_log_or_database_file(scenario, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    server, db, tmp = scenario["server"], scenario["db"], scenario["tmp"]
    for args in (("sync",), ("review", "--apply", "--out", str(tmp / "p.csv"))):
        vp(*args, "--db", str(db), "--prolific-study", PSTUDY, base_url=server.url)
    bonus = tmp / "bonus.csv"
    bonus.write_text(f"participant_id,amount\n{pid('A1')},1.50\n")
    assert vp("bonus", "--db", str(db), "--prolific-study", PSTUDY, "--csv", str(bonus), "--apply",
              base_url=server.url) == 0
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text
    assert caplog.text  # httpx did log the requests
    files = [p for p in tmp.rglob("*") if p.is_file()]
    assert any(p.name.startswith("study.db") for p in files)
    for p in files:
        assert TOKEN.encode() not in p.read_bytes(), p
    assert all(h["authorization"] == f"Token {TOKEN}" for h in scenario["fake"].headers_seen)


# -- create -----------------------------------------------------------------------------------
def test_create_is_a_dry_run_then_one_draft_then_published_once(tmp_path, capsys):
    study_file = small_study(tmp_path / "study", groups=2, prolific_section={"reward": 2.5})
    db = tmp_path / "study.db"
    with ProlificServer(token=TOKEN) as server:
        fake = server.fake
        args = ("create", "--study", str(study_file), "--url", "https://survey.example.org/", "--db", str(db))
        assert vp(*args, base_url=server.url) == 0
        assert fake.requests == [] and "dry run" in capsys.readouterr().out
        assert vp(*args, "--apply", base_url=server.url) == 0
        assert len(fake.created) == 1
        body = fake.created[0]
        # Two groups of 20: 40 places. 8 ratings per group, 3 checks, 31 items: 120 + 248 + 30 + 200 s = 10 min.
        assert body["total_available_places"] == 40 and body["estimated_completion_time"] == 10
        assert body["reward"] == 250 and body["prolific_id_option"] == "url_parameters"
        assert body["external_study_url"] == ("https://survey.example.org/?PROLIFIC_PID={{%PROLIFIC_PID%}}"
                                              "&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}")
        assert [(c["code"], c["code_type"]) for c in body["completion_codes"]] == \
            [("GOODCODE1", "COMPLETED"), ("FAILCODE1", "FAILED_ATTENTION_CHECK")]
        assert vp(*args, "--apply", "--publish", base_url=server.url) == 0
        assert vp(*args, "--apply", "--publish", base_url=server.url) == 0
        assert len(fake.created) == 1 and fake.studies[body["id"]]["status"] == "ACTIVE"
        assert sum(1 for r in fake.requests if r[1].endswith("/transition/")) == 1
        with open_db(db) as d:
            assert d.query("SELECT prolific_study_id, status FROM prolific_studies")[0][:] == (body["id"], "ACTIVE")


def test_create_whose_answer_was_lost_is_found_not_made_twice(tmp_path, capsys):
    study_file = small_study(tmp_path / "study", prolific_section={"reward": 2.5, "minutes": 15})
    db = tmp_path / "study.db"
    with ProlificServer(token=TOKEN) as server:
        server.fake.faults.append(Fault("POST", "/api/v1/studies/", status=500, when="after"))
        args = ("create", "--study", str(study_file), "--url", "https://s.example.org/go?x=1", "--db", str(db), "--apply")
        assert vp(*args, base_url=server.url) == 1
        assert vp(*args, base_url=server.url) == 0
        assert len(server.fake.created) == 1
        assert "found the draft made by an earlier run" in capsys.readouterr().out
        assert server.fake.created[0]["external_study_url"].startswith("https://s.example.org/go?x=1&PROLIFIC_PID=")


def test_create_refused_by_prolific_then_corrected_sends_the_new_options(tmp_path, capsys):
    study_file = small_study(tmp_path / "study", prolific_section={"minutes": 15})
    db = tmp_path / "study.db"
    with ProlificServer(token=TOKEN) as server:
        server.fake.faults.append(Fault("POST", "/api/v1/studies/", status=400))
        args = ("create", "--study", str(study_file), "--url", "https://s.example.org/", "--db", str(db), "--apply")
        assert vp(*args, "--reward", "2.50", base_url=server.url) == 1
        assert "HTTP 400" in capsys.readouterr().err and server.fake.created == []
        assert vp(*args, "--reward", "3.00", base_url=server.url) == 0
        assert [s["reward"] for s in server.fake.created] == [300]


def test_create_refuses_pay_below_prolifics_minimum(tmp_path, capsys):
    study_file = small_study(tmp_path / "study", prolific_section={"minutes": 30})
    with ProlificServer(token=TOKEN) as server:
        assert vp("create", "--study", str(study_file), "--url", "https://s.example.org/", "--reward", "2.99",
                  "--db", str(tmp_path / "x.db"), "--apply", base_url=server.url) == 2
        assert server.fake.requests == []
    err = capsys.readouterr().err
    assert "5.98 an hour, below Prolific's minimum" in err and err.count("\n") == 1


# -- bonuses ----------------------------------------------------------------------------------
@pytest.mark.parametrize("line, message", [
    ("nothex,1.00", "is not a Prolific id"),
    ("{A1},one", "is not a number"),
    ("{A1},1.005", "more than 2 decimals"),
    ("{A1},0", "must be above 0"),
    ("{A1},30", "above --max-amount 25"),
    ("{A1},1\n{A1},2", "is already on line 2"),
    ("{X},1.00", "has no submission in Prolific study"),
])
def test_bonus_csv_is_validated_before_anything_is_sent(scenario, capsys, line, message):
    bonus = scenario["tmp"] / "bonus.csv"
    bonus.write_text("participant_id,amount\n" + line.format(A1=pid("A1"), X=pid("X-stranger")) + "\n")
    assert vp("bonus", "--db", str(scenario["db"]), "--prolific-study", PSTUDY, "--csv", str(bonus), "--apply",
              base_url=scenario["server"].url) == 2
    err = capsys.readouterr().err
    assert message in err and str(bonus) in err and err.count("\n") == 1
    assert scenario["fake"].bonuses == {} and scenario["fake"].payments == []


def test_bonus_pays_once_and_never_again_after_a_lost_answer(scenario, capsys):
    fake, server, db = scenario["fake"], scenario["server"], str(scenario["db"])
    bonus = scenario["tmp"] / "bonus.csv"
    bonus.write_text(f"participant_id,amount\n{pid('A1')},1.50\n{pid('A2')},0.75\n")
    args = ("bonus", "--db", db, "--prolific-study", PSTUDY, "--csv", str(bonus))
    assert vp(*args, base_url=server.url) == 0 and fake.bonuses == {}  # dry run
    assert "2.25 in total" in capsys.readouterr().out
    fake.faults.append(Fault("POST", r"/api/v1/bulk-bonus-payments/\w+/pay/", status=500, when="after"))
    assert vp(*args, "--apply", base_url=server.url) == 1
    assert len(fake.payments) == 1  # paid, but the answer was lost
    assert vp(*args, "--apply", base_url=server.url) == 1  # refuses to pay again by itself
    assert "paying twice pays twice" in capsys.readouterr().out and len(fake.payments) == 1
    [bulk] = fake.bonuses.values()
    assert bulk["csv_bonuses"] == "".join(sorted([f"{pid('A1')},1.50\n", f"{pid('A2')},0.75\n"]))
    assert bulk["amount"] == 225  # cents, as Prolific answers


def test_bonus_apply_twice_pays_once(scenario):
    fake, server, db = scenario["fake"], scenario["server"], str(scenario["db"])
    bonus = scenario["tmp"] / "bonus.csv"
    bonus.write_text(f"participant_id,amount\n{pid('A1')},2\n")
    args = ("bonus", "--db", db, "--prolific-study", PSTUDY, "--csv", str(bonus), "--apply")
    assert vp(*args, base_url=server.url) == 0
    assert vp(*args, base_url=server.url) == 0
    assert len(fake.payments) == 1 and len(fake.bonuses) == 1


# -- the admin page -----------------------------------------------------------------------------
def test_admin_page_shows_the_reconciliation_and_the_plan_after_a_sync(scenario, monkeypatch):
    from streamlit.testing.v1 import AppTest
    assert vp("sync", "--db", str(scenario["db"]), "--prolific-study", PSTUDY, base_url=scenario["server"].url) == 0
    monkeypatch.setenv("VP_DB", str(scenario["db"]))
    monkeypatch.setenv("VP_STUDY", str(scenario["study_file"]))
    monkeypatch.setenv("VP_ADMIN_PASSWORD", "pw")
    at = AppTest.from_file(str(ROOT / "collection_app" / "app.py"), default_timeout=30)
    at.query_params.update(admin="1")
    at.run()
    at.text_input(key="admin-password").set_value("pw")
    at.button[0].click().run()
    assert not at.exception
    assert "Prolific" in [s.value for s in at.subheader]
    frames = [d.value for d in at.dataframe]
    plan = next(f for f in frames if "decision" in f.columns)
    assert set(plan.loc[plan["decision"] == "reject", "participant_id"]) == {pid(t) for t in REJECT}
    rec = next(f for f in frames if "kind" in f.columns)
    assert set(rec.loc[rec["kind"] == "no_submission", "participant_id"]) == {pid("J1-nosub")}
    assert any(f"Prolific study {PSTUDY}" in c.value for c in at.caption)


# -- thirty bots through the real app ------------------------------------------------------------
@pytest.mark.slow
def test_thirty_bots_sync_and_review_against_the_fake_prolific(tmp_path, capsys):
    """30 websocket bots take the study through `vp app`; Prolific's side is built from what
    they did, with one wrong code, one without data, one returned, one never submitted."""
    from collection_app import bots, wsbot
    from collection_app.testing import serve
    study_file = small_study(tmp_path / "study", groups=2)
    study = load_study(study_file)
    db = tmp_path / "study.db"
    behaviours = bots.MIX  # consistent, random, straight-liners, speeders, attention failers, refreshers, returners
    with serve(db, study=study_file, log=tmp_path / "server.log") as app:
        results = asyncio.run(wsbot.run_bots(app.url, 30, think=0, behaviours=behaviours, seed=5,
                                             study_file=study_file, timeout=30, ramp=1))
    assert all(r.completed and not r.failures for r in results), [r.failures for r in results if r.failures]
    with open_db(db) as d:
        parts = d.frame("SELECT participant_id, platform_study_id, platform_session_id, completion_code "
                        "FROM participations WHERE test_mode = 0")
        failed = dict(d.query("SELECT participant_id, SUM(passed = 0) FROM attention_checks GROUP BY participant_id"))
        # One more person started and left early: Prolific will show them as returned.
        store.assign_group(d, study, pid("returner"), test_mode=False, platform_study_id=parts.platform_study_id[0],
                           platform_session_id="2" * 24)
        d.upsert("instrument_answers", [dict(study_id=study.study_id, participant_id=pid("returner"), instrument="pvq21",
                                             item_id=i, answer=3, seconds=2.0, answered_at=now()) for i in (1, 2, 3)])
    prolific_id = parts.platform_study_id[0]
    assert len(parts) == 30 and set(parts.platform_study_id) == {prolific_id}
    # The wrong code and the missing submission go to two people who passed every check (the
    # check-failers are rejected whatever code they typed).
    wrong, unsubmitted = sorted(p for p, n in failed.items() if n == 0)[:2]
    with ProlificServer(token=TOKEN, max_page_size=8) as server:
        fake = server.fake
        fake.add_study(prolific_id)
        for r in parts.itertuples():
            if r.participant_id != unsubmitted:
                fake.add_submission(prolific_id, r.participant_id, submission_id=r.platform_session_id,
                                    study_code="TYPO99" if r.participant_id == wrong else r.completion_code)
        fake.add_submission(prolific_id, pid("ghost"), study_code="GOODCODE1")  # no data at all
        fake.add_submission(prolific_id, pid("returner"), submission_id="2" * 24, status="RETURNED")
        assert vp("sync", "--db", str(db), "--prolific-study", prolific_id, base_url=server.url) == 0
        with open_db(db) as d:
            rec = prolific.latest_sync(d, study.study_id)[0]["reconciliation"]
        kinds = {(r["kind"], r["participant_id"]) for r in rec.to_dict("records")}
        assert kinds == {("code_mismatch", wrong), ("no_data", pid("ghost")), ("returned", pid("returner")),
                         ("no_submission", unsubmitted)}
        out = tmp_path / "plan.csv"
        args = ("review", "--db", str(db), "--prolific-study", prolific_id, "--out", str(out))
        assert vp(*args, base_url=server.url) == 0
        assert fake.transition_requests == {} and fake.bulk_approvals == []  # dry run
        assert vp(*args, "--apply", base_url=server.url) == 0
        assert vp(*args, "--apply", base_url=server.url) == 0
    print(capsys.readouterr().out[-3000:])
    # The policy, computed here from the database: two or more failed checks -> reject; the
    # ghost -> no data; the wrong code -> left for a person; everyone else completed -> approve.
    must_reject = {p for p, n in failed.items() if n >= 2 and p != unsubmitted} | {pid("ghost")}
    must_approve = set(parts.participant_id) - must_reject - {wrong, unsubmitted}
    assert len(must_reject) >= 3 and len(must_approve) >= 10  # both sides of the policy are exercised
    status = {s["participant_id"]: s["status"] for s in fake.submissions.values()}
    assert {p for p, s in status.items() if s == "REJECTED"} == must_reject
    assert {p for p, s in status.items() if s == "APPROVED"} == must_approve
    assert status[wrong] == AWAITING and status[pid("returner")] == "RETURNED"
    assert len(fake.bulk_approvals) == 1  # the second --apply sent nothing
    assert all(len(b) == 1 for b in fake.transition_requests.values())
    assert all(len(m) == 1 for m in fake.transitions_applied.values())
    cats = {fake.submissions[s]["participant_id"]: b[0]["rejection_category"] for s, b in fake.transition_requests.items()}
    assert cats[pid("ghost")] == "NO_DATA" and set(cats.values()) == {"NO_DATA", "FAILED_CHECK"}
