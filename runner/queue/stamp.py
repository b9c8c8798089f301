"""A number that changes whenever anything a claim checks may have changed.

A claim checks the submitter's rights (users, orgs, memberships), resolves
its job's secrets and registry credentials (metadata only) and reads its
namespace's policy. All of that is the same for every job of a submission
until one of those tables is written, and reading it again at every claim
was three of a claim's four statements (issue 21). So the database keeps
one counter, raised by triggers on every write to those tables in the same
transaction as the write, whoever writes (this coordinator, another replica
on the same PostgreSQL, `runner secret set` on the server's database); the
claim's own statement returns it (``STAMP_COLUMN``), and the coordinator
keeps its checks per submission only while the counter it read is the one
they were made under. Values are never kept: each claim still decrypts and
audits every secret it hands out.
"""

from __future__ import annotations

from typing import Final

from runner.migrations import Dialect, Migration, register
from runner.queue import policies
from runner.secrets import schema as secrets_schema

# Every table whose rows a claim's checks read: rights, secret metadata, policies.
WATCHED: Final = (
    "runner_users",
    "runner_orgs",
    "runner_org_members",
    "secrets",
    "runner_namespace_policies",
)
# The counter as the claim's RETURNING reads it (the row the triggers raise).
STAMP_COLUMN: Final = "(SELECT n FROM runner_claim_stamp WHERE id = 1) AS stamp"

_TABLE = (
    "CREATE TABLE runner_claim_stamp (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " n BIGINT NOT NULL);\nINSERT INTO runner_claim_stamp (id, n) VALUES (1, 0);\n"
)
_RAISE = "UPDATE runner_claim_stamp SET n = n + 1 WHERE id = 1"


def _sqlite() -> str:
    triggers = [
        f"CREATE TRIGGER runner_stamp_{table}_{op.lower()} AFTER {op} ON {table}"
        f" BEGIN {_RAISE}; END;\n"
        for table in WATCHED
        for op in ("INSERT", "UPDATE", "DELETE")
    ]
    return _TABLE + "".join(triggers)


def _postgresql() -> str:
    function = (
        "CREATE FUNCTION runner_raise_claim_stamp() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n    {_RAISE};\n    RETURN NULL;\nEND;\n$$;\n"
    )
    # Once per statement, not per row: one write of the counter per change.
    triggers = [
        f"CREATE TRIGGER runner_stamp_{table} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE"
        f" ON {table} FOR EACH STATEMENT EXECUTE FUNCTION runner_raise_claim_stamp();\n"
        for table in WATCHED
    ]
    return _TABLE + function + "".join(triggers)


_SCRIPTS: dict[Dialect, str] = {"sqlite": _sqlite(), "postgresql": _postgresql()}

STAMP = Migration(390, "queue: a stamp raised by every change a claim's checks read", _SCRIPTS)
register(STAMP)

# What the stamp's triggers need first: the watched tables.
MIGRATIONS: Final[tuple[Migration, ...]] = (
    *secrets_schema.MIGRATIONS,
    *policies.MIGRATIONS,
    STAMP,
)
