"""Every route of the web pages, by page group.

- ``account``: ``/``, ``/sign-in``, ``/sign-out``;
- ``secret_pages``: ``/secrets…``;
- ``job_pages``: ``/jobs…`` (and the log poller's ``log.json``);
- ``fleet_pages``: ``/executors`` (admins).
"""

from __future__ import annotations

from fastapi import APIRouter

from runner.web import account, fleet_pages, job_pages, secret_pages

router = APIRouter(include_in_schema=False)
for group in (
    account.router,
    secret_pages.router,
    job_pages.router,
    job_pages.poll_router,
    fleet_pages.router,
):
    router.include_router(group)
