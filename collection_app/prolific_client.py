"""A small client for Prolific's public API (https://docs.prolific.com/api-reference), for `vp prolific`.

What it follows from the documentation, and how:

* Authentication: every request carries the header ``Authorization: Token <token>``. The
  token is held in a header of the HTTP session only: it is never put in a message, a log
  line, an exception or the database. A 401/403 stops the command ("check PROLIFIC_TOKEN").
* Pagination: list endpoints answer ``{"results": [...], "_links": {"self": {"href"},
  "next": {"href"}, "previous": {"href"}, "last": {"href"}}, "meta": {"count"}}``;
  ``next.href`` is null on the last page (the shape of Prolific's own CLI,
  ``prolific-oss/cli`` ``JSONAPILinks``). :meth:`ProlificClient.pages` follows ``next`` to the
  end, and only to the same origin as the base URL, so the token is never sent elsewhere.
* Errors: Prolific answers ``{"error": {"status", "error_code", "title", "detail",
  "additional_information"}}`` (``prolific-oss/cli`` ``JSONAPIError``); ``detail`` may be a
  string or a field -> messages object. :class:`ProlificError` condenses it to one line.
* Rate limits and faults: a 429 means the request was not processed, so it is sent again
  after the ``Retry-After`` the server asked for (or the backoff, whichever is longer);
  Prolific's docs do not give the numbers, so nothing here assumes any. 5xx answers,
  timeouts and dropped connections are retried with backoff for reads. For a request that
  changes something on Prolific (a transition, a bulk approval, paying bonuses) such an
  answer leaves it unknown whether the change was made: the client does not send it
  again by itself but raises :class:`OutcomeUnknown`, and the caller looks at Prolific's
  state before deciding (paying bonuses is documented as not idempotent).
  A refused connection (nothing was sent) is retried for every method.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from urllib.parse import urljoin, urlsplit

import httpx

from valueportrait.retry import backoff_delay, retry_after_seconds

DEFAULT_BASE_URL = "https://api.prolific.com"
TOKEN_ENV = "PROLIFIC_TOKEN"


class ProlificError(RuntimeError):
    """Prolific refused a request (4xx other than 429), or stayed unavailable after the retries."""

    def __init__(self, message: str, status: int | None = None, body: object = None):
        super().__init__(message.replace("\n", " "))
        self.status = status
        self.body = body


class AuthError(ProlificError):
    """401/403: the token is missing, wrong or lacks the permission."""


class OutcomeUnknown(ProlificError):
    """A state-changing request got no clear answer (5xx, timeout, dropped connection):
    Prolific may or may not have made the change. Look before sending it again."""


def error_summary(response: httpx.Response) -> str:
    """One line from Prolific's error body (``error.title`` / ``error.detail``), else the raw text."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return text[:300] or response.reason_phrase
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        detail = error.get("detail", error.get("message"))
        if isinstance(detail, dict):  # field -> [messages]
            detail = "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in detail.items())
        elif isinstance(detail, list):
            detail = "; ".join(map(str, detail))
        parts = [str(p) for p in (error.get("title"), detail, error.get("additional_information")) if p]
        if parts:
            return ": ".join(dict.fromkeys(parts))[:500]
    return json.dumps(body)[:300]


