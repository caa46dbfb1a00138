"""Waiting between retries of an HTTP call: exponential backoff with jitter, and Retry-After.

Shared by every client that talks to a rate-limited service (the LLM endpoints of
``analysis.llm.client``, Prolific's API in ``collection_app.prolific_client``), so they all
wait the same way: the k-th retry waits ``min(cap, base * 2**k)`` times a uniform jitter in
[0.5, 1.5), or what the server's ``Retry-After`` asks if that is longer (RFC 9110 §10.2.3:
seconds or an HTTP date), up to ``retry_after_cap``.
"""

from __future__ import annotations

import email.utils
import random
import time


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def backoff_delay(retry: int, retry_after: float | None, *, base: float, cap: float, retry_after_cap: float,
                  rng: random.Random) -> float:
    """Seconds to wait before retry number `retry` (0 for the first retry)."""
    delay = min(cap, base * 2**retry) * (0.5 + rng.random())
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_cap))
    return delay
