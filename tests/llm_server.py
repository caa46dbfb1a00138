"""A loopback fake of the OpenAI chat-completions API, for the LLM runner's tests and benchmark.

A real HTTP/1.1 server (asyncio streams, keep-alive) on 127.0.0.1 speaking
``POST /v1/chat/completions``. It answers every question with a scale phrase derived from
a hash of the prompt (so a test knows the right answer), and can inject faults per
question, chosen deterministically from the prompt hash:

* ``429``: the first attempt gets 429 with ``Retry-After: <retry_after>``;
* ``500``: the first two attempts get 500;
* ``slow``: the first attempt sleeps ``slow_seconds`` (longer than the client's timeout);
* ``garbage``: every attempt gets a 200 whose text is no scale phrase;
* ``dead``: every attempt gets 503.

It counts requests per question (a question = the text of its messages), records the
largest number of requests in flight and the last request body, and serves
``GET /stats`` (JSON) for use from another process.

Run in a thread: ``with LoopbackServer(latency=0.05) as server: server.url``.
Run as a process: ``python tests/llm_server.py --latency 0.05`` prints ``{"port": N}``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import threading
from dataclasses import dataclass, field

PHRASES = {6: "very much like me", 5: "like me", 4: "somewhat like me", 3: "a little like me",
           2: "not like me", 1: "not like me at all"}
# How the fake "model" words an answer: exercises the parser (case, punctuation, sentences).
WRAPPERS = ("{p}", "{P}.", "Answer: {p}", "{U}", "I would say it is {p}.")
GARBAGE = "I'm sorry, but I can't share personal opinions on this."


def question_key(messages: list[dict]) -> str:
    """The server's identity of a question: a hash of its messages' text."""
    text = "\x1e".join(str(m.get("content", "")) for m in messages)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _u(key: str, salt: str) -> float:
    return int(hashlib.sha256((salt + key).encode()).hexdigest()[:12], 16) / 16**12


def expected_value(key: str) -> int:
    """The value (1..6) the fake model answers to the question with this key."""
    return 1 + int(_u(key, "value") * 6)


def answer_text(key: str) -> str:
    """The fake model's worded answer: the scale phrase of :func:`expected_value`, in one of the WRAPPERS."""
    wrapper = WRAPPERS[int(_u(key, "wrap") * len(WRAPPERS))]
    p = PHRASES[expected_value(key)]
    return wrapper.format(p=p, P=p.capitalize(), U=p.upper())


@dataclass
class QuestionLog:
    fault: str
    requests: int = 0
    statuses: list = field(default_factory=list)  # "200", "429", "500", "503", "slow", "garbage"
    answered: int = 0  # 200s with a phrase or garbage text (slow ones excluded)
    messages: list | None = None


