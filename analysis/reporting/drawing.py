"""The report's figures, drawn in two other processes while the main one builds the tables.

Drawing and encoding the figures is more than half of ``vp report``'s CPU, and matplotlib's
import a good part of the rest; neither needs the tables. So the sections ask for a
figure as a :class:`Plot` (which ``figures`` function, with which data:
``later.rho_boxplots(...)``), and :func:`analysis.reporting.html.figure` hands it to the
:class:`Drawer` that :func:`drawer` opens. The drawer forks one worker, which imports
matplotlib and then forks the second worker from itself, so the import is paid once for
both; the two take the figures from one queue, first come first served, while the main
process goes on with the tables. Once the page is built, each placeholder gets its image.
The images are the same bytes as when drawn in the main process.

The workers die with the command (``valueportrait.workers.die_with_parent``: the first
with the main process, the second with the first). If either dies (killed, out of memory)
the main process draws every figure not yet back, so none is lost; a figure whose drawing
raises is named in its place. Without an open drawer (a section function called on its
own) or without ``fork``, a Plot is drawn on the spot.
"""

from __future__ import annotations

import base64
import contextlib
import io
import multiprocessing as mp
import os
import pickle
import queue
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Plot:
    """A figure to draw: ``analysis.reporting.figures.<name>(*args, **kwargs)``."""

    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def draw(self):
        from analysis.reporting import figures

        return getattr(figures, self.name)(*self.args, **self.kwargs)


class _Later:
    """``later.name(*args, **kwargs)`` -> ``Plot(name, args, kwargs)``: the figures module, not imported yet."""

    def __getattr__(self, name: str) -> Callable[..., Plot]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: Plot(name, args, kwargs)


later = _Later()


def encode(fig, fmt: str = "svg") -> tuple[str, str]:
    """(MIME type, base64 data) of a matplotlib figure as SVG (line art) or PNG (heat maps); closes it."""
    import matplotlib
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # The bounding box of what is drawn, measured once here: bbox_inches="tight" would lay the
    # figure out twice more (a dry run, then the measure) before drawing it.
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(matplotlib.rcParams["savefig.pad_inches"])
    if fmt == "svg":
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches=box)
        mime = "image/svg+xml"
    else:
        fig.savefig(buf, format="png", dpi=110, bbox_inches=box)
        mime = "image/png"
    plt.close(fig)
    return mime, base64.b64encode(buf.getvalue()).decode("ascii")


def render(plot: Plot, fmt: str) -> tuple[str, str]:
    """Draw and encode one Plot (in a worker, or here)."""
    return encode(plot.draw(), fmt)


def _warm_up() -> None:
    """Worker start: import matplotlib and the figures, and draw a small figure once.

    The first figure a process draws pays for loading the fonts and filling matplotlib's
    caches (a quarter of a second); done here, before the second worker is forked, it is
    paid once for both.
    """
    from analysis.reporting import figures

    fig, ax = figures.plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    ax.set_title("warm", fontsize=7)
    ax.set_yticks([0, 1], ["a", "b"], fontsize=6)
    encode(fig, "svg")
    fig, ax = figures.plt.subplots(figsize=(1, 1))
    ax.imshow([[0.0, 1.0]])
    encode(fig, "png")


#: "first" or "second" in a drawing worker (None in the main process).
_ROLE: str | None = None


def _serve(tasks, results) -> None:
    """A worker's loop: draw each figure from ``tasks`` until the ``None`` that ends it."""
    while True:
        job = tasks.get()
        if job is None:
            return
        number, plot, fmt = pickle.loads(job)
        try:
            out = ("ok", render(plot, fmt))
        except Exception as exc:  # noqa: BLE001 (named in the figure's place by the main process)
            out = ("error", f"{type(exc).__name__}: {exc}")
        results.put(("done", number, out))


def _second(tasks, results, parent: int) -> None:
    global _ROLE
    from valueportrait.workers import die_with_parent

    die_with_parent(parent)
    _ROLE = "second"
    _serve(tasks, results)


