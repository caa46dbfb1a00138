"""vp analyze end to end: the contracted files and columns, the manifest, and the release's figures."""

import json

import pandas as pd
import pytest

from analysis.pipeline import analyze
from analysis.release import import_release
from valueportrait.cli import main
from valueportrait.storage import open_db

FAST = "reliability,efa,cfa,replication"  # psychometric steps with their own tests that take seconds


@pytest.fixture(scope="module")
def release_db(release_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("an") / "study.db"
    with open_db(path) as db:
        import_release(release_dir, db)
    return path


def test_vp_analyze_writes_the_contracted_files(release_db, release_dir, tmp_path, capsys):
    out = tmp_path / "processed"
    assert main(["analyze", "--db", str(release_db), "--out", str(out), "--skip", FAST]) == 0
    err = capsys.readouterr().err
    assert "duplicate: flagged 1" in err and "P186/g06" in err
    assert "speeder: not applicable: the data has no start/completion times" in err
    corr = pd.read_csv(out / "correlations.csv", dtype={"portrait_id": str})
    assert list(corr.columns)[:11] == ["group_id", "portrait_id", "option_id", "family", "dimension",
                                       "rho", "p_value", "q_value", "n", "ci_low", "ci_high"]
    assert list(corr.columns)[11:] == ["fz_ci_low", "fz_ci_high"]
    assert len(corr) == 9880 and corr["ci_low"].isna().all()
    assert set(corr["family"]) == {"pvq", "higher_pvq", "bfi"}
    assert "Self_Direction" in set(corr["dimension"]) and "Openness_to_Change" in set(corr["dimension"])
    # g06 is rated by 48 people in the release; P186's second participation is left out.
    assert corr.loc[corr.group_id == "g06", "n"].unique().tolist() == [47]
    sel = pd.read_csv(out / "selection.csv", dtype={"portrait_id": str})
    assert list(sel.columns) == ["portrait_id", "option_id", "family", "dimension", "rho", "p_value"]
    assert ((sel.rho >= 0.3) & (sel.p_value < 0.05)).all()
    quality = pd.read_csv(out / "quality.csv", keep_default_na=False)
    assert list(quality.columns) == ["participant_id", "group_id", "included", "reasons"]
    assert len(quality) == 560
    bank = json.loads((out / "item_bank.json").read_text())
    assert sum(len(q["outputs"]) for q in bank) == len(sel[["portrait_id", "option_id"]].drop_duplicates())
    manifest = json.loads((out / "manifest.json").read_text())
    from valueportrait import __version__
    assert manifest["version"] == __version__
    import scipy
    assert manifest["versions"]["scipy"] == scipy.__version__  # the Methods paragraph quotes these
    assert manifest["settings"] | {} == manifest["settings"] and manifest["settings"]["threshold"] == 0.3
    counts = manifest["counts"]
    assert counts["participants"] == 559 and counts["included_participations"] == 559
    assert counts["excluded_per_rule"] == {"duplicate": 1, "attention": None, "straightlining": 0,
                                           "speeder": None, "incomplete": 0}
    assert counts["keyed"]["pvq"]["keyed_pairs"] == len(sel[sel.family == "pvq"])
    assert counts["pairs"] == 9880
    assert any("P186" in n for n in manifest["notes"])
    # people in the release's value scores who rated nothing, counted from its files directly
    scored = set(json.loads((release_dir / "data/prolific/value/main/value.json").read_text()))
    survey = json.loads((release_dir / "data/prolific/survey/main/survey.json").read_text())
    raters = {p for group in survey for options in group.values() for o in options for _, p in o["data"]}
    assert counts["participants_without_ratings"] == len(scored - raters) == 10
    import platform
    assert manifest["versions"]["python"] == platform.python_version()
    assert manifest["steps"]["cfa"]["status"] == "skipped"
    circ = pd.read_csv(out / "circumplex.csv")
    assert len(circ) == 520 and manifest["steps"]["circumplex"]["status"] == "ok"
    assert not list(out.glob(".*tmp"))  # no temporary files left behind


def test_input_hash_is_stable_and_tracks_the_data(release_db, release_dir, tmp_path):
    a = analyze(release_db, tmp_path / "a", skip=tuple(FAST.split(",")), log=lambda _: None)
    with open_db(release_db) as db:  # a re-import changes no data...
        import_release(release_dir, db)
    b = analyze(release_db, tmp_path / "b", skip=tuple(FAST.split(",")), log=lambda _: None)
    assert a["input_sha256"] == b["input_sha256"]
    changed = tmp_path / "changed.db"
    changed.write_bytes(release_db.read_bytes())
    with open_db(changed) as db:  # ...while one changed rating changes the hash
        db.conn.execute("UPDATE ratings SET rating = 7 - rating WHERE participant_id = 'P506' AND portrait_id = '1021' AND option_id = 1")
    c = analyze(changed, tmp_path / "c", skip=tuple(FAST.split(",")), log=lambda _: None)
    assert c["input_sha256"] != a["input_sha256"]


def test_keying_abs_and_bootstrap(release_db, tmp_path):
    out = tmp_path / "abs"
    manifest = analyze(release_db, out, keying="abs", bootstrap=50, seed=1, skip=tuple(FAST.split(",")), log=lambda _: None)
    sel = pd.read_csv(out / "selection.csv")
    assert list(sel.columns)[-1] == "reversed"
    assert (sel.loc[sel.reversed, "rho"] <= -0.3).all() and sel.reversed.any()
    corr = pd.read_csv(out / "correlations.csv")
    assert corr["ci_low"].notna().all() and (corr["ci_low"] <= corr["ci_high"]).all()
    assert manifest["settings"]["bootstrap"] == 50
    bank = json.loads((out / "item_bank.json").read_text())
    assert all("reversed" in o for q in bank for o in q["outputs"])


def test_planted_respondents_are_excluded_by_analyze(tmp_path):
    from test_quality import make_study  # tests/ is on sys.path (no __init__.py)

    make_study(tmp_path / "q.db").close()
    manifest = analyze(tmp_path / "q.db", tmp_path / "out", skip=tuple(FAST.split(",")), log=lambda _: None)
    assert manifest["counts"]["excluded_per_rule"] == {"duplicate": 1, "attention": 1, "straightlining": 2,
                                                       "speeder": 1, "incomplete": 1}
    assert manifest["counts"]["included_participations"] == 20
    corr = pd.read_csv(tmp_path / "out" / "correlations.csv")
    assert corr.loc[corr.group_id == "g01", "n"].unique().tolist() == [14]
    assert manifest["score_source"].startswith("raw")


def test_a_rerun_removes_tables_it_did_not_write(tmp_path):
    """A table left by an earlier run would be read as this run's (by the report, by people)."""
    import analysis.pipeline as pipeline
    from test_quality import make_study

    assert set(pipeline.STEP_FILES) == set(pipeline.OPTIONAL_STEPS)
    make_study(tmp_path / "q.db").close()
    out = tmp_path / "out"
    first = analyze(tmp_path / "q.db", out, skip=tuple(FAST.split(",")), jobs=1, log=lambda _: None)
    assert (out / "power.csv").exists() and (out / "circumplex.csv").exists()
    (out / "my_notes.txt").write_text("mine")
    lines = []
    second = analyze(tmp_path / "q.db", out, skip=tuple(FAST.split(",")) + ("power", "circumplex"), jobs=1,
                     log=lines.append)
    assert not (out / "power.csv").exists() and not (out / "circumplex.csv").exists()
    assert (out / "my_notes.txt").read_text() == "mine"  # only the analysis's own tables go
    assert any(line.startswith("removed circumplex.csv, power.csv") for line in lines), lines
    assert set(second["files"]) == set(first["files"]) - {"power", "circumplex"}
    assert all((out / name).exists() for name in second["files"].values())


def test_a_failing_optional_step_is_recorded_and_the_rest_written(release_db, tmp_path, monkeypatch):
    import analysis.pipeline as pipeline

    def broken(ctx):
        raise RuntimeError("planted failure")

    monkeypatch.setitem(pipeline.STEP_FUNCTIONS, "power", broken)
    manifest = analyze(release_db, tmp_path / "o", skip=tuple(FAST.split(",")), jobs=1, log=lambda _: None)
    assert manifest["steps"]["power"] == {"status": "failed", "detail": "RuntimeError: planted failure"}
    assert manifest["steps"]["circumplex"]["status"] == "ok"
    assert (tmp_path / "o" / "circumplex.csv").exists() and not (tmp_path / "o" / "power.csv").exists()


@pytest.mark.slow
def test_full_analysis_with_psychometric_steps(release_db, tmp_path):
    manifest = analyze(release_db, tmp_path / "full", jobs=2, log=lambda _: None)
    serial = analyze(release_db, tmp_path / "serial", jobs=1, log=lambda _: None)
    for name in manifest["files"].values():  # worker processes change nothing in the results
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes(), name
    assert serial["files"] == manifest["files"]
    names = {"efa": "efa_loadings", "cfa": "cfa_fit"}
    for step in ("reliability", "power", "efa", "cfa", "replication", "circumplex"):
        assert manifest["steps"][step]["status"] == "ok", manifest["steps"][step]
        assert (tmp_path / "full" / manifest["files"][names.get(step, step)]).exists()
    assert (tmp_path / "full" / "replication_shrinkage.csv").exists()
    # Improper one-factor solutions are named, with lavaan's unbounded variances.
    fit = pd.read_csv(tmp_path / "full" / "cfa_fit.csv", dtype={"scope": str}, keep_default_na=False,
                      na_values=[""])
    assert list(fit.columns)[-2:] == ["note", "warning"]
    heywood = fit[fit["note"].fillna("").str.contains("negative residual variance")]
    assert len(heywood) and heywood["warning"].all()
    assert manifest["counts"]["cfa_warnings"] == int(fit["warning"].sum())


def test_psychometric_tables_carry_their_warnings_on_the_release(release_db, tmp_path):
    """The release's improper results are named beside the numbers (issue 13's findings)."""
    out = tmp_path / "psy"
    manifest = analyze(release_db, out, skip=("replication", "cfa"), jobs=1, log=lambda _: None)
    rel = pd.read_csv(out / "reliability.csv", dtype={"scope": str})
    assert list(rel.columns)[:11] == ["family", "dimension", "scope", "n_items", "n", "alpha", "alpha_ci_low",
                                      "alpha_ci_high", "spearman_brown", "omega", "note"]
    # g10's two Stimulation items correlate negatively: alpha -0.41, shown before without a word.
    row = rel[(rel.scope == "g10") & (rel.dimension == "Stimulation")].iloc[0]
    assert round(row.alpha, 2) == -0.41 and row.note.startswith("negative alpha (-0.41)") and row.warning
    assert manifest["counts"]["reliability_warnings"] == int(rel["warning"].sum()) > 0
    items = pd.read_csv(out / "reliability_items.csv", dtype={"scope": str})
    assert len(items) == rel.loc[rel.n_items.notna(), "n_items"].sum()
    # Every group has about as many items as raters and a KMO of .10-.39: none is factored,
    # and the table says why for each (before: factors and loadings were reported).
    efa = pd.read_csv(out / "efa_loadings.csv")
    assert sorted(efa["group_id"]) == [f"g{i:02d}" for i in range(1, 13)] and (efa["status"] == "skipped").all()
    assert efa["loading"].isna().all() and efa["note"].str.startswith("not factored: ").all()
    assert efa["note"].str.contains("KMO 0.").sum() == 11 and efa["kmo"].max() < 0.4
    assert manifest["counts"]["efa_groups"] == {"fitted": 0, "not_factored": 12}
    assert manifest["settings"]["efa_min_kmo"] == 0.5


def test_efa_min_kmo_option(release_db, tmp_path, capsys):
    assert main(["analyze", "--db", str(release_db), "--out", str(tmp_path / "x"), "--efa-min-kmo", "1.5"]) == 2
    assert "--efa-min-kmo: 1.5" in capsys.readouterr().err


def test_chance_baseline_written_and_switched_off(release_db, tmp_path, capsys):
    """--permutations N writes chance.csv (contracted columns, one row per family and dimension plus
    a total per family), the manifest's family totals and the log line; 0 switches it off."""
    from analysis.chance import CHANCE_COLUMNS

    out = tmp_path / "processed"
    assert main(["analyze", "--db", str(release_db), "--out", str(out), "--skip", FAST, "--permutations", "40",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    chance = pd.read_csv(out / "chance.csv")
    assert list(chance.columns)[: len(CHANCE_COLUMNS)] == CHANCE_COLUMNS
    assert chance.groupby("family").size().to_dict() == {"pvq": 11, "higher_pvq": 5, "bfi": 6}
    assert (chance.groupby("family")["dimension"].last() == "all").all()
    manifest = json.loads((out / "manifest.json").read_text())
    totals = manifest["counts"]["chance"]
    assert set(totals) == {"pvq", "higher_pvq", "bfi"}
    assert set(totals["pvq"]) == {"observed", "expected_mean", "expected_low", "expected_high", "false_key_share"}
    for fam, t in totals.items():  # the observed keys are the selection's
        assert t["observed"] == manifest["counts"]["keyed"][fam]["keyed_pairs"]
        assert t["expected_low"] <= t["expected_mean"] <= t["expected_high"]
    pvq = totals["pvq"]
    line = (f"chance: pvq: 287 keyed, {pvq['expected_mean']:.0f} [{pvq['expected_low']:.0f}-"
            f"{pvq['expected_high']:.0f}] expected by chance")
    assert line in err
    assert manifest["settings"]["permutations"] == 40 and manifest["steps"]["chance"]["status"] == "ok"
    assert {"chance", "chance_distributions", "chance_circumplex"} <= set(manifest["files"])

    assert main(["analyze", "--db", str(release_db), "--out", str(out), "--skip", FAST, "--permutations", "0",
                 "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"]["chance"] == {"status": "skipped"} and "chance" not in manifest["counts"]
    assert not (out / "chance.csv").exists() and not (out / "chance_distributions.csv").exists()

    capsys.readouterr()
    assert main(["analyze", "--db", str(release_db), "--out", str(tmp_path / "x"), "--permutations", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--permutations: -1" in err


def test_json_lines_are_json_dumps_row_by_row():
    # The input hash's fast row encoding against json.dumps itself, on values that are equal
    # as keys but not as JSON (1, 1.0, True), NaN, None, non-ASCII text and quotes.
    import json
    import math

    from analysis.dataset import json_lines

    rows = [("P1", 1, 1.0, None, "été"), ("P1", 1.0, True, math.nan, 'a "q" \\ b'), ("P2", True, 1, 2.5, "x"),
            ("P2", 1, 1.0, None, "été")]
    expected = "".join(json.dumps(list(r), separators=(",", ":"), default=str) + "\n" for r in rows)
    assert json_lines(rows) == expected
    assert json_lines([]) == ""
