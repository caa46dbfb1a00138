"""vp report's figures drawn in a worker process (analysis.reporting.drawing).

The worker must change nothing a reader sees: the page is byte for byte the one drawn in
the main process (matplotlib called directly, no worker), a figure that fails is named in
its place, and no process is left behind.
"""

from __future__ import annotations

import base64
import contextlib
import multiprocessing as mp
import os
import re

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
