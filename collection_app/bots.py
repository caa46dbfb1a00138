"""Simulated participants that take the study through the running app, over Streamlit's websocket protocol or in headless Chromium.

Each bot is one participant with a Prolific-style id in its link. It reads each page, answers
as its behaviour says, presses Next and waits until the server has drawn the next page; a
page drawn means the answer before it was stored, so that answer counts as acknowledged.
It prints per-step latency (median, p95, max) and every failure.

Two drivers, the same participants (answer logic, think times, seeds):

* ``--driver ws`` (default): :mod:`collection_app.wsbot` speaks Streamlit's own websocket
  protocol, sending what the browser sends and reading the elements each script run draws.
  A bot costs a coroutine and a socket, so a laptop runs hundreds; it needs no browser. The
  server runs exactly the same script, callbacks and database writes; only the React
  frontend is left out.
* ``--driver browser``: a browser context per bot (its own cookies and storage) in one
  headless Chromium (Playwright with Debian's Chromium). It exercises exactly what
  participants run (the React frontend, its reconnects, reloads), but each bot costs a
  renderer of 175-350 MB and much CPU: about fifteen fit on two cores. Use it for a pilot
  of a few bots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import secrets
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import instruments
from valueportrait import options as opt
from valueportrait.errors import InputError

CHROMIUM = os.environ.get("VP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync",
                 "--disable-dev-shm-usage"]
BEHAVIOURS = ("consistent", "random", "straightliner", "speeder", "attention_failer", "refresher", "returner")
#: `--behaviour mix`: mostly good respondents, one of each problem kind.
MIX = ("consistent",) * 4 + BEHAVIOURS[1:]

# The page's data-vp-page marker once the server has finished the run.
_SETTLED_JS = """(prev) => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const m = document.querySelector('[data-vp-page]');
  if (!m) return false;
  const key = m.dataset.vpPage + ':' + (m.dataset.vpStep || '');
  return key !== prev ? key : false;
}"""


# The frontend's connection state ('CONNECTED' when its websocket is up).
_CONNECTION_JS = """() => { const app = document.querySelector("[data-testid='stApp']");
  return app ? app.getAttribute('data-test-connection-state') : null; }"""


@dataclass
class BotResult:
    participant_id: str
    behaviour: str
    completed: bool = False
    code: str | None = None
    end_page: str | None = None
    latencies: list[tuple[str, float]] = field(default_factory=list)  # (page kind, seconds)
    answers: dict[int, dict] = field(default_factory=dict)  # step index -> what was acknowledged
    failures: list[str] = field(default_factory=list)
    recoveries: list[str] = field(default_factory=list)  # no new page in time, reloaded and carried on
    reloads: int = 0
    resume_checks: list[tuple[int, int]] = field(default_factory=list)  # (expected step, step seen)
    # Presses sent again on a connection the bot reopened the way a browser tab does after the
    # server went away (no page load): (page key before, whether a new page came back).
    reconnect_presses: list[tuple[str, bool]] = field(default_factory=list)


class Profile:
    """A respondent: value and trait levels, and how each behaviour turns them into answers."""

    def __init__(self, behaviour: str, rng: random.Random, value_of_response: dict[str, str]):
        self.behaviour, self.rng = behaviour, rng
        self.values = {v: rng.gauss(0, 1) for v in instruments.PVQ_VALUES}
        self.traits = {t: rng.gauss(0, 1) for t in instruments.BFI_TRAITS}
        self.straight = rng.choice([2, 3, 4, 5])
        pvq, bfi = instruments.default_pvq21(), instruments.default_bfi10()
        self.pvq_value = {i.text: i.value for i in pvq.items}
        self.bfi_key = {"I see myself as someone who " + i.text: (i.trait, i.reversed) for i in bfi.items}
        self.check_expected = {c.text: c.expected for c in instruments.load_attention_checks()}
        self.value_of_response = value_of_response

    def _level(self, z: float, lo: int, hi: int, noise: float = 0.7) -> int:
        mid = (lo + hi) / 2
        return int(min(hi, max(lo, round(mid + 1.1 * z + self.rng.gauss(0, noise)))))

    def answer(self, page: str, text: str, lo: int, hi: int) -> int:
        b = self.behaviour
        if text in self.check_expected:
            expected = self.check_expected[text]
            if b == "attention_failer":
                return lo if expected != lo else hi
            if b in ("random", "speeder"):
                return self.rng.randint(lo, hi)
            if b == "straightliner":
                return min(hi, self.straight)
            return expected
        if b in ("random", "speeder"):
            return self.rng.randint(lo, hi)
        if b == "straightliner":
            return min(hi, self.straight)
        if text in self.pvq_value:
            return self._level(self.values[self.pvq_value[text]], lo, hi)
        if text in self.bfi_key:
            trait, reversed_ = self.bfi_key[text]
            return self._level(-self.traits[trait] if reversed_ else self.traits[trait], lo, hi)
        if text in self.value_of_response:
            return self._level(self.values[self.value_of_response[text]], lo, hi)
        return self._level(0.0, lo, hi)


def think_delay(behaviour: str, think: float, rng: random.Random) -> float:
    """Seconds a bot spends on a page before answering: uniform on 0.5-1.5 x `think`; speeders 0.2 s at most."""
    if behaviour == "speeder":
        return min(think, 0.2)
    return rng.uniform(0.5, 1.5) * think if think > 0 else 0.0


AGE_LABEL, COUNTRY_LABEL = "Your age in years", "Country you live in"
#: The demographics page's single-choice questions, by label.
CHOICE_LABELS = ("Gender", "Highest education completed", "Political orientation")


def demographic_answers(rng: random.Random) -> dict[str, int | str]:
    """A bot's demographics: the age, an option index per choice question, the country."""
    from collection_app.pages import EDUCATION, GENDERS, POLITICS
    out: dict[str, int | str] = {AGE_LABEL: rng.randint(18, 75)}
    for label, options in zip(CHOICE_LABELS, (GENDERS, EDUCATION, POLITICS)):
        out[label] = rng.randrange(len(options))
    out[COUNTRY_LABEL] = rng.choice(["United Kingdom", "Germany", "Canada", "Kenya"])
    return out


