"""A loopback fake of Prolific's API, for `vp prolific`'s tests, written from the public documentation.

What it does as documented (docs.prolific.com API reference; the shapes of Prolific's own CLI,
``prolific-oss/cli``, where the reference pages give no example):

* ``Authorization: Token <token>`` on every request, else 401 with an error body;
* error bodies ``{"error": {"status", "title", "detail", "additional_information"}}``, where
  ``detail`` is a string or a field -> messages object;
* lists (``GET /api/v1/studies/``, ``GET /api/v1/submissions/?study=ID``) paginated with
  ``page`` and ``page_size`` (default 20), answering ``{"results", "_links": {"self", "next",
  "previous", "last"} (each {"href", "title"}, ``next.href`` null on the last page),
  "meta": {"count"}}``;
* ``POST /api/v1/studies/`` creates a draft (201, status UNPUBLISHED), refusing a body without
  the required fields (400); ``POST /api/v1/studies/{id}/transition/`` ``PUBLISH`` makes it ACTIVE;
* ``POST /api/v1/submissions/{id}/transition/``: ``REJECT`` needs a ``rejection_category`` of
  the documented list and a message of at least 100 characters; a transition is final (400
  from any status but AWAITING REVIEW) and the same request twice is ignored (idempotent);
* ``POST /api/v1/submissions/bulk-approve/`` with ``submission_ids`` (or ``study_id`` +
  ``participant_ids``) approves those awaiting review;
* ``POST /api/v1/studies/{id}/demographic-export/`` answers CSV with the documented base
  fields (the reference lists the fields, not the exact header texts: these are ours);
* ``POST /api/v1/submissions/bonus-payments/`` sets up bonuses from ``csv_bonuses`` lines
  ``<participant_id>,<amount>`` (400 naming the ids that did not take part), answering amounts
  in cents; ``POST /api/v1/bulk-bonus-payments/{id}/pay/`` pays, and paying twice pays twice
  (documented as not idempotent);
* rate limits as 429 with ``Retry-After`` (Prolific does not publish its limits or the
  header's use: the fake follows RFC 9110, the closest documented shape).

Faults are injected per request (:class:`Fault`): a status before acting (429, 500), a status
after acting (the answer lost on the way back), or a hang after acting (to kill the client
mid-call). Everything received is logged for the tests: every transition request per
submission, every bulk approval, every bonus payment.

Run in a thread: ``with ProlificServer(token="t") as server: server.url``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

AWAITING = "AWAITING REVIEW"
REJECTION_CATEGORIES = ("TOO_QUICKLY", "TOO_SLOWLY", "FAILED_INSTRUCTIONS", "INCOMP_LONGITUDINAL", "FAILED_CHECK",
                        "LOW_EFFORT", "MALINGERING", "NO_CODE", "BAD_CODE", "NO_DATA", "UNSUPP_DEVICE", "OTHER")
STUDY_REQUIRED = ("name", "description", "external_study_url", "prolific_id_option", "completion_codes",
                  "total_available_places", "estimated_completion_time", "reward")
CODE_TYPES = ("COMPLETED", "FAILED_ATTENTION_CHECK", "FOLLOW_UP_STUDY", "GIVE_BONUS", "INCOMPATIBLE_DEVICE",
              "NO_CONSENT", "OTHER")
DEMOGRAPHIC_HEADER = ["Submission id", "Participant id", "Status", "Started at", "Completed at", "Time taken",
                      "Age", "Sex", "First language", "Country of residence", "Nationality", "Country of birth",
                      "Student status", "Employment status", "Reviewed at", "Completion code"]


def new_id() -> str:
    return secrets.token_hex(12)  # 24 hex digits, like Prolific's ids


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Fault:
    """Answer `status` to the `times` requests matching `method` and `path` (a regex) after skipping `skip`.

    ``when``: ``before`` (nothing is done), ``after`` (done, then the error: the answer is
    lost), ``hang`` (done, then no answer until ``release`` is set).
    """

    method: str
    path: str
    status: int = 500
    times: int = 1
    skip: int = 0
    when: str = "before"
    retry_after: str | None = None
    seen: int = 0
    fired: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, path: str) -> bool:
        if method != self.method or not re.fullmatch(self.path, path):
            return False
        self.seen += 1
        if self.seen <= self.skip or self.fired >= self.times:
            return False
        self.fired += 1
        return True


class Answer(Exception):
    def __init__(self, status: int, title: str, detail, headers: dict | None = None):
        self.status, self.title, self.detail, self.headers = status, title, detail, headers or {}

    def body(self) -> dict:
        return {"error": {"status": self.status, "title": self.title, "detail": self.detail,
                          "additional_information": ""}}


class FakeProlific:
    """The state and the request handling (thread-safe)."""

    def __init__(self, token: str = "test-token", max_page_size: int = 100):
        self.token = token
        self.max_page_size = max_page_size
        self.lock = threading.RLock()
        self.studies: dict[str, dict] = {}
        self.submissions: dict[str, dict] = {}   # id -> submission (insertion order = list order)
        self.demographics: dict[str, dict] = {}  # submission id -> extra columns
        self.bonuses: dict[str, dict] = {}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, int]] = []        # (method, path, status answered)
        self.transition_requests: dict[str, list[dict]] = {}  # submission id -> bodies received
        self.transitions_applied: dict[str, list[str]] = {}   # submission id -> statuses it was moved to
        self.bulk_approvals: list[list[str]] = []
        self.payments: list[str] = []                         # bulk bonus ids, once per pay that went through
        self.created: list[dict] = []
        self.headers_seen: list[dict] = []
        self.base = ""

    # -- setting up a scenario -----------------------------------------------------------------
    def add_study(self, study_id: str | None = None, **fields) -> str:
        sid = study_id or new_id()
        with self.lock:
            self.studies[sid] = dict({"id": sid, "name": "A study", "internal_name": "", "status": "ACTIVE",
                                      "total_available_places": 10, "reward": 100, "estimated_completion_time": 10},
                                     **fields)
        return sid

    def add_submission(self, study_id: str, participant_id: str, *, status: str = AWAITING,
                       study_code: str | None = None, submission_id: str | None = None,
                       minutes: float = 12.0) -> str:
        sub_id = submission_id or new_id()
        start = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc) + timedelta(minutes=len(self.submissions))
        done = status not in ("ACTIVE", "RETURNED", "TIMED-OUT")
        with self.lock:
            self.submissions[sub_id] = {
                "id": sub_id, "participant_id": participant_id, "study_id": study_id, "status": status,
                "started_at": iso(start), "completed_at": iso(start + timedelta(minutes=minutes)) if done else None,
                "is_complete": done, "time_taken": int(minutes * 60) if done else None, "reward": 200,
                "study_code": study_code, "bonus_payments": [], "return_requested": None, "strata": {},
            }
            h = int(hashlib.sha256(participant_id.encode()).hexdigest()[:8], 16)
            self.demographics[sub_id] = {"Age": str(18 + h % 50), "Sex": ("Female", "Male")[h % 2],
                                         "First language": "English", "Country of residence": "United Kingdom",
                                         "Nationality": "United Kingdom", "Country of birth": "United Kingdom",
                                         "Student status": "No", "Employment status": "Full-Time"}
        return sub_id

    def status_of(self, submission_id: str) -> str:
        return self.submissions[submission_id]["status"]

    def transitions_sent(self, submission_id: str) -> int:
        return len(self.transition_requests.get(submission_id, []))

    def approvals_sent(self, submission_id: str) -> int:
        return sum(submission_id in batch for batch in self.bulk_approvals)

    # -- the API -------------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict, raw: bytes) -> tuple[int, object, dict]:
        split = urlsplit(target)
        path, query = split.path, {k: v[-1] for k, v in parse_qs(split.query).items()}
        with self.lock:
            self.headers_seen.append(dict(headers))
        try:
            if headers.get("authorization") != f"Token {self.token}":
                raise Answer(401, "Not authenticated", "Authentication credentials were not provided or are invalid.")
            fault = None
            with self.lock:
                for f in self.faults:
                    if f.matches(method, path):
                        fault = f
                        break
            if fault and fault.when == "before":
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                raise Answer(fault.status, "Too many requests" if fault.status == 429 else "Server error",
                             "Request was throttled." if fault.status == 429 else "Something went wrong.", extra)
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                raise Answer(400, "Bad request", "The body is not JSON.") from None
            with self.lock:
                status, payload = self.route(method, path, query, body)
            if fault and fault.when == "after":
                raise Answer(fault.status, "Server error", "Something went wrong.")
            if fault and fault.when == "hang":
                fault.release.wait(60)
                raise Answer(504, "Gateway timeout", "No answer.")
            return status, payload, {}
        except Answer as a:
            return a.status, a.body(), a.headers

    def _page(self, path: str, query: dict, items: list[dict]) -> dict:
        try:
            size = min(self.max_page_size, max(1, int(query.get("page_size", 20))))
            page = max(1, int(query.get("page", 1)))
        except ValueError:
            raise Answer(400, "Bad request", {"page": ["A valid integer is required."]}) from None
        last = max(1, -(-len(items) // size))

        def link(n):
            return f"{self.base}{path}?" + urlencode(dict(query, page=n, page_size=size))

        return {"results": items[(page - 1) * size: page * size],
                "_links": {"self": {"href": link(page), "title": "Current"},
                           "next": {"href": link(page + 1) if page < last else None, "title": "Next"},
                           "previous": {"href": link(page - 1) if page > 1 else None, "title": "Previous"},
                           "last": {"href": link(last), "title": "Last"}},
                "meta": {"count": len(items)}}

    def route(self, method: str, path: str, query: dict, body: dict) -> tuple[int, object]:
        if method == "GET" and path == "/api/v1/studies/":
            return 200, self._page(path, query, list(self.studies.values()))
        if method == "POST" and path == "/api/v1/studies/":
            return self.create_study(body)
        m = re.fullmatch(r"/api/v1/studies/([0-9a-f]{24})/(transition/|demographic-export/)?", path)
        if m:
            study = self.studies.get(m.group(1))
            if study is None:
                raise Answer(404, "Not found", "No study with this id.")
            if method == "GET" and not m.group(2):
                return 200, study
            if method == "POST" and m.group(2) == "transition/":
                if body.get("action") != "PUBLISH" or study["status"] != "UNPUBLISHED":
                    raise Answer(400, "Bad request", f"Cannot {body.get('action')} a study in status {study['status']}.")
                study["status"] = "ACTIVE"
                return 200, study
            if method == "POST" and m.group(2) == "demographic-export/":
                return 200, self.export(study["id"])
        if method == "GET" and path == "/api/v1/submissions/":
            if "study" not in query:
                raise Answer(400, "Bad request", {"study": ["This field is required."]})
            items = [s for s in self.submissions.values() if s["study_id"] == query["study"]]
            return 200, self._page(path, query, items)
        if method == "POST" and path == "/api/v1/submissions/bulk-approve/":
            return self.bulk_approve(body)
        if method == "POST" and path == "/api/v1/submissions/bonus-payments/":
            return self.set_up_bonuses(body)
        m = re.fullmatch(r"/api/v1/bulk-bonus-payments/([0-9a-f]{24})/pay/", path)
        if m and method == "POST":
            if m.group(1) not in self.bonuses:
                raise Answer(404, "Not found", "No bulk bonus payment with this id.")
            self.payments.append(m.group(1))
            return 202, {}
        m = re.fullmatch(r"/api/v1/submissions/([0-9a-f]{24})/(transition/)?", path)
        if m:
            sub = self.submissions.get(m.group(1))
            if sub is None:
                raise Answer(404, "Not found", "No submission with this id.")
            if method == "GET" and not m.group(2):
                return 200, sub
            if method == "POST" and m.group(2):
                return self.transition(sub, body)
        raise Answer(404, "Not found", f"No route {method} {path}.")

    def create_study(self, body: dict) -> tuple[int, dict]:
        missing = {k: ["This field is required."] for k in STUDY_REQUIRED if body.get(k) in (None, "", [])}
        if missing:
            raise Answer(400, "Bad request", missing)
        for code in body["completion_codes"]:
            if not code.get("code") or code.get("code_type") not in CODE_TYPES or not code.get("actions"):
                raise Answer(400, "Bad request", {"completion_codes": [f"Invalid completion code {code!r}."]})
        for key in ("total_available_places", "estimated_completion_time", "reward"):
            if not isinstance(body[key], int) or body[key] < 1:
                raise Answer(400, "Bad request", {key: ["A positive integer is required."]})
        sid = new_id()
        study = dict(body, id=sid, status="UNPUBLISHED", places_taken=0)
        self.studies[sid] = study
        self.created.append(study)
        return 201, study

    def transition(self, sub: dict, body: dict) -> tuple[int, dict]:
        self.transition_requests.setdefault(sub["id"], []).append(body)
        action = body.get("action")
        target = {"APPROVE": "APPROVED", "REJECT": "REJECTED"}.get(action)
        if target is None:
            raise Answer(400, "Bad request", {"action": [f"{action!r} is not a valid choice."]})
        if action == "REJECT":
            problems = {}
            if body.get("rejection_category") not in REJECTION_CATEGORIES:
                problems["rejection_category"] = [f"{body.get('rejection_category')!r} is not a valid choice."]
            if len(body.get("message") or "") < 100:
                problems["message"] = ["Ensure this field has at least 100 characters."]
            if problems:
                raise Answer(400, "Bad request", problems)
        if sub["status"] == target:  # the same request again: ignored
            return 200, sub
        if sub["status"] != AWAITING:
            raise Answer(400, "Bad request", f"Cannot {action} a submission in status {sub['status']}.")
        sub["status"] = target
        self.transitions_applied.setdefault(sub["id"], []).append(target)
        return 200, sub

    def bulk_approve(self, body: dict) -> tuple[int, dict]:
        if "submission_ids" in body:
            ids = list(body["submission_ids"])
        elif "study_id" in body and "participant_ids" in body:
            ids = [s["id"] for s in self.submissions.values()
                   if s["study_id"] == body["study_id"] and s["participant_id"] in body["participant_ids"]]
        else:
            raise Answer(400, "Bad request", "Give submission_ids, or study_id and participant_ids.")
        unknown = [i for i in ids if i not in self.submissions]
        if unknown:
            raise Answer(400, "Bad request", f"Unknown submission ids: {', '.join(unknown)}.")
        self.bulk_approvals.append(ids)
        for i in ids:
            sub = self.submissions[i]
            if sub["status"] == AWAITING:
                sub["status"] = "APPROVED"
                self.transitions_applied.setdefault(i, []).append("APPROVED")
        return 200, {"message": "The request to bulk approve has been made successfully."}

    def export(self, study_id: str) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(DEMOGRAPHIC_HEADER)
        for s in self.submissions.values():
            if s["study_id"] != study_id:
                continue
            d = self.demographics.get(s["id"], {})
            writer.writerow([s["id"], s["participant_id"], s["status"], s["started_at"], s["completed_at"] or "",
                             s["time_taken"] or "", d.get("Age", ""), d.get("Sex", ""), d.get("First language", ""),
                             d.get("Country of residence", ""), d.get("Nationality", ""), d.get("Country of birth", ""),
                             d.get("Student status", ""), d.get("Employment status", ""), "", s["study_code"] or ""])
        return out.getvalue()

    def set_up_bonuses(self, body: dict) -> tuple[int, dict]:
        study = body.get("study_id")
        if study not in self.studies:
            raise Answer(400, "Bad request", {"study_id": ["Unknown study."]})
        takers = {s["participant_id"] for s in self.submissions.values() if s["study_id"] == study}
        total, wrong = Decimal(0), []
        for line in (body.get("csv_bonuses") or "").strip().splitlines():
            pid, _, amount = line.partition(",")
            try:
                value = Decimal(amount)
            except InvalidOperation:
                raise Answer(400, "Bad request", {"csv_bonuses": [f"Invalid amount in line {line!r}."]}) from None
            if pid not in takers:
                wrong.append(pid)
            total += value
        if wrong:
            raise Answer(400, "Bad request", {"csv_bonuses": [f"These ids did not take part in the study: {', '.join(wrong)}"]})
        bulk_id = new_id()
        cents = int(total * 100)
        fees = round(cents / 3)
        self.bonuses[bulk_id] = {"id": bulk_id, "study": study, "amount": cents, "fees": fees, "vat": 0,
                                 "total_amount": cents + fees, "csv_bonuses": body["csv_bonuses"]}
        return 201, self.bonuses[bulk_id]


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


class ProlificServer:
    """Run a :class:`FakeProlific` on 127.0.0.1 (random port) in a background thread."""

    def __init__(self, **options):
        self.fake = FakeProlific(**options)
        fake = self.fake

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _serve(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, extra = fake.handle(self.command, self.path, headers, raw)
                with fake.lock:
                    fake.requests.append((self.command, urlsplit(self.path).path, status))
                if isinstance(payload, str):
                    data, ctype = payload.encode("utf-8"), "text/csv; charset=utf-8"
                else:
                    data, ctype = json.dumps(payload).encode(), "application/json"
                self.send_response(status, _REASONS.get(status, "Status"))
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.fake.base = self.url
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> ProlificServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for f in self.fake.faults:
            f.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(10)
