"""Backends that answer rating questions: an OpenAI-compatible HTTP endpoint.

A backend turns a :class:`Question` (chat messages plus the item they ask about) into a
:class:`Reply` (the answer text, or an error after giving up). The runner treats every
backend the same way (cache, parsing, output); the simulated backend lives in
:mod:`analysis.llm.simulated`.

The HTTP backend speaks ``POST {base_url}/chat/completions`` (OpenAI, vLLM, Ollama,
llama.cpp's server, OpenRouter, ...) with temperature 0, a small ``max_tokens`` and a
``seed``, over kept-alive connections (one aiohttp session per run, at most
``concurrency`` connections; each body JSON-encoded once per question). It retries on
429, 408/409/425, 5xx, timeouts and connection errors with exponential backoff and
jitter, honouring ``Retry-After`` (seconds or an HTTP date).
401/403/404 mean the whole run is misconfigured (key, model name, URL): they stop the run.
Other 4xx (e.g. a content filter's 400) fail that one question, which is not cached and
is asked again by the next run, except a 400 that names ``seed``, ``temperature`` or
``max_tokens`` as unsupported (some endpoints and reasoning models refuse them): that stops
the run with a hint to leave the parameter out or rename it (``--no-seed``,
``--no-temperature``, ``--max-tokens-field max_completion_tokens``).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from dataclasses import dataclass

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from valueportrait import options as opt
from yarl import URL

from analysis.llm.bank import Item
from valueportrait.errors import redact
from valueportrait.retry import backoff_delay, retry_after_seconds  # noqa: F401 - retry_after_seconds is part of this module's API

#: Longest answer text kept (a misbehaving server once sent 50 MB); the rest is cut, and the
#: cut is marked in the text itself, so it shows wherever the answer goes.
MAX_ANSWER_CHARS = 100_000
#: A rating is a short phrase: longer rating answers are kept cut to this many characters.
RATING_ANSWER_CHARS = 2_000
CUT_MARK = "\n[cut by valueportrait: {n:,} characters in all]"
RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
FATAL_STATUS = frozenset({401, 403, 404})


@dataclass(frozen=True)
class Question:
    item: Item
    variant: str
    persona: str
    messages: list
    prompt_hash: str
    key: tuple


@dataclass
class Reply:
    text: str | None
    attempts: int
    latency_s: float | None
    error: str | None = None  # set when no answer was obtained (not cached)


def cut_answer(text: str | None, limit: int = MAX_ANSWER_CHARS) -> str | None:
    """`text`, or its first `limit` characters with a mark saying how long it was."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + CUT_MARK.format(n=len(text))


