"""A loopback fake of OpenAI's Files and Batches endpoints, beside the chat-completions fake of llm_server.py.

Written from the API's public documentation:

* ``POST /v1/files`` (multipart: ``purpose=batch`` and ``file``) -> a file object
  ``{"id": "file-...", "object": "file", "bytes", "created_at", "filename", "purpose"}``.
* ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window`` = ``24h``,
  optional ``metadata``) -> a batch object, status ``validating``.
* ``GET /v1/batches/{id}`` -> the batch; each call moves it one step along its plan:
  ``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed`` (or, with
  ``expire=True``, ``validating`` -> ``in_progress`` -> ``expired`` with only part done).
  ``request_counts`` ``{total, completed, failed}``, ``output_file_id`` / ``error_file_id``
  set when there is something in them. Validation checks each input line for what the
  documentation requires (JSON object, unique string ``custom_id``, ``method`` ``POST``,
  ``url`` equal to the batch's endpoint, a ``body`` with ``model`` and ``messages``, at
  most 50,000 lines); a file that fails goes to ``failed`` with ``errors.data`` entries
  ``{code, message, param, line}``.
* ``GET /v1/files/{id}/content`` -> the file's bytes. Output lines are
  ``{"id": "batch_req_...", "custom_id", "response": {"status_code": 200, "request_id",
  "body": chat completion}, "error": null}``; failed requests go to the error file with
  their error status (``"response": {"status_code": 400, "body": {"error": ...}}``), and
  requests left when a batch expires with ``"response": null, "error": {"code":
  "batch_expired", "message"}``.

Answers are those of :class:`llm_server.FakeLLM` for the same messages (so a test knows
them); a question whose fault is ``dead`` fails with 400. Errors are JSON
``{"error": {"message", "type", "param", "code"}}``; with ``api_key`` set, a request
without ``Authorization: Bearer <key>`` gets 401. ``rate_limit_first=N`` answers the first
N calls to the batch endpoints with 429 and ``Retry-After: 0``.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import time

from llm_server import FakeLLM, LoopbackServer, question_key  # noqa: F401 (LoopbackServer for the tests)

MAX_LINES = 50_000


def _error(status: int, message: str, param: str | None = None, code: str | None = None):
    return status, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}, {}


def parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``{field: (filename or None, bytes)}`` of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = (part.get_filename(), part.get_payload(decode=True))
    return fields


class FakeBatchAPI(FakeLLM):
    """Chat completions (inherited) plus files and batches, all on one loopback server."""

    def __init__(self, *, api_key: str | None = None, expire: bool = False, expire_share: float = 0.5,
                 rate_limit_first: int = 0, **options):
        super().__init__(**options)
        self.api_key = api_key
        self.expire = expire
        self.expire_share = expire_share
        self.rate_limit_left = rate_limit_first
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.batch_calls: list[tuple[str, str]] = []  # (method, path) of every files/batches call
        self.auth_seen: list[str | None] = []
        self._ids = itertools.count(1)

    # ---------------------------------------------------------------- routing

    async def route(self, method, path, headers, raw):
        if not path.startswith("/v1/files") and not path.startswith("/v1/batches"):
            return await super().route(method, path, headers, raw)
        self.batch_calls.append((method, path))
        self.auth_seen.append(headers.get("authorization"))
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                   "param": None, "code": "invalid_api_key"}}, {}
        if self.rate_limit_left > 0:
            self.rate_limit_left -= 1
            return 429, {"error": {"message": "Rate limit reached.", "type": "requests", "param": None,
                                   "code": "rate_limit_exceeded"}}, {"Retry-After": "0"}
        parts = path.strip("/").split("/")  # v1, files|batches, [id], [content]
        if method == "POST" and parts == ["v1", "files"]:
            return self.upload(headers.get("content-type", ""), raw)
        if method == "GET" and len(parts) == 4 and parts[1] == "files" and parts[3] == "content":
            file = self.files.get(parts[2])
            return (200, file["content"], {}) if file else _error(404, f"No such File object: {parts[2]}", "id")
        if method == "POST" and parts == ["v1", "batches"]:
            try:
                body = json.loads(raw)
            except ValueError:
                return _error(400, "We could not parse the JSON body of your request.")
            return self.create(body)
        if method == "GET" and len(parts) == 3 and parts[1] == "batches":
            return self.advance(parts[2])
        return _error(404, f"Invalid URL ({method} {path})")

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"

    def _file(self, content: bytes, filename: str, purpose: str) -> dict:
        file_id = self._new_id("file")
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                               "filename": filename, "purpose": purpose, "content": content}
        return self.files[file_id]

    # ---------------------------------------------------------------- files

    def upload(self, content_type: str, raw: bytes):
        if not content_type.startswith("multipart/form-data"):
            return _error(400, "Expected multipart/form-data")
        fields = parse_multipart(content_type, raw)
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if purpose != "batch":
            return _error(400, f"Invalid purpose {purpose!r}; this fake accepts 'batch'", "purpose")
        if "file" not in fields or fields["file"][0] is None:
            return _error(400, "Missing file", "file")
        file = self._file(fields["file"][1], fields["file"][0], purpose)
        return 200, {k: v for k, v in file.items() if k != "content"}, {}

    # ---------------------------------------------------------------- batches

    def create(self, body: dict):
        file_id = body.get("input_file_id")
        if file_id not in self.files:
            return _error(400, f"Invalid 'input_file_id': {file_id!r}", "input_file_id")
        if body.get("endpoint") not in ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions"):
            return _error(400, f"Invalid 'endpoint': {body.get('endpoint')!r}", "endpoint")
        if body.get("completion_window") != "24h":
            return _error(400, "Invalid 'completion_window': only '24h' is supported", "completion_window")
        batch_id = self._new_id("batch")
        now = int(time.time())
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": file_id, "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }
        return 200, self.batches[batch_id], {}

    def validate(self, batch: dict) -> tuple[list[dict], list[dict]]:
        """(requests, errors) of the batch's input file, as the Batch API validates it."""
        lines = self.files[batch["input_file_id"]]["content"].decode("utf-8").splitlines()
        requests, errors, seen = [], [], set()
        if len(lines) > MAX_LINES:
            errors.append({"code": "too_many_requests", "message": f"{len(lines)} requests; at most {MAX_LINES}",
                           "param": None, "line": None})
        for number, line in enumerate(lines, 1):
            def bad(message, param=None):
                errors.append({"code": "invalid_request", "message": message, "param": param, "line": number})
            try:
                request = json.loads(line)
            except ValueError:
                bad("Invalid JSON line")
                continue
            if not isinstance(request, dict):
                bad("Each line must be a JSON object")
            elif not isinstance(request.get("custom_id"), str) or request["custom_id"] in seen:
                bad("custom_id must be a unique string", "custom_id")
            elif request.get("method") != "POST":
                bad("method must be POST", "method")
            elif request.get("url") != batch["endpoint"]:
                bad(f"url {request.get('url')!r} does not match the batch's endpoint {batch['endpoint']!r}", "url")
            elif not isinstance(request.get("body"), dict) or not request["body"].get("model") \
                    or not isinstance(request["body"].get("messages"), list):
                bad("body must be an object with model and messages", "body")
            else:
                seen.add(request["custom_id"])
                requests.append(request)
        return requests, errors

    def _run(self, batch: dict, requests: list[dict], done: int) -> None:
        """Answer the first `done` requests; the rest expire. Writes the output and error files."""
        output, errors = [], []
        for index, request in enumerate(requests):
            rid = f"batch_req_{index:06d}"
            if index >= done:
                errors.append({"id": rid, "custom_id": request["custom_id"], "response": None,
                               "error": {"code": "batch_expired",
                                         "message": "This request could not be executed before the completion window expired."}})
                continue
            key = question_key(request["body"]["messages"])
            if self.fault_of(key) == "dead":
                body = {"error": {"message": "The request was rejected.", "type": "invalid_request_error",
                                  "param": None, "code": None}}
                errors.append({"id": rid, "custom_id": request["custom_id"],
                               "response": {"status_code": 400, "request_id": f"req_{index}", "body": body}, "error": None})
                continue
            completion = self._completion(request["body"], self.answer_text(key))
            output.append({"id": rid, "custom_id": request["custom_id"],
                           "response": {"status_code": 200, "request_id": f"req_{index}", "body": completion}, "error": None})
        counts = batch["request_counts"]
        counts.update(total=len(requests), completed=len(output), failed=len(errors))
        jsonl = lambda records: "".join(json.dumps(r) + "\n" for r in records).encode()  # noqa: E731
        if output:
            batch["output_file_id"] = self._file(jsonl(output), "batch_output.jsonl", "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._file(jsonl(errors), "batch_errors.jsonl", "batch_output")["id"]

    def advance(self, batch_id: str):
        batch = self.batches.get(batch_id)
        if batch is None:
            return _error(404, f"No such Batch object: {batch_id}", "batch_id")
        now = int(time.time())
        status = batch["status"]
        if status == "validating":
            requests, errors = self.validate(batch)
            if errors:
                batch.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
            else:
                batch.update(status="in_progress", in_progress_at=now)
                batch["request_counts"]["total"] = len(requests)
                batch["_requests"] = requests
        elif status == "in_progress":
            requests = batch["_requests"]
            if self.expire:
                self._run(batch, requests, int(len(requests) * self.expire_share))
                batch.update(status="expired", expired_at=now)
            else:
                self._run(batch, requests, len(requests))
                batch.update(status="finalizing", finalizing_at=now)
        elif status == "finalizing":
            batch.update(status="completed", completed_at=now)
        return 200, {k: v for k, v in batch.items() if not k.startswith("_")}, {}


def batch_server(**options) -> LoopbackServer:
    """A LoopbackServer running a :class:`FakeBatchAPI` (use as a context manager)."""
    return LoopbackServer(fake=FakeBatchAPI(**options))
