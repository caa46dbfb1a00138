"""Bad input that used to pass, or to write: truncated files, repeated keys, off-scale answers,
huge answers, keys in error bodies, outputs written where they should not be (issue 20).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_env import one_line  # noqa: E402
from llm_server import LoopbackServer  # noqa: E402
from test_llm_runner import make_bank  # noqa: E402
from test_release_import import SURVEY, _broken_copy  # noqa: E402

from analysis.release import import_release  # noqa: E402
from valueportrait import PROJECT_ROOT  # noqa: E402
from valueportrait.cli import main  # noqa: E402
from valueportrait.errors import InputError  # noqa: E402
from valueportrait.storage import open_db  # noqa: E402

ANSWERS = PROJECT_ROOT / "instruments/examples/answers.csv"
HS_MODEL = "visual =~ x1 + x2 + x3\ntextual =~ x4 + x5 + x6\nspeed =~ x7 + x8 + x9"


def test_a_repeated_key_is_refused_not_silently_dropped(release_dir, tmp_path):
    """A group object that names a query twice: json keeps the last copy and loses the first one's ratings."""
    root = _broken_copy(release_dir, tmp_path)
    data = json.loads((root / SURVEY).read_text())
    first_key = next(iter(data[0]))
    decoy = [{"option_id": o["option_id"], "data": o["data"][:-1]} for o in data[0][first_key]]
    lost = sum(len(o["data"]) for o in decoy)
    group0 = "{" + json.dumps(first_key) + ": " + json.dumps(decoy) + ", " + json.dumps(data[0])[1:]
    text = "[" + ", ".join([group0] + [json.dumps(g) for g in data[1:]]) + "]"
    assert len(json.loads(text)[0]) == len(data[0]) and lost > 100  # plain json: the first copy is gone without a word
    (root / SURVEY).write_text(text)
    with open_db(tmp_path / "s.db") as db, pytest.raises(
            InputError, match=rf'survey.json: \[0\]\["{first_key}"\]: the key \'{first_key}\' appears twice \(lines 1 and 1\)'):
        import_release(root, db)


@pytest.mark.parametrize("answer", [99, -3.5, 0])
def test_llm_answers_off_the_scale_are_refused(release_dir, tmp_path, answer):
    root = _broken_copy(release_dir, tmp_path)
    path = next((root / "lm_evaluation/average_outputs").glob("*_averaged_results.json"))
    data = json.loads(path.read_text())
    variant = next(iter(data[2]["version_responses"]))
    data[2]["version_responses"][variant] = answer
    path.write_text(json.dumps(data))
    with open_db(tmp_path / "s.db") as db:
        with pytest.raises(InputError) as err:
            import_release(root, db)
        assert db.count("llm_answers") == 0 and db.count("ratings") == 0
    assert str(err.value) == (f"lm_evaluation/average_outputs/{path.name}: [2].version_responses.{variant}: "
                              f"answer {answer:g} is outside 1..6")


# -- truncated CSVs are errors naming the line, not missing answers -----------------------------
def test_score_instruments_refuses_a_cut_off_last_line_and_a_short_row(tmp_path, capsys):
    text = ANSWERS.read_text()
    cut = tmp_path / "cut.csv"
    cut.write_text(text[:-25])  # the last participant's line loses its last answers
    assert main(["score-instruments", str(cut), "--out", str(tmp_path / "s.csv")]) == 2
    n_lines = len(text.splitlines())
    assert one_line(capsys.readouterr().err, "score-instruments").endswith(
        f"cut.csv: line {n_lines}: 20 fields where the header has 32 (is the file cut off?)")
    lines = text.splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0]  # one field short in the middle of the file
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines) + "\n")
    assert main(["score-instruments", str(short), "--out", str(tmp_path / "s.csv")]) == 2
    assert one_line(capsys.readouterr().err, "score-instruments").endswith(
        "short.csv: line 3: 31 fields where the header has 32")
    assert not (tmp_path / "s.csv").exists()


