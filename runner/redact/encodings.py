"""Every form in which a secret value could leave runner and still be read back.

A reader who can undo an encoding has the secret, so each value is registered
as itself and as each encoding a step, a library or our own renderers are
likely to apply. Two kinds of starting text:

- the value, its LF and CRLF spellings, each of its lines, and what a shell or
  a parser makes of it (one pair of surrounding quotes dropped, backslash
  escapes read) get every encoding: base64 (standard and URL-safe, at every
  byte alignment, wrapped the way ``base64`` and ``openssl`` wrap), URL
  encoding, JSON, HTML and XML escaping, Python ``repr``, hex, and quoting;
- other spellings of a multi-line value (CR line ends, lines without their
  surrounding blanks, the words joined by single spaces as an unquoted
  ``echo $VALUE`` prints them) get the escapes of text only: JSON, ``repr``
  and quoting.

Quoting is the value inside the quoted text of a common syntax: a single
quote doubled (YAML, SQL, PowerShell), a double quote doubled (CSV),
backslash escapes (C, JSON, JavaScript, Python, shell double quotes,
``printf %q``), the shell's ``'\\''``, PowerShell's backtick. A quoted form is
JSON-escaped once more too, as a JSON log of a shell command would show it.

A form shorter than ``MIN_FORM_CHARS`` is dropped: it would turn up in
ordinary text and redact it. Short lines of a multi-line value are caught
next to the value's other lines instead (``runner.redact.short_lines``).
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
# Blanks around a line, as a printer may add or drop them (no line breaks).
LINE_BLANKS = " \t\v\f"
_BLANKS = LINE_BLANKS + "\r\n"
_C_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_READ_ESCAPE = re.compile(r"\\([\\'\"nrt])")
_READ_AS = {"n": "\n", "r": "\r", "t": "\t"}


# How the quoted text of each syntax spells the characters it escapes.
_QUOTINGS: tuple[dict[int, str], ...] = tuple(
    str.maketrans(pairs)
    for pairs in (
        {"'": "''"},  # YAML, SQL and PowerShell single quotes
        {'"': '""'},  # CSV, SQL identifiers, PowerShell and VB double quotes
        {"'": "'\\''"},  # POSIX shell: close, escaped quote, reopen (bash -x, ${V@Q})
        {"'": "'\"'\"'"},  # the same with a double-quoted quote (Python's shlex.quote)
        {'"': '\\"'},  # a bare backslash before the quote (command lines, docker -e)
        {"'": "\\'"},
        {**_C_ESCAPES, '"': '\\"'},  # C, Go, Java, JavaScript double quotes
        {**_C_ESCAPES, "'": "\\'"},  # JavaScript, PHP, Python single quotes; bash $'...'
        {**_C_ESCAPES, "'": "\\'", '"': '\\"'},
        {"\\": "\\\\", '"': '\\"', "$": "\\$", "`": "\\`"},  # shell double quotes (declare -p)
        {"`": "``", '"': '`"', "$": "`$"},  # PowerShell double quotes
        {c: "\\" + c for c in " !\"$&'()*,;<>?[\\]^`{|}"},  # bash printf %q
    )
)


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


def quoted_forms(text: str) -> set[str]:
    """The text inside the quotes of each common syntax, where that changes it."""
    return {text.translate(table) for table in _QUOTINGS} - {text}


def split_lines(value: str) -> list[str]:
    """The lines of ``value``, whatever ends them (LF, CRLF or CR)."""
    return _LINE_BREAK.split(value)


def _read_as_shell_would(value: str) -> set[str]:
    """The value after a shell or parser has read it: quotes dropped, escapes read."""
    texts: set[str] = set()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        texts.add(value[1:-1])
    if "\\" in value:
        texts.add(_READ_ESCAPE.sub(lambda m: _READ_AS.get(m.group(1), m.group(1)), value))
    # Shorter than a value may be, it would match ordinary text.
    return {t for t in texts if len(t) >= MIN_VALUE_CHARS}


def _texts(value: str) -> tuple[set[str], set[str]]:
    """(texts to encode every way, texts to escape only), as described above."""
    full = {value} | _read_as_shell_would(value)
    plain: set[str] = set()
    if "\n" in value or "\r" in value:
        lines = split_lines(value)
        full.add("\n".join(lines))
        full.add("\r\n".join(lines))
        full.update(lines)
        bare = [line.strip(LINE_BLANKS) for line in lines]
        plain.add("\r".join(lines))
        plain.update(bare)
        plain.add("\n".join(bare))
        plain.add("\r\n".join(bare))
        plain.add(" ".join(value.split()))
    return full, plain - full


def _unpadded(text: str) -> str:
    """The text without blanks around it, if it is still long enough to match.

    The blanks carry nothing secret; matched without them, the line ends
    around a printed value stay in place.
    """
    bare = text.strip(_BLANKS)
    return bare if len(bare) >= MIN_FORM_CHARS else text


def _escaped(text: str) -> set[str]:
    plain = _unpadded(text)
    found = json_forms(text) | repr_forms(text) | quoted_forms(plain)
    # A JSON renderer escapes again what a library, `repr` or a quoting already escaped.
    for once in set(found):
        found |= json_forms(once)
    # An escape that changed nothing is the padded text itself: not a form.
    found.discard(text)
    found.add(plain)
    return found


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def forms_of(value: str) -> set[bytes]:
    """Every registered form of ``value``, as UTF-8 bytes, each long enough to match."""
    full, plain = _texts(value)
    found: set[str] = set()
    found_bytes: set[bytes] = set()
    for text in full:
        if len(text) < MIN_FORM_CHARS:
            continue
        found |= _escaped(text)
        found |= markup_forms(_unpadded(text))
        found |= url_forms(text)
        raw = _encode(text)
        found_bytes |= base64_forms(raw)
        hexed = binascii.hexlify(raw)
        found_bytes.add(hexed)
        found_bytes.add(hexed.upper())
    for text in plain:
        if len(text) >= MIN_FORM_CHARS:
            found |= _escaped(text)
    return _long_enough(found, found_bytes)


def _long_enough(texts: Iterable[str], raws: Iterable[bytes]) -> set[bytes]:
    forms = {_encode(t) for t in texts if len(t) >= MIN_FORM_CHARS}
    # Encoded forms are ASCII, so their byte length is their character length.
    forms.update(r for r in raws if len(r) >= MIN_FORM_CHARS)
    return forms