class ProlificClient:
    """Prolific's API over one HTTP session, with retries.

    Parameters
    ----------
    base_url : the API root (default ``https://api.prolific.com``); paths are ``/api/v1/...``.
    token : the API token (from ``PROLIFIC_TOKEN``).
    max_retries : retries after the first attempt.
    backoff_base, backoff_cap, retry_after_cap : see :mod:`valueportrait.retry`.
    sleep : how to wait (tests pass a recorder).
    on_wait : called with (seconds, why) before each wait, for progress output.
    """

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0, max_retries: int = 6,
                 backoff_base: float = 1.0, backoff_cap: float = 60.0, retry_after_cap: float = 600.0,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
                 on_wait: Callable[[float, str], None] | None = None):
        if not token:
            raise ValueError("an API token is needed")
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_base, self.backoff_cap, self.retry_after_cap = backoff_base, backoff_cap, retry_after_cap
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.on_wait = on_wait
        self.requests_sent = 0
        self._origin = urlsplit(self.base_url)[:2]
        if self._origin[0] != "https" and urlsplit(self.base_url).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"{self.base_url}: the token would travel unencrypted: use https (plain http is "
                             "accepted for loopback test servers only)")
        self._http = httpx.Client(headers={"Authorization": f"Token {token}", "Accept": "application/json",
                                           "User-Agent": "valueportrait"},
                                  timeout=httpx.Timeout(timeout), follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ProlificClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def url(self, path: str) -> str:
        """An absolute URL for an API path; an absolute URL is accepted only on the base URL's origin."""
        url = path if "://" in path else self.base_url + "/" + path.lstrip("/")
        if urlsplit(url)[:2] != self._origin:
            raise ProlificError(f"refusing to follow a link to another host ({urlsplit(url).netloc}); "
                                f"the API root is {self.base_url}")
        return url

    def wait(self, retry: int, retry_after: float | None, why: str) -> None:
        delay = backoff_delay(retry, retry_after, base=self.backoff_base, cap=self.backoff_cap,
                              retry_after_cap=self.retry_after_cap, rng=self.rng)
        if self.on_wait:
            self.on_wait(delay, why)
        self.sleep(delay)

    def request(self, method: str, path: str, *, json_body: object = None, params: dict | None = None,
                safe_to_repeat: bool | None = None) -> httpx.Response:
        """Send a request, retrying what may be retried; return the 2xx response.

        `safe_to_repeat` defaults to True for GET: only then are 5xx answers and lost
        connections retried (a 429 and a refused connection are always retried).
        """
        url = self.url(path)
        safe = method.upper() == "GET" if safe_to_repeat is None else safe_to_repeat
        where = f"{method.upper()} {urlsplit(url).path}"
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                self.requests_sent += 1
                response = self._http.request(method, url, json=json_body, params=params)
            except httpx.ConnectError as exc:  # nothing reached the server
                last = f"cannot connect ({type(exc).__name__})"
            except httpx.TransportError as exc:  # timeouts, dropped connections: it may have arrived
                last = f"no answer ({type(exc).__name__})"
                if not safe:
                    raise OutcomeUnknown(f"{where}: {last}; Prolific may or may not have acted on it") from None
            else:
                status = response.status_code
                if status < 300:
                    return response
                if status in (401, 403):
                    raise AuthError(f"{where}: HTTP {status}: {error_summary(response)} "
                                    f"(check the token in {TOKEN_ENV})", status)
                if status == 429:
                    last = "HTTP 429 (rate limited)"
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
                elif status >= 500:
                    last = f"HTTP {status}: {error_summary(response)}"
                    if not safe:
                        raise OutcomeUnknown(f"{where}: {last}; Prolific may or may not have acted on it", status)
                else:
                    body = None
                    try:
                        body = response.json()
                    except ValueError:
                        pass
                    raise ProlificError(f"{where}: HTTP {status}: {error_summary(response)}", status, body)
            if attempt < self.max_retries:
                self.wait(attempt, retry_after, f"{where}: {last}")
        raise ProlificError(f"{where}: gave up after {self.max_retries + 1} attempts: {last}")

    @staticmethod
    def _id(value: str) -> str:
        """An id that goes into a URL path: letters and digits only (Prolific's are 24 hex digits)."""
        if not re.fullmatch(r"[A-Za-z0-9]{1,64}", str(value)):
            raise ProlificError(f"{value!r} is not an id Prolific would give")
        return str(value)

    # -- reading ---------------------------------------------------------------------------
    def get_json(self, path: str, params: dict | None = None) -> dict:
        return self.request("GET", path, params=params).json()

    def pages(self, path: str, params: dict | None = None, *, max_pages: int = 10_000) -> Iterator[dict]:
        """Every result of a paginated list, following ``_links.next.href`` to the last page."""
        url, seen = self.url(path), set()
        for _ in range(max_pages):
            page = self.request("GET", url, params=params).json()
            params = None  # the next link carries the query
            yield from page.get("results", [])
            nxt = ((page.get("_links") or {}).get("next") or {}).get("href")
            if not nxt:
                return
            url = self.url(urljoin(url, nxt))
            if url in seen:
                raise ProlificError(f"GET {urlsplit(url).path}: the pages link back to one already read")
            seen.add(url)
        raise ProlificError(f"GET {urlsplit(path).path}: more than {max_pages} pages")

    def submissions(self, prolific_study_id: str, page_size: int = 200) -> list[dict]:
        """Every submission of a study (``GET /api/v1/submissions/?study=ID``, all pages)."""
        return list(self.pages("/api/v1/submissions/", {"study": prolific_study_id, "page_size": page_size}))

    def submission(self, submission_id: str) -> dict:
        return self.get_json(f"/api/v1/submissions/{self._id(submission_id)}/")

    def study(self, prolific_study_id: str) -> dict:
        return self.get_json(f"/api/v1/studies/{self._id(prolific_study_id)}/")

    def studies(self) -> list[dict]:
        return list(self.pages("/api/v1/studies/"))

    def demographic_export(self, prolific_study_id: str) -> str:
        """The study's demographic export as CSV text (``POST /api/v1/studies/{id}/demographic-export/``,
        no filters: the base fields only). Creating the same export again is allowed, so it is retried."""
        path = f"/api/v1/studies/{self._id(prolific_study_id)}/demographic-export/"
        return self.request("POST", path, json_body={}, safe_to_repeat=True).text

    # -- changing --------------------------------------------------------------------------
    def create_study(self, body: dict) -> dict:
        return self.request("POST", "/api/v1/studies/", json_body=body, safe_to_repeat=False).json()

    def transition_study(self, prolific_study_id: str, action: str) -> dict:
        path = f"/api/v1/studies/{self._id(prolific_study_id)}/transition/"
        return self.request("POST", path, json_body={"action": action}, safe_to_repeat=False).json()

    def transition_submission(self, submission_id: str, body: dict) -> dict:
        return self.request("POST", f"/api/v1/submissions/{self._id(submission_id)}/transition/", json_body=body,
                            safe_to_repeat=False).json()

    def bulk_approve(self, submission_ids: list[str]) -> None:
        self.request("POST", "/api/v1/submissions/bulk-approve/", json_body={"submission_ids": submission_ids},
                     safe_to_repeat=False)

    def set_up_bonuses(self, prolific_study_id: str, csv_bonuses: str) -> dict:
        # Setting up pays nothing: a set-up whose answer was lost is simply set up again.
        return self.request("POST", "/api/v1/submissions/bonus-payments/",
                            json_body={"study_id": prolific_study_id, "csv_bonuses": csv_bonuses},
                            safe_to_repeat=True).json()

    def pay_bonuses(self, bulk_id: str) -> None:
        self.request("POST", f"/api/v1/bulk-bonus-payments/{self._id(bulk_id)}/pay/", safe_to_repeat=False)