def _responses_by_text(study_file: Path | None) -> dict[str, str]:
    from collection_app.study import load_study
    try:
        study = load_study(study_file)
    except InputError:
        return {}
    return {i.response: i.value for i in study.items if i.value}


END_PAGES = ("full", "declined", "timed-out", "timed-out-partial", "bad-link", "earlier-wave")


class Participant:
    """What every bot does, whatever drives the app: the flow through the pages, the answers
    from its behaviour, the disruption, the recovery when the server goes away.

    A driver (the browser :class:`Bot`, the websocket ``collection_app.wsbot.WsBot``) supplies
    the hooks: ``_open(kind)``, ``_close()``, ``_where() -> (page, step, key)``,
    ``_completion_code()``, ``_press(kind, label)``, ``_demographics()``,
    ``_question(kind, step)`` (one scale, or on a side-by-side ``ratings`` page one scale per
    response) and ``_disrupt(step)``; ``retryable`` names the errors that mean "no new page"
    rather than a broken bot.
    """

    retryable: tuple[type[BaseException], ...] = (Exception,)

    def __init__(self, behaviour: str, think: float, rng: random.Random, value_of_response: dict[str, str],
                 timeout: float, participant_id: str | None = None):
        self.think, self.rng, self.timeout = think, rng, timeout
        # The same draws in the same order for every driver, so a seed makes the same person.
        self.profile = Profile(behaviour, rng, value_of_response)
        pid = participant_id or secrets.token_hex(12)
        self.result = BotResult(pid, behaviour)
        self.query = urlencode({"PROLIFIC_PID": pid, "STUDY_ID": "5f0c" + "0" * 20, "SESSION_ID": secrets.token_hex(12)})
        self.disruption_at = rng.randint(15, 40) if behaviour in ("refresher", "returner") else None

    @property
    def behaviour(self) -> str:
        return self.result.behaviour

    async def _think(self) -> None:
        await asyncio.sleep(think_delay(self.behaviour, self.think, self.rng))

    async def _rate(self, kind: str, step: int, text: str | list[str], n_options: int, choose) -> bool:
        """Answer a statement or response shown as `text` on a 1..n_options scale (or, on a
        side-by-side page, each of a list of responses): pick the behaviour's answers, think,
        ``await choose(index or indices)`` (True when a new page came), record them."""
        if isinstance(text, list):
            answers = [self.profile.answer(kind, t, 1, n_options) for t in text]
            await self._think()
            ok = await choose([a - 1 for a in answers])
            if ok:
                self.result.answers[step] = {"page": kind, "texts": text, "answers": answers}
            return ok
        answer = self.profile.answer(kind, text, 1, n_options)
        await self._think()
        ok = await choose(answer - 1)
        if ok:
            self.result.answers[step] = {"page": kind, "text": text, "answer": answer}
        return ok

    def _stuck_detail(self) -> str:
        return ""

    async def play(self) -> BotResult:
        try:
            await self._open("load")
            stuck = 0
            while True:
                page_kind, step, _ = self._where()
                if page_kind == "completion":
                    self.result.completed = True
                    self.result.code = await self._completion_code()
                    break
                if page_kind in END_PAGES:
                    self.result.failures.append(f"ended on the {page_kind} page")
                    break
                if self.disruption_at is not None and step is not None and step >= self.disruption_at:
                    await self._disrupt(step)
                    continue
                try:
                    if page_kind == "consent":
                        await self._think()
                        ok = await self._press("consent", "I agree")
                    elif page_kind == "platform":
                        ok = await self._press("platform", "Start the study")
                    elif page_kind in ("intro", "query"):
                        await self._think()
                        ok = await self._press(page_kind, "Continue")
                    elif page_kind == "demographics":
                        ok = await self._demographics()
                    elif page_kind in ("question", "rating", "ratings"):
                        ok = await self._question(page_kind, step)
                    else:  # no marker: an error, or a page this bot does not know
                        ok = False
                except self.retryable:  # an element that never came
                    ok = False
                if ok:
                    stuck = 0
                    continue
                # No new page in time: the server may have died. Open the link again, like a
                # person would, and carry on from wherever the database says we are.
                stuck += 1
                where = self._where()[2] or "(no page)"
                if stuck > 5:
                    raise TimeoutError(f"no progress at {where}{self._stuck_detail()}")
                self.result.recoveries.append(f"no new page at {where}; reopened")
                await self._open("reload")
        except Exception as exc:  # noqa: BLE001 - a bot reports, never crashes the run
            self.result.failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        finally:
            self.result.end_page = self._where()[2]
            await self._close()
        return self.result


