"""`vp run-llm --batch write|submit|collect`: the OpenAI Batch API route into run-llm's answer cache.

A batch costs half the price of the same requests asked one by one and is answered within
a completion window (24 h). The three steps:

* ``write``: the request file ``OUT/NAME.batch.jsonl``, one line per question the cache
  does not hold yet: ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
  "body"}``, the body exactly what ``vp run-llm`` would send (same messages, settings and
  so the same cache key). ``custom_id`` is ``portrait_id/option_id/variant/order/prompt_hash``
  (``order``: ``highest_first`` or ``lowest_first``, how the options are listed). Files are
  split at 50,000 lines or 190 MB (the API's limits are 50,000 and 200 MB). Beside them,
  ``OUT/NAME.batch.json`` records the batch: model, persona, settings, each file and,
  once submitted, its file and batch ids. Nothing is sent.
* ``submit``: uploads each file (``POST /v1/files``, purpose ``batch``) and creates its
  batch (``POST /v1/batches``); ids are saved after each call, so a submit that stops
  midway is resumed, never repeated. Writes the files first if ``write`` was not run.
* ``collect``: polls each batch (``GET /v1/batches/{id}``) until it is ``completed``,
  ``expired``, ``cancelled`` or ``failed`` (``--no-wait``: look once), downloads its output
  and error files (``GET /v1/files/{id}/content``, kept as ``NAME.batch-output*.jsonl``
  and ``NAME.batch-errors*.jsonl``), and stores every answer in the cache ``vp run-llm``
  uses. Failed lines (an error status, or ``batch_expired``) are not stored: a plain
  ``vp run-llm`` with the same options afterwards asks only those. Then it writes
  ``NAME.json`` and ``NAME_raw.jsonl`` as ``vp run-llm`` does.

The API key is read from the environment (``--api-key-env``) and sent only in the
Authorization header: it is written to no file, log or cache.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tqdm import tqdm

from analysis.llm.cache import AnswerCache
from analysis.llm.client import FATAL_STATUS, RATING_ANSWER_CHARS, RETRY_STATUS, OpenAIBackend, Question, cut_answer
from analysis.llm.parse import parse_answer
from analysis.llm.prompts import REVERSED_SUFFIX
from valueportrait.atomic import write_json_atomic, write_text_atomic
from valueportrait.errors import InputError, redact
from valueportrait.files import read_data_file
from valueportrait.retry import backoff_delay, retry_after_seconds

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
MAX_LINES = 50_000
MAX_BYTES = 190 * 2**20
BACKEND_NAME = "openai-batch"
TERMINAL = ("completed", "expired", "cancelled", "failed")
STATUSES = ("validating", "in_progress", "finalizing", "cancelling", *TERMINAL)


def custom_id(question: Question) -> str:
    """``portrait_id/option_id/variant/order/prompt_hash``: unique per question, readable in the API's files."""
    order = "lowest_first" if question.variant.endswith(REVERSED_SUFFIX) else "highest_first"
    item = question.item
    return f"{item.portrait_id}/{item.option_id}/{question.variant}/{order}/{question.prompt_hash}"


def request_line(question: Question, backend: OpenAIBackend) -> dict:
    """One line of the batch request file, as the Batch API documents it."""
    return {"custom_id": custom_id(question), "method": "POST", "url": ENDPOINT, "body": backend.request_body(question)}


def state_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f"{name}.batch.json"


def _part_name(name: str, index: int, kind: str = "batch") -> str:
    return f"{name}.{kind}.jsonl" if index == 0 else f"{name}.{kind}-{index + 1}.jsonl"


