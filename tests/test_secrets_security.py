"""What a security reviewer signs off, on SQLite and PostgreSQL.

No plaintext at rest (in any encoding), tampered or mis-keyed rows refused
with the secret's name, destroyed ciphertexts, an append-only audit log, no
version lost to concurrent writers, and key rotation that keeps every value
readable while a missing key is refused at start.
"""

from __future__ import annotations

import base64
import glob
import json
import multiprocessing
import os
import shutil
import stat
import subprocess
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from runner.db import connect
from runner.errors import DecryptionError, MasterKeyError, RunnerError, StoreError
from runner.secrets.crypto import Keyring, MasterKey, load_key_file, new_master_key
from runner.secrets.opening import open_store, rotate_master_key
from runner.secrets.store import SqlSecretStore
from runner.secrets.value import Secret
from tests import test_secrets_support as support
from tests.test_secrets_support import Backend

backend = support.backend
keyring = support.keyring
sql_store = support.sql_store

VALUES = [
    "plain-secret-value-1",
    'p@ss/w0rd+key=é&x y"quoted"\\back',
    "line-one-of-a-pem\nline-two-of-the-pem",
    "ünïcødé-sécrét-€-värde",
]


def encoded_forms(value: str) -> dict[str, bytes]:
    raw = value.encode("utf-8")
    return {
        "raw": raw,
        "base64": base64.b64encode(raw),
        "base64 unpadded": base64.b64encode(raw).rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(raw),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
        "url-encoded": quote(value, safe="").encode(),
        "form-encoded": quote_plus(value).encode(),
        "json": json.dumps(value)[1:-1].encode(),
        "json ascii": json.dumps(value, ensure_ascii=True)[1:-1].encode(),
        "json utf-8": json.dumps(value, ensure_ascii=False)[1:-1].encode(),
        "utf-16": value.encode("utf-16-le"),
    }


def leaks(blob: bytes, values: list[str]) -> list[str]:
    found = []
    for value in values:
        for form, needle in encoded_forms(value).items():
            if needle in blob:
                found.append(f"{form} of value #{values.index(value)}")
    return found


def scan_tree(root: Path, values: list[str]) -> dict[str, list[str]]:
    hits: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file():
            found = leaks(path.read_bytes(), values)
            if found:
                hits[str(path)] = found
    return hits


def test_the_scanner_finds_every_form_it_looks_for(tmp_path: Path) -> None:
    for form, needle in encoded_forms(VALUES[1]).items():
        (tmp_path / "leak.bin").write_bytes(b"prefix " + needle + b" suffix")
        assert scan_tree(tmp_path, VALUES), form


def _exercise(store: SqlSecretStore) -> None:
    """Every operation that touches values: set, update, reveal, remove, rotate."""
    metas = []
    for number, value in enumerate(VALUES):
        name = f"TOKEN_{number}"
        store.set(name, "user:alice", Secret(value[::-1] + "-old"), actor="alice")
        meta, _ = store.set(name, "user:alice", Secret(value), actor="alice")
        metas.append(meta)
        store.set(name, "global", Secret(value), actor="root")
    for meta, value in zip(metas, VALUES, strict=True):
        assert store.reveal(meta, version=2, actor="exec", run_id="job-1", step=1) == Secret(value)
    store.remove("TOKEN_0", "user:alice", actor="alice")
    rotate_master_key(store, actor="root")
    store.list()
    store.log()


def _pg_dump() -> str:
    found = shutil.which("pg_dump") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), reverse=True)), None
    )
    if found is None:
        pytest.fail("pg_dump is not installed; scripts/with-postgres.sh installs PostgreSQL")
    return found


