"""Tables of the job queue: submissions, jobs, fairness, logs, step results, tokens."""

from __future__ import annotations

from runner.migrations import Migration, register

_TABLES = """
CREATE TABLE runner_submissions (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    submitter TEXT NOT NULL,
    spec_name TEXT NOT NULL,
    bundle TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- seq orders the queue; a job sent back keeps its place in its namespace.
CREATE TABLE runner_jobs (
    seq {{AUTO_ID}},
    id TEXT NOT NULL UNIQUE,
    submission_id TEXT NOT NULL REFERENCES runner_submissions (id),
    namespace TEXT NOT NULL,
    submitter TEXT NOT NULL,
    state TEXT NOT NULL,
    repository TEXT NOT NULL,
    branch TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    path TEXT NOT NULL,
    payload TEXT NOT NULL,
    executor TEXT,
    lease_hash TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    resets INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    heartbeat_at TEXT,
    finished_at TEXT,
    CHECK (state IN ('queued', 'processing', 'completed', 'errored', 'failed', 'canceled'))
);
CREATE INDEX runner_jobs_state ON runner_jobs (state, seq);
CREATE INDEX runner_jobs_namespace ON runner_jobs (namespace, seq);
-- When each namespace was last served, for round-robin claiming.
CREATE TABLE runner_job_fairness (
    namespace TEXT PRIMARY KEY,
    last_claim INTEGER NOT NULL
);
CREATE TABLE runner_job_logs (
    id {{AUTO_ID}},
    job_id TEXT NOT NULL REFERENCES runner_jobs (id),
    attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (job_id, attempt, seq)
);
CREATE TABLE runner_job_steps (
    job_id TEXT NOT NULL REFERENCES runner_jobs (id),
    attempt INTEGER NOT NULL,
    step INTEGER NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    at TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, step)
);
-- Only a token's SHA-256 is kept; the token itself is shown once.
CREATE TABLE runner_tokens (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT,
    CHECK (kind IN ('user', 'executor'))
);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(300, "queue: submissions, jobs, fairness, logs, steps, tokens", _TABLES),
    # `runner jobs retry` queues a new job naming the finished one it runs again.
    Migration(360, "queue: retries", "ALTER TABLE runner_jobs ADD COLUMN retry_of TEXT;"),
)

register(*MIGRATIONS)
