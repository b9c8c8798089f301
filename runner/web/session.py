"""Browser sessions: a random id in an HttpOnly cookie; the token never kept at all.

Signing in hands the coordinator a user token once. The browser then gets a
session id (256 random bits) in an ``HttpOnly``, ``SameSite=Strict`` cookie
(``Secure`` over HTTPS). The server keeps, keyed by the SHA-256 of that id,
the *id* of the token (never the token), the user, the CSRF token checked by
``runner.web.csrf``, the one-line notices shown after a redirect ("flash"
messages) and the session's times. Every request looks the token id up again,
so a revoked token ends its sessions at once. Sessions end on sign-out, after
``idle_s`` without a request and after ``max_age_s`` in all.

``SqlSessionStore`` keeps sessions in the coordinator's database, so they
survive a restart and every replica on the same PostgreSQL serves them;
``SessionStore`` keeps them in this process (tests, and apps without a
database). Both answer alike.
"""

from __future__ import annotations

import hashlib
import json
import secrets as _random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from runner.db import Database
from runner.migrations import Migration, register

COOKIE_NAME: Final = "runner_session"
# Enough sessions for any team; the oldest go first beyond it (in memory).
MAX_SESSIONS: Final = 10_000
# A session's last use is written at most this often: every poll of a log would write.
TOUCH_EVERY_S: Final = 15.0

Clock = Callable[[], float]

_TABLE = """
CREATE TABLE runner_web_sessions (
    id_hash TEXT PRIMARY KEY,
    token_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    csrf TEXT NOT NULL,
    notices TEXT NOT NULL DEFAULT '[]',
    created DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL
);
CREATE INDEX runner_web_sessions_last_seen ON runner_web_sessions (last_seen);
"""

MIGRATIONS: tuple[Migration, ...] = (Migration(410, "web: browser sessions", _TABLE),)

register(*MIGRATIONS)


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass(kw_only=True)
class Session:
    """One signed-in browser: who, with which token (by id), and its CSRF token."""

    key: str = field(repr=False)
    token_id: str
    csrf: str = field(repr=False)
    user: str
    created: float
    last_seen: float
    notices: list[str] = field(default_factory=list)


class Sessions(Protocol):
    """What the pages need of a session store."""

    idle_s: float
    max_age_s: float

    def create(self, *, token_id: str, user: str) -> tuple[str, Session]: ...
    def get(self, session_id: str | None) -> Session | None: ...
    def end(self, session_id: str | None) -> None: ...
    def notify(self, session: Session, text: str) -> None: ...
    def take_notices(self, session: Session) -> list[str]: ...


class _Rules:
    """Ids and expiry, the same for both stores."""

    def __init__(self, *, idle_s: float, max_age_s: float, clock: Clock) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self._clock = clock

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self.idle_s or now - session.created > self.max_age_s

    def _new(self, *, token_id: str, user: str) -> tuple[str, Session]:
        # A new id every time: no fixation.
        session_id = _random.token_urlsafe(32)
        now = self._clock()
        session = Session(
            key=_key(session_id),
            token_id=token_id,
            csrf=_random.token_urlsafe(32),
            user=user,
            created=now,
            last_seen=now,
        )
        return session_id, session


class SessionStore(_Rules):
    """Sessions in this process's memory, safe across the server's worker threads."""

    def __init__(
        self, *, idle_s: float = 2 * 3600, max_age_s: float = 12 * 3600, clock: Clock = time.time
    ) -> None:
        super().__init__(idle_s=idle_s, max_age_s=max_age_s, clock=clock)
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def create(self, *, token_id: str, user: str) -> tuple[str, Session]:
        session_id, session = self._new(token_id=token_id, user=user)
        with self._lock:
            self._prune(session.created)
            self._sessions[session.key] = session
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


class SqlSessionStore(_Rules):
    """Sessions in ``runner_web_sessions``: they survive a restart, and any replica on
    the same database serves them. Each statement stands alone, so two replicas
    answering one browser at once cannot corrupt a row (the last write wins)."""

    def __init__(
        self,
        db: Database,
        *,
        idle_s: float = 2 * 3600,
        max_age_s: float = 12 * 3600,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(idle_s=idle_s, max_age_s=max_age_s, clock=clock)
        self._db = db
        db.migrate(MIGRATIONS)

    def create(self, *, token_id: str, user: str) -> tuple[str, Session]:
        session_id, session = self._new(token_id=token_id, user=user)
        # Expired sessions go as new ones come; running this on two replicas is harmless.
        self._db.once(
            "DELETE FROM runner_web_sessions WHERE last_seen < ? OR created < ?",
            [session.created - self.idle_s, session.created - self.max_age_s],
        )
        self._db.once(
            "INSERT INTO runner_web_sessions"
            " (id_hash, token_id, user_name, csrf, notices, created, last_seen)"
            " VALUES (?, ?, ?, ?, '[]', ?, ?)",
            [session.key, token_id, user, session.csrf, session.created, session.last_seen],
        )
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        key = _key(session_id)
        rows = self._db.once("SELECT * FROM runner_web_sessions WHERE id_hash = ?", [key])
        if not rows:
            return None
        row = rows[0]
        session = Session(
            key=key,
            token_id=row["token_id"],
            csrf=row["csrf"],
            user=row["user_name"],
            created=float(row["created"]),
            last_seen=float(row["last_seen"]),
            notices=list(json.loads(row["notices"])),
        )
        now = self._clock()
        if self._expired(session, now):
            self._db.once("DELETE FROM runner_web_sessions WHERE id_hash = ?", [key])
            return None
        if now - session.last_seen >= TOUCH_EVERY_S:
            session.last_seen = now
            self._db.once(
                "UPDATE runner_web_sessions SET last_seen = ? WHERE id_hash = ?", [now, key]
            )
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._db.once("DELETE FROM runner_web_sessions WHERE id_hash = ?", [_key(session_id)])

    def notify(self, session: Session, text: str) -> None:
        session.notices.append(text)
        self._write_notices(session)

    def take_notices(self, session: Session) -> list[str]:
        taken, session.notices = session.notices, []
        if taken:
            self._write_notices(session)
        return taken

    def _write_notices(self, session: Session) -> None:
        self._db.once(
            "UPDATE runner_web_sessions SET notices = ? WHERE id_hash = ?",
            [json.dumps(session.notices), session.key],
        )
