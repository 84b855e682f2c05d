"""Who is viewing the status page, and whether this view may start a visit (a session).

A visitor is named by a random first-party cookie (``uh_visitor``) the page sets when it is absent;
a client that sends none (a first view, or a client that keeps no cookies) by a keyed hash of its
address and User-Agent. Only a SHA-256 of either ever leaves the process. ``RecentVisitors``
remembers, bounded, when each visitor last viewed the page here, so reloads within 30 minutes
append nothing; the heartbeat projection applies the same rule by event time to the visits
gateways do append (services/projector/heartbeat.py), so it counts them exactly.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from typing import TypeGuard

COOKIE = "uh_visitor"
COOKIE_MAX_AGE = 365 * 24 * 3600
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]{22,64}")
# How many visitors one gateway process remembers; one it forgot may append one more visit, which
# the projection then does not count if it falls within the session.
MAX_TRACKED_VISITORS = 50_000


def new_cookie_value() -> str:
    return secrets.token_urlsafe(24)


def is_visitor_cookie(value: str | None) -> TypeGuard[str]:
    """Whether ``value`` is an ``uh_visitor`` cookie as this gateway makes them."""
    return value is not None and _COOKIE_VALUE.fullmatch(value) is not None


def cookie_visitor(value: str) -> str:
    return hashlib.sha256(b"uh_visitor\0" + value.encode()).hexdigest()


def fallback_visitor(address: str, user_agent: str, key: bytes) -> str:
    """A client without the cookie: a hash of its address and User-Agent, keyed (with
    ``USAGEHUB_SECRET_KEY``) so that it cannot be reversed by trying every address."""
    text = f"{address}\0{user_agent}".encode("utf-8", "surrogateescape")
    return hmac.new(key, text, hashlib.sha256).hexdigest()


class RecentVisitors:
    """When each visitor last viewed the page (monotonic seconds), for at most ``max_size``."""

    def __init__(self, max_size: int, session: float) -> None:
        self.max_size = max_size
        self.session = session
        self._last: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def starts_session(self, visitor: str, now: float) -> bool:
        """Whether a view now would start a new session (no view of this visitor in one)."""
        last = self._last.get(visitor)
        return last is None or now - last > self.session

    def viewed(self, visitor: str, now: float) -> None:
        self._last[visitor] = now
        self._last.move_to_end(visitor)
        while len(self._last) > self.max_size:
            self._last.popitem(last=False)
