"""Routing by labels: a job is claimed only by an executor having every label it requires.

An executor declares its labels (``runner executor --label gpu``); a job
requires labels from its submission (``runner submit --require gpu``) and
from its namespace (``runner namespace set NS --require-label gpu``), merged
when it is queued. Both stores apply the same rule: ``SqlJobStore`` in the
claim's SQL (``claim_filter``), ``MemoryJobStore`` with ``can_run``.

The coordinator also remembers which labels each executor showed, and when
(``runner_executor_labels``, written at claims and heartbeats, at most every
``NOTE_EVERY_S`` per executor and process), so that a job no live executor
can run says why it waits (``waiting_reason``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from typing import Final

from runner.errors import UsageError
from runner.migrations import Migration, register

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_LABELS: Final = 32
# An executor's labels are written again only after this long (per replica).
NOTE_EVERY_S: Final = 1.0

# ``labels`` on a job is its required labels, sorted and comma-joined ('' for none),
# for reading; ``runner_job_labels`` holds one row per label, for the claim's SQL.
_TABLES = """
ALTER TABLE runner_jobs ADD COLUMN labels TEXT NOT NULL DEFAULT '';
CREATE TABLE runner_job_labels (
    job_id TEXT NOT NULL REFERENCES runner_jobs (id),
    label TEXT NOT NULL,
    PRIMARY KEY (job_id, label)
);
CREATE TABLE runner_executor_labels (
    executor TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    seen_at TEXT NOT NULL
);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(370, "queue: labels jobs require and executors have", _TABLES),
)

register(*MIGRATIONS)


def parse_labels(values: Iterable[str], *, flag: str = "--label") -> tuple[str, ...]:
    """Labels as given on a command line or in a request: checked, deduplicated, sorted."""
    found = set()
    for value in values:
        text = value.strip()
        if not _LABEL.fullmatch(text):
            raise UsageError(
                f"{flag} {value!r} is not a label",
                hint="use letters, digits, '.', '_' and '-', starting with a letter or digit",
            )
        found.add(text)
    if len(found) > MAX_LABELS:
        raise UsageError(f"{len(found)} labels given", hint=f"give at most {MAX_LABELS}")
    return tuple(sorted(found))


def encode(labels: Collection[str]) -> str:
    return ",".join(sorted(labels))


def decode(text: str | None) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


def can_run(executor_labels: Collection[str], required: Collection[str]) -> bool:
    """Whether an executor with ``executor_labels`` may claim a job requiring ``required``."""
    return set(required) <= set(executor_labels)


def claim_filter(executor_labels: Sequence[str]) -> tuple[str, list[str]]:
    """The claim's condition on a job ``j`` for an executor with these labels, and its
    parameters: the job requires nothing, or nothing outside these labels."""
    if not executor_labels:
        return "j.labels = ''", []
    marks = ", ".join("?" for _ in executor_labels)
    return (
        "(j.labels = '' OR NOT EXISTS (SELECT 1 FROM runner_job_labels l"  # noqa: S608
        f" WHERE l.job_id = j.id AND l.label NOT IN ({marks})))",
        list(executor_labels),
    )


def waiting_reason(required: Collection[str], live: Iterable[Collection[str]]) -> str | None:
    """Why a claimable job waits, when no live executor has every label it requires."""
    if not required or any(can_run(labels, required) for labels in live):
        return None
    return f"waiting for an executor with labels {', '.join(sorted(required))}"