def encode_body(body: dict) -> bytes:
    """A request body as JSON bytes: UTF-8, compact, NaN refused (as httpx's ``json=`` sent it)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class _Response:
    """What the backend reads of an HTTP answer, read whole before the connection is reused."""

    status_code: int
    headers: object  # case-insensitive mapping
    content: bytes
    charset: str | None = None

    @property
    def text(self) -> str:
        try:
            return self.content.decode(self.charset or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.content)


class EndpointError(RuntimeError):
    """The endpoint refuses the whole run (bad key, unknown model, wrong URL)."""


#: Parameters the backend sends that an endpoint may refuse, and the option that changes each.
OPTIONAL_PARAMETERS = {"seed": "--no-seed", "temperature": "--no-temperature",
                       "max_tokens": "--max-tokens-field max_completion_tokens (reasoning models also need a larger --max-tokens)"}
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")
_REFUSAL_WORDS = re.compile(r"unrecogni[sz]ed|unsupported|not support|unknown|not allowed|not permitted|extra|invalid|not accept")


def refused_parameter(response_text: str, sent: dict) -> str | None:
    """The optional parameter a 400 answer says the endpoint does not accept, if any.

    Either the error's ``param`` field names it, or its message names it together with a
    word of refusal ("unsupported", "unrecognized", ...): a content filter's 400 does not.
    """
    try:
        error = json.loads(response_text).get("error")
    except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
        error = None
    param = error.get("param") if isinstance(error, dict) else None
    message = (error.get("message") if isinstance(error, dict) else None) or response_text
    for name in OPTIONAL_PARAMETERS:
        if name not in sent:
            continue
        if param == name or (re.search(rf"\b{name}\b", message) and _REFUSAL_WORDS.search(message.lower())):
            return name
    return None


def add_request_arguments(parser, seed_help: str) -> None:
    """--seed, --no-seed, --no-temperature and --max-tokens-field, shared by the commands that call an endpoint."""
    parser.add_argument("--seed", type=opt.seed(), default=0, help=seed_help)
    parser.add_argument("--no-seed", action="store_true", help="send no seed (for endpoints that refuse one)")
    parser.add_argument("--no-temperature", action="store_true",
                        help="send no temperature, so the endpoint's default applies (models that accept only their default); answers then vary more")
    parser.add_argument("--max-tokens-field", choices=TOKEN_FIELDS, default="max_tokens",
                        help="the request field that carries --max-tokens (OpenAI's reasoning models take max_completion_tokens)")


def request_options(args) -> dict:
    """The OpenAIBackend keywords `add_request_arguments` asks for."""
    return {"seed": None if args.no_seed else args.seed, "temperature": None if args.no_temperature else 0.0,
            "token_field": args.max_tokens_field}


def chat_url(base_url: str) -> str:
    """``https://host/v1`` -> ``https://host/v1/chat/completions`` (a full URL is kept)."""
    base = base_url.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