class Bot(Participant):
    """A participant in a headless Chromium context."""

    def __init__(self, browser, base_url: str, behaviour: str, think: float, rng: random.Random,
                 value_of_response: dict[str, str], timeout: float, participant_id: str | None = None):
        super().__init__(behaviour, think, rng, value_of_response, timeout, participant_id)
        self.browser = browser
        self.url = base_url.rstrip("/") + "/?" + self.query
        self.context = self.page = None
        self.state = ""

    # -- plumbing -------------------------------------------------------------------------
    async def _open(self, kind: str = "load") -> None:
        if self.context is None:
            self.context = await self.browser.new_context()
            self.page = await self.context.new_page()
        for attempt in range(30):
            try:
                await self.page.goto(self.url, timeout=self.timeout * 1000)
                self.state = await self._settle("", kind)
                return
            except Exception:  # the server may be restarting: try again
                if attempt == 29:
                    raise
                await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))

    async def _settle(self, prev: str, kind: str, started: float | None = None) -> str:
        t0 = started if started is not None else time.perf_counter()
        handle = await self.page.wait_for_function(_SETTLED_JS, arg=prev, timeout=self.timeout * 1000, polling=50)
        key = await handle.json_value()
        self.result.latencies.append((kind, time.perf_counter() - t0))
        return key

    async def _close(self) -> None:
        if self.context is not None:
            context, self.context = self.context, None
            await context.close()

    def _where(self) -> tuple[str, int | None, str]:
        page_kind, _, step = self.state.partition(":")
        return page_kind, int(step) if step else None, self.state

    async def _completion_code(self) -> str:
        return (await self.page.locator("[data-vp-role='completion-code']").inner_text()).strip()

    async def _press(self, kind: str, label: str) -> bool:
        return await self._submit(kind, label)

    async def _submit(self, kind: str, button: str = "Next") -> bool:
        """Press a button and wait for a new page; False if the page did not change in time.

        If the connection dropped meanwhile (the server went away), do what a person does:
        wait in the same tab until it has reconnected by itself, and press again. That first
        press after the reconnect must be stored (``reconnect_presses``).
        """
        prev, t0 = self.state, time.perf_counter()
        target = self.page.get_by_role("button", name=button, exact=True)
        await target.click(timeout=self.timeout * 1000)
        try:
            self.state = await self._settle(prev, kind, t0)
            return True
        except Exception:
            pass
        if not await self._reconnected():
            return False
        t0 = time.perf_counter()
        try:
            await target.click(timeout=self.timeout * 1000)
            self.state = await self._settle(prev, kind, t0)
            self.result.reconnect_presses.append((prev, True))
            return True
        except Exception:
            self.result.reconnect_presses.append((prev, False))
            return False

    async def _reconnected(self, wait: float = 90.0) -> bool:
        """True once a tab whose connection dropped is connected again (False: it never dropped)."""
        state = await self.page.evaluate(_CONNECTION_JS)
        if state == "CONNECTED":
            return False
        try:
            await self.page.wait_for_function(f"() => ({_CONNECTION_JS})() === 'CONNECTED'", timeout=wait * 1000,
                                              polling=200)
            return True
        except Exception:
            return False

    # -- pages ----------------------------------------------------------------------------
    async def _pick(self, group_label: str | None, index: int) -> None:
        scope = self.page.locator("[data-testid='stForm']") if group_label is None else \
            self.page.locator(f"[role='radiogroup'][aria-label={json.dumps(group_label)}]")
        await scope.locator("[data-testid='stRadioOption']").nth(index).click(timeout=self.timeout * 1000)

    async def _demographics(self) -> bool:
        page, answers = self.page, demographic_answers(self.rng)
        await page.get_by_label(AGE_LABEL).fill(str(answers[AGE_LABEL]))
        for label in CHOICE_LABELS:
            await self._pick(label, answers[label])
        await page.get_by_label(COUNTRY_LABEL).fill(answers[COUNTRY_LABEL])
        await self._think()
        return await self._submit("demographics")

    async def _question(self, kind: str, step: int) -> bool:
        role = "statement" if kind == "question" else "response"
        options = self.page.locator("[data-testid='stForm'] [data-testid='stRadioOption']")
        # The marker can be drawn a moment before the form (e.g. right after a reconnect).
        await options.last.wait_for(timeout=self.timeout * 1000)
        texts = await self.page.locator(f"[data-vp-role='{role}']").all_inner_texts()
        groups = self.page.locator("[data-testid='stForm'] [role='radiogroup']")
        n_groups = await groups.count()
        if n_groups != len(texts) or not texts:
            return False
        n_options = await groups.first.locator("[data-testid='stRadioOption']").count()
        if n_options < 2:
            return False

        async def choose(index) -> bool:
            for g, i in enumerate(index if isinstance(index, list) else [index]):
                await groups.nth(g).locator("[data-testid='stRadioOption']").nth(i).click(timeout=self.timeout * 1000)
            return await self._submit(kind)

        return await self._rate(kind, step, texts if kind == "ratings" else texts[0], n_options, choose)

    async def _disrupt(self, step: int) -> None:
        """Refresh, or close the browser and come back later with the same link."""
        self.disruption_at = None
        self.result.reloads += 1
        if self.behaviour == "refresher":
            await self.page.reload()
        else:
            await self.context.close()
            self.context = None
            await asyncio.sleep(max(1.0, 3 * self.think))
        await self._open() if self.context is None else None
        if self.context is not None and self.behaviour == "refresher":
            self.state = await self._settle("", "reload")
        seen = int(self.state.split(":")[1]) if self.state.split(":")[1:] and self.state.split(":")[1] else -1
        self.result.resume_checks.append((step, seen))


