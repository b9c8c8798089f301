"""Every form in which a secret value could leave runner and still be read back.

A reader who can undo an encoding has the secret, so each value is registered
as itself and as each encoding a step, a library or our own renderers are
likely to apply: base64 (standard and URL-safe, at every byte alignment,
wrapped the way ``base64`` and ``openssl`` wrap), URL encoding, JSON, HTML and
XML escaping, Python ``repr``, hex, and each line of a multi-line value.

A form shorter than ``MIN_FORM_CHARS`` is dropped: it would turn up in
ordinary text and redact it.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from collections.abc import Callable, Iterable
from urllib.parse import quote, quote_plus

MIN_FORM_CHARS = 6
MIN_VALUE_CHARS = 8

_B64_ALPHABETS: tuple[Callable[[bytes], bytes], ...] = (
    base64.b64encode,
    base64.urlsafe_b64encode,
)
# GNU base64 wraps at 76, openssl at 64.
_B64_WRAP_WIDTHS = (64, 76)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_UPPER_PERCENT = re.compile(r"%[0-9A-F]{2}")
_JSON_U_ESCAPE = re.compile(r"\\u[0-9a-f]{4}")


def base64_forms(raw: bytes) -> set[bytes]:
    """The base64 text of ``raw`` that does not depend on its neighbours.

    ``raw`` may start at any of three alignments within a 3-byte group. Each
    base64 character carries 6 bits, so the characters that also carry bits
    of the bytes before (or after, or of the padding) differ from one
    occurrence to the next; they are trimmed, and what remains is the same
    wherever ``raw`` sits.
    """
    forms: set[bytes] = set()
    for encode in _B64_ALPHABETS:
        for align in range(3):
            total = align + len(raw)
            encoded = encode(b"\0" * align + raw)
            first = -(-8 * align // 6)  # the first character free of the prefix
            last = 8 * total // 6  # characters up to here hold only known bits
            forms.add(encoded[first:last])
            if align == 0:
                # Wrapped output of `echo $S | base64`: the breaks sit at fixed
                # columns counted from the value's start.
                body = encoded[:last]
                for width in _B64_WRAP_WIDTHS:
                    if len(body) > width:
                        chunks = [body[i : i + width] for i in range(0, len(body), width)]
                        forms.add(b"\n".join(chunks))
                        forms.add(b"\r\n".join(chunks))
    return forms


def url_forms(text: str) -> set[str]:
    """Percent-encoding as Python, browsers and form posts write it."""
    forms: set[str] = set()
    for safe in ("", "/", "!'()*"):
        for encoded in (quote(text, safe=safe), quote_plus(text, safe=safe)):
            forms.add(encoded)
            forms.add(_UPPER_PERCENT.sub(lambda m: m.group().lower(), encoded))
    return forms


def json_forms(text: str) -> set[str]:
    """The body of a JSON string, as the common encoders escape it."""
    kept = json.dumps(text, ensure_ascii=False)[1:-1]
    ascii_only = json.dumps(text, ensure_ascii=True)[1:-1]
    forms = {kept, ascii_only}
    forms.add(_JSON_U_ESCAPE.sub(lambda m: "\\u" + m.group()[2:].upper(), ascii_only))
    # Go's encoding/json escapes HTML-special characters; PHP escapes slashes.
    for body in (kept, ascii_only):
        go = body.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        forms.add(go.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
        forms.add(body.replace("/", "\\/"))
    return forms


def markup_forms(text: str) -> set[str]:
    """HTML and XML escaping, with each way of writing the quote characters."""
    base = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    forms: set[str] = {html.escape(text)}
    for dquote in ('"', "&quot;", "&#34;"):
        for squote in ("'", "&#x27;", "&#39;", "&apos;"):
            forms.add(base.replace('"', dquote).replace("'", squote))
    return forms


def repr_forms(text: str) -> set[str]:
    """The inside of Python's ``repr`` and ``ascii`` of the text."""
    return {repr(text)[1:-1], ascii(text)[1:-1]}


def _texts(value: str) -> set[str]:
    """The value, its other line-ending spelling, and each of its lines."""
    texts = {value}
    if "\n" in value or "\r" in value:
        lf = value.replace("\r\n", "\n")
        texts.add(lf)
        texts.add(lf.replace("\n", "\r\n"))
        texts.update(_LINE_BREAK.split(value))
    return texts


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def forms_of(value: str) -> set[bytes]:
    """Every registered form of ``value``, as UTF-8 bytes, each long enough to match."""
    found: set[str] = set()
    found_bytes: set[bytes] = set()
    for text in _texts(value):
        if len(text) < MIN_FORM_CHARS:
            continue
        escaped: set[str] = {text}
        escaped |= json_forms(text)
        escaped |= repr_forms(text)
        escaped |= markup_forms(text)
        escaped |= url_forms(text)
        found |= escaped
        # A JSON renderer escapes again what a library or `repr` already escaped.
        for once in json_forms(text) | repr_forms(text):
            found |= json_forms(once)
        raw = _encode(text)
        found_bytes |= base64_forms(raw)
        hexed = binascii.hexlify(raw)
        found_bytes.add(hexed)
        found_bytes.add(hexed.upper())
    return _long_enough(found, found_bytes)


def _long_enough(texts: Iterable[str], raws: Iterable[bytes]) -> set[bytes]:
    forms = {_encode(t) for t in texts if len(t) >= MIN_FORM_CHARS}
    # Encoded forms are ASCII, so their byte length is their character length.
    forms.update(r for r in raws if len(r) >= MIN_FORM_CHARS)
    return forms