def test_no_value_at_rest_in_any_file_or_dump(backend: Backend, tmp_path: Path) -> None:
    every_value = [*VALUES, *(v[::-1] + "-old" for v in VALUES)]
    store = open_store(backend.settings())
    _exercise(store)
    # While open (SQLite keeps recent pages in its -wal file) and after closing.
    assert scan_tree(tmp_path, every_value) == {}
    store.close()
    assert scan_tree(tmp_path, every_value) == {}
    assert any(tmp_path.rglob("master.key"))
    if backend.kind == "postgres":
        dump = subprocess.run(
            [_pg_dump(), "--no-owner", backend.url], capture_output=True, check=True
        ).stdout
        assert b"secret_versions" in dump
        assert leaks(dump, every_value) == []
    else:
        assert (backend.home / "runner.db").stat().st_size > 0


def _swap(store: SqlSecretStore, a: str, b: str, columns: list[str]) -> None:
    with store.db.transaction() as tx:
        rows = {
            sid: tx.one(
                f"SELECT {', '.join(columns)} FROM secret_versions"  # noqa: S608
                " WHERE secret_id = ? AND destroyed_at IS NULL",
                [sid],
            )
            for sid in (a, b)
        }
        for target, source in ((a, b), (b, a)):
            row = rows[source]
            assert row is not None
            assignments = ", ".join(f"{c} = ?" for c in columns)
            tx.execute(
                f"UPDATE secret_versions SET {assignments}"  # noqa: S608
                " WHERE secret_id = ? AND destroyed_at IS NULL",
                [*(row[c] for c in columns), target],
            )


@pytest.mark.parametrize(
    "columns",
    [["ciphertext"], ["nonce", "ciphertext"], ["key_id", "wrapped_key", "nonce", "ciphertext"]],
)
def test_ciphertexts_swapped_between_rows_fail_to_decrypt(
    sql_store: SqlSecretStore, columns: list[str]
) -> None:
    first, _ = sql_store.set("FIRST_TOKEN", "user:alice", Secret(VALUES[0]), actor="alice")
    second, _ = sql_store.set("SECOND_TOKEN", "user:bob", Secret(VALUES[1]), actor="bob")
    _swap(sql_store, first.id, second.id, columns)
    for meta, other in ((first, VALUES[1]), (second, VALUES[0])):
        with pytest.raises(DecryptionError) as info:
            sql_store.reveal(meta, version=1, actor="exec")
        message = str(info.value)
        assert f"{meta.name} in {meta.namespace}" in message
        assert "v1" in message
        assert other not in message
    assert not [e for e in sql_store.log() if e.event == "accessed"]


def test_a_flipped_bit_fails_to_decrypt(sql_store: SqlSecretStore) -> None:
    meta, _ = sql_store.set("TOKEN", "global", Secret(VALUES[0]), actor="root")
    with sql_store.db.transaction() as tx:
        blob = tx.scalar("SELECT ciphertext FROM secret_versions WHERE secret_id = ?", [meta.id])
        flipped = bytes([blob[0] ^ 1]) + blob[1:]
        tx.execute(
            "UPDATE secret_versions SET ciphertext = ? WHERE secret_id = ?", [flipped, meta.id]
        )
    with pytest.raises(DecryptionError, match="TOKEN in global"):
        sql_store.reveal(meta, version=1, actor="exec")


def test_a_row_moved_to_another_version_fails_to_decrypt(sql_store: SqlSecretStore) -> None:
    """Restoring an old ciphertext under a newer version number does not bring it back."""
    sql_store.set("TOKEN", "global", Secret(VALUES[0]), actor="root")
    with sql_store.db.transaction() as tx:
        old = tx.one("SELECT * FROM secret_versions WHERE version = 1")
    meta, _ = sql_store.set("TOKEN", "global", Secret(VALUES[1]), actor="root")
    assert old is not None
    with sql_store.db.transaction() as tx:
        tx.execute(
            "UPDATE secret_versions SET key_id = ?, wrapped_key = ?, nonce = ?, ciphertext = ?"
            " WHERE version = 2",
            [old["key_id"], old["wrapped_key"], old["nonce"], old["ciphertext"]],
        )
    with pytest.raises(DecryptionError):
        sql_store.reveal(meta, version=2, actor="exec")