async def schedule(n: int, play, *, concurrency: int | None, ramp: float | None, seed: int | None,
                   on_result=None) -> list[BotResult]:
    """Run ``play(i, rng)`` for i < n, at most `concurrency` at a time, starts spread over `ramp` s.

    Shared by both drivers so that a seed gives the same bots (behaviour, rng) in each.
    """
    rng = random.Random(seed)
    gate = asyncio.Semaphore(concurrency or n)
    ramp = 0.1 * n if ramp is None else ramp

    async def one(i):
        await asyncio.sleep(ramp * i / max(n, 1))
        async with gate:
            result = await play(i, random.Random(rng.random()))
            if on_result:
                on_result(result)
            return result

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def run_bots(url: str, n: int, *, concurrency: int | None = None, think: float = 3.0,
                   behaviours: tuple[str, ...] = ("consistent",), seed: int | None = None,
                   study_file: Path | None = None, timeout: float = 30.0, ramp: float | None = None,
                   browser=None, on_result=None) -> list[BotResult]:
    """Run `n` browser bots against the app at `url`, at most `concurrency` at a time.

    Bot i plays ``behaviours[i % len(behaviours)]``. Starts are spread over `ramp` seconds
    (default: 0.1 s per bot) so that arrivals look like a study going live.
    """
    from playwright.async_api import async_playwright

    value_of_response = _responses_by_text(study_file)

    def go(browser):
        async def play(i, rng):
            bot = Bot(browser, url, behaviours[i % len(behaviours)], think, rng, value_of_response, timeout)
            return await bot.play()
        return schedule(n, play, concurrency=concurrency, ramp=ramp, seed=seed, on_result=on_result)

    if browser is not None:
        return await go(browser)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            return await go(browser)
        finally:
            await browser.close()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the value below which q% of the values fall)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def latency_table(results: list[BotResult]) -> list[dict]:
    by_kind: dict[str, list[float]] = {}
    for r in results:
        for kind, sec in r.latencies:
            by_kind.setdefault(kind, []).append(sec)
    # A step is an answer and the next page drawn; page loads are listed apart.
    steps = [s for k, v in by_kind.items() if k not in ("load", "reload") for s in v]
    rows = [dict(step=k, n=len(v), median=statistics.median(v), p95=percentile(v, 95), max=max(v))
            for k, v in sorted(by_kind.items())]
    if steps:
        rows.append(dict(step="all steps", n=len(steps), median=statistics.median(steps),
                         p95=percentile(steps, 95), max=max(steps)))
    return rows


