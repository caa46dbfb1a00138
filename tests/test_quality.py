"""Quality control on a small hand-made study with planted bad respondents."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from analysis.dataset import load_study
from analysis.quality import QUALITY_COLUMNS, RULES, QualityOptions, quality_control
from valueportrait.storage import now, open_db

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
STUDY = "pilot"


def _iso(dt):
    return dt.isoformat(timespec="milliseconds")


def make_study(path, with_checks=True, with_times=True):
    """g01: 20 participants, g02: 6; 4 items each. Planted:

    * S1 gives every item rating 3 (straight-lining on the item block);
    * S2 answers all 21 PVQ items with 4 (straight-lining on the PVQ block);
    * F1 takes 60 s where the others take about 600 s (speeder);
    * A1 fails one attention check;
    * D1 took part in g02 first (earlier start) and then in g01 (duplicate: g01 is the later one);
    * I1 stopped after two items (status active: incomplete).
    """
    rng = np.random.default_rng(7)
    db = open_db(path)
    rows = {k: [] for k in ("participants", "participations", "ratings", "instrument_answers", "attention_checks")}
    people = {"g01": [f"P{i:02d}" for i in range(14)] + ["S1", "S2", "F1", "A1", "D1", "I1"],
              "g02": [f"Q{i:02d}" for i in range(5)] + ["D1"]}
    items = {g: [(f"{k}00{j}", o) for j in (1, 2) for o in (1, 2)] for k, g in ((1, "g01"), (2, "g02"))}
    for pid in sorted({p for ps in people.values() for p in ps}):
        rows["participants"].append(dict(study_id=STUDY, participant_id=pid, created_at=now()))
        pvq = [4] * 21 if pid == "S2" else rng.integers(1, 7, 21).tolist()
        bfi = rng.integers(1, 6, 10).tolist()
        for i, a in enumerate(pvq, 1):
            rows["instrument_answers"].append(dict(study_id=STUDY, participant_id=pid, instrument="pvq21", item_id=i, answer=a))
        for i, a in enumerate(bfi, 1):
            rows["instrument_answers"].append(dict(study_id=STUDY, participant_id=pid, instrument="bfi10", item_id=i, answer=a))
        if with_checks:
            rows["attention_checks"].append(dict(study_id=STUDY, participant_id=pid, check_id="c1", expected=2,
                                                 answer=5 if pid == "A1" else 2, passed=int(pid != "A1")))
    for g, ps in people.items():
        for k, pid in enumerate(ps):
            start = T0 + timedelta(hours=1 if g == "g01" else 0, minutes=k)
            if pid == "D1":
                start = T0 + (timedelta(hours=2) if g == "g01" else timedelta(0))
            seconds = 60 if pid == "F1" else 600 + 10 * rng.normal()
            status = "active" if pid == "I1" else "completed"
            rows["participations"].append(dict(
                study_id=STUDY, participant_id=pid, group_id=g, status=status,
                started_at=_iso(start) if with_times else None,
                completed_at=_iso(start + timedelta(seconds=seconds)) if with_times and status == "completed" else None))
            rated = items[g][:2] if pid == "I1" else items[g]
            for j, (portrait, option) in enumerate(rated):
                rating = 3 if pid == "S1" else int(rng.integers(1, 7))
                if pid == "S2" and j == 0:
                    rating = 1 if rating != 1 else 2  # S2's item block is not flat
                rows["ratings"].append(dict(study_id=STUDY, participant_id=pid, portrait_id=portrait, option_id=option,
                                            group_id=g, rating=rating))
    with db.transaction():
        db.upsert("studies", [dict(study_id=STUDY, source="app", created_at=now())])
        db.upsert("item_groups", [dict(study_id=STUDY, group_id=g, position=i + 1) for i, g in enumerate(items)])
        db.upsert("items", [dict(study_id=STUDY, portrait_id=p, option_id=o, group_id=g, query_text="q", response="r")
                            for g, its in items.items() for p, o in its])
        for table, rs in rows.items():
            db.upsert(table, rs)
    return db


@pytest.fixture
def study(tmp_path):
    with make_study(tmp_path / "q.db") as db:
        return load_study(db)


def _reasons(result):
    t = result.table
    return {(p, g): r for p, g, r in zip(t["participant_id"], t["group_id"], t["reasons"]) if r}


def test_planted_respondents_are_caught_and_no_one_else(study):
    result = quality_control(study)
    assert list(result.table.columns) == QUALITY_COLUMNS
    assert _reasons(result) == {
        ("S1", "g01"): "straightlining",
        ("S2", "g01"): "straightlining",
        ("F1", "g01"): "speeder",
        ("A1", "g01"): "attention",
        ("D1", "g01"): "duplicate",
        ("I1", "g01"): "incomplete",
    }
    included = result.table.set_index(["participant_id", "group_id"])["included"]
    assert not included[("D1", "g01")] and included[("D1", "g02")]  # the earlier start counts, not the lower group
    assert included.sum() == 26 - 6
    rules = result.summary["rules"]
    # Data with times and checks: the rules apply and carry no "the data has no ..." note.
    assert "note" not in rules["attention"] and "note" not in rules["speeder"]
    assert {r: rules[r]["flagged"] for r in RULES} == {r: 1 for r in RULES} | {"straightlining": 2}


def test_each_rule_can_be_switched_off(study):
    for rule in RULES:
        result = quality_control(study, QualityOptions(rules=tuple(r for r in RULES if r != rule)))
        assert not any(rule in r.split(";") for r in _reasons(result).values())
        assert result.summary["rules"][rule]["note"] == "switched off"


def test_thresholds(study):
    # One failed check allowed: A1 passes.
    assert ("A1", "g01") not in _reasons(quality_control(study, QualityOptions(max_failed_checks=1)))
    # The SD rule alone still catches F1 (60 s against ~600 s); with both criteria off nobody is a speeder.
    assert _reasons(quality_control(study, QualityOptions(speeder_fraction=0)))[("F1", "g01")] == "speeder"
    assert ("F1", "g01") not in _reasons(quality_control(study, QualityOptions(speeder_fraction=0, speeder_sd=0)))
    # exclude-all drops both of D1's participations.
    dup = _reasons(quality_control(study, QualityOptions(duplicate_policy="exclude-all")))
    assert dup[("D1", "g01")] == dup[("D1", "g02")] == "duplicate"
    # A block needs min_block ratings: with 5, S1's 4 equal ratings are not judged.
    assert ("S1", "g01") not in _reasons(quality_control(study, QualityOptions(min_block=5)))


def test_several_reasons_are_all_listed(tmp_path):
    db = make_study(tmp_path / "q.db")
    db.upsert("attention_checks", [dict(study_id=STUDY, participant_id="S1", check_id="c1", expected=2, answer=6, passed=0)])
    result = quality_control(load_study(db))
    assert _reasons(result)[("S1", "g01")] == "attention;straightlining"


def test_data_without_times_or_checks_says_so(tmp_path):
    with make_study(tmp_path / "q.db", with_checks=False, with_times=False) as db:
        result = quality_control(load_study(db))
    rules = result.summary["rules"]
    assert rules["speeder"]["applicable"] is False and "no start/completion times" in rules["speeder"]["note"]
    assert rules["attention"]["applicable"] is False and "no attention checks" in rules["attention"]["note"]
    assert "flagged" not in rules["speeder"]
    # Without times the duplicate's first participation is the lower group position.
    included = result.table.set_index(["participant_id", "group_id"])["included"]
    assert included[("D1", "g01")] and not included[("D1", "g02")]


def test_release_p186_counts_once(release_dir, tmp_path):
    from analysis.release import import_release

    with open_db(tmp_path / "r.db") as db:
        import_release(release_dir, db)
        result = quality_control(load_study(db))
    t = result.table
    assert len(t) == 560 and (~t["included"]).sum() == 1
    assert t.loc[~t["included"], ["participant_id", "group_id", "reasons"]].values.tolist() == [["P186", "g06", "duplicate"]]
    assert result.summary["rules"]["speeder"]["applicable"] is False
    assert pd.api.types.is_bool_dtype(t["included"])