class OpenAIBackend:
    """Ask an OpenAI-compatible chat-completions endpoint, with retries.

    Parameters
    ----------
    base_url : e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
    model : the model name sent in each request.
    api_key : sent as a bearer token when given.
    timeout : seconds to get a connection (waiting for a free one and connecting), and
        seconds per read of the answer.
    max_retries : retries after the first attempt (so at most ``max_retries + 1`` calls).
    concurrency : most HTTP calls in flight at once (the runner bounds questions in flight too).
    backoff_base, backoff_cap : the k-th retry waits ``min(cap, base * 2**k)`` times a
        uniform jitter in [0.5, 1.5), or what ``Retry-After`` asks if that is longer
        (up to ``retry_after_cap``).
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 6,
        max_tokens: int = 24,
        seed: int | None = 0,
        temperature: float | None = 0.0,
        token_field: str = "max_tokens",
        concurrency: int = 8,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        retry_after_cap: float = 120.0,
        rng: random.Random | None = None,
        max_answer_chars: int = MAX_ANSWER_CHARS,
    ):
        self.url = chat_url(base_url)
        self.model = model
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.seed = seed
        self.temperature = temperature
        if token_field not in TOKEN_FIELDS:
            raise ValueError(f"token_field: {token_field!r} is not one of {', '.join(TOKEN_FIELDS)}")
        self.token_field = token_field
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self.rng = rng or random.Random()
        self.concurrency = concurrency
        self.max_answer_chars = max_answer_chars
        self._api_key = api_key
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        # Every call may take `timeout` s to get a connection (pool wait + connect) and
        # `timeout` s per read, as httpx.Timeout(timeout) did before.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        # One aiohttp session per event loop, its connections kept alive and reused. aiohttp
        # parses HTTP in C: about 0.25 ms of CPU per question where httpx took 1.3-1.7 ms,
        # which capped the runner near 450 questions/s on one core (benchmarks/llm_throughput.py).
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._ssl = None  # one TLS context (loading CA certificates is slow)
        self._proxy: tuple = (None, None)

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop:
            if self._ssl is None:
                import httpx  # the same CA bundle (certifi, SSL_CERT_FILE) as the project's other clients

                self._ssl = httpx.create_ssl_context()
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self.concurrency, ssl=self._ssl))
            self._loop, self._slots = loop, asyncio.Semaphore(self.concurrency)
            # HTTP(S)_PROXY / NO_PROXY apply, as they did with httpx: looked up once here
            # (aiohttp's trust_env looks them up in a thread on every request).
            try:
                self._proxy = get_env_proxy_for_url(URL(self.url))
            except LookupError:
                self._proxy = (None, None)
        return self._session

    async def _post(self, data: bytes) -> _Response:
        session = self._session_here()
        async with self._slots:
            async with session.post(self.url, data=data, proxy=self._proxy[0], proxy_auth=self._proxy[1]) as response:
                return _Response(response.status, response.headers, await response.read(), response.charset)

    def settings(self) -> dict:
        """What shapes an answer besides the messages (part of the cache key's prompt hash)."""
        # A temperature of 0 is recorded as the int 0, as before this became an option, so
        # the answers cached by earlier runs keep their keys.
        temperature = 0 if self.temperature == 0 else self.temperature
        settings = {"temperature": temperature, "max_tokens": self.max_tokens, "seed": self.seed}
        if self.token_field != "max_tokens":
            settings["token_field"] = self.token_field
        return settings

    def request_body(self, question: Question) -> dict:
        """The JSON body of the chat-completions request for one question (also a batch line's `body`)."""
        body = {"model": self.model, "messages": question.messages, self.token_field: self.max_tokens}
        if self.temperature is not None:
            body["temperature"] = 0 if self.temperature == 0 else self.temperature
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        return backoff_delay(retry, retry_after, base=self.backoff_base, cap=self.backoff_cap,
                             retry_after_cap=self.retry_after_cap, rng=self.rng)

    async def ask(self, question: Question) -> Reply:
        body = self.request_body(question)
        data = encode_body(body)  # once per question, whatever the retries
        last_error = "no attempt"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            start = time.perf_counter()
            try:
                response = await self._post(data)
            except asyncio.TimeoutError:  # aiohttp's ServerTimeoutError and the connect timeout
                last_error = "timeout"
            except aiohttp.ClientError as exc:
                last_error = f"connection error: {type(exc).__name__}"
            else:
                latency = time.perf_counter() - start
                status = response.status_code
                if status == 200:
                    try:
                        text = response.json()["choices"][0]["message"].get("content")
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                        last_error = "HTTP 200 without choices[0].message"
                    else:
                        text = cut_answer(text, self.max_answer_chars) if isinstance(text, str) else None
                        return Reply(text, attempt + 1, latency)
                elif status in FATAL_STATUS:
                    raise EndpointError(f"{self.url}: HTTP {status}: {self._body_excerpt(response, 300)}")
                elif status in RETRY_STATUS:
                    last_error = f"HTTP {status}"
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
                else:
                    refused = refused_parameter(response.text, body) if status == 400 else None
                    if refused:
                        raise EndpointError(f"{self.url}: HTTP 400: the endpoint does not accept `{refused}` "
                                            f"({self._body_excerpt(response, 200)}); run again with {OPTIONAL_PARAMETERS[refused]}")
                    return Reply(None, attempt + 1, latency, error=f"HTTP {status}: {self._body_excerpt(response, 200)}")
            if attempt < self.max_retries:
                await asyncio.sleep(self._backoff(attempt, retry_after))
        return Reply(None, self.max_retries + 1, None, error=f"gave up after {self.max_retries + 1} attempts: {last_error}")

    def _body_excerpt(self, response: _Response, limit: int) -> str:
        """The start of an error body for a message, on one line, credentials masked (some
        services echo the key they were sent)."""
        return redact(" ".join(response.text[: limit * 4].split()), self._api_key)[:limit]

    async def aclose(self) -> None:
        session, self._session, self._loop, self._slots = self._session, None, None, None
        if session is not None:
            await session.close()
