"""Tables of the secret store: users, orgs, secrets, their versions, the audit log."""

from __future__ import annotations

from runner.migrations import Dialect, Migration, register

_TABLES = """
CREATE TABLE runner_users (
    name TEXT PRIMARY KEY,
    admin INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE runner_orgs (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE runner_org_members (
    org_name TEXT NOT NULL REFERENCES runner_orgs (name),
    user_name TEXT NOT NULL REFERENCES runner_users (name),
    added_at TEXT NOT NULL,
    PRIMARY KEY (org_name, user_name)
);
-- A secret row outlives its deletion (deleted_at), so its id is never reused
-- and the audit log can still name it.
CREATE TABLE secrets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    namespace TEXT NOT NULL,
    scope TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    deleted_at TEXT,
    deleted_by TEXT
);
CREATE UNIQUE INDEX secrets_live_name ON secrets (name, namespace, scope)
    WHERE deleted_at IS NULL;
-- A superseded or deleted version keeps its metadata; its key material and
-- ciphertext are set to NULL at once.
CREATE TABLE secret_versions (
    secret_id TEXT NOT NULL REFERENCES secrets (id),
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    key_id TEXT,
    wrapped_key {{BLOB}},
    nonce {{BLOB}},
    ciphertext {{BLOB}},
    destroyed_at TEXT,
    PRIMARY KEY (secret_id, version),
    CHECK ((destroyed_at IS NULL AND key_id IS NOT NULL AND wrapped_key IS NOT NULL
            AND nonce IS NOT NULL AND ciphertext IS NOT NULL)
        OR (destroyed_at IS NOT NULL AND key_id IS NULL AND wrapped_key IS NULL
            AND nonce IS NULL AND ciphertext IS NULL))
);
CREATE INDEX secret_versions_key_id ON secret_versions (key_id) WHERE key_id IS NOT NULL;
-- No foreign keys: nothing may cascade the audit log away.
CREATE TABLE secret_audit (
    id {{AUTO_ID}},
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    secret_id TEXT,
    name TEXT,
    namespace TEXT,
    scope TEXT,
    version INTEGER,
    job TEXT,
    step INTEGER,
    item_count INTEGER,
    detail TEXT
);
CREATE INDEX secret_audit_name ON secret_audit (name);
-- Master key ids the store has encrypted with; a retired one must not wrap again.
CREATE TABLE master_keys (
    key_id TEXT PRIMARY KEY,
    added_at TEXT NOT NULL,
    retired_at TEXT
);
"""

_APPEND_ONLY: dict[Dialect, str] = {
    "sqlite": """
CREATE TRIGGER secret_audit_no_update BEFORE UPDATE ON secret_audit
BEGIN SELECT RAISE(ABORT, 'secret_audit is append-only'); END;
CREATE TRIGGER secret_audit_no_delete BEFORE DELETE ON secret_audit
BEGIN SELECT RAISE(ABORT, 'secret_audit is append-only'); END;
""",
    "postgresql": """
CREATE FUNCTION runner_secret_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'secret_audit is append-only';
END;
$$;
CREATE TRIGGER secret_audit_no_change BEFORE UPDATE OR DELETE ON secret_audit
    FOR EACH ROW EXECUTE FUNCTION runner_secret_audit_append_only();
CREATE TRIGGER secret_audit_no_truncate BEFORE TRUNCATE ON secret_audit
    FOR EACH STATEMENT EXECUTE FUNCTION runner_secret_audit_append_only();
""",
}

MIGRATIONS: tuple[Migration, ...] = (
    Migration(100, "secrets: users, orgs, secrets, versions, audit log, master keys", _TABLES),
    Migration(101, "secrets: the audit log is append-only", _APPEND_ONLY),
    Migration(
        102,
        "secrets: a check value per master key",
        "ALTER TABLE master_keys ADD COLUMN check_value {{BLOB}};",
    ),
    # How the current version reaches a step (runner.secrets.delivery), as JSON;
    # NULL is the default, a plain environment variable. Metadata, never a value.
    Migration(
        103,
        "secrets: how each secret is delivered",
        "ALTER TABLE secrets ADD COLUMN delivery TEXT;",
    ),
)

register(*MIGRATIONS)
