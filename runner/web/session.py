"""Browser sessions: a random id in an HttpOnly cookie, the token on the server only.

Signing in hands the coordinator a user token once. The browser then gets a
session id (256 random bits) in an ``HttpOnly``, ``SameSite=Strict`` cookie
(``Secure`` over HTTPS); the token stays in this process's memory, keyed by the
SHA-256 of the session id. Every request authenticates the token again, so a
revoked token ends its sessions at once. Sessions end on sign-out, after
``idle_s`` without a request and after ``max_age_s`` in all; a restart of the
coordinator ends them all (users sign in again).

Each session also holds its CSRF token (checked by ``runner.web.csrf``) and the
one-line notices shown after a redirect ("flash" messages).
"""

from __future__ import annotations

import hashlib
import secrets as _random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

COOKIE_NAME: Final = "runner_session"
# Enough sessions for any team; the oldest go first beyond it.
MAX_SESSIONS: Final = 10_000

Clock = Callable[[], float]


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass(kw_only=True)
class Session:
    """One signed-in browser. ``token`` never leaves the server."""

    token: str = field(repr=False)
    csrf: str = field(repr=False)
    user: str
    created: float
    last_seen: float
    notices: list[str] = field(default_factory=list)


class SessionStore:
    """Sessions in memory, safe across the server's worker threads."""

    def __init__(
        self, *, idle_s: float = 2 * 3600, max_age_s: float = 12 * 3600, clock: Clock = time.time
    ) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self.idle_s or now - session.created > self.max_age_s

    def create(self, *, token: str, user: str) -> tuple[str, Session]:
        """A new session (a new id every time: no fixation) and its cookie value."""
        session_id = _random.token_urlsafe(32)
        now = self._clock()
        session = Session(
            token=token, csrf=_random.token_urlsafe(32), user=user, created=now, last_seen=now
        )
        with self._lock:
            self._prune(now)
            self._sessions[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        now = self._clock()
        key = _key(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[key]
                return None
            session.last_seen = now
            return session

    def end(self, session_id: str | None) -> None:
        if not session_id:
            return
        with self._lock:
            self._sessions.pop(_key(session_id), None)

    def _prune(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[key]
        excess = len(self._sessions) - MAX_SESSIONS + 1
        if excess > 0:
            oldest = sorted(self._sessions, key=lambda k: self._sessions[k].last_seen)
            for key in oldest[:excess]:
                del self._sessions[key]

    def notify(self, session: Session, text: str) -> None:
        with self._lock:
            session.notices.append(text)

    def take_notices(self, session: Session) -> list[str]:
        with self._lock:
            taken, session.notices = session.notices, []
        return taken