def test_a_wrong_key_with_the_right_id_names_the_secret(backend: Backend, keyring: Keyring) -> None:
    with backend.open(keyring) as store:
        store.set("TOKEN", "org:acme", Secret(VALUES[0]), actor="root")
    impostor = Keyring([MasterKey(keyring.primary.key_id, new_master_key().material)])
    # Refused when the store opens, before anything can be written under it.
    with pytest.raises(DecryptionError) as info:
        backend.open(impostor)
    assert isinstance(info.value, RunnerError)
    assert str(info.value).startswith("cannot decrypt secret TOKEN in org:acme v1")


def test_a_store_naming_an_unloaded_key_refuses_to_start(
    backend: Backend, keyring: Keyring
) -> None:
    with backend.open(keyring) as store:
        store.set("TOKEN", "global", Secret(VALUES[0]), actor="root")
    with pytest.raises(MasterKeyError) as info:
        backend.open(Keyring([new_master_key()]))
    assert keyring.primary.key_id in str(info.value)


def test_a_missing_key_file_is_refused_and_not_replaced(backend: Backend) -> None:
    settings = backend.settings()
    with open_store(settings) as store:
        store.set("TOKEN", "global", Secret(VALUES[0]), actor="root")
        key_id = store.keyring.primary.key_id
    key_file = settings.effective_master_key_file
    key_file.unlink()
    with pytest.raises(MasterKeyError) as info:
        open_store(settings)
    assert key_id in str(info.value)
    assert "backup" in str(info.value)
    assert not key_file.exists()

    elsewhere = backend.home.parent / "other.key"
    with pytest.raises(MasterKeyError, match="does not exist"):
        open_store(settings.with_changes(master_key_file=elsewhere))
    assert not elsewhere.exists(), "an explicit RUNNER_MASTER_KEY_FILE is never created"


def test_superseded_and_removed_versions_lose_their_ciphertext(sql_store: SqlSecretStore) -> None:
    meta, _ = sql_store.set("TOKEN", "global", Secret(VALUES[0]), actor="root")
    sql_store.set("TOKEN", "global", Secret(VALUES[1]), actor="root")

    def versions() -> list[dict[str, object]]:
        with sql_store.db.transaction(write=False) as tx:
            return tx.all(
                "SELECT version, created_by, ciphertext, wrapped_key, nonce, key_id, destroyed_at"
                " FROM secret_versions WHERE secret_id = ? ORDER BY version",
                [meta.id],
            )

    first, second = versions()
    assert (first["version"], first["created_by"]) == (1, "root")
    assert first["ciphertext"] is first["wrapped_key"] is first["nonce"] is first["key_id"] is None
    assert first["destroyed_at"] is not None
    assert second["ciphertext"] is not None
    sql_store.remove("TOKEN", "global", actor="root")
    assert all(v["ciphertext"] is None and v["destroyed_at"] is not None for v in versions())
    assert len(versions()) == 2, "metadata stays for the audit log"


def test_the_audit_log_is_append_only(sql_store: SqlSecretStore) -> None:
    sql_store.set("TOKEN", "global", Secret(VALUES[0]), actor="root")
    for statement in ("UPDATE secret_audit SET actor = 'mallory'", "DELETE FROM secret_audit"):
        with pytest.raises(StoreError, match="append-only"), sql_store.db.transaction() as tx:
            tx.execute(statement)
    sql_store.remove("TOKEN", "global", actor="root")
    assert [(e.event, e.actor) for e in sql_store.log()] == [
        ("created", "root"),
        ("deleted", "root"),
    ]


