"""Light bots: simulated participants that speak Streamlit's websocket protocol, no browser.

A browser bot costs a Chromium renderer (175-350 MB and a good share of a core for the React
bundle), so two cores run about fifteen of them. A websocket bot is what the browser would
send and receive, without the browser: it opens ``ws://HOST:PORT/_stcore/stream`` (subprotocol
``streamlit``), asks for a script run with the participant's query string
(``BackMsg.rerun_script``), gathers the elements the run draws (``ForwardMsg.delta``) until
``script_finished``, reads the page from the ``data-vp-page`` / ``data-vp-step`` markers the
pages emit, and answers by sending the form's widget values together with the submit
button's trigger in one rerun, as the frontend does when a form is submitted. The server
runs the same script, callbacks and database writes as for a person; only the React
rendering is skipped. A hundred such bots take tens of megabytes.

The answers come from the same :class:`collection_app.bots.Profile` as the browser bots
(consistent, random, straight-liner, speeder, attention-check failer); a *refresher* closes
the websocket and opens a new one with the same link (a new Streamlit session with empty
``st.session_state``, as a reload gives), a *returner* does the same after a pause. A step's
latency is the time from sending the rerun to its ``script_finished``.

The protocol is Streamlit's own and undocumented; it is pinned by the installed version's
protobufs (``streamlit.proto``), and ``tests/test_wsbot.py`` runs it against the real server.
"""

from __future__ import annotations

import asyncio
import html
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from collection_app import bots
from collection_app.bots import BotResult, Participant

_MARK_PAGE = re.compile(r'data-vp-page="([^"]*)"')
_MARK_STEP = re.compile(r'data-vp-step="(\d+)"')
_ROLE = re.compile(r'<div[^>]*\bdata-vp-role="([^"]+)"[^>]*>(.*?)</div>', re.S)
_WIDGETS = ("radio", "selectbox", "number_input", "text_input", "button")


class StuckError(Exception):
    """The server drew no new page in time (or closed the connection)."""


@dataclass
class View:
    """What one script run drew: its elements in document order, and what the markers say."""

    elements: list[tuple[str, object]] = field(default_factory=list)  # (element type, proto)
    page: str = ""
    step: int | None = None
    roles: dict[str, str] = field(default_factory=dict)  # data-vp-role -> its (first) text, unescaped
    texts: list[tuple[str, str]] = field(default_factory=list)  # every (role, text), in page order
    error: str | None = None  # an exception element (never shown in detail to participants)

    @property
    def key(self) -> str:
        """The same 'page:step' key the browser bots read from the DOM."""
        return f"{self.page}:{'' if self.step is None else self.step}" if self.page else ""

    def widgets(self, kind: str) -> list:
        return [proto for t, proto in self.elements if t == kind]

    def widget(self, kind: str, label: str):
        for proto in self.widgets(kind):
            if proto.label == label:
                return proto
        raise LookupError(f"no {kind} labelled {label!r} on page {self.key}")

    @classmethod
    def from_run(cls, by_path: dict[tuple, tuple[str, object]]) -> View:
        view = cls(elements=[by_path[p] for p in sorted(by_path)])
        for kind, proto in view.elements:
            if kind == "exception":
                view.error = proto.message or "exception"
            if kind not in ("html", "markdown"):
                continue
            body = proto.body
            if not view.page:  # the first marker, like document.querySelector('[data-vp-page]')
                m = _MARK_PAGE.search(body)
                if m:
                    view.page = m.group(1)
                    s = _MARK_STEP.search(body)
                    view.step = int(s.group(1)) if s else None
            for role, inner in _ROLE.findall(body):
                view.roles.setdefault(role, html.unescape(inner))
                view.texts.append((role, html.unescape(inner)))
        return view

    def all(self, role: str) -> list[str]:
        return [text for r, text in self.texts if r == role]