class FakeLLM:
    """The request handler and its bookkeeping (all on the server's event loop)."""

    def __init__(self, latency: float = 0.0, p429: float = 0.0, p500: float = 0.0, pslow: float = 0.0,
                 pgarbage: float = 0.0, pdead: float = 0.0, retry_after: str = "1", slow_seconds: float = 3.0,
                 salt: str = "", force_status: int | None = None, refuse: tuple[str, ...] = (),
                 content_filter: bool = False, error_message: str | None = None, answer: str | None = None):
        self.latency = latency
        self.force_status = force_status  # e.g. 401: every request refused
        # The forced error's message; "{authorization}" is replaced by the request's header,
        # as careless proxies echo the credentials they were sent.
        self.error_message = error_message
        self.answer = answer  # every 200 answers this text (e.g. a 50 MB one)
        self.refuse = refuse  # body fields answered with a 400 naming them, as endpoints that do not take them
        self.content_filter = content_filter  # every request: a 400 that is not about a parameter
        self.bands = []  # (upper bound of u, fault)
        edge = 0.0
        for fault, p in (("429", p429), ("500", p500), ("slow", pslow), ("garbage", pgarbage), ("dead", pdead)):
            edge += p
            self.bands.append((edge, fault))
        if edge > 1:
            raise ValueError("fault probabilities add up to more than 1")
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.salt = salt
        self.log: dict[str, QuestionLog] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.total = 0
        self.last_body: dict | None = None
        self.last_headers: dict | None = None

    def fault_of(self, key: str) -> str:
        u = _u(key, "fault" + self.salt)
        return next((fault for upper, fault in self.bands if u < upper), "none")

    def answer_text(self, key: str) -> str:
        """What the fake model answers to the question with this key (when it answers at all)."""
        if self.fault_of(key) == "garbage":
            return GARBAGE
        return answer_text(key)

    def stats(self) -> dict:
        return {
            "total": self.total, "max_in_flight": self.max_in_flight,
            "questions": {k: {"fault": q.fault, "requests": q.requests, "answered": q.answered, "statuses": q.statuses}
                          for k, q in self.log.items()},
        }

    async def chat(self, body: dict, headers: dict | None = None) -> tuple[int, dict, dict]:
        self.last_body = body
        self.last_headers = headers
        if self.force_status:
            self.total += 1
            message = (self.error_message or f"forced {self.force_status}").format(
                authorization=(headers or {}).get("authorization", ""))
            return self.force_status, {"error": {"message": message}}, {}
        if self.answer is not None:
            self.total += 1
            return 200, self._completion(body, self.answer), {}
        refused = [name for name in self.refuse if name in body]
        if refused:
            self.total += 1
            return 400, {"error": {"message": f"This model does not support the '{refused[0]}' parameter.",
                                   "type": "invalid_request_error", "param": None}}, {}
        if self.content_filter:
            self.total += 1
            return 400, {"error": {"message": "The prompt was flagged by the content filter (seed of the policy: none).",
                                   "type": "invalid_request_error", "param": None}}, {}
        messages = body.get("messages") or []
        key = question_key(messages)
        q = self.log.get(key)
        if q is None:
            q = self.log[key] = QuestionLog(self.fault_of(key), messages=messages)
        attempt = q.requests
        q.requests += 1
        self.total += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if q.fault == "429" and attempt == 0:
                q.statuses.append("429")
                return 429, {"error": {"message": "rate limited"}}, {"Retry-After": self.retry_after}
            if q.fault == "500" and attempt < 2:
                q.statuses.append("500")
                return 500, {"error": {"message": "internal error"}}, {}
            if q.fault == "dead":
                q.statuses.append("503")
                return 503, {"error": {"message": "overloaded"}}, {}
            if q.fault == "slow" and attempt == 0:
                q.statuses.append("slow")
                await asyncio.sleep(self.slow_seconds)
                return 200, self._completion(body, "like me"), {}
            text = self.answer_text(key)
            q.statuses.append("garbage" if q.fault == "garbage" else "200")
            q.answered += 1
            return 200, self._completion(body, text), {}
        finally:
            self.in_flight -= 1

    async def route(self, method: str, path: str, headers: dict, raw: bytes) -> tuple[int, dict | bytes, dict]:
        """(status, JSON payload or raw bytes, extra headers) for one request."""
        if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
            try:
                body = json.loads(raw)
            except ValueError:
                return 400, {"error": {"message": "body is not JSON"}}, {}
            return await self.chat(body, headers)
        if method == "GET" and path == "/stats":
            return 200, self.stats(), {}
        return 404, {"error": {"message": f"no route {method} {path}"}}, {}

    @staticmethod
    def _completion(body: dict, text: str) -> dict:
        return {
            "id": "chatcmpl-loopback", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}


async def handle_connection(fake: FakeLLM, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            method, path, _ = line.decode("latin-1").split(" ", 2)
            headers = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            status, payload, extra = await fake.route(method, path, headers, raw)
            # A dict is answered as JSON; bytes as they are (file contents).
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            content_type = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
            head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Type: {content_type}",
                    f"Content-Length: {len(data)}", "Connection: keep-alive"]
            head += [f"{k}: {v}" for k, v in extra.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


class LoopbackServer:
    """Run a :class:`FakeLLM` on 127.0.0.1 (random port) in a background thread."""

    def __init__(self, fake: FakeLLM | None = None, **options):
        self.fake = fake if fake is not None else FakeLLM(**options)
        self.port: int | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(lambda r, w: handle_connection(self.fake, r, w), "127.0.0.1", 0, backlog=512))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    def __enter__(self) -> "LoopbackServer":
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    for name in ("p429", "p500", "pslow", "pgarbage", "pdead"):
        parser.add_argument(f"--{name}", type=float, default=0.0)
    args = parser.parse_args(argv)
    fake = FakeLLM(latency=args.latency, p429=args.p429, p500=args.p500, pslow=args.pslow,
                   pgarbage=args.pgarbage, pdead=args.pdead)

    async def serve() -> None:
        server = await asyncio.start_server(lambda r, w: handle_connection(fake, r, w), "127.0.0.1", args.port, backlog=1024)
        print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
