"""Envelope encryption and key files, without a database."""

from __future__ import annotations

import base64
import dataclasses
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import MasterKeyError
from runner.secrets.crypto import (
    Binding,
    KeyNotLoaded,
    Keyring,
    MasterKey,
    Undecryptable,
    create_key_file,
    load_key_file,
    new_master_key,
    parse_key_file,
    rewrap,
    seal,
    unseal,
    write_key_file,
)
from runner.secrets.value import Secret

BINDING = Binding("sec_1", "user:alice", "batches", "GH_TOKEN", 3)
VALUE = Secret("ghp_exampletokenvalue")


def test_seal_and_unseal_round_trip() -> None:
    ring = Keyring([new_master_key()])
    sealed = seal(ring, VALUE, BINDING)
    assert sealed.key_id == ring.primary.key_id
    assert VALUE.reveal().encode() not in sealed.ciphertext
    assert len(sealed.nonce) == 12
    assert unseal(ring, sealed, BINDING) == VALUE


def test_every_version_gets_its_own_data_key_and_nonce() -> None:
    ring = Keyring([new_master_key()])
    a, b = seal(ring, VALUE, BINDING), seal(ring, VALUE, BINDING)
    assert a.nonce != b.nonce
    assert a.ciphertext != b.ciphertext
    assert a.wrapped_key != b.wrapped_key


@pytest.mark.parametrize(
    "change",
    [
        {"secret_id": "sec_2"},
        {"namespace": "user:bob"},
        {"namespace": "global"},
        {"scope": "codeintel"},
        {"name": "OTHER_TOKEN"},
        {"version": 4},
    ],
)
def test_a_ciphertext_is_bound_to_its_row(change: dict[str, object]) -> None:
    ring = Keyring([new_master_key()])
    sealed = seal(ring, VALUE, BINDING)
    with pytest.raises(Undecryptable):
        unseal(ring, sealed, dataclasses.replace(BINDING, **change))  # type: ignore[arg-type]


def test_a_different_key_under_the_same_id_fails() -> None:
    ring = Keyring([new_master_key()])
    sealed = seal(ring, VALUE, BINDING)
    impostor = Keyring([MasterKey(ring.primary.key_id, new_master_key().material)])
    with pytest.raises(Undecryptable):
        unseal(impostor, sealed, BINDING)


def test_an_unloaded_key_id_is_named() -> None:
    sealed = seal(Keyring([new_master_key()]), VALUE, BINDING)
    with pytest.raises(KeyNotLoaded) as info:
        unseal(Keyring([new_master_key()]), sealed, BINDING)
    assert info.value.key_id == sealed.key_id


def test_rewrap_changes_only_the_wrapping() -> None:
    old = new_master_key()
    new = new_master_key()
    sealed = seal(Keyring([old]), VALUE, BINDING)
    moved = rewrap(Keyring([new, old]), sealed, BINDING, new)
    assert (moved.nonce, moved.ciphertext) == (sealed.nonce, sealed.ciphertext)
    assert moved.key_id == new.key_id
    assert unseal(Keyring([new]), moved, BINDING) == VALUE
    with pytest.raises(KeyNotLoaded):
        unseal(Keyring([old]), moved, BINDING)


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=8, max_size=200).filter(lambda t: "\x00" not in t))
def test_any_text_round_trips(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return
    ring = Keyring([new_master_key()])
    assert unseal(ring, seal(ring, Secret(text), BINDING), BINDING).reveal() == text


def test_keys_never_print_their_material() -> None:
    key = new_master_key()
    encoded = base64.b64encode(key.material).decode()
    sealed = seal(Keyring([key]), VALUE, BINDING)
    for text in (repr(key), str(key), repr(Keyring([key])), repr(sealed)):
        assert encoded not in text
        assert str(key.material) not in text


def test_key_file_first_key_encrypts_all_decrypt(tmp_path: Path) -> None:
    a, b = new_master_key(), new_master_key()
    path = tmp_path / "keys"
    write_key_file(path, [a, b])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = load_key_file(path)
    assert ring.ids == (a.key_id, b.key_id)
    assert ring.primary == a
    assert ring.source == path
    sealed = seal(Keyring([b]), VALUE, BINDING)
    assert unseal(ring, sealed, BINDING) == VALUE


def test_key_file_accepts_comments_and_blank_lines(tmp_path: Path) -> None:
    material = base64.b64encode(b"k" * 32).decode()
    ring = parse_key_file(f"# mine\n\n  prod-2024 {material}  \n", path=tmp_path / "k")
    assert ring.ids == ("prod-2024",)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "holds no key"),
        ("# only a comment\n", "holds no key"),
        ("{key}\n", "expected `KEY_ID BASE64_KEY`"),
        ("bad/id {key}\n", "key id is missing or invalid"),
        ("k1 not-base64!!\n", "not base64"),
        ("k1 " + base64.b64encode(b"short").decode() + "\n", "not 32 bytes"),
        ("k1 {key}\nk1 {key}\n", "appears twice"),
    ],
)
def test_bad_key_files_name_the_line_but_never_the_key(
    tmp_path: Path, text: str, says: str
) -> None:
    key = base64.b64encode(b"s" * 32).decode()
    with pytest.raises(MasterKeyError) as info:
        parse_key_file(text.format(key=key), path=tmp_path / "keys")
    assert says in str(info.value)
    assert key not in str(info.value)
    assert info.value.hint


def test_missing_key_file_says_to_restore_it(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="does not exist") as info:
        load_key_file(tmp_path / "nope.key")
    assert "backup" in str(info.value)


def test_created_key_file_and_folder_are_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / "master.key"
    ring = create_key_file(path)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_file(path).ids == ring.ids
    # Creating again (a race with another process) keeps the first key.
    assert create_key_file(path).ids == ring.ids


def test_keyrings_refuse_duplicates_and_emptiness() -> None:
    key = new_master_key()
    with pytest.raises(MasterKeyError, match="twice"):
        Keyring([key, key])
    with pytest.raises(MasterKeyError, match="no master key"):
        Keyring([])
    with pytest.raises(MasterKeyError, match="32 bytes"):
        MasterKey("k1", b"short")
    with pytest.raises(MasterKeyError, match="invalid master key id"):
        MasterKey("k1\n", b"k" * 32)


@settings(max_examples=25)
@given(material=st.binary(min_size=32, max_size=32), purpose=st.text(min_size=1, max_size=40))
def test_derived_keys_are_hkdf_sha256_as_the_cryptography_library_computes_it(
    material: bytes, purpose: str
) -> None:
    # Cache keys already stored were made with the library's HKDF: the same bytes, always.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = MasterKey("mk-1", material)
    info = f"runner:{purpose}:mk-1".encode()
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)
    assert Keyring([key]).derive(purpose) == expected
    assert Keyring([MasterKey("mk-2", material)]).derive(purpose) != expected
