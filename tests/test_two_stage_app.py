"""A two-stage study through the real app: wave 1 with `vp bots`, `vp plan-wave`, wave 2 with fresh bots, the analysis.

The consistent bots have value profiles and rate a response by the value it is tagged with
(`collection_app.bots.Profile`): a tagged response correlates about 0.67 with its value's
centred score, an untagged one with nothing. So the truth is planted: the tagged items are
the relations to find, the untagged ones the nulls that must not be confirmed.
"""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

import instruments
from collection_app.testing import serve
from valueportrait.cli import main
from valueportrait.storage import open_db

PLANTED = {"1101-1": "Security", "1102-2": "Benevolence", "1103-3": "Power", "1104-4": "Stimulation",
           "1105-1": "Tradition", "1106-2": "Achievement", "1101-3": "Universalism", "1103-1": "Hedonism"}
QUERIES = 6


def _items() -> list[dict]:
    """Six queries x four responses: eight responses tagged with a value (the planted relations), 16 plain."""
    rng = random.Random(0)
    out = []
    for q in range(QUERIES):
        pid = str(1101 + q)
        outputs = []
        for o in range(1, 5):
            text = f"Response {o} to question {pid}: " + " ".join(rng.choice(["calm", "plain", "short", "fair"]) for _ in range(6))
            value = PLANTED.get(f"{pid}-{o}")
            outputs.append({"id": o, "content": text, **({"value": value} if value else {})})
        out.append({"portrait_id": pid, "content": {"title": None, "text": f"Question {pid}: what would you do?"},
                    "outputs": outputs})
    return out


def _bots(url: str, study: str, n: int, seed: int) -> None:
    assert main(["bots", "--url", url, "--n", str(n), "--think", "0", "--concurrency", "8", "--seed", str(seed),
                 "--study", study, "--behaviour", "consistent", "--timeout", "60"]) == 0


@pytest.mark.slow
def test_two_waves_through_the_app_confirm_the_planted_relations(tmp_path, capsys):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "items.json").write_text(json.dumps(_items()))
    wave1 = {"study_id": "vals", "title": "Values, screening", "items_file": "items.json",
             "groups": [{"id": "S1", "portraits": [str(1101 + q) for q in range(QUERIES)], "target": 60}],
             "attention_checks": [{"id": "ac_pvq", "after": 10}, {"id": "ac_item_1", "after": 12}],
             "completion": {"code": "SCREEN01"}}
    (folder / "wave1.yaml").write_text(json.dumps(wave1))
    db = tmp_path / "study.db"

    # Wave 1: every item, 60 consistent bots. (With 30, a planted relation of 0.67 falls out of the
    # ten best-screened items in about a quarter of runs: a simulation of the bots gives 74 % of runs
    # with all eight planted among the top ten at 30 raters, 96 % at 40, 100 % of 400 at 60.)
    with serve(db, study=folder / "wave1.yaml", log=tmp_path / "server1.log") as server:
        _bots(server.url, str(folder / "wave1.yaml"), 60, seed=11)

    # Plan wave 2: the budget buys 50 fresh raters for one group of 10 items; powered for the planted size.
    wave2 = folder / "wave2.yaml"
    assert main(["plan-wave", "--db", str(db), "--screen", "vals", "--budget-participants", "50",
                 "--items-per-participant", "10", "--rho", "0.6", "--out", str(wave2), "--permutations", "100"]) == 0
    printed = capsys.readouterr().out
    assert "keeping 10 of 24 items" in printed and "expected power" in printed
    plan = pd.read_csv(folder / "wave2_plan.csv", dtype={"portrait_id": str})
    cand = {f"{p}-{o}" for p, o in zip(plan.loc[plan["candidate"], "portrait_id"], plan.loc[plan["candidate"], "option_id"])}
    assert set(PLANTED) <= cand  # the screening found every planted relation

    # Wave 2 into the same database: fresh bots (new Prolific ids), the wave's own study id and project.
    with serve(db, study=wave2, log=tmp_path / "server2.log") as server:
        _bots(server.url, str(wave2), 50, seed=12)
    with open_db(db, readonly=True) as con:
        studies = {r["study_id"]: json.loads(r["config_json"])["spec"] for r in con.query("SELECT * FROM studies")}
        people = {sid: {r[0] for r in con.query("SELECT participant_id FROM participations WHERE study_id = ? "
                                                "AND status = 'completed'", (sid,))} for sid in studies}
    assert studies["vals-w2"]["project"] == "vals" and set(studies) == {"vals", "vals-w2"}
    assert len(people["vals"]) == 60 and len(people["vals-w2"]) == 50 and not people["vals"] & people["vals-w2"]

    # The analysis: keyed on wave 2's raters only.
    out = tmp_path / "processed"
    assert main(["analyze", "--db", str(db), "--out", str(out), "--design", "two-stage", "--screen", "vals",
                 "--confirm", "vals-w2", "--skip", "efa,cfa,replication,reliability", "--no-progress"]) == 0
    sel = pd.read_csv(out / "selection.csv", dtype={"portrait_id": str})
    keyed = set(zip(sel["portrait_id"] + "-" + sel["option_id"].astype(str), sel["dimension"]))
    # The planted relations (each tagged response with its own value, population rho about 0.69)
    # are confirmed: on 50 raters a pair is missed about once in a few hundred draws, but the
    # seeded bots are the same 50 people every run, and among them Security's scores happen to
    # spread little (SD 0.78), which brings 1101-1's estimate down to about 0.45 (q near .05).
    # So one planted pair may miss; seven of eight must be keyed ...
    planted = {(item, value) for item, value in PLANTED.items()}
    assert len(planted & keyed) >= 7, sorted(planted - keyed)
    # ... and no item without a planted relation is keyed to anything.
    assert {item for item, _ in keyed} <= set(PLANTED)
    manifest = json.loads((out / "manifest.json").read_text())
    funnel = manifest["design"]["funnel"]
    assert {k: funnel[k] for k in ("screened", "candidates", "screened_out", "not_screened")} == {
        "screened": 24, "candidates": 10, "screened_out": 14, "not_screened": 0}
    assert funnel["confirmed"] == len({item for item, _ in keyed}) >= 7
    assert funnel["confirmed"] + funnel["not_confirmed"] == 10
    raters = manifest["design"]["raters"]
    # (bots answering at full speed can trip the speeder rule now and then: nearly all are included)
    assert raters["screen_participations"] == 60 and raters["confirm_participations"] == 50
    assert raters["screen_included"] >= 54 and raters["confirm_included"] >= 45 and raters["shared_included"] == 0
    assert (sel["wave"] == "vals-w2").all()
    assert set(sel["dimension"]) <= set(instruments.FAMILY_OF)