def test_rotation_keeps_every_value_readable(backend: Backend) -> None:
    settings = backend.settings()
    store = open_store(settings)
    metas = [
        store.set(f"T_{i}", "global", Secret(v), actor="root")[0] for i, v in enumerate(VALUES)
    ]
    store.set("T_0", "global", Secret(VALUES[1]), actor="root")
    metas[0] = store.get("T_0", "global") or metas[0]
    store.remove("T_3", "global", actor="root")
    key_file = settings.effective_master_key_file
    backup = key_file.with_name("backup.key")
    shutil.copy(key_file, backup)
    old_id = store.keyring.primary.key_id
    stale = SqlSecretStore(connect(backend.url), load_key_file(backup))

    report = rotate_master_key(store, actor="root")

    assert report.rewrapped == 3
    assert report.retired_key_ids == (old_id,)
    assert load_key_file(key_file).ids == (report.new_key_id,)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    expected = [VALUES[1], VALUES[1], VALUES[2]]
    for meta, value in zip(metas[:3], expected, strict=True):
        assert store.reveal(meta, version=meta.version, actor="x") == Secret(value)
    store.close()
    with open_store(settings) as reopened:
        for meta, value in zip(metas[:3], expected, strict=True):
            assert reopened.reveal(meta, version=meta.version, actor="x") == Secret(value)
        rotated = [e for e in reopened.log() if e.event == "key_rotated"]
        assert len(rotated) == 1
        assert rotated[0].count == 3
        assert old_id in (rotated[0].detail or "")

    # A process still holding the retired key can neither write nor read.
    with pytest.raises(MasterKeyError, match="retired"):
        stale.set("T_9", "global", Secret(VALUES[0]), actor="root")
    with pytest.raises(MasterKeyError, match=report.new_key_id):
        stale.reveal(metas[1], version=1, actor="x")
    stale.close()
    # Restoring the pre-rotation key file is refused at start, naming the key it lacks.
    with pytest.raises(MasterKeyError, match=report.new_key_id):
        open_store(settings.with_changes(master_key_file=backup))


def test_home_and_key_file_are_private(tmp_path: Path) -> None:
    home = tmp_path / "state" / "runner"
    settings = support.Backend("sqlite", "", home).settings()
    with open_store(settings) as store:
        store.set("TOKEN", "global", Secret(VALUES[0]), actor="root")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "master.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "runner.db").stat().st_mode) == 0o600
    assert len(load_key_file(home / "master.key").ids) == 1
    key_text = (home / "master.key").read_text()
    with open_store(settings):
        pass
    assert (home / "master.key").read_text() == key_text, "the key is created once"


# Concurrency ---------------------------------------------------------------------

WRITERS = 4
WRITES_EACH = 6


def _writer(url: str, key_file: str, writer: int, start: object) -> None:
    store = SqlSecretStore(connect(url), load_key_file(Path(key_file)))
    start.wait()  # type: ignore[attr-defined]
    for n in range(WRITES_EACH):
        store.set(
            "SHARED_TOKEN", "org:acme", Secret(f"writer-{writer}-write-{n}"), actor=f"w{writer}"
        )
    store.close()


def test_concurrent_writers_lose_no_version(backend: Backend, tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    settings = backend.settings(master_key_file=key_file)
    key_file.write_text(f"k1 {base64.b64encode(os.urandom(32)).decode()}\n", encoding="utf-8")
    open_store(settings).close()  # schema in place before the race
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_writer, args=(backend.url, str(key_file), w, start))
        for w in range(WRITERS)
    ]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    total = WRITERS * WRITES_EACH
    with open_store(settings) as store:
        meta = store.get("SHARED_TOKEN", "org:acme")
        assert meta is not None
        assert meta.version == total
        with store.db.transaction(write=False) as tx:
            versions = [
                r["version"]
                for r in tx.all(
                    "SELECT version FROM secret_versions WHERE secret_id = ? ORDER BY version",
                    [meta.id],
                )
            ]
            live = tx.scalar(
                "SELECT COUNT(*) AS n FROM secret_versions WHERE ciphertext IS NOT NULL"
            )
        assert versions == list(range(1, total + 1))
        assert live == 1
        events = store.log("SHARED_TOKEN")
        assert [e.event for e in events] == ["created"] + ["updated"] * (total - 1)
        assert [e.version for e in events] == list(range(1, total + 1))
        value = store.reveal(meta, version=total, actor="x").reveal()
        assert value.startswith("writer-")
        assert value.endswith(f"write-{WRITES_EACH - 1}")
