"""The report's figures, drawn in a second process while the main one builds the tables.

Drawing and encoding the figures is half of ``vp report``'s time, and matplotlib's import
a good part of the rest; neither needs the tables. So the sections ask for a figure as a
:class:`Plot` (which ``figures`` function, with which data: ``later.rho_boxplots(...)``),
and :func:`analysis.reporting.html.figure` hands it to the :func:`drawer` that
:func:`analysis.report.build_report` opens: one forked worker (``valueportrait.workers``:
it dies with the command) imports matplotlib and draws while the main process goes on;
once the page is built, the main process draws the figures the worker has not started yet
(from the last one back), and the page gets each image where its placeholder stood. The
images are the same bytes as when drawn in the main process. Without an open drawer (a section function called on
its own) or without ``fork``, a Plot is drawn on the spot.
"""

from __future__ import annotations

import base64
import contextlib
import io
import multiprocessing as mp
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
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    if fmt == "svg":
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
        mime = "image/svg+xml"
    else:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        mime = "image/png"
    plt.close(fig)
    return mime, base64.b64encode(buf.getvalue()).decode("ascii")


def render(plot: Plot, fmt: str) -> tuple[str, str]:
    """Draw and encode one Plot (in the worker)."""
    return encode(plot.draw(), fmt)


def _warm_up() -> None:
    """Worker start: import matplotlib and the figures while the main process reads its tables."""
    from analysis.reporting import figures  # noqa: F401


class Drawer:
    """Figures submitted to a worker; :meth:`fill` puts them into the page."""

    def __init__(self, pool):
        self.pool = pool
        self.token = secrets.token_hex(8)
        self.jobs: dict[str, tuple[object, Callable[[str, str], str]]] = {}
        self.plots: list[tuple[object, Plot, str]] = []
        self.drawn: dict[object, tuple[str, str] | Exception] = {}

    def submit(self, plot: Plot, fmt: str, wrap: Callable[[str, str], str]) -> str:
        """A placeholder for the figure; ``wrap(mime, data)`` gives its HTML once drawn.

        The placeholder is an HTML comment: text from data is escaped, so it can never
        hold one.
        """
        from concurrent.futures.process import BrokenProcessPool

        try:
            future = self.pool.submit(render, plot, fmt)
        except BrokenProcessPool:  # the worker died (killed, out of memory): draw it here
            return wrap(*render(plot, fmt))
        key = f"<!--vp-figure-{self.token}-{len(self.jobs)}-->"
        self.jobs[key] = (future, wrap)
        self.plots.append((future, plot, fmt))
        return key

    def fill(self, page: str, failed: Callable[[str], str]) -> str:
        """The page with every placeholder replaced by its figure (``failed(reason)`` for one that could not be drawn)."""
        # The page is built: draw here the figures the worker has not started, from the last one
        # back, while the worker goes on from the first (a figure it has queued cannot be taken).
        for future, plot, fmt in reversed(self.plots):
            if not future.cancel():
                break
            try:
                self.drawn[future] = render(plot, fmt)
            except Exception as exc:  # noqa: BLE001 (named in the figure's place below)
                self.drawn[future] = exc
        from concurrent.futures.process import BrokenProcessPool

        plots = {future: (plot, fmt) for future, plot, fmt in self.plots}
        parts = {}
        for key, (future, wrap) in self.jobs.items():
            try:
                try:
                    done = self.drawn[future] if future in self.drawn else future.result()
                except BrokenProcessPool:  # the worker died (killed, out of memory): draw it here
                    done = render(*plots[future])
                if isinstance(done, Exception):
                    raise done
                parts[key] = wrap(*done)
            except Exception as exc:  # noqa: BLE001 (one broken figure must not cost the whole report)
                parts[key] = failed(f"This figure could not be drawn: {type(exc).__name__}: {exc}")
        if not parts:
            return page
        pieces = page.split("<!--vp-figure-" + self.token + "-")
        out = [pieces[0]]
        for piece in pieces[1:]:
            number, rest = piece.split("-->", 1)
            out.append(parts[f"<!--vp-figure-{self.token}-{number}-->"] + rest)
        return "".join(out)


_ACTIVE: list[Drawer] = []


def active() -> Drawer | None:
    """The drawer :func:`drawer` opened, if any."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def drawer():
    """Draw the figures of the block in one worker process (``None`` inside when fork is not available)."""
    if "fork" not in mp.get_all_start_methods():
        yield None
        return
    from valueportrait.workers import process_pool

    with process_pool(1) as pool:
        pool.submit(_warm_up)
        d = Drawer(pool)
        _ACTIVE.append(d)
        try:
            yield d
        finally:
            _ACTIVE.remove(d)