class Connection:
    """One websocket: one Streamlit session, as one browser tab has."""

    def __init__(self, url: str, query_string: str, timeout: float):
        parts = urlsplit(url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        self.ws_url = f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/_stcore/stream"
        self.query_string, self.timeout = query_string, timeout
        self.ws = None
        self.page_script_hash = ""

    async def connect(self) -> None:
        # The first subprotocol entry is the one selected; the browser puts an XSRF token and
        # a session id to resume in the next two, which a new tab does not have.
        self.ws = await asyncio.wait_for(
            connect(self.ws_url, subprotocols=["streamlit"], max_size=None, open_timeout=self.timeout,
                    compression=None), self.timeout)

    async def open(self) -> View:
        """A new tab: connect, and ask for the page."""
        await self.connect()
        return await self.rerun([])

    async def close(self) -> None:
        if self.ws is not None:
            ws, self.ws = self.ws, None
            await ws.close()

    async def rerun(self, widget_states: list[tuple[str, str, object]]) -> View:
        """Send one rerun with these (widget id, value field, value) states; the run's page."""
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = self.query_string
        state.page_script_hash = self.page_script_hash
        for wid, field_name, value in widget_states:
            w = state.widget_states.widgets.add()
            w.id = wid
            setattr(w, field_name, value)
        await self.ws.send(msg.SerializeToString())
        return await self._collect()

    async def _collect(self) -> View:
        by_path: dict[tuple, tuple[str, object]] = {}
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StuckError("no script_finished in time")
            data = await asyncio.wait_for(self.ws.recv(), left)
            fwd = ForwardMsg()
            fwd.ParseFromString(data)
            kind = fwd.WhichOneof("type")
            if kind == "new_session":
                # Each run starts with one: what came before belongs to an older run.
                by_path.clear()
                self.page_script_hash = fwd.new_session.page_script_hash
            elif kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
                el = fwd.delta.new_element
                el_kind = el.WhichOneof("type")
                by_path[tuple(fwd.metadata.delta_path)] = (el_kind, getattr(el, el_kind))
            elif kind == "script_finished":
                if fwd.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    continue  # another run follows and draws the page
                return View.from_run(by_path)


class WsBot(Participant):
    """One simulated participant over the websocket protocol (see the module docstring)."""

    retryable = (LookupError,)  # a widget missing from the page

    def __init__(self, base_url: str, behaviour: str, think: float, rng: random.Random,
                 value_of_response: dict[str, str], timeout: float, participant_id: str | None = None):
        super().__init__(behaviour, think, rng, value_of_response, timeout, participant_id)
        self.base_url = base_url
        self.conn: Connection | None = None
        self.view = View()

    @property
    def page_script_hash(self) -> str:
        return self.conn.page_script_hash if self.conn else ""

    # -- plumbing -------------------------------------------------------------------------
    async def _open(self, kind: str = "load") -> None:
        """Open the link in a new 'tab', retrying while the server is away (restart)."""
        await self._close()
        for attempt in range(30):
            self.conn = Connection(self.base_url, self.query, self.timeout)
            t0 = time.perf_counter()
            try:
                self.view = await self.conn.open()
                self.result.latencies.append((kind, time.perf_counter() - t0))
                return
            except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, asyncio.TimeoutError, StuckError):
                await self._close()
                if attempt == 29:
                    raise
                await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))

    async def _close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                await conn.close()
            except Exception:  # noqa: BLE001 - a dead connection is closed enough
                pass

    def _where(self) -> tuple[str, int | None, str]:
        return self.view.page, self.view.step, self.view.key

    async def _completion_code(self) -> str | None:
        return (self.view.roles.get("completion-code") or "").strip() or None

    async def _press(self, kind: str, label: str) -> bool:
        return await self._submit(kind, [(self._button(label).id, "trigger_value", True)])

    def _stuck_detail(self) -> str:
        return f": {self.view.error}" if self.view.error else ""

    async def _submit(self, kind: str, states: list[tuple[str, str, object]]) -> bool:
        """Send a rerun; True if a new page came back (the answer before it is stored).

        If the connection is gone (the server went away while the bot thought, or while it
        waited), do what a browser tab does: reconnect on its own, keep the page it shows,
        and send the same press again on the new connection, whose server session has never
        drawn that page. That press must be stored like any other (``reconnect_presses``).
        """
        prev, t0 = self.view.key, time.perf_counter()
        try:
            view = await self.conn.rerun(states)
        except (ConnectionClosed, OSError):
            if not await self._reconnect():
                return False
            t0 = time.perf_counter()
            try:
                view = await self.conn.rerun(states)
            except (ConnectionClosed, OSError, asyncio.TimeoutError, StuckError):
                self.result.reconnect_presses.append((prev, False))
                return False
            self.result.reconnect_presses.append((prev, bool(view.key) and view.key != prev))
        except (asyncio.TimeoutError, StuckError):
            return False
        self.result.latencies.append((kind, time.perf_counter() - t0))
        self.view = view
        return bool(view.key) and view.key != prev

    async def _reconnect(self, attempts: int = 40) -> bool:
        """A new websocket to the same server, without asking for a page (as the frontend reconnects)."""
        page_script_hash = self.page_script_hash
        await self._close()
        for attempt in range(attempts):
            conn = Connection(self.base_url, self.query, self.timeout)
            conn.page_script_hash = page_script_hash
            try:
                await conn.connect()
                self.conn = conn
                return True
            except (OSError, ConnectionClosed, InvalidHandshake, asyncio.TimeoutError):
                await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))
        return False

    def _button(self, label: str):
        return self.view.widget("button", label)

    # -- pages ----------------------------------------------------------------------------
    async def _demographics(self) -> bool:
        answers = bots.demographic_answers(self.rng)
        v = self.view
        states = [(v.widget("number_input", bots.AGE_LABEL).id, "double_value", float(answers[bots.AGE_LABEL]))]
        for label in bots.CHOICE_LABELS:
            radio = v.widget("radio", label)
            states.append((radio.id, "string_value", radio.options[answers[label]]))
        states.append((v.widget("text_input", bots.COUNTRY_LABEL).id, "string_value", answers[bots.COUNTRY_LABEL]))
        await self._think()
        return await self._submit("demographics", states + [(self._button("Next").id, "trigger_value", True)])

    async def _question(self, kind: str, step: int) -> bool:
        role = "statement" if kind == "question" else "response"
        texts = self.view.all(role)
        radios = [r for r in self.view.widgets("radio") if r.form_id]
        if not texts or len(radios) != len(texts) or len(radios[0].options) < 2:
            return False

        async def choose(index) -> bool:
            picks = index if isinstance(index, list) else [index]
            return await self._submit(kind, [(r.id, "string_value", r.options[i]) for r, i in zip(radios, picks)]
                                      + [(self._button("Next").id, "trigger_value", True)])

        return await self._rate(kind, step, texts if kind == "ratings" else texts[0], len(radios[0].options), choose)

    async def _disrupt(self, step: int) -> None:
        """Reload (a new session on the same link), or leave and come back later."""
        self.disruption_at = None
        self.result.reloads += 1
        await self._close()
        if self.behaviour == "returner":
            await asyncio.sleep(max(1.0, 3 * self.think))
        await self._open("reload" if self.behaviour == "refresher" else "load")
        seen = self.view.step if self.view.step is not None else -1
        self.result.resume_checks.append((step, seen))


async def run_bots(url: str, n: int, *, concurrency: int | None = None, think: float = 3.0,
                   behaviours: tuple[str, ...] = ("consistent",), seed: int | None = None,
                   study_file: Path | None = None, timeout: float = 30.0, ramp: float | None = None,
                   on_result=None) -> list[BotResult]:
    """Run `n` websocket bots against the app at `url` (same arguments as :func:`bots.run_bots`)."""
    value_of_response = bots._responses_by_text(study_file)

    async def play(i, rng):
        bot = WsBot(url, behaviours[i % len(behaviours)], think, rng, value_of_response, timeout)
        return await bot.play()

    return await bots.schedule(n, play, concurrency=concurrency, ramp=ramp, seed=seed, on_result=on_result)
