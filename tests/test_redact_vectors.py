"""Leak vectors: each way a secret value could leave runner and be read back.

Every case builds what a step, a library or a renderer would really print,
redacts it, and checks that a reader cannot recover the value from what is
left (by decoding it the way it was encoded), and that the marker names the
secret.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import secrets as pysecrets
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest

from runner.errors import SecretValidationError
from runner.redact import MIN_FORM_CHARS, Redactor, forms_of
from runner.secrets import Secret

TOKEN = "ghp_Zq8xR2mT7vLw0pK4nB9c"
# Characters whose base64 uses "+" and "/" (URL-safe: "-" and "_").
B64_SPECIAL = "tok>>>???~~~en12"
PASSWORD = 'p@ss w/rd&<"x">?=;+é'


def marker(name: str) -> str:
    return f"[REDACTED:{name}]"


def _b64_runs(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9+/\-_]{4,}", text)


def _decodes_containing(text: str, secret: bytes) -> bool:
    """Whether any base64 run left in ``text``, read at any offset, shows a piece of ``secret``."""
    half = len(secret) // 2
    pieces = [secret, secret[:half], secret[half:]]
    for run in _b64_runs(text):
        for start in range(4):
            body = run[start:]
            body = body[: len(body) - len(body) % 4]
            for alt in (body, body.replace("-", "+").replace("_", "/")):
                try:
                    decoded = base64.b64decode(alt, validate=False)
                except (binascii.Error, ValueError):
                    continue
                if any(p in decoded for p in pieces):
                    return True
    return False


@pytest.mark.parametrize("prefix", ["", "a", "ab"], ids=["align0", "align1", "align2"])
@pytest.mark.parametrize("suffix", ["", "x", "xy", "\n"], ids=["pad2", "pad1", "pad0", "newline"])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode], ids=["std", "url"])
def test_base64_at_every_alignment_and_padding(prefix: str, suffix: str, encode: object) -> None:
    assert callable(encode)
    for value in (TOKEN, B64_SPECIAL):
        encoded = encode(f"{prefix}{value}{suffix}".encode()).decode()
        out = Redactor({"S": value}).redact(f"data: {encoded} end")
        assert marker("S") in out
        assert not _decodes_containing(out, value.encode()), out


def test_echo_pipe_base64_wrapped_at_76_columns() -> None:
    value = "ghs_" + "Q" * 30 + pysecrets.token_hex(20)
    wrapped = base64.encodebytes((value + "\n").encode()).decode()  # 76-column lines
    assert "\n" in wrapped.strip()
    out = Redactor({"LONG": value}).redact(wrapped)
    assert not _decodes_containing(out.replace("\n", ""), value.encode())


@pytest.mark.parametrize(
    "encoded",
    [
        quote(PASSWORD, safe=""),
        quote(PASSWORD, safe="").lower(),
        quote_plus(PASSWORD, safe=""),
        re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote_plus(PASSWORD)),
        quote(PASSWORD),  # "/" left as is
    ],
    ids=["upper-hex", "lower-hex", "plus-for-space", "plus-lower-hex", "slash-kept"],
)
def test_url_encoding(encoded: str) -> None:
    out = Redactor({"PW": PASSWORD}).redact(f"GET /login?pw={encoded}&next=1")
    assert out == f"GET /login?pw={marker('PW')}&next=1"
    assert PASSWORD not in unquote_plus(out)
    assert PASSWORD not in unquote(out)


@pytest.mark.parametrize("ensure_ascii", [False, True], ids=["utf8-kept", "u-escaped"])
def test_json_string_escaping(ensure_ascii: bool) -> None:
    line = json.dumps({"password": PASSWORD, "n": 1}, ensure_ascii=ensure_ascii)
    assert ("\\u00e9" in line) == ensure_ascii
    out = Redactor({"PW": PASSWORD}).redact(line)
    assert json.loads(out) == {"password": marker("PW"), "n": 1}


def test_json_inside_json() -> None:
    inner = json.dumps({"token": PASSWORD})
    outer = json.dumps({"body": inner})
    out = Redactor({"PW": PASSWORD}).redact(outer)
    assert PASSWORD not in json.loads(json.loads(out)["body"])["token"]


@pytest.mark.parametrize(
    "escaped",
    [
        html.escape(PASSWORD),
        html.escape(PASSWORD, quote=False),
        PASSWORD.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;"),
    ],
    ids=["html-quote", "html-noquote", "xml"],
)
def test_html_and_xml_escaping(escaped: str) -> None:
    out = Redactor({"PW": PASSWORD}).redact(f"<input value='{escaped}'>")
    assert PASSWORD not in html.unescape(out)
    assert marker("PW") in out


def test_xml_apostrophe_entity() -> None:
    value = "it's-a-secret"
    out = Redactor({"S": value}).redact(f"<v>{value.replace(chr(39), '&apos;')}</v>")
    assert out == f"<v>{marker('S')}</v>"


@pytest.mark.parametrize("upper", [False, True], ids=["lower", "upper"])
def test_hex(upper: bool) -> None:
    hexed = PASSWORD.encode().hex()
    hexed = hexed.upper() if upper else hexed
    out = Redactor({"PW": PASSWORD}).redact(f"sha-ish {hexed}!")
    assert out == f"sha-ish {marker('PW')}!"


def test_each_line_of_a_multiline_value() -> None:
    key = (
        "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASCBKcwggSjAgEAAoIB\n-----END KEY-----"
    )
    redactor = Redactor({"KEY": key})
    # A step prints one line of the key on its own.
    out = redactor.redact("line: AQEFAASCBKcwggSjAgEAAoIB and more")
    assert out == f"line: {marker('KEY')} and more"
    assert "MIIEvQ" not in redactor.redact(f"x {key} y")


def test_crlf_value_printed_with_lf_and_lf_value_through_a_tty() -> None:
    crlf = "first-line-abc\r\nsecond-line-xyz"
    lf = "alpha-line-one\nbeta-line-two"
    redactor = Redactor({"CRLF": crlf, "LF": lf})
    out = redactor.redact(crlf.replace("\r\n", "\n") + " | " + lf.replace("\n", "\r\n"))
    for piece in ("first-line-abc", "second-line-xyz", "alpha-line-one", "beta-line-two"):
        assert piece not in out


def test_python_repr_of_a_value_with_quotes_and_backslashes() -> None:
    value = 'C:\\keys\\it\'s"here"'
    shown = repr({"key": value})
    assert value not in shown  # repr escapes it
    out = Redactor({"K": value}).redact(shown)
    assert "keys" not in out
    assert "here" not in out


def test_regex_metacharacters_are_literal() -> None:
    value = r".*+?[](){}|^$\d"
    redactor = Redactor({"RX": value})
    assert redactor.redact(f"a {value} b") == f"a {marker('RX')} b"
    # As a regex it would match anything; as a literal it matches nothing here.
    assert redactor.redact("ordinary text without it") == "ordinary text without it"


def test_non_ascii_value() -> None:
    value = "pässwörd✓🔑ключ"
    redactor = Redactor({"U": value})
    assert redactor.redact(f"«{value}»") == f"«{marker('U')}»"
    assert redactor.redact_bytes(value.encode() + b"\xff") == marker("U").encode() + b"\xff"


def test_prefix_secret_leaves_no_tail_of_the_longer_one() -> None:
    redactor = Redactor({"SHORT": "abcdefgh12", "LONG": "abcdefgh12345678"})
    out = redactor.redact("v=abcdefgh12345678;")
    assert out == f"v={marker('LONG')};"


def test_partially_overlapping_secrets_merge_into_one_marker() -> None:
    redactor = Redactor({"A": "XXXXsecretAAAA", "B": "AAAAmoreYYYY"})
    out = redactor.redact("<XXXXsecretAAAAmoreYYYY>")
    assert out.count("[REDACTED:") == 1
    for piece in ("XXXX", "secret", "more", "YYYY", "AAAA"):
        assert piece not in out


def test_self_overlapping_value() -> None:
    out = Redactor({"P": "passpassword1"}).redact("passpasspassword1!")
    assert out == f"pass{marker('P')}!"


def test_ten_kilobyte_value() -> None:
    value = pysecrets.token_urlsafe(7600)[:10_240]
    redactor = Redactor({"BIG": value})
    text = f"head {value} tail {base64.b64encode(value.encode()).decode()}"
    out = redactor.redact(text)
    assert out == f"head {marker('BIG')} tail {marker('BIG')}"


def test_a_thousand_secrets_at_once() -> None:
    values = {f"S{i}": f"value-{i:04d}-{pysecrets.token_hex(8)}" for i in range(1000)}
    redactor = Redactor(values)
    text = " ".join(values.values())
    out = redactor.redact(text)
    assert out == " ".join(marker(name) for name in values)


def test_same_value_under_two_names_is_redacted() -> None:
    redactor = Redactor({"USER_TOKEN": TOKEN, "ORG_TOKEN": TOKEN})
    out = redactor.redact(TOKEN)
    assert TOKEN not in out
    assert out in (marker("USER_TOKEN"), marker("ORG_TOKEN"))


def test_secret_type_values_are_accepted() -> None:
    redactor = Redactor({"T": Secret(TOKEN)})
    assert redactor.redact(TOKEN) == marker("T")


def test_redacting_twice_is_harmless_and_markers_never_match() -> None:
    redactor = Redactor({"R": "REDACTED:R]", "T": TOKEN})
    once = redactor.redact(f"a {TOKEN} b REDACTED:R] c")
    assert "REDACTED:R]" not in once.replace("[REDACTED]", "")
    assert redactor.redact(once) == once


def test_a_name_that_spells_its_value_is_not_shown_in_the_marker() -> None:
    out = Redactor({"TOKEN_hunter2hunter2": "hunter2hunter2"}).redact("pw hunter2hunter2")
    assert out == "pw [REDACTED]"


def test_short_values_are_refused_without_showing_them() -> None:
    with pytest.raises(SecretValidationError) as info:
        Redactor({"PIN": "1234567"})
    assert "1234567" not in str(info.value)
    assert "PIN" in str(info.value)
    assert info.value.hint


def test_no_registered_form_is_shorter_than_six_characters() -> None:
    forms = forms_of("ab\ncdefgh\r\nijklmnop")  # lines "ab" and "cdefgh" are short
    assert forms
    assert all(len(f.decode()) >= MIN_FORM_CHARS for f in forms)
    assert b"ab" not in forms


def test_text_without_secrets_comes_back_unchanged() -> None:
    redactor = Redactor({"T": TOKEN, "PW": PASSWORD})
    text = "2024-05-01 INFO step 3 finished: ghp_ is a prefix, p@ss is not the password ✓"
    assert redactor.redact(text) == text
    assert redactor.redact_bytes(text.encode()) == text.encode()


def test_empty_redactor_changes_nothing() -> None:
    assert Redactor().redact("anything at all") == "anything at all"
    stream = Redactor().stream()
    assert stream.feed(b"abc") + stream.flush() == b"abc"


def test_repr_of_a_redactor_shows_no_value() -> None:
    redactor = Redactor({"T": TOKEN})
    assert TOKEN not in repr(redactor)
    assert "ghp" not in repr(redactor)
