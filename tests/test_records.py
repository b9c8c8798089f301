"""Frozen records (runner.records) behave as ``@dataclass(frozen=True)`` would make them.

Each record's ``__init__`` is written by hand: every one is checked here
against its fields (names, order, each value landing in its own field), and
its equality, hash, repr, frozen-ness, ``replace``, copy and pickle against a
genuine frozen dataclass with the same fields.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import pickle
from typing import Any

import pytest

from runner.records import Frozen, FrozenByIdentity, OrderedFrozen

# Every module defining a record; a new one is found through Frozen.__subclasses__().
MODULES = (
    "runner.env",
    "runner.sandbox.policy",
    "runner.secrets.crypto",
    "runner.secrets.delivery",
    "runner.secrets.local",
    "runner.secrets.models",
    "runner.secrets.store",
    "runner.cache.entry",
    "runner.cache.keys",
    "runner.execute.run",
    "runner.execute.rerun",
    "runner.cli._limits",
    "runner.cli._options",
    "runner.cli._sandbox",
    "runner.changeset",
    "runner.execute.source",
    "runner.migrations",
    "runner.namespaces",
    "runner.execute.docker_sandbox",
    "runner.execute.registry",
    "runner.execute.runtime",
    "runner.execute.steps",
    "runner.execute.job",
    "runner.egress.seam",
    "runner.egress.policy",
)
for _name in MODULES:
    importlib.import_module(_name)

RECORDS = sorted(
    (
        c
        for base in (Frozen, OrderedFrozen)
        for c in base.__subclasses__()
        if c not in (OrderedFrozen, FrozenByIdentity)
    ),
    key=lambda c: f"{c.__module__}.{c.__qualname__}",
)
# Records compared by identity (bags of services): what they share with the others is
# checked with them; equality, hash and repr are object's.
BY_IDENTITY = sorted(
    FrozenByIdentity.__subclasses__(), key=lambda c: f"{c.__module__}.{c.__qualname__}"
)


def _sentinels(cls: type) -> dict[str, str]:
    return {f.name: f"<{cls.__name__}.{f.name}>" for f in dataclasses.fields(cls)}


def _built(cls: type, values: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """``cls(**values)``, its own checks of the values (``__post_init__``) left out."""
    if hasattr(cls, "__post_init__"):
        monkeypatch.setattr(cls, "__post_init__", lambda self: None)
    return cls(**values)


def _twin(cls: type) -> type:
    """A genuine frozen dataclass with ``cls``'s name and fields (ordered, if it is)."""
    twin = dataclasses.make_dataclass(
        cls.__name__,
        [
            (f.name, Any, dataclasses.field(repr=f.repr, compare=f.compare))
            for f in dataclasses.fields(cls)
        ],
        frozen=True,
        order=issubclass(cls, OrderedFrozen),
    )
    twin.__qualname__ = cls.__qualname__
    return twin


def _check_defaults(cls: Any) -> None:
    """``cls.__init__``'s defaults are its fields': a factory's stands as None."""
    sig = inspect.signature(cls.__init__)
    for f in dataclasses.fields(cls):
        default = sig.parameters[f.name].default
        if f.default is not dataclasses.MISSING:
            assert default == f.default, f"{cls.__name__}.{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            assert default is None, f"{cls.__name__}.{f.name}: None stands for the factory"
        else:
            assert default is inspect.Parameter.empty, f"{cls.__name__}.{f.name}"


def test_every_record_module_is_listed() -> None:
    assert {c.__module__ for c in RECORDS} <= set(MODULES)
    assert len(RECORDS) >= 30


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_a_record_is_what_a_frozen_dataclass_would_be(
    cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert dataclasses.is_dataclass(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    assert params == names, "__init__ takes every field, in declaration order"

    values = _sentinels(cls)
    record = _built(cls, values, monkeypatch)
    assert {n: getattr(record, n) for n in names} == values  # each value in its own field

    twin = _twin(cls)(**values)
    assert repr(record) == repr(twin)
    same = _built(cls, dict(values), monkeypatch)
    assert record == same and hash(record) == hash(same)
    assert record != twin  # another class, as between two dataclasses
    first = names[0]
    other = _built(cls, {**values, first: "<changed>"}, monkeypatch)
    compared = dataclasses.fields(cls)[0].compare
    assert (record == other) is (not compared)

    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, first, "<set>")
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(record, first)

    if issubclass(cls, OrderedFrozen):  # ordered by its fields, in order, as the twin is
        twin_cls = _twin(cls)
        twins = sorted(twin_cls(**v) for v in (values, {**values, first: "<a>"}))
        ours = sorted([_built(cls, v, monkeypatch) for v in (values, {**values, first: "<a>"})])
        assert [repr(r) for r in ours] == [repr(t) for t in twins]
        assert record <= same and not record < same and record >= same
        changed = {**values, first: "<changed>"}
        assert (other < record) is (twin_cls(**changed) < twin_cls(**values))
        assert (other > record) is (twin_cls(**changed) > twin_cls(**values))
        with pytest.raises(TypeError):
            assert record < twin

    replaced = dataclasses.replace(record, **{first: "<replaced>"})
    assert type(replaced) is cls and getattr(replaced, first) == "<replaced>"
    assert copy.deepcopy(record) == record
    assert pickle.loads(pickle.dumps(record)) == record  # noqa: S301 (its own bytes)


def test_defaults_and_factories_are_those_the_fields_declare() -> None:
    from runner.env import HostEnv
    from runner.sandbox.policy import Hardening, SandboxPolicy
    from runner.secrets.local import LocalSecrets

    assert HostEnv().values == {} and HostEnv().values is not HostEnv().values
    assert SandboxPolicy().hardening == Hardening()
    assert LocalSecrets().macs == {} and not LocalSecrets()
    for cls in RECORDS:
        _check_defaults(cls)


def test_a_secret_field_left_out_of_repr_stays_out() -> None:
    from runner.secrets.crypto import MasterKey, Sealed

    key = MasterKey("mk-1", b"k" * 32)
    assert "kkkk" not in repr(key) and repr(key) == "MasterKey(key_id='mk-1')"
    sealed = Sealed("mk-1", b"wrapped-key", b"nonce", b"ciphertext")
    assert repr(sealed) == "Sealed(key_id='mk-1')"


@pytest.mark.parametrize("cls", BY_IDENTITY, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_a_record_by_identity_takes_every_field_and_is_compared_as_an_object(
    cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert dataclasses.is_dataclass(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    assert list(inspect.signature(cls.__init__).parameters)[1:] == names
    values = _sentinels(cls)
    record = _built(cls, values, monkeypatch)
    assert {n: getattr(record, n) for n in names} == values
    same = _built(cls, dict(values), monkeypatch)
    assert record != same and record == record  # by identity
    assert hash(record) == object.__hash__(record)
    assert repr(record) == object.__repr__(record)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, names[0], "<set>")
    replaced = dataclasses.replace(record, **{names[0]: "<replaced>"})
    assert type(replaced) is cls and getattr(replaced, names[0]) == "<replaced>"
    _check_defaults(cls)


def test_every_record_by_identity_is_found() -> None:
    names = {c.__qualname__ for c in BY_IDENTITY}
    assert {"RunContext", "JobServices", "Job", "CheckedChangeset", "_Ready", "_Keyed"} <= names
