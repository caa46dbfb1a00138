"""Bad paths, broken databases, read-only folders and full disks: one line, exit 2, nothing half-written.

One table of cases across the commands (issue 20, item 6). Each case runs `vp` as a user
would (a subprocess where the file system must misbehave, in-process otherwise) and
checks: exit status 2, exactly one error line naming the path, no traceback, and that
what the case says must not be written was not.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_env import one_line, run_vp  # noqa: E402
from test_llm_runner import make_bank  # noqa: E402
from test_quality import make_study  # noqa: E402

from valueportrait import PROJECT_ROOT  # noqa: E402
from valueportrait.cli import main  # noqa: E402

ANSWERS = PROJECT_ROOT / "instruments/examples/answers.csv"
QUERIES = PROJECT_ROOT / "instruments/examples/queries.csv"
ALL_OPTIONAL = "reliability,power,efa,cfa,replication,circumplex,intended"
CFA_MODEL = "F =~ pvq1 + pvq2 + pvq3"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Inputs every case can use: a small study, its analysis, a bank, a profile, broken databases."""
    from analysis.pipeline import analyze

    root = tmp_path_factory.mktemp("faults")
    make_study(root / "study.db").close()
    analyze(root / "study.db", root / "processed", skip=tuple(ALL_OPTIONAL.split(",")), jobs=1, log=lambda _: None)
    (root / "bank.json").write_text(json.dumps(make_bank(60, "faults")))
    (root / "profile.json").write_text('{"Benevolence": 1.0, "Power": -1.0}')
    (root / "empty.db").write_bytes(b"")
    (root / "garbage.db").write_bytes(b"this is not a database, just some text that a user gave as --db\n" * 20)
    foreign = sqlite3.connect(root / "foreign.db")
    foreign.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    foreign.commit()
    foreign.close()
    (root / "a_folder").mkdir()
    (root / "a_file").write_text("not a folder\n")
    (root / "header_only.csv").write_text(ANSWERS.read_text().splitlines()[0] + "\n")
    (root / "prompts_utf16.yaml").write_text("system: hi\n", encoding="utf-16")
    (root / "responses").mkdir()
    answers = [{"portrait_id": str(q["portrait_id"]), "option_id": o["id"], "version_responses": {"v1": 4.0},
                "numeric_response": 4.0} for q in make_bank(60, "faults") for o in q["outputs"]]
    (root / "responses" / "m.json").write_text(json.dumps(answers))
    return root


def _snapshot(folder: Path) -> dict:
    # SQLite's shared-memory index changes on any read: leave it out.
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if not p.name.endswith("-shm")} if folder.exists() else {}


