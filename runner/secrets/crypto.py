"""Envelope encryption of secret values, master keyrings and key files.

Every version of a secret gets its own random 256-bit data key. The value is
encrypted with AES-256-GCM under that key, with a random 96-bit nonce and the
row's identity (secret id, namespace, scope, name, version) as associated
data, so a ciphertext copied into another row does not decrypt. The data key
is itself AES-256-GCM-encrypted ("wrapped") by a master key, whose id is
stored beside it; rotating the master key re-wraps data keys only.

A key file holds one key per line, ``KEY_ID BASE64_OF_32_BYTES``; ``#``
starts a comment. The first key encrypts, every key decrypts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets as _random
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from runner.errors import MasterKeyError
from runner.records import Frozen
from runner.secrets.value import Secret

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_VALUE_AAD = b"runner/secret-value/v1\x00"
_WRAP_AAD = b"runner/data-key/v1\x00"

KEY_FILE_HEADER = (
    "# runner master keys: the first key encrypts, every key decrypts.\n"
    "# Keep a backup of this file: without it the secrets it protects are lost.\n"
)


# Frozen records (runner.records): a full cache hit loads them without generating code.
@dataclass(init=False, repr=False, eq=False)
class MasterKey(Frozen):
    """A master key: its id and its material (never shown)."""

    key_id: str
    material: bytes = field(repr=False)

    def __init__(self, key_id: str, material: bytes) -> None:
        self._fill(key_id, material)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not _KEY_ID_RE.fullmatch(self.key_id):
            raise MasterKeyError(
                f"invalid master key id {self.key_id!r}",
                hint="use letters, digits, '.', '_', ':' or '-' (at most 64)",
            )
        if len(self.material) != KEY_BYTES:
            raise MasterKeyError(
                f"master key {self.key_id} is not {KEY_BYTES} bytes",
                hint="generate keys with `runner keys rotate` or 32 random bytes in base64",
            )


def new_key_id(now: datetime | None = None) -> str:
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"mk-{moment:%Y%m%d}-{_random.token_hex(4)}"


def new_master_key(now: datetime | None = None) -> MasterKey:
    return MasterKey(new_key_id(now), os.urandom(KEY_BYTES))


def _aead(key: bytes) -> AESGCM:
    """AES-GCM under ``key``. The library loads here, not with this module: a run
    that decrypts nothing (a fully cached one without secrets) never loads it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


class Keyring:
    """Master keys by id; ``primary`` (the first) wraps new data keys."""

    def __init__(self, keys: Sequence[MasterKey], *, source: Path | None = None) -> None:
        if not keys:
            raise MasterKeyError("no master key loaded", hint="add a key to the key file")
        by_id: dict[str, MasterKey] = {}
        for key in keys:
            if key.key_id in by_id:
                raise MasterKeyError(
                    f"master key id {key.key_id} appears twice",
                    hint="give every key in the key file its own id",
                )
            by_id[key.key_id] = key
        self._keys = tuple(keys)
        self._by_id = by_id
        self.source = source

    def __repr__(self) -> str:
        return f"Keyring(ids={list(self.ids)!r})"

    @property
    def primary(self) -> MasterKey:
        return self._keys[0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self._keys)

    @property
    def keys(self) -> tuple[MasterKey, ...]:
        return self._keys

    def get(self, key_id: str) -> MasterKey | None:
        return self._by_id.get(key_id)

    def derive(self, purpose: str) -> bytes:
        """A 256-bit key for ``purpose``, derived from the primary key with HKDF.

        Other components (the cache's HMAC of host-passed values) get a key of
        their own without ever seeing master key material; a rotation changes it.
        """
        # HKDF-SHA256 (RFC 5869) without salt, one block long: extract, then expand.
        info = f"runner:{purpose}:{self.primary.key_id}".encode()
        prk = hmac.digest(bytes(hashlib.sha256().digest_size), self.primary.material, "sha256")
        return hmac.digest(prk, info + b"\x01", "sha256")[:KEY_BYTES]

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._by_id

    def __iter__(self) -> Iterator[MasterKey]:
        return iter(self._keys)


@dataclass(init=False, repr=False, eq=False)
class Binding(Frozen):
    """What a ciphertext belongs to; any change makes it undecryptable."""

    secret_id: str
    namespace: str
    scope: str
    name: str
    version: int

    def __init__(self, secret_id: str, namespace: str, scope: str, name: str, version: int) -> None:
        self._fill(secret_id, namespace, scope, name, version)

    def aad(self) -> bytes:
        fields = [self.secret_id, self.namespace, self.scope, self.name, self.version]
        return json.dumps(fields, separators=(",", ":")).encode()


@dataclass(init=False, repr=False, eq=False)
class Sealed(Frozen):
    """An encrypted value as stored: ``wrapped_key`` is nonce + wrapped data key."""

    key_id: str
    wrapped_key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)

    def __init__(self, key_id: str, wrapped_key: bytes, nonce: bytes, ciphertext: bytes) -> None:
        self._fill(key_id, wrapped_key, nonce, ciphertext)


