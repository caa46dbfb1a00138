"""vp import-release: counts against the release's own files, one transaction, idempotence, one-line errors."""

import json
import shutil
import sqlite3

import pytest

from analysis.release import SURVEY, TAGGED, VALUES, import_release
from valueportrait.cli import main
from valueportrait.errors import InputError
from valueportrait.storage import KEYS, open_db


def dump(path) -> list[str]:
    """Every row of every table, as SQL text (sqlite's own dump)."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def imported(release_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("db") / "study.db"
    assert main(["import-release", str(release_dir), "--db", str(path)]) == 0
    return path


def test_import_counts_match_the_release_files(release_dir, imported):
    survey = json.loads((release_dir / SURVEY).read_text())
    values = json.loads((release_dir / VALUES).read_text())
    ratings = sum(len(o["data"]) for g in survey for opts in g.values() for o in opts)
    db = open_db(imported)
    assert db.count("item_groups", "release") == len(survey) == 12
    assert db.count("items", "release") == 520
    assert db.count("ratings", "release") == ratings == 24320
    assert db.count("participants", "release") == len(values) == 569
    assert db.count("scores", "release") == 19 * len(values)
    assert db.count("participations", "release") == 560  # 559 raters, P186 twice
    assert {r[0] for r in db.query("SELECT DISTINCT model FROM llm_answers")} == {
        "claude-3-5-sonnet-20241022", "gpt-4o-2024-11-20", "llama-3.1-8b-instruct"}
    # A spot check straight from the JSON: group 4 (x901/x902) has 41 raters.
    assert db.query("SELECT COUNT(*) FROM participations WHERE group_id = 'g04'")[0][0] == 41
    first = survey[0]["1021"][0]["data"][0]
    assert db.query("SELECT rating FROM ratings WHERE participant_id = ? AND portrait_id = '1021' AND option_id = 1",
                    (first[1],))[0][0] == first[0]
    assert db.query("SELECT score FROM scores WHERE participant_id = 'P321' AND dimension = 'Power'")[0][0] == \
        values["P321"]["pvq"]["Power"]
    p186 = [r[0] for r in db.query("SELECT group_id FROM participations WHERE participant_id = 'P186' ORDER BY group_id")]
    assert p186 == ["g01", "g06"]


def test_import_prints_oddities(release_dir, tmp_path, capsys):
    assert main(["import-release", str(release_dir), "--db", str(tmp_path / "s.db")]) == 0
    out = capsys.readouterr().out
    assert "12 groups, 520 items" in out and "24320 ratings" in out
    assert "P186 rated 2 groups (g01, g06)" in out
    assert "10 participants have scores but no ratings" in out and "P094" in out


def test_reimport_is_a_no_op(release_dir, imported):
    before = dump(imported)
    with open_db(imported) as db:
        import_release(release_dir, db)
    assert dump(imported) == before


def _broken_copy(release_dir, tmp_path):
    root = tmp_path / "release"
    shutil.copytree(release_dir, root)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the shared copy is read-only
    return root


def _edit_survey(root, change):
    path = root / SURVEY
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _set_rating(data):
    data[3]["1901"][2]["data"][17][0] = 7


def _unknown_participant(data):
    data[0]["1021"][0]["data"][5][1] = "P999"


def _duplicate_rating(data):
    data[0]["1021"][0]["data"].append(list(data[0]["1021"][0]["data"][0]))


def _missing_field(data):
    del data[2]["1038"][1]["option_id"]


def _untexted_item(data):
    data[0]["1021"][0]["option_id"] = 9


def test_reimport_removes_what_the_release_no_longer_holds(release_dir, tmp_path, imported):
    """A release re-imported without a rating and a model's answers: the database then holds
    what the edited JSON files hold, row for row as a fresh import of them (creation times
    aside: a re-import keeps the first ones)."""
    root = _broken_copy(release_dir, tmp_path)
    dropped = {}

    def drop_first_rating(data):
        dropped["pair"] = data[0]["1021"][0]["data"].pop(0)

    _edit_survey(root, drop_first_rating)
    (root / "lm_evaluation/average_outputs/llama-3.1-8b-instruct_averaged_results.json").unlink()
    db_path = tmp_path / "study.db"
    shutil.copy(imported, db_path)
    with open_db(db_path) as db:
        import_release(root, db)
    with open_db(tmp_path / "fresh.db") as db:
        import_release(root, db)
    llm = [json.loads(p.read_text()) for p in (root / "lm_evaluation/average_outputs").glob("*_averaged_results.json")]
    expected = {"ratings": 24320 - 1, "llm_answers": sum(len(e["version_responses"]) for f in llm for e in f),
                "participations": 560, "participants": 569, "items": 520}
    rating, person = dropped["pair"]
    with open_db(db_path) as old, open_db(tmp_path / "fresh.db") as fresh:
        for table, n in expected.items():
            assert old.count(table, "release") == n, table
            order = ", ".join(KEYS[table])
            columns = ", ".join(c for c in old.query(f"SELECT * FROM {table} LIMIT 1")[0].keys() if c != "created_at")
            assert [tuple(r) for r in old.query(f"SELECT {columns} FROM {table} ORDER BY {order}")] == \
                [tuple(r) for r in fresh.query(f"SELECT {columns} FROM {table} ORDER BY {order}")], table
        assert not old.query("SELECT 1 FROM ratings WHERE participant_id = ? AND portrait_id = '1021' AND option_id = 1",
                             (person,))
        assert not old.query("SELECT 1 FROM llm_answers WHERE model = 'llama-3.1-8b-instruct'")


@pytest.mark.parametrize("change, message", [
    (_set_rating, 'survey.json: [3]["1901"][2].data[17]: rating 7 is outside 1..6'),
    (_unknown_participant, "survey.json: [0][\"1021\"][0].data[5]: participant 'P999' is not in"),
    (_duplicate_rating, "survey.json: [0][\"1021\"][0].data[46]: participant 'P506' rated item 1021/1 twice"),
    (_missing_field, "survey.json: [2][\"1038\"][1]: missing field 'option_id'"),
    (_untexted_item, "survey.json: [0][\"1021\"][0].option_id: item 1021/9 is rated but has no text"),
])
def test_broken_survey_fails_and_writes_nothing(release_dir, tmp_path, imported, change, message):
    root = _broken_copy(release_dir, tmp_path)
    _edit_survey(root, change)
    db_path = tmp_path / "study.db"
    shutil.copy(imported, db_path)
    before = dump(db_path)
    with open_db(db_path) as db, pytest.raises(InputError) as err:
        import_release(root, db)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert dump(db_path) == before


def test_truncated_file_fails_on_an_empty_database(release_dir, tmp_path, capsys):
    root = _broken_copy(release_dir, tmp_path)
    path = root / VALUES
    path.write_bytes(path.read_bytes()[: 200_000])
    db_path = tmp_path / "fresh.db"
    assert main(["import-release", str(root), "--db", str(db_path)]) == 2
    err = capsys.readouterr().err
    assert "value.json: not valid JSON" in err
    assert not db_path.exists()  # a failed import leaves no database, not even an empty one


def test_missing_score_field_names_the_participant(release_dir, tmp_path):
    root = _broken_copy(release_dir, tmp_path)
    path = root / VALUES
    data = json.loads(path.read_text())
    del data["P321"]["pvq"]["Power"]
    path.write_text(json.dumps(data))
    with open_db(tmp_path / "s.db") as db, pytest.raises(InputError, match=r'value.json: \["P321"\].pvq: missing field \'Power\''):
        import_release(root, db)


def test_tagged_file_with_correlation_fields_is_accepted(release_dir, tmp_path):
    root = _broken_copy(release_dir, tmp_path)
    path = root / TAGGED
    data = json.loads(path.read_text())
    data[0]["outputs"][0]["correlations"] = [["Power", 0.31]]
    path.write_text(json.dumps(data))
    with open_db(tmp_path / "s.db") as db:
        import_release(root, db)
        meta = db.query("SELECT meta_json FROM items WHERE portrait_id = ? AND option_id = ?",
                        (str(data[0]["portrait_id"]), data[0]["outputs"][0]["id"]))[0][0]
    assert json.loads(meta) == {"published": {"correlations": [["Power", 0.31]]}}