# (command, arguments with {placeholders}, substring of the one error line)
IN_PROCESS = [
    ("score-instruments", ["{answers}", "--out", "{a_folder}"], "a_folder: is a folder; give a file name"),
    ("score-instruments", ["{a_folder}"], "a_folder: is a folder; a CSV of answers is needed here"),
    ("score-instruments", ["{header_only}"], "header_only.csv: no participants: the file has a header row and nothing else"),
    ("score-instruments", ["{answers}", "--out", "{a_file}/scores.csv"], "a_file: already exists (a file where a folder is needed?)"),
    ("analyze", ["--db", "{study}", "--out", "{a_file}"], "a_file: is a file; a folder is needed here"),
    ("analyze", ["--db", "{empty}", "--out", "{new}"], "empty.db: an empty database, with no study in it"),
    ("analyze", ["--db", "{garbage}", "--out", "{new}"], "garbage.db: cannot open the study database: file is not a database"),
    ("analyze", ["--db", "{foreign}", "--out", "{new}"], "foreign.db: not a valueportrait study database (it holds other tables: customers)"),
    ("analyze", ["--db", "{a_folder}", "--out", "{new}"], "a_folder: is a folder; the study database is a file"),
    ("import-release", ["{release}", "--db", "{garbage}"], "garbage.db: cannot open the study database: file is not a database"),
    ("import-release", ["{release}", "--db", "{foreign}"], "foreign.db: not a valueportrait study database"),
    ("import-release", ["{release}", "--db", "{a_folder}"], "a_folder: is a folder; the study database is a file"),
    ("import-release", ["{a_file}", "--db", "{new}/s.db"], "a_file: not a folder"),
    ("score-llm", ["--item-bank", "{bank}", "--responses", "{responses}", "--out", "{a_folder}"],
     "a_folder: is a folder; give a file name"),
    ("report", ["--processed", "{processed}", "--out", "{a_folder}"], "a_folder: is a folder; give a file name"),
    ("cfa", ["--data", "{answers}", "--model", CFA_MODEL, "--out", "{a_folder}"], "a_folder: is a folder; give a file name"),
    ("run-llm", ["--backend", "simulated", "--model", "m", "--item-bank", "{bank}", "--profile", "{profile}", "--out", "{a_file}",
                 "--no-progress"], "a_file: already exists (a file where a folder is needed?)"),
    ("run-llm", ["--backend", "simulated", "--model", "m", "--item-bank", "{bank}", "--profile", "{profile}", "--out", "{new}",
                 "--cache", "{garbage}", "--no-progress"], "garbage.db: cannot use it as the answer cache: file is not a database"),
    ("run-llm", ["--backend", "simulated", "--model", "m", "--item-bank", "{bank}", "--profile", "{profile}", "--out", "{new}",
                 "--cache", "{a_folder}", "--no-progress"], "a_folder: is a folder; the answer cache is a file"),
    ("run-llm", ["--backend", "simulated", "--model", "m", "--item-bank", "{bank}", "--profile", "{profile}", "--out", "{new}",
                 "--cache", "{foreign}", "--no-progress"], "foreign.db: not an answer cache of vp run-llm"),
    ("generate-items", ["--queries", "{queries}", "--backend", "simulated", "--prompts", "{prompts_utf16}", "--out", "{new}/c.json"],
     "prompts_utf16.yaml: UTF-16 text: save it as UTF-8"),
    ("demo", ["--out", "{a_file}", "--quick"], "a_file: is a file; a folder is needed here"),
]


def _fill(args, env, tmp_path, release=None, **extra):
    values = {name: env / f for name, f in [("study", "study.db"), ("empty", "empty.db"), ("garbage", "garbage.db"),
                                            ("foreign", "foreign.db"), ("a_folder", "a_folder"), ("a_file", "a_file"),
                                            ("header_only", "header_only.csv"), ("prompts_utf16", "prompts_utf16.yaml"),
                                            ("processed", "processed"), ("bank", "bank.json"), ("profile", "profile.json"),
                                            ("responses", "responses")]}
    values.update(answers=ANSWERS, queries=QUERIES, new=tmp_path / "new", release=release or env, **extra)
    return [a.format(**{k: str(v) for k, v in values.items()}) for a in args]


@pytest.mark.parametrize("command, args, message", IN_PROCESS, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(IN_PROCESS)])
def test_one_line_errors(env, tmp_path, capsys, command, args, message, request):
    release = None
    if "{release}" in args:
        release = request.getfixturevalue("release_dir")
    before = _snapshot(env)
    assert main([command, *_fill(args, env, tmp_path, release)]) == 2
    line = one_line(capsys.readouterr().err, command)
    assert message in line, line
    assert _snapshot(env) == before  # nothing of the inputs changed or was added
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


def test_an_empty_database_file_takes_an_import(env, release_dir, tmp_path):
    """A 0-byte file is an empty SQLite database: import-release may fill it (not an error)."""
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    assert main(["import-release", str(release_dir), "--db", str(db)]) == 0