def _first(tasks, results, parent: int, second: bool) -> None:
    """The first worker: import matplotlib, fork the second worker from here (it has the import), draw."""
    global _ROLE
    import threading

    from valueportrait.workers import die_with_parent

    die_with_parent(parent)
    _ROLE = "first"
    try:
        _warm_up()
    except Exception:  # noqa: BLE001 (matplotlib cannot draw here: the main process draws, and names what fails)
        os._exit(1)
    watcher = None
    if second:
        other = mp.get_context("fork").Process(target=_second, args=(tasks, results, os.getpid()), daemon=True,
                                               name="vp-report-figures-2")
        other.start()

        def watch() -> None:  # the only thread that waits for the second: tell the main process if it died
            other.join()
            if other.exitcode != 0:
                results.put(("dead", other.pid))

        watcher = threading.Thread(target=watch, daemon=True, name="second-watch")
        watcher.start()
    _serve(tasks, results)
    if watcher is not None:
        watcher.join()  # the second finishes its last figure (a daemonic child dies with this process)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Drawer:
    """Figures queued for the two workers; :meth:`fill` puts them into the page."""

    def __init__(self, workers: int | None = None):
        """``workers``: 1 or 2 (default: 2 where this process may use two cores or more)."""
        if workers is None:
            workers = 2 if _cores() > 1 else 1
        ctx = mp.get_context("fork")
        self.token = secrets.token_hex(8)
        self.jobs: list[tuple[Plot, str, Callable[[str, str], str]]] = []
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        self.tasks.cancel_join_thread()  # at exit, never wait to hand figures to workers that are gone
        self.workers = max(1, min(workers, 2))
        # Not daemonic: a daemonic process may not start the second worker.
        self.first = ctx.Process(target=_first, args=(self.tasks, self.results, os.getpid(), self.workers > 1),
                                 name="vp-report-figures-1")
        self.first.start()
        self.broken = False  # a worker died: the main process draws what is not back
        self.ended = False  # the workers were told there is nothing more to draw

    def submit(self, plot: Plot, fmt: str, wrap: Callable[[str, str], str]) -> str:
        """A placeholder for the figure; ``wrap(mime, data)`` gives its HTML once drawn.

        The placeholder is an HTML comment: text from data is escaped, so it can never
        hold one. The Plot is pickled here, so a Plot that cannot be is drawn on the spot.
        """
        number = len(self.jobs)
        try:
            job = pickle.dumps((number, plot, fmt), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 (cannot cross to a worker: draw it here)
            return wrap(*render(plot, fmt))
        self.jobs.append((plot, fmt, wrap))
        self.tasks.put(job)
        return f"<!--vp-figure-{self.token}-{number}-->"

    def _collect(self) -> dict[int, tuple]:
        """Every figure's ("ok", (mime, data)) or ("error", reason), from the workers or drawn here."""
        self._end()
        done: dict[int, tuple] = {}
        while len(done) < len(self.jobs) and not self.broken:
            try:
                message = self.results.get(timeout=0.2)
            except queue.Empty:
                if not self.first.is_alive():
                    self.broken = True  # the first died (and the second with it)
                continue
            if message[0] == "done":
                done[message[1]] = message[2]
            elif message[0] == "dead":
                self.broken = True  # it may have died holding the queue's lock: take nothing more from them
        for number, (plot, fmt, _) in enumerate(self.jobs):
            if number not in done:
                try:
                    done[number] = ("ok", render(plot, fmt))
                except Exception as exc:  # noqa: BLE001 (named in the figure's place)
                    done[number] = ("error", f"{type(exc).__name__}: {exc}")
        return done

    def fill(self, page: str, failed: Callable[[str], str]) -> str:
        """The page with every placeholder replaced by its figure (``failed(reason)`` for one that could not be drawn)."""
        if not self.jobs:
            return page
        done = self._collect()
        parts = {}
        for number, (_, _, wrap) in enumerate(self.jobs):
            kind, value = done[number]
            parts[str(number)] = wrap(*value) if kind == "ok" else failed(f"This figure could not be drawn: {value}")
        pieces = page.split("<!--vp-figure-" + self.token + "-")
        out = [pieces[0]]
        for piece in pieces[1:]:
            number, rest = piece.split("-->", 1)
            out.append(parts[number] + rest)
        return "".join(out)

    def _end(self) -> None:
        """Tell each worker there is nothing more to draw (once)."""
        if not self.ended:
            self.ended = True
            for _ in range(self.workers):
                self.tasks.put(None)

    def close(self, wait: bool) -> None:
        """End the workers: let them finish (``wait``) or kill them."""
        if wait and not self.broken:
            self._end()
            self.first.join(timeout=10)  # the first waits for the second; neither has anything left to do
            if self.first.exitcode is not None:
                return
        # Only the first is killed here: the second is its child (its pid, once reaped, could be
        # another process'), and dies with it (``die_with_parent``).
        self.first.kill()
        self.first.join()


_ACTIVE: list[Drawer] = []
_EARLY: list[Drawer] = []


def start_early() -> None:
    """Fork the workers now, for the next :func:`drawer`: ``vp report`` calls this first thing.

    Forked before this process imports pandas and reads its tables, the first worker's
    import of matplotlib runs beside them instead of after them. :func:`stop_early` ends
    workers that no drawer took (the command failed before its page).
    """
    if not _EARLY and "fork" in mp.get_all_start_methods():
        _EARLY.append(Drawer())


def stop_early() -> None:
    """Kill the workers :func:`start_early` forked if no drawer took them."""
    while _EARLY:
        _EARLY.pop().close(wait=False)


def active() -> Drawer | None:
    """The drawer :func:`drawer` opened, if any."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def drawer():
    """Draw the figures of the block in two worker processes (``None`` inside when fork is not available)."""
    if "fork" not in mp.get_all_start_methods():
        yield None
        return
    d = _EARLY.pop() if _EARLY else Drawer()
    _ACTIVE.append(d)
    ok = False
    try:
        yield d
        ok = True
    finally:
        _ACTIVE.remove(d)
        d.close(wait=ok)
