"""Open the secret store from settings, and rotate its master key.

The only place that touches the master key file's life cycle: it creates
``RUNNER_HOME`` (0700) and ``master.key`` (0600) on first use of the
embedded default, and refuses to invent a new key for a store that already
holds values encrypted under one it cannot find.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.clock import SYSTEM_CLOCK, Clock
from runner.config import Settings
from runner.db import Database, connect
from runner.errors import MasterKeyError
from runner.log import get_logger
from runner.secrets import schema
from runner.secrets.crypto import (
    Keyring,
    create_key_file,
    load_key_file,
    loosely_protected,
    new_master_key,
    write_key_file,
)
from runner.secrets.store import RotationReport, SqlSecretStore

_log = get_logger("runner.secrets")


def _ensure_home(home: Path) -> None:
    if not home.exists():
        home.mkdir(mode=0o700, parents=True)


def _key_ids_in_use(db: Database) -> list[str]:
    db.migrate(schema.MIGRATIONS)
    with db.transaction(write=False) as tx:
        rows = tx.all("SELECT DISTINCT key_id FROM secret_versions WHERE key_id IS NOT NULL")
    return sorted(str(r["key_id"]) for r in rows)


def _keyring(path: Path, *, may_create: bool, db: Database) -> Keyring:
    if path.exists() or not may_create:
        keyring = load_key_file(path)
        if loosely_protected(path):
            _log.warning(
                "the master key file can be read by other users; run `chmod 600` on it",
                path=str(path),
            )
        return keyring
    in_use = _key_ids_in_use(db)
    if in_use:
        raise MasterKeyError(
            f"master key file {path} is missing, but the store holds values encrypted under "
            f"master key {', '.join(in_use)}",
            hint="restore the key file from your backup (or set RUNNER_MASTER_KEY_FILE)",
        )
    keyring = create_key_file(path)
    _log.warning(
        "created a new master key; back it up now and keep it apart from the database: "
        "without it no stored secret can be decrypted",
        path=str(path),
    )
    return keyring


def open_store(settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> SqlSecretStore:
    """The secret store of these settings, with its schema applied and its keys checked."""
    if settings.master_key_file is None or settings.database_url is None:
        _ensure_home(settings.home)
    db = connect(settings.effective_database_url)
    try:
        keyring = _keyring(
            settings.effective_master_key_file,
            may_create=settings.master_key_file is None,
            db=db,
        )
        return SqlSecretStore(db, keyring, clock=clock)
    except BaseException:
        db.close()
        raise


@contextmanager
def _key_file_lock(path: Path) -> Iterator[None]:
    # Two rotations at once could each drop the other's new key from the file.
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def rotate_master_key(store: SqlSecretStore, *, actor: str) -> RotationReport:
    """Add a new primary key, re-wrap every data key, then drop the keys nothing uses.

    The key file is rewritten atomically twice (new key first, then the new key
    alone), so a crash at any point leaves a file that decrypts everything.
    """
    path = store.keyring.source
    if path is None:
        raise MasterKeyError(
            "this store's keys did not come from a key file", hint="open it with open_store()"
        )
    with _key_file_lock(path):
        current = load_key_file(path)
        new = new_master_key()
        staged = Keyring([new, *current.keys], source=path)
        write_key_file(path, staged.keys)
        report = store.rotate_keys(staged, actor=actor)
        write_key_file(path, [new])
        store.keyring = Keyring([new], source=path)
    return report