class KeyNotLoaded(Exception):
    """The row names a master key id the keyring lacks."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.key_id = key_id


class Undecryptable(Exception):
    """Authentication failed: a wrong key, or the row was changed or moved."""


def _wrap_aad(key_id: str, binding: Binding) -> bytes:
    return _WRAP_AAD + key_id.encode() + b"\x00" + binding.aad()


def _wrap(master: MasterKey, data_key: bytes, binding: Binding) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _aead(master.material).encrypt(
        nonce, data_key, _wrap_aad(master.key_id, binding)
    )


def _unwrap(master: MasterKey, wrapped: bytes, binding: Binding) -> bytes:
    nonce, body = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
    try:
        data_key = _aead(master.material).decrypt(nonce, body, _wrap_aad(master.key_id, binding))
    except (_invalid_tag(), ValueError) as exc:
        raise Undecryptable from exc
    if len(data_key) != KEY_BYTES:
        raise Undecryptable
    return data_key


_CHECK_PLAINTEXT = b"runner master key check"


def key_check(master: MasterKey) -> bytes:
    """A value only this key's material decrypts: tells a key file with the
    right id but other bytes apart from the key that encrypted the store."""
    nonce = os.urandom(NONCE_BYTES)
    body = _aead(master.material).encrypt(nonce, _CHECK_PLAINTEXT, master.key_id.encode())
    return nonce + body


def key_matches(master: MasterKey, check: bytes) -> bool:
    nonce, body = check[:NONCE_BYTES], check[NONCE_BYTES:]
    try:
        return _aead(master.material).decrypt(nonce, body, master.key_id.encode()) == (
            _CHECK_PLAINTEXT
        )
    except (_invalid_tag(), ValueError):
        return False


def seal(
    keyring: Keyring, value: Secret, binding: Binding, *, master: MasterKey | None = None
) -> Sealed:
    """Encrypt ``value`` for the row ``binding`` under a fresh data key."""
    wrapping = master or keyring.primary
    data_key = os.urandom(KEY_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = _aead(data_key).encrypt(
        nonce, value.reveal().encode("utf-8"), _VALUE_AAD + binding.aad()
    )
    return Sealed(wrapping.key_id, _wrap(wrapping, data_key, binding), nonce, ciphertext)


def unseal(keyring: Keyring, sealed: Sealed, binding: Binding) -> Secret:
    """Decrypt, or raise ``KeyNotLoaded`` / ``Undecryptable``; never a wrong value."""
    master = keyring.get(sealed.key_id)
    if master is None:
        raise KeyNotLoaded(sealed.key_id)
    data_key = _unwrap(master, sealed.wrapped_key, binding)
    try:
        plain = _aead(data_key).decrypt(sealed.nonce, sealed.ciphertext, _VALUE_AAD + binding.aad())
        return Secret(plain.decode("utf-8"))
    except (_invalid_tag(), ValueError, UnicodeDecodeError) as exc:
        raise Undecryptable from exc


def rewrap(keyring: Keyring, sealed: Sealed, binding: Binding, new: MasterKey) -> Sealed:
    """The same ciphertext with its data key wrapped by ``new`` instead."""
    old = keyring.get(sealed.key_id)
    if old is None:
        raise KeyNotLoaded(sealed.key_id)
    data_key = _unwrap(old, sealed.wrapped_key, binding)
    return Sealed(new.key_id, _wrap(new, data_key, binding), sealed.nonce, sealed.ciphertext)


# Key files ------------------------------------------------------------------


def parse_key_file(text: str, *, path: Path) -> Keyring:
    keys: list[MasterKey] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        # Never echo the line: it holds key material.
        if len(parts) != 2:
            raise MasterKeyError(
                f"master key file {path}, line {number}: expected `KEY_ID BASE64_KEY`",
                hint="write one key per line as its id, a space and 32 bytes in base64",
            )
        key_id, encoded = parts
        if not _KEY_ID_RE.fullmatch(key_id):
            raise MasterKeyError(
                f"master key file {path}, line {number}: the key id is missing or invalid",
                hint="start each line with a key id of letters, digits, '.', '_', ':' or '-'",
            )
        try:
            material = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise MasterKeyError(
                f"master key file {path}, line {number} (key {key_id}): the key is not base64",
                hint="write the key as 32 random bytes in base64",
            ) from None
        if len(material) != KEY_BYTES:
            raise MasterKeyError(
                f"master key file {path}, line {number} (key {key_id}): the key is not "
                f"{KEY_BYTES} bytes",
                hint="write the key as 32 random bytes in base64",
            )
        keys.append(MasterKey(key_id, material))
    if not keys:
        raise MasterKeyError(
            f"master key file {path} holds no key",
            hint="restore the key file from your backup",
        )
    return Keyring(keys, source=path)


def load_key_file(path: Path) -> Keyring:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MasterKeyError(
            f"master key file {path} does not exist",
            hint="restore it from your backup, or point RUNNER_MASTER_KEY_FILE at it",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MasterKeyError(
            f"cannot read master key file {path}: {type(exc).__name__}",
            hint="check the file's owner and permissions",
        ) from None
    return parse_key_file(text, path=path)


def format_key_file(keys: Iterable[MasterKey]) -> str:
    lines = [f"{k.key_id} {base64.b64encode(k.material).decode()}" for k in keys]
    return KEY_FILE_HEADER + "\n".join(lines) + "\n"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_file(path: Path, keys: Sequence[MasterKey]) -> None:
    """Replace the key file atomically (mode 0600): a crash leaves the old or the new one."""
    tmp = path.with_name(f".{path.name}.{_random.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(format_key_file(keys))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise MasterKeyError(
            f"cannot write master key file {path}: {exc.strerror or type(exc).__name__}",
            hint="check that its folder is writable by you",
        ) from None


def create_key_file(path: Path) -> Keyring:
    """A new key file with one fresh key; its folder is created with mode 0700."""
    folder = path.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = new_master_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(format_key_file([key]))
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(folder)
    except FileExistsError:
        return load_key_file(path)
    except OSError as exc:
        raise MasterKeyError(
            f"cannot create master key file {path}: {exc.strerror or type(exc).__name__}",
            hint="make RUNNER_HOME writable, or set RUNNER_MASTER_KEY_FILE",
        ) from None
    return Keyring([key], source=path)


def loosely_protected(path: Path) -> bool:
    """Whether group or others may read the key file."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))