@pytest.mark.parametrize("command, args, target", [
    ("score-instruments", ["{answers}", "--out", "{ro}/scores.csv"], "scores.csv"),
    ("analyze", ["--db", "{study}", "--out", "{ro}", "--skip", ALL_OPTIONAL], "ro"),
    ("report", ["--processed", "{processed}", "--out", "{ro}/report.html"], "report.html"),
    ("generate-items", ["--queries", "{queries}", "--backend", "simulated", "--out", "{ro}/c.json", "--no-progress"], "generate_cache.sqlite"),
    ("demo", ["--out", "{ro}", "--quick", "--replicates", "0", "--no-personas"], "ro"),
    ("import-release", ["{release}", "--db", "{ro}/study.db"], "study.db"),
    ("run-llm", ["--backend", "simulated", "--model", "m", "--item-bank", "{bank}", "--profile", "{profile}",
                 "--out", "{ro}", "--no-progress"], "llm_cache.sqlite"),
])
def test_read_only_output_folder(env, tmp_path, command, args, target, request):
    ro = tmp_path / "ro"
    ro.mkdir()
    release = request.getfixturevalue("release_dir") if "{release}" in args else None
    filled = _fill(args, env, tmp_path, release, ro=ro)
    result = run_vp([command, *filled], readonly=[ro])
    assert result.returncode == 2, result.stderr
    line = one_line(result, command)
    assert target in line and ("read-only" in line or "permission denied" in line), line
    assert list(ro.iterdir()) == []


def test_import_on_a_full_disk_reports_the_real_error_and_leaves_no_database(release_dir, tmp_path):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    result = run_vp(["import-release", release_dir, "--db", tiny / "study.db"], tiny=tiny)
    assert result.returncode == 2
    line = one_line(result, "import-release")
    assert "study.db" in line and ("disk is full" in line or "too large" in line or "no space" in line), line
    assert "cannot rollback" not in result.stderr
    assert result.tiny_files == []  # a failed import leaves no database, not even an empty one


def test_analyze_on_a_full_disk_fails_and_keeps_no_manifest(env, release_dir, tmp_path):
    """It used to record the optional step as failed and exit 0."""
    from analysis.release import import_release
    from valueportrait.storage import open_db

    with open_db(tmp_path / "release.db") as db:
        import_release(release_dir, db)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    result = run_vp(["analyze", "--db", tmp_path / "release.db", "--out", tiny / "processed", "--no-progress",
                     "--skip", "reliability,efa,cfa,replication"], tiny=tiny)
    assert result.returncode == 2, result.stderr
    line = one_line(result, "analyze")
    assert f"{tiny / 'processed'}/" in line and ".vp-staging" not in line, line
    assert not any(name.endswith("manifest.json") for name in result.tiny_files), result.tiny_files


def test_run_llm_on_a_full_disk_is_one_line(env, tmp_path):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tmp_path / "bank.json").write_text(json.dumps(make_bank(400, "full")))
    result = run_vp(["run-llm", "--backend", "simulated", "--model", "m", "--item-bank", tmp_path / "bank.json",
                     "--profile", env / "profile.json", "--out", tiny, "--no-progress"], tiny=tiny)
    assert result.returncode == 2, result.stderr[-2000:]
    line = one_line(result, "run-llm")
    assert "llm_cache.sqlite" in line, line
    assert len(result.stderr.splitlines()) <= 3, result.stderr[-2000:]  # it printed 823 lines


def test_a_failed_import_creates_no_database(tmp_path, release_dir, capsys):
    broken = tmp_path / "release"
    for path in release_dir.rglob("*"):
        if path.is_file():
            (broken / path.relative_to(release_dir)).parent.mkdir(parents=True, exist_ok=True)
            (broken / path.relative_to(release_dir)).write_bytes(path.read_bytes())
    survey = broken / "data/prolific/survey/main/survey.json"
    survey.write_text(survey.read_text()[:-100])
    assert main(["import-release", str(broken), "--db", str(tmp_path / "new.db")]) == 2
    assert "survey.json: not valid JSON" in one_line(capsys.readouterr().err, "import-release")
    assert list(tmp_path.glob("new.db*")) == []