def summary(results: list[BotResult], elapsed: float) -> str:
    lines = [f"{sum(r.completed for r in results)}/{len(results)} bots completed in {elapsed:.1f} s"]
    lines.append(f"{'step':<14}{'n':>7}{'median s':>10}{'p95 s':>9}{'max s':>9}")
    for row in latency_table(results):
        lines.append(f"{row['step']:<14}{row['n']:>7}{row['median']:>10.3f}{row['p95']:>9.3f}{row['max']:>9.3f}")
    fails = [(r.participant_id, r.behaviour, f) for r in results for f in r.failures]
    recovered = sum(len(r.recoveries) for r in results)
    if recovered:
        lines.append(f"pages that did not answer in time and were reloaded: {recovered}")
    again = [ok for r in results for _, ok in r.reconnect_presses]
    if again:
        lines.append(f"presses made again after the connection came back: {len(again)}, new page for {sum(again)}")
    lines.append(f"failures: {len(fails)}")
    lines += [f"  {pid} ({beh}): {f}" for pid, beh, f in fails]
    bad_resume = [(r.participant_id, c) for r in results for c in r.resume_checks if c[1] != c[0]]
    if bad_resume:
        lines.append(f"resumed at a different page than left: {bad_resume}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the running app, e.g. http://localhost:8501")
    parser.add_argument("--n", type=opt.count(1), required=True, help="number of simulated participants")
    parser.add_argument("--concurrency", type=opt.count(1), default=None, help="bots at a time (default: all)")
    parser.add_argument("--think", type=opt.seconds(allow_zero=True), default=3.0, help="mean seconds per answer (0: as fast as possible)")
    parser.add_argument("--behaviour", default="consistent",
                        help=f"comma-separated, assigned in turn: {', '.join(BEHAVIOURS)}; or 'mix'")
    parser.add_argument("--study", type=Path, default=None, help="the study file the app runs (lets consistent bots "
                        "answer items by their tagged value); default: the shipped study")
    parser.add_argument("--seed", type=opt.seed(), default=None)
    parser.add_argument("--timeout", type=opt.seconds(), default=30.0, help="seconds to wait for a page")
    parser.add_argument("--json", type=Path, default=None, help="also write every bot's result here")
    parser.add_argument("--driver", choices=("ws", "browser"), default="ws",
                        help="ws: Streamlit's websocket protocol, light, for many bots (default); "
                        "browser: headless Chromium, the real frontend, about 15 bots per 2 cores")


def parse_behaviours(text: str) -> tuple[str, ...]:
    if text == "mix":
        return MIX
    names = tuple(b.strip() for b in text.split(",") if b.strip())
    for b in names:
        if b not in BEHAVIOURS:
            raise InputError(f"--behaviour: {b!r}: choose from {', '.join(BEHAVIOURS)} or 'mix'")
    return names or ("consistent",)


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise InputError(f"--n: {args.n}: must be at least 1")
    driver = getattr(args, "driver", "ws")
    if driver == "browser" and not Path(CHROMIUM).exists():
        raise InputError(f"{CHROMIUM}: Chromium not found (install Debian's 'chromium' package, set VP_CHROMIUM, "
                         "or use --driver ws)")
    behaviours = parse_behaviours(args.behaviour)
    if driver == "ws":
        from collection_app.wsbot import run_bots as runner
    else:
        runner = run_bots
    from tqdm import tqdm
    bar = tqdm(total=args.n, desc="bots", unit="bot", file=sys.stderr)
    t0 = time.perf_counter()
    results = asyncio.run(runner(args.url, args.n, concurrency=args.concurrency, think=args.think,
                                   behaviours=behaviours, seed=args.seed, study_file=args.study,
                                   timeout=args.timeout, on_result=lambda r: bar.update(1)))
    bar.close()
    print(summary(results, time.perf_counter() - t0))
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in results], indent=1))
        os.replace(tmp, args.json)
    return 0 if all(r.completed or r.behaviour != "consistent" for r in results) and \
        not any(r.failures for r in results) else 1
