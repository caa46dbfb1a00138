"""Output folders: workers die with vp analyze, one run at a time, a manifest that describes exactly its tables.

The kill tests run the real command on the release and kill it while its worker processes
compute the psychometric steps: kill -9 (the workers must be gone within 2 s, and the
folder must still be the previous run's, manifest and tables alike) and SIGTERM (a clean
exit 143 that leaves the folder as it was).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_env import VP, one_line  # noqa: E402
from test_analyze import release_db  # noqa: E402,F401  (the release imported once per module)

from valueportrait.cli import main  # noqa: E402
from valueportrait.outdir import JOURNAL, StagedOutput, folder_lock, verify  # noqa: E402

ALL_OPTIONAL = "reliability,power,efa,cfa,replication,circumplex,intended"


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _start_and_wait_for_workers(args, timeout=120) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen([*VP, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = _children(proc.pid)
        if len(workers) >= 2:
            time.sleep(0.5)  # let them start on their steps
            return proc, _children(proc.pid)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no worker processes appeared: {proc.communicate()[1][-2000:]}")


def _tables(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


@pytest.fixture
def previous_run(release_db, tmp_path):
    """A finished analysis (threshold 0.3) in `out`, as a researcher would have before rerunning."""
    out = tmp_path / "out"
    assert main(["analyze", "--db", str(release_db), "--out", str(out), "--skip", "reliability,efa,cfa,replication",
                 "--no-progress"]) == 0
    return out, _tables(out)


@pytest.mark.slow
def test_kill_9_leaves_no_worker_and_a_manifest_that_matches_its_tables(release_db, previous_run):
    out, before = previous_run
    proc, workers = _start_and_wait_for_workers(["analyze", "--db", release_db, "--out", out, "--threshold", "0.2",
                                                 "--jobs", "2", "--no-progress"])
    assert workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(2)
    assert [w for w in workers if _alive(w)] == []
    time.sleep(3)  # before the fix, orphans kept rewriting tables for about 15 s
    assert _tables(out) == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["threshold"] == 0.3 and verify(out, manifest) == []


@pytest.mark.slow
def test_sigterm_is_a_clean_exit_like_ctrl_c(release_db, previous_run):
    out, before = previous_run
    proc, workers = _start_and_wait_for_workers(["analyze", "--db", release_db, "--out", out, "--threshold", "0.2",
                                                 "--jobs", "2", "--no-progress"])
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert "vp analyze: terminated (SIGTERM)" in err and "Traceback" not in err
    time.sleep(2)
    assert [w for w in workers if _alive(w)] == []
    assert _tables(out) == before and not list(out.glob(".vp-staging-*"))


@pytest.mark.slow
def test_demo_killed_leaves_no_worker(tmp_path):
    proc, workers = _start_and_wait_for_workers(["demo", "--out", tmp_path / "demo", "--quick", "--replicates", "0",
                                                 "--no-personas", "--bootstrap", "0"])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(2)
    assert [w for w in workers if _alive(w)] == []
    assert not (tmp_path / "demo" / "processed" / "manifest.json").exists()


def test_a_second_run_into_the_same_folder_is_refused(release_db, tmp_path, capsys):
    out = tmp_path / "out"
    # Bootstrap resamples keep the first run busy long enough for the second to start.
    first = subprocess.Popen([*VP, "analyze", "--db", str(release_db), "--out", str(out), "--skip", ALL_OPTIONAL,
                              "--bootstrap", "4000", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ((out / ".vp.lock").exists() and f"pid {first.pid}" in (out / ".vp.lock").read_text()):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    second = subprocess.run([*VP, "analyze", "--db", str(release_db), "--out", str(out), "--threshold", "0.2",
                             "--skip", ALL_OPTIONAL, "--no-progress"], capture_output=True, text=True)
    assert second.returncode == 2
    line = one_line(second, "analyze")
    assert f"another run is writing into this folder (vp analyze, pid {first.pid}" in line
    assert first.poll() is None, "the first run ended before the second started: the test proved nothing"
    assert first.wait(timeout=300) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["threshold"] == 0.3 and verify(out, manifest) == []


def test_the_lock_goes_with_its_holder(tmp_path):
    with folder_lock(tmp_path / "out", "a test"):
        with pytest.raises(Exception, match="another run is writing into this folder \\(a test, pid"):
            with folder_lock(tmp_path / "out", "another"):
                pass
    with folder_lock(tmp_path / "out", "after"):  # released: free again
        pass


def test_the_manifest_records_every_table_as_written(release_db, tmp_path):
    from analysis.pipeline import analyze

    manifest = analyze(release_db, tmp_path / "o", skip=("reliability", "efa", "cfa", "replication"), jobs=1,
                       log=lambda _: None)
    tables = manifest["tables"]
    assert set(tables) == {p.name for p in (tmp_path / "o").iterdir() if not p.name.startswith(".")} - {"manifest.json"}
    for name, entry in tables.items():
        data = (tmp_path / "o" / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
        if name.endswith(".csv"):
            assert entry["rows"] == len(pd.read_csv(tmp_path / "o" / name))
    assert tables["correlations.csv"]["rows"] == 9880 and tables["item_bank.json"]["rows"] == 101
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["tables"] == tables


def test_a_swap_cut_short_is_cleaned_up_by_the_next_run(tmp_path, monkeypatch):
    import valueportrait.outdir as outdir

    folder = tmp_path / "out"
    with StagedOutput(folder, "test") as out:
        for name in ("a.csv", "b.csv"):
            (out.staging / name).write_text("x\n1\n")
        out.commit({"settings": {"run": 1}})
    real_replace, calls = os.replace, []

    def dying_replace(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # the journal, then one table: killed here
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(outdir.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        with StagedOutput(folder, "test") as out:
            for name in ("a.csv", "c.csv"):
                (out.staging / name).write_text("y\n2\n")
            out.commit({"settings": {"run": 2}})
    monkeypatch.setattr(outdir.os, "replace", real_replace)
    assert not (folder / "manifest.json").exists() and (folder / JOURNAL).exists()
    lines = []
    with StagedOutput(folder, "test", log=lines.append):
        pass
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == []
    assert lines and lines[0].startswith("removed a.csv") and not (folder / JOURNAL).exists()


def test_a_stopped_run_changes_nothing(tmp_path):
    folder = tmp_path / "out"
    with StagedOutput(folder, "test") as out:
        (out.staging / "a.csv").write_text("x\n1\n")
        out.commit({"settings": {}})
    before = _tables(folder)
    with pytest.raises(RuntimeError):
        with StagedOutput(folder, "test") as out:
            (out.staging / "a.csv").write_text("other\n")
            raise RuntimeError("a step failed")
    assert _tables(folder) == before and not list(folder.glob(".vp-staging-*"))


# -- vp report checks the tables against the manifest -------------------------------------------
@pytest.fixture(scope="module")
def two_runs(release_db, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for threshold in ("0.3", "0.4"):
        assert main(["analyze", "--db", str(release_db), "--out", str(root / threshold), "--threshold", threshold,
                     "--skip", "reliability,efa,cfa,replication", "--no-progress"]) == 0
    return root


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_report_refuses_a_table_from_another_run(two_runs, tmp_path, capsys):
    mixed = _copy(two_runs / "0.3", tmp_path / "mixed")
    (mixed / "selection.csv").write_bytes((two_runs / "0.4" / "selection.csv").read_bytes())
    keyed = json.loads((mixed / "manifest.json").read_text())["tables"]["selection.csv"]["rows"]
    now = len(pd.read_csv(mixed / "selection.csv"))
    assert now < keyed
    assert main(["report", "--processed", str(mixed), "--out", str(tmp_path / "r.html")]) == 2
    line = one_line(capsys.readouterr().err, "report")
    assert f"selection.csv: not the file manifest.json describes ({now:,} rows now, {keyed:,} when the analysis wrote it)" in line
    assert not (tmp_path / "r.html").exists()


def test_report_refuses_a_cut_off_table_and_can_show_it_with_a_warning(two_runs, tmp_path, capsys):
    cut = _copy(two_runs / "0.3", tmp_path / "cut")
    lines = (cut / "correlations.csv").read_text().splitlines(keepends=True)
    (cut / "correlations.csv").write_text("".join(lines[:14]) + lines[14][:20])  # 13 rows and a half
    assert main(["report", "--processed", str(cut), "--out", str(tmp_path / "r.html")]) == 2
    assert "correlations.csv: not the file manifest.json describes (14 rows now, 9,880" in capsys.readouterr().err
    assert main(["report", "--processed", str(cut), "--out", str(tmp_path / "r.html"), "--allow-mismatch"]) == 0
    assert "vp report: warning: correlations.csv" in capsys.readouterr().err
    html = (tmp_path / "r.html").read_text()
    assert 'class="alarm"' in html and "not the ones its manifest.json describes" in html


def test_report_checks_the_settings_against_the_selection(two_runs, tmp_path, capsys):
    edited = _copy(two_runs / "0.3", tmp_path / "edited")
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["settings"]["threshold"] = 0.4  # the manifest says 0.4; the table is 0.3's
    (edited / "manifest.json").write_text(json.dumps(manifest))
    sel = pd.read_csv(edited / "selection.csv")
    below = int((sel["rho"] < 0.4).sum())
    assert main(["report", "--processed", str(edited), "--out", str(tmp_path / "r.html")]) == 2
    assert f"selection.csv: {below:,} of its {len(sel):,} keyed pairs do not meet the rule manifest.json records (rho >= 0.4 " \
           "and p < 0.05)" in capsys.readouterr().err


def test_report_refuses_a_missing_table_and_warns_of_an_unchecked_manifest(two_runs, tmp_path, capsys):
    gone = _copy(two_runs / "0.3", tmp_path / "gone")
    (gone / "power.csv").unlink()
    assert main(["report", "--processed", str(gone), "--out", str(tmp_path / "r.html")]) == 2
    assert "power.csv: listed in manifest.json but missing from the folder" in capsys.readouterr().err
    # A manifest from before checksums (or written by hand): nothing to check, said loudly.
    old = _copy(two_runs / "0.3", tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["tables"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert main(["report", "--processed", str(old), "--out", str(tmp_path / "r.html")]) == 0
    assert "vp report: warning: manifest.json records no checksums of its tables" in capsys.readouterr().err
    html = (tmp_path / "r.html").read_text()
    assert 'class="alarm"' in html and "manifest.json records no checksums" in html
