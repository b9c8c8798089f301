"""Secret names and namespaces, as users type them."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import SecretValidationError, UsageError
from runner.namespaces import GLOBAL, Namespace, parse_namespace, visible_namespaces
from runner.secrets.names import RESERVED_NAMES, check_scope, normalize_name

ISSUE_LIST = [
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "BASH_ENV",
    "ENV",
    "PATH",
    "HOME",
    "SHELL",
    "IFS",
    "SHELLOPTS",
    "PROMPT_COMMAND",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PERL5OPT",
    "RUBYOPT",
    "NODE_OPTIONS",
    "JAVA_TOOL_OPTIONS",
    "GIT_SSH_COMMAND",
    "GIT_CONFIG_GLOBAL",
]


def test_every_name_the_issue_lists_is_refused() -> None:
    assert set(ISSUE_LIST) == RESERVED_NAMES
    for name in ISSUE_LIST:
        with pytest.raises(SecretValidationError):
            normalize_name(name.lower())


@settings(max_examples=60, deadline=None)
@given(st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,127}", fullmatch=True))
def test_valid_names_are_upper_cased_unless_reserved(text: str) -> None:
    upper = text.upper()
    if upper.startswith("RUNNER_") or upper in RESERVED_NAMES:
        with pytest.raises(SecretValidationError):
            normalize_name(text)
    else:
        assert normalize_name(text) == upper


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet="aZ9_-. $é€ſ\n", min_size=1, max_size=12))
def test_only_letters_digits_and_underscores_starting_with_a_letter(text: str) -> None:
    valid = text.isascii() and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", text) is not None
    if valid:
        assert normalize_name(text) == text.upper()
    else:
        with pytest.raises(SecretValidationError) as info:
            normalize_name(text)
        assert info.value.hint


def test_unicode_look_alikes_are_refused() -> None:
    # "ſ".upper() == "S" and "ı".upper() == "I": neither may sneak in as ASCII.
    for text in ("ſecret", "patı", "paTħ"):
        with pytest.raises(SecretValidationError, match="invalid secret name"):
            normalize_name(text)


def test_scopes() -> None:
    assert check_scope("batches") == "batches"
    assert check_scope("codeintel") == "codeintel"
    with pytest.raises(SecretValidationError, match="batches, codeintel"):
        check_scope("Batches")


@pytest.mark.parametrize(
    ("text", "kind", "name"),
    [
        ("global", "global", ""),
        ("org:acme", "org", "acme"),
        ("user:alice.b-c_d", "user", "alice.b-c_d"),
    ],
)
def test_namespaces_parse_and_print_canonically(text: str, kind: str, name: str) -> None:
    ns = parse_namespace(text)
    assert (ns.kind, ns.name) == (kind, name)
    assert str(ns) == text
    assert parse_namespace(str(ns)) == ns
    assert parse_namespace(ns) is ns


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Global",
        "user",
        "user:",
        "org:",
        "team:x",
        "user:a:b",
        "org:-x",
        "user:a b",
        "user:ü",
        "user:alice\n",
        "org:acme-",
    ],
)
def test_bad_namespaces_are_usage_errors_with_a_hint(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_namespace(text)
    assert info.value.exit_code == 2
    assert info.value.hint


def test_visible_namespaces_put_the_owner_first() -> None:
    assert visible_namespaces("user:alice") == [Namespace("user", "alice"), GLOBAL]
    assert visible_namespaces("org:acme") == [Namespace("org", "acme"), GLOBAL]
    assert visible_namespaces("global") == [GLOBAL]
