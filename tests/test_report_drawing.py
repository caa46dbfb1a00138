"""vp report's figures drawn in two worker processes (analysis.reporting.drawing).

The workers must change nothing a reader sees: the page is byte for byte the one drawn in
the main process (matplotlib called directly, no worker), a figure that fails is named in
its place, a worker that dies costs no figure, and no process is left behind.
"""

from __future__ import annotations

import base64
import contextlib
import multiprocessing as mp
import os
import re
import sys
import time

import pytest

from analysis.report import build_report
from analysis.reporting import drawing
from tests.test_report import synthetic_processed

MADE = re.compile(r"made \d{4}-\d\d-\d\d \d\d:\d\d UTC")


@contextlib.contextmanager
def _no_worker():
    yield None


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'<img src="data:image/[a-z+]+;base64,([A-Za-z0-9+/=]+)"', text)]


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="the worker needs fork")
def test_worker_page_is_the_page_drawn_in_process(tmp_path, monkeypatch):
    processed = synthetic_processed(tmp_path)
    used = []
    real = drawing.Drawer.submit
    monkeypatch.setattr(drawing.Drawer, "submit", lambda self, *a: used.append(1) or real(self, *a))
    with_worker = build_report(processed)
    assert used, "no figure went to the worker"
    monkeypatch.setattr(drawing, "drawer", _no_worker)
    in_process = build_report(processed)
    assert "<!--vp-figure-" not in with_worker
    images = _images(with_worker)
    assert len(images) == len(used) and len(images) >= 5
    assert all(i.startswith(b"\x89PNG") or i.lstrip().startswith(b"<?xml") for i in images)
    assert MADE.sub("", with_worker) == MADE.sub("", in_process)
    assert not mp.active_children()  # the worker ended with the report


def test_a_figure_that_fails_is_named_in_its_place(tmp_path, monkeypatch):
    from analysis.reporting import figures

    def broken(*args, **kwargs):
        raise ValueError("no bars today")

    monkeypatch.setattr(figures, "bar_groups", broken)  # before the fork: the worker inherits it
    text = build_report(synthetic_processed(tmp_path))
    participants = text[text.index('id="participants"'):text.index('id="instruments"')]
    assert "This figure could not be drawn: ValueError: no bars today" in participants
    assert "Counts per group" in participants and "Exclusions by reason" in participants  # the rest of the section
    assert len(_images(text)) >= 4  # and the other figures
    assert not mp.active_children()


def _die() -> None:
    os._exit(1)


_HERE: list[int] = []  # figures drawn in the process that runs the test
_RENDER = drawing.render


def _render_here(plot, fmt):
    _HERE.append(os.getpid())
    return _RENDER(plot, fmt)


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="the worker needs fork")
def test_figures_are_drawn_in_process_when_the_worker_dies(tmp_path, monkeypatch):
    processed = synthetic_processed(tmp_path)
    monkeypatch.setattr(drawing, "_warm_up", _die)  # the worker dies on its first task
    _HERE.clear()
    monkeypatch.setattr(drawing, "render", _render_here)  # a module function: the worker could unpickle it
    text = build_report(processed)
    here = [pid for pid in _HERE if pid == os.getpid()]
    assert "could not be drawn" not in text, re.findall(r"could not be drawn: [^<]*", text)
    assert len(here) == len(_images(text)) >= 5  # every figure drawn here, none lost
    monkeypatch.setattr(drawing, "drawer", _no_worker)
    assert MADE.sub("", text) == MADE.sub("", build_report(processed))
    assert not mp.active_children()


def _gone(pid: int) -> bool:
    """The process has ended (a zombie counts as ended: it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pids, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(_gone(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def _children(pid: int) -> list[int]:
    with contextlib.suppress(FileNotFoundError):
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    return []


_LOG: list[str] = []  # set per test: a file each drawing process appends its role to


def _render_logged(plot, fmt):
    time.sleep(0.1)  # long enough that the second worker, forked after the first's warm-up, gets figures too
    with open(_LOG[0], "a") as fh:
        fh.write(f"{drawing._ROLE or 'main'}\n")
    return _RENDER(plot, fmt)


needs_linux_fork = pytest.mark.skipif(not sys.platform.startswith("linux") or "fork" not in mp.get_all_start_methods(),
                                      reason="two forked workers; /proc to find them")


@needs_linux_fork
def test_both_workers_draw_and_the_main_process_draws_none(tmp_path, monkeypatch):
    log = tmp_path / "roles.txt"
    _LOG[:] = [str(log)]
    monkeypatch.setattr(drawing, "render", _render_logged)
    text = build_report(synthetic_processed(tmp_path))
    roles = log.read_text().split()
    assert len(roles) == len(_images(text)) >= 5
    assert set(roles) == {"first", "second"}, roles  # the import is paid once, the drawing shared
    assert not mp.active_children()


def _second_dies(plot, fmt):
    if drawing._ROLE == "second":
        os._exit(1)
    return _RENDER(plot, fmt)


@needs_linux_fork
def test_figures_are_all_there_when_the_second_worker_dies(tmp_path, monkeypatch):
    processed = synthetic_processed(tmp_path)
    monkeypatch.setattr(drawing, "render", _second_dies)  # the second dies on the first figure it takes
    text = build_report(processed)
    assert "could not be drawn" not in text, re.findall(r"could not be drawn: [^<]*", text)
    monkeypatch.setattr(drawing, "drawer", _no_worker)
    monkeypatch.setattr(drawing, "render", _RENDER)
    assert MADE.sub("", text) == MADE.sub("", build_report(processed))  # every figure, the same bytes
    assert not mp.active_children()


@needs_linux_fork
def test_leaving_by_an_error_kills_both_workers(tmp_path):
    from analysis.reporting import figures

    frame = figures.pd.DataFrame({"group_id": ["g1", "g2"], "included": [3, 4], "excluded": [0, 1]})
    with pytest.raises(RuntimeError, match="stop"):
        with drawing.drawer() as d:
            d.submit(drawing.later.bar_groups(frame), "svg", lambda mime, data: data)
            deadline = time.monotonic() + 10
            while len(_children(d.first.pid)) < 1 and time.monotonic() < deadline:
                time.sleep(0.02)  # until the first worker has forked the second
            pids = [d.first.pid, *_children(d.first.pid)]
            assert len(pids) == 2
            raise RuntimeError("stop")
    assert _wait_gone(pids), [p for p in pids if not _gone(p)]
    assert not mp.active_children()


@needs_linux_fork
def test_vp_report_that_fails_early_leaves_no_worker(tmp_path, capsys):
    from valueportrait.cli import main

    before = set(_children(os.getpid()))
    status = main(["report", "--processed", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.html")])
    assert status == 2 and "not a folder" in capsys.readouterr().err
    assert _wait_gone(set(_children(os.getpid())) - before)
    assert not (tmp_path / "r.html").exists()
    assert not mp.active_children()