def load_state(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: no batch here: run `vp run-llm ... --batch write` (or submit) first")
    state = read_data_file(path, "json")
    if not isinstance(state, dict) or not isinstance(state.get("parts"), list) or not isinstance(state.get("questions"), dict):
        raise InputError(f"{path}: not a batch record written by vp run-llm --batch")
    return state


def _save(state: dict, path: Path) -> None:
    write_json_atomic(state, path)


def check_state(state: dict, path: Path, model: str, persona: str | None, settings: dict) -> None:
    """The batch must be for the model, persona and settings of this command (else its answers key other questions)."""
    for name, mine in (("model", model), ("persona", persona or None), ("settings", settings)):
        if state.get(name) != mine:
            raise InputError(f"{path}: {name}: the batch was written for {state.get(name)!r}, this command has {mine!r}; "
                             "use the options of `--batch write`, or write a new batch")


def write_batch(questions: list[Question], backend: OpenAIBackend, cache: AnswerCache, out_dir: Path, name: str,
                model: str, persona: str | None, limit: int | None = None) -> tuple[dict, int]:
    """Write the request file(s) for the questions the cache lacks (at most ``limit``); returns the state and the count cached."""
    path = state_path(out_dir, name)
    if path.is_file():
        old = load_state(path)
        pending = [p for p in old["parts"] if p.get("batch_id") and not p.get("collected")]
        if pending:
            raise InputError(f"{path}: batch {pending[0]['batch_id']} was submitted and not collected yet: "
                             "run --batch collect first (or delete this file to give that batch up)")
    done = cache.done_keys(model, persona or "")
    todo = [q for q in questions if q.key not in done]
    cached = len(questions) - len(todo)
    if limit is not None:
        todo = todo[: max(0, limit)]
    parts, chunk, size = [], [], 0
    for q in todo:
        line = json.dumps(request_line(q, backend), ensure_ascii=False) + "\n"
        if chunk and (len(chunk) >= MAX_LINES or size + len(line.encode()) > MAX_BYTES):
            parts.append(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line.encode())
    if chunk:
        parts.append(chunk)
    state = {"model": model, "persona": persona or None, "settings": backend.settings(), "endpoint": ENDPOINT,
             "completion_window": COMPLETION_WINDOW, "written_at": time.time(), "parts": [],
             "questions": {custom_id(q): [q.item.portrait_id, q.item.option_id, q.variant, q.prompt_hash] for q in todo}}
    for old_file in Path(out_dir).glob(f"{name}.batch*.jsonl"):
        if re.fullmatch(re.escape(name) + r"\.batch(-\d+)?\.jsonl", old_file.name):  # earlier request files only
            old_file.unlink()
    for index, lines in enumerate(parts):
        text = "".join(lines)
        file = _part_name(name, index)
        write_text_atomic(Path(out_dir) / file, text)
        state["parts"].append({"file": file, "lines": len(lines), "bytes": len(text.encode()),
                               "sha256": hashlib.sha256(text.encode()).hexdigest(),
                               "input_file_id": None, "batch_id": None, "status": None, "collected": False})
    _save(state, path)
    return state, cached


# ------------------------------------------------------------------ the API


class BatchClient:
    """The Files and Batches endpoints of an OpenAI-compatible API, with retries on 429/5xx/timeouts."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout: float = 60.0, max_retries: int = 6,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, rng: random.Random | None = None):
        self.base = base_url.rstrip("/")
        if self.base.endswith("/chat/completions"):
            self.base = self.base[: -len("/chat/completions")]
        self.max_retries = max_retries
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.rng = rng or random.Random()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout))

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        url = self.base + path
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TimeoutException:
                last = "timeout"
            except httpx.TransportError as exc:
                last = f"connection error: {type(exc).__name__}"
            else:
                status = response.status_code
                if status < 300:
                    return response
                message = _error_message(response)
                if status in FATAL_STATUS:
                    raise InputError(f"{url}: HTTP {status}: {message} (check --base-url, the model and the API key)")
                if status not in RETRY_STATUS:
                    raise InputError(f"{url}: HTTP {status}: {message}")
                last = f"HTTP {status}: {message}"
                retry_after = retry_after_seconds(response.headers.get("retry-after"))
            if attempt < self.max_retries:
                time.sleep(backoff_delay(attempt, retry_after, base=self.backoff_base, cap=self.backoff_cap,
                                         retry_after_cap=120.0, rng=self.rng))
        raise InputError(f"{url}: gave up after {self.max_retries + 1} attempts: {last}")

    def upload(self, path: Path) -> dict:
        with path.open("rb") as handle:
            return self._call("POST", "/files", data={"purpose": "batch"},
                              files={"file": (path.name, handle, "application/jsonl")}).json()

    def create(self, input_file_id: str, metadata: dict | None = None) -> dict:
        body = {"input_file_id": input_file_id, "endpoint": ENDPOINT, "completion_window": COMPLETION_WINDOW}
        if metadata:
            body["metadata"] = metadata
        return self._call("POST", "/batches", json=body).json()

    def retrieve(self, batch_id: str) -> dict:
        return self._call("GET", f"/batches/{batch_id}").json()

    def content(self, file_id: str) -> str:
        return self._call("GET", f"/files/{file_id}/content").text


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return redact(str(error["message"])[:300])
    except (ValueError, AttributeError):
        pass
    return redact(" ".join(response.text[:1200].split()))[:300]  # bodies may echo the key they were sent


def submit_batch(state: dict, path: Path, client: BatchClient) -> list[str]:
    """Upload and create every part not submitted yet; the ids are saved after each call."""
    out_dir = path.parent
    created = []
    for part in state["parts"]:
        if part.get("batch_id"):
            continue
        file = out_dir / part["file"]
        if hashlib.sha256(file.read_bytes()).hexdigest() != part["sha256"]:
            raise InputError(f"{file}: changed since --batch write; write the batch again")
        if not part.get("input_file_id"):
            part["input_file_id"] = client.upload(file)["id"]
            _save(state, path)
        batch = client.create(part["input_file_id"], {"tool": "valueportrait", "model": state["model"][:500]})
        part["batch_id"], part["status"] = batch["id"], batch.get("status")
        _save(state, path)
        created.append(batch["id"])
    return created


@dataclass
class CollectStats:
    answered: int = 0
    already_cached: int = 0
    failed: Counter = field(default_factory=Counter)  # error code or HTTP status -> lines
    unknown: int = 0  # lines whose custom_id this batch did not write
    batch_errors: list = field(default_factory=list)  # a failed batch's validation errors
    pending: list = field(default_factory=list)  # batches not finished (with --no-wait)
    statuses: dict = field(default_factory=dict)


def _wait(client: BatchClient, part: dict, wait: bool, poll_s: float, progress: bool) -> dict:
    batch = client.retrieve(part["batch_id"])
    if batch.get("status") in TERMINAL or not wait:
        return batch
    counts = batch.get("request_counts") or {}
    bar = tqdm(total=counts.get("total") or part["lines"], desc=f"batch {part['batch_id']}", unit="req",
               file=sys.stderr, disable=not progress)
    try:
        while batch.get("status") not in TERMINAL:
            time.sleep(poll_s)
            batch = client.retrieve(part["batch_id"])
            counts = batch.get("request_counts") or {}
            bar.total = counts.get("total") or bar.total
            bar.n = (counts.get("completed") or 0) + (counts.get("failed") or 0)
            bar.set_postfix_str(str(batch.get("status")), refresh=False)
            bar.refresh()
    finally:
        bar.close()
    return batch


def _lines(text: str, where: str) -> list[dict]:
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise InputError(f"{where}: line {number}: not JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("custom_id"), str):
            raise InputError(f"{where}: line {number}: no custom_id")
        out.append(record)
    return out


def _reply_text(record: dict) -> tuple[str | None, str | None]:
    """(answer text, None) for a successful line, or (None, error code) for a failed one."""
    error = record.get("error")
    response = record.get("response") or {}
    status = response.get("status_code")
    if error:
        return None, str(error.get("code") or error.get("message") or "error") if isinstance(error, dict) else str(error)
    if status != 200:
        return None, f"HTTP {status}"
    try:
        text = response["body"]["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None, "HTTP 200 without choices[0].message"
    return (text if isinstance(text, str) else None), None


def collect_batch(state: dict, path: Path, client: BatchClient, cache: AnswerCache, labels, *, wait: bool = True,
                  poll_s: float = 60.0, progress: bool = True) -> CollectStats:
    """Fetch every submitted, uncollected part and store its answers in the cache."""
    stats = CollectStats()
    out_dir, name = path.parent, path.name[: -len(".batch.json")]
    persona = state.get("persona") or ""
    for index, part in enumerate(state["parts"]):
        if not part.get("batch_id"):
            raise InputError(f"{path}: {part['file']} was not submitted: run --batch submit")
        if part.get("collected"):
            continue
        batch = _wait(client, part, wait, poll_s, progress)
        status = batch.get("status")
        part["status"] = status
        stats.statuses[part["batch_id"]] = status
        if status not in TERMINAL:
            stats.pending.append((part["batch_id"], status, batch.get("request_counts")))
            _save(state, path)
            continue
        if status == "failed":
            errors = ((batch.get("errors") or {}).get("data")) or []
            stats.batch_errors.extend((part["batch_id"], e.get("line"), e.get("code"), e.get("message")) for e in errors)
        for kind, file_id in (("output", batch.get("output_file_id")), ("errors", batch.get("error_file_id"))):
            if not file_id:
                continue
            text = client.content(file_id)
            local = out_dir / _part_name(name, index, f"batch-{kind}")
            write_text_atomic(local, text)
            for record in _lines(text, str(local)):
                key_parts = state["questions"].get(record["custom_id"])
                if key_parts is None:
                    stats.unknown += 1
                    continue
                text_, error = _reply_text(record)
                if error is not None:
                    stats.failed[error] += 1
                    continue
                key = (state["model"], persona, *key_parts)
                if cache.has(key):
                    stats.already_cached += 1
                    continue
                text_ = cut_answer(text_, RATING_ANSWER_CHARS)  # as run-llm keeps a runaway answer: cut, marked
                cache.put(key, text_, parse_answer(text_, labels), 1, None, BACKEND_NAME)
                stats.answered += 1
        part["collected"] = True
        part["counts"] = batch.get("request_counts")
        _save(state, path)
    return stats


# ------------------------------------------------------------------ command line


def run_batch(args, items, prompts, backend: OpenAIBackend, questions: list[Question], name: str,
              api_key: str | None) -> int:
    """The ``--batch`` step the command line asks for (see the module docstring)."""
    from analysis.llm.runner import RunStats, collect_outputs, write_outputs

    out_dir = Path(args.out)
    cache_path = Path(args.cache) if args.cache else out_dir / "llm_cache.sqlite"
    path = state_path(out_dir, name)
    persona = args.persona or None
    with AnswerCache(cache_path) as cache:
        if args.batch == "write" or (args.batch == "submit" and not path.is_file()):
            state, cached = write_batch(questions, backend, cache, out_dir, name, args.model, persona, args.limit)
            lines = sum(p["lines"] for p in state["parts"])
            print(f"{args.model}: {len(questions)} questions; {cached} already in the cache; {lines} request lines "
                  f"in {', '.join(p['file'] for p in state['parts']) or 'no file (nothing to ask)'} (written to {out_dir})")
            if args.batch == "write":
                print(f"next: vp run-llm ... --batch submit (sends them to {ENDPOINT} as a batch)")
                return 0
        state = load_state(path)
        check_state(state, path, args.model, persona, backend.settings())
        if not state["parts"]:
            print("the cache already holds every answer: nothing to submit or collect")
            return 0
        if not args.base_url:
            raise InputError("command line: --base-url: required with --batch submit/collect")
        client = BatchClient(args.base_url, api_key, timeout=args.timeout, max_retries=args.max_retries)
        try:
            if args.batch == "submit":
                created = submit_batch(state, path, client)
                print(f"submitted {len(created)} batch(es): {', '.join(created) or 'none new'}; "
                      f"state in {path}\nnext: vp run-llm ... --batch collect (waits for the batch; up to {COMPLETION_WINDOW})")
                return 0
            stats = collect_batch(state, path, client, cache, prompts.labels, wait=not args.no_wait,
                                  poll_s=args.poll_interval, progress=not args.no_progress)
        finally:
            client.close()
        for batch_id, status, counts in stats.pending:
            print(f"batch {batch_id}: {status} {counts or ''}: not finished; run --batch collect again later")
        for batch_id, line, code, message in stats.batch_errors[:10]:
            print(f"batch {batch_id} failed: line {line}: {code}: {message}")
        failed = sum(stats.failed.values())
        print(f"collected: {stats.answered} answers stored in {cache_path}, {stats.already_cached} already there; "
              f"{failed} failed lines ({', '.join(f'{c}: {n}' for c, n in stats.failed.most_common()) or 'none'})"
              + (f"; {stats.unknown} lines with a custom_id this batch did not write (ignored)" if stats.unknown else ""))
        run_stats = RunStats(questions=len(questions))
        averaged, raw = collect_outputs(questions, items, prompts, cache, args.model, persona, BACKEND_NAME, run_stats)
    json_path = write_outputs(averaged, raw, out_dir, name)
    print(f"unparseable answers: {run_stats.unparseable}; without an answer: {run_stats.missing}")
    print(f"wrote {json_path} and {json_path.with_name(json_path.stem + '_raw.jsonl')}")
    if stats.pending:
        return 3
    if run_stats.missing:
        print(f"{run_stats.missing} questions have no answer: run the same vp run-llm command without --batch to ask "
              "only those, or --batch write for a new batch of them", file=sys.stderr)
        return 1
    return 0