def test_many_participants_with_missing_answers_are_summarised(tmp_path, capsys):
    header, first = ANSWERS.read_text().splitlines()[:2]
    fields = first.split(",")[1:]
    fields[6] = ""  # pvq7 missing for everyone
    rows = [header] + [f"P{i:06d}," + ",".join(fields) for i in range(100_000)]
    (tmp_path / "big.csv").write_text("\n".join(rows) + "\n")
    assert main(["score-instruments", str(tmp_path / "big.csv"), "--out", str(tmp_path / "s.csv")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "vp score-instruments: 100,000 of 100,000 participants have missing answers (the scores that need them are empty):"
    assert err[1] == "  P000000: pvq (no centred scores): missing pvq7" and err[11] == "  ... and 99,990 more"
    assert len(err) == 13  # and the final "scored" line
    scores = pd.read_csv(tmp_path / "s.csv")
    assert len(scores) == 100_000 and scores["Conformity"].isna().all() and scores["Extraversion"].notna().all()


@pytest.fixture
def hs_csv(tmp_path):
    from semopy.examples import holzinger39

    path = tmp_path / "hs.csv"
    holzinger39.get_data().to_csv(path, index=False)
    return path


def test_cfa_refuses_a_truncated_csv_and_names_an_infinite_cell(hs_csv, tmp_path, capsys):
    text = hs_csv.read_text()
    cut = tmp_path / "cut.csv"
    cut.write_text(text[: len(text) // 13])  # it used to be fitted with the rows that were left
    assert main(["cfa", "--data", str(cut), "--model", HS_MODEL]) == 2
    line = one_line(capsys.readouterr().err, "cfa")
    assert "cut.csv: line " in line and "(is the file cut off?)" in line
    data = pd.read_csv(hs_csv)
    data.loc[4, "x5"] = np.inf
    data.to_csv(tmp_path / "inf.csv", index=False)
    assert main(["cfa", "--data", str(tmp_path / "inf.csv"), "--model", HS_MODEL]) == 2
    assert one_line(capsys.readouterr().err, "cfa").endswith("inf.csv: line 6, column x5: 'inf' is not a finite number")


def test_cfa_on_perfectly_collinear_data_reports_no_fit(hs_csv, tmp_path, capsys):
    """x3 = x1 + x2: the sample covariance is singular (lavaan refuses it); CFI 1.000 used to come out."""
    data = pd.read_csv(hs_csv)
    data["x3"] = data["x1"] + data["x2"]
    data.to_csv(tmp_path / "coll.csv", index=False)
    assert np.linalg.eigvalsh(np.cov(data[["x1", "x2", "x3"]].to_numpy().T))[0] < 1e-10  # numpy agrees: singular
    assert main(["cfa", "--data", str(tmp_path / "coll.csv"), "--model", HS_MODEL, "--out", str(tmp_path / "f.json")]) == 2
    line = one_line(capsys.readouterr().err, "cfa")
    assert "not positive definite" in line and "x3 = 1*x1 + 1*x2" in line
    assert not (tmp_path / "f.json").exists()


# -- run-llm and generate-items -----------------------------------------------------------------
def _bank(tmp_path) -> Path:
    path = tmp_path / "bank.json"
    path.write_text(json.dumps(make_bank(2, "bad")))
    return path


def test_an_error_body_that_echoes_the_key_is_masked(tmp_path, capsys, monkeypatch):
    key = "sk-proj-Abc123def456GHI789jkl"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with LoopbackServer(force_status=401, error_message="Invalid credentials: {authorization}") as server:
        status = main(["run-llm", "--base-url", server.url, "--model", "m", "--item-bank", str(_bank(tmp_path)),
                       "--out", str(tmp_path / "out"), "--no-progress"])
        assert server.fake.last_headers["authorization"] == f"Bearer {key}"  # the key was sent, and echoed
    assert status == 2
    captured = capsys.readouterr()
    line = one_line(captured.err, "run-llm")
    assert "HTTP 401: " in line and "Invalid credentials: Bearer …" in line
    assert "Abc123" not in captured.err + captured.out
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert b"Abc123" not in path.read_bytes(), path


def test_a_huge_answer_is_kept_cut_and_said(tmp_path, capsys):
    huge = "like me " + "x" * 5_000_000
    with LoopbackServer(answer=huge) as server:
        assert main(["run-llm", "--base-url", server.url, "--model", "m", "--item-bank", str(_bank(tmp_path)),
                     "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "36 answers were longer than 2,000 characters: kept cut to that length" in out
    raw = [json.loads(line) for line in (tmp_path / "out" / "m_raw.jsonl").read_text().splitlines()]
    assert all(r["raw"].endswith("[cut by valueportrait: 5,000,008 characters in all]") and len(r["raw"]) < 2100 for r in raw)
    assert all(r["value"] == 5 for r in raw)  # "like me" is still read
    assert (tmp_path / "out" / "llm_cache.sqlite").stat().st_size < 2_000_000


def test_run_llm_with_an_empty_model_name_writes_nothing(tmp_path, capsys):
    assert main(["run-llm", "--backend", "simulated", "--model", " ", "--item-bank", str(_bank(tmp_path)),
                 "--out", str(tmp_path / "out")]) == 2
    assert "argument --model: ' ': an empty model name is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_generate_items_into_an_existing_folder_writes_inside_it(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    assert main(["generate-items", "--queries", str(PROJECT_ROOT / "instruments/examples/queries.csv"),
                 "--backend", "simulated", "--out", str(tmp_path / "mine"), "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing beside the folder (it wrote mine.json there)
    assert {"candidates.json", "candidates_items.json", "candidates_study.yaml", "candidates_manifest.json"} <= \
        {p.name for p in (tmp_path / "mine").iterdir()}
