"""Users, orgs and membership: who a namespace belongs to and who may act there.

- ``directory``: the ``UserDirectory`` seam, its records and the rules every
  implementation shares;
- ``sql``: ``SqlUserDirectory`` on ``runner.db`` (SQLite or PostgreSQL).

``runner.testing.FakeUserDirectory`` keeps them in memory, for tests.
"""

from __future__ import annotations

from runner.users.directory import OrgRecord, UserDirectory, UserRecord, ensure_owner

__all__ = ["OrgRecord", "UserDirectory", "UserRecord", "ensure_owner"]
