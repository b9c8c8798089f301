"""Properties: for random secrets and random text around them, in any chunking."""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Callable
from urllib.parse import quote_plus

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runner.redact import Redactor, forms_of

ALPHABET = list("abcXYZ019 \n\r\t\"'\\/<>&%+=-_.*?[](){}|^$:;,~" + "éüł✓🔑ж")
MARKERS = re.compile(rb"\[REDACTED(?::S\d)?\]|\*\*\*\*\*")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ENCODERS: list[Callable[[str], str]] = [
    lambda v: v,
    lambda v: base64.b64encode(v.encode()).decode(),
    lambda v: base64.b64encode(b"~" + v.encode()).decode(),
    lambda v: base64.urlsafe_b64encode(b"~~" + v.encode() + b"!").decode(),
    lambda v: json.dumps(v)[1:-1],
    lambda v: quote_plus(v),
    lambda v: v.encode().hex(),
    lambda v: repr(v),
]

secret_values = st.text(alphabet=st.sampled_from(ALPHABET), min_size=8, max_size=20)
filler = st.text(alphabet=st.sampled_from(ALPHABET), max_size=30)


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    values = draw(st.lists(secret_values, min_size=1, max_size=3))
    secrets = {f"S{i}": value for i, value in enumerate(values)}
    parts = [draw(filler)]
    for _ in range(draw(st.integers(1, 4))):
        value = draw(st.sampled_from(values))
        encode = draw(st.sampled_from(ENCODERS))
        parts += [encode(value), draw(filler)]
    return secrets, "".join(parts).encode()


def outside_markers(data: bytes) -> bytes:
    return MARKERS.sub(b"\0", data)


def surviving_forms(secrets: dict[str, str], data: bytes) -> list[bytes]:
    rest = outside_markers(data)
    return [f for v in secrets.values() for f in forms_of(v) if f in rest]


def feed(redactor: Redactor, data: bytes, cuts: list[int]) -> bytes:
    bounds = [0, *sorted(cuts), len(data)]
    stream = redactor.stream()
    out = [stream.feed(data[a:b]) for a, b in itertools.pairwise(bounds)]
    return b"".join(out) + stream.flush()


@SETTINGS
@given(cases())
def test_no_registered_form_survives_redact(case: tuple[dict[str, str], bytes]) -> None:
    secrets, data = case
    redactor = Redactor(secrets)
    out = redactor.redact_bytes(data)
    assert surviving_forms(secrets, out) == []
    assert redactor.redact(data.decode()) == out.decode()


@SETTINGS
@given(cases(), st.data())
def test_no_form_survives_the_stream_for_any_split(
    case: tuple[dict[str, str], bytes], data: st.DataObject
) -> None:
    secrets, text = case
    redactor = Redactor(secrets)
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=8))
    out = feed(redactor, text, cuts)
    assert surviving_forms(secrets, out) == []
    # Same text as a single redaction; only which name a merged marker shows may differ.
    assert outside_markers(out) == outside_markers(redactor.redact_bytes(text))


@SETTINGS
@given(st.lists(secret_values, min_size=1, max_size=3), filler, st.data())
def test_text_without_secrets_comes_back_unchanged(
    values: list[str], text: str, data: st.DataObject
) -> None:
    secrets = {f"S{i}": v for i, v in enumerate(values)}
    raw = text.encode()
    assume(not any(f in raw for v in values for f in forms_of(v)))
    redactor = Redactor(secrets)
    assert redactor.redact(text) == text
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=5))
    assert feed(redactor, raw, cuts) == raw


@SETTINGS
@given(cases(), st.integers(1, 5))
def test_byte_by_byte_and_small_chunks(case: tuple[dict[str, str], bytes], size: int) -> None:
    secrets, text = case
    redactor = Redactor(secrets)
    out = feed(redactor, text, list(range(size, len(text), size)))
    assert surviving_forms(secrets, out) == []
