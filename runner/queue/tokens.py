"""API tokens: 256 random bits, shown once, stored only as their SHA-256.

A token belongs to a user (acting with that user's permissions) or to an
executor (claiming and running jobs). ``TokenStore`` is the seam;
``SqlTokenStore`` keeps tokens next to the jobs, and
``runner.testing.queue.MemoryTokenStore`` in memory.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import secrets as _random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, Protocol

from runner.clock import SYSTEM_CLOCK, Clock
from runner.db import Database, Transaction, db_time, parse_db_time
from runner.errors import TokenNotFoundError, UsageError
from runner.namespaces import check_principal_name
from runner.queue import schema
from runner.secrets.models import rfc3339

TokenKind = Literal["user", "executor"]
TOKEN_PREFIX: Final = "rnr_"  # noqa: S105 (a marker, not a credential)
# A token in use is stamped at most this often: every heartbeat would otherwise write.
LAST_USED_GRANULARITY = timedelta(seconds=30)


def new_token() -> str:
    return TOKEN_PREFIX + _random.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token_id() -> str:
    return f"tok_{_random.token_hex(6)}"


@dataclass(frozen=True, kw_only=True)
class TokenRecord:
    id: str
    kind: TokenKind
    owner: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def principal(self) -> Principal:
        return Principal(kind=self.kind, name=self.owner, token_id=self.id)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "owner": self.owner,
            "created_at": rfc3339(self.created_at),
            "last_used_at": rfc3339(self.last_used_at) if self.last_used_at else None,
            "revoked_at": rfc3339(self.revoked_at) if self.revoked_at else None,
        }


@dataclass(frozen=True, kw_only=True)
class Principal:
    """Who a request acts as."""

    kind: TokenKind
    name: str
    token_id: str

    def describe(self) -> str:
        return f"{self.kind} {self.name}"


def check_kind(kind: str) -> TokenKind:
    if kind == "user":
        return "user"
    if kind == "executor":
        return "executor"
    raise UsageError(f"unknown token kind {kind!r}", hint="use --user NAME or --executor NAME")


class TokenStore(Protocol):
    def create(self, kind: TokenKind, owner: str) -> tuple[TokenRecord, str]:
        """A new token; the plaintext is returned here and never again."""
        ...

    def authenticate(self, token: str) -> TokenRecord | None:
        """The live token's record (its use recorded), or None."""
        ...

    def list(self) -> builtins.list[TokenRecord]: ...

    def live(self, token_id: str) -> TokenRecord | None:
        """The token with this id unless it was revoked (a web session's check)."""
        ...

    def revoke(self, token_id: str) -> TokenRecord:
        """Revoke at once; raises ``TokenNotFoundError`` for an unknown id."""
        ...


def not_found(token_id: str) -> TokenNotFoundError:
    return TokenNotFoundError(
        f"no token with id {token_id}", hint="see `runner token list` for the ids"
    )


def _record(row: dict[str, Any]) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        kind=check_kind(row["kind"]),
        owner=row["owner"],
        created_at=parse_db_time(row["created_at"]),
        last_used_at=parse_db_time(row["last_used_at"]) if row["last_used_at"] else None,
        revoked_at=parse_db_time(row["revoked_at"]) if row["revoked_at"] else None,
    )


# At most this many tokens are remembered by an authentication cache; a full cache
# starts again empty (a coordinator has a few tokens per executor and user).
AUTH_CACHE_SIZE = 4096


class SqlTokenStore:
    """``cache_s`` > 0 remembers each authenticated token for that many seconds.

    A coordinator authenticates every request, several a second per executor: with
    the cache, one ``SELECT`` per token per ``cache_s`` instead of one per request.
    A revocation made through this store empties the cache at once; one made by
    another process (``runner token revoke``, another replica) takes effect within
    ``cache_s``, the bound the server states. Unknown tokens are never cached, so a
    new token works at once.
    """

    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK, cache_s: float = 0) -> None:
        self._db = db
        self._clock = clock
        self._cache_s = cache_s
        # token hash -> (monotonic expiry, record); the token itself is never kept.
        self._cache: dict[str, tuple[float, TokenRecord]] = {}
        db.migrate(schema.MIGRATIONS)

    def create(self, kind: TokenKind, owner: str) -> tuple[TokenRecord, str]:
        check_kind(kind)
        check_principal_name(owner, f"{kind} name")
        token = new_token()
        now = self._clock.now()
        record = TokenRecord(id=new_token_id(), kind=kind, owner=owner, created_at=now)

        def work(tx: Transaction) -> None:
            tx.execute(
                "INSERT INTO runner_tokens (id, kind, owner, token_hash, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [record.id, kind, owner, hash_token(token), db_time(record.created_at)],
            )

        self._db.run(work)
        return record, token

    def authenticate(self, token: str) -> TokenRecord | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        wanted = hash_token(token)
        if self._cache_s > 0:
            cached = self._cache.get(wanted)
            if cached is not None and cached[0] > self._clock.monotonic():
                return cached[1]
        record = self._lookup(wanted)
        if record is not None and self._cache_s > 0:
            if len(self._cache) >= AUTH_CACHE_SIZE:
                self._cache.clear()
            self._cache[wanted] = (self._clock.monotonic() + self._cache_s, record)
        return record

    def _lookup(self, wanted: str) -> TokenRecord | None:
        # Every request without a cached answer asks: one statement, outside any
        # transaction (on SQLite no write lock, on PostgreSQL one round trip), and a
        # write only when the stamp of its last use is older than LAST_USED_GRANULARITY.
        rows = self._db.once(
            "SELECT * FROM runner_tokens WHERE token_hash = ? AND revoked_at IS NULL", [wanted]
        )
        # The index lookup found it; compare again in constant time all the same.
        if not rows or not hmac.compare_digest(rows[0]["token_hash"], wanted):
            return None
        record = _record(rows[0])
        now = self._clock.now()
        last = record.last_used_at
        if last is None or now - last >= LAST_USED_GRANULARITY:
            self._db.once(
                "UPDATE runner_tokens SET last_used_at = ? WHERE id = ?",
                [db_time(now), record.id],
            )
        return record

    def list(self) -> builtins.list[TokenRecord]:
        with self._db.transaction(write=False) as tx:
            rows = tx.all("SELECT * FROM runner_tokens ORDER BY created_at, id")
        return [_record(r) for r in rows]

    def live(self, token_id: str) -> TokenRecord | None:
        rows = self._db.once(
            "SELECT * FROM runner_tokens WHERE id = ? AND revoked_at IS NULL", [token_id]
        )
        return _record(rows[0]) if rows else None

    def revoke(self, token_id: str) -> TokenRecord:
        def work(tx: Transaction) -> TokenRecord:
            tx.execute(
                "UPDATE runner_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                [db_time(self._clock.now()), token_id],
            )
            row = tx.one("SELECT * FROM runner_tokens WHERE id = ?", [token_id])
            if row is None:
                raise not_found(token_id)
            return _record(row)

        result: TokenRecord = self._db.run(work)
        self._cache.clear()
        return result
