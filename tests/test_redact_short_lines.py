"""Multi-line values: whatever ends their lines, and their short lines.

A line shorter than 6 characters is no form of its own (it would match
ordinary words); it is masked where it stands next to the value's other
lines (``runner.redact.short_lines``). Every printing here is also fed to a
stream split at every point, which must give the same output.
"""

from __future__ import annotations

import itertools
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.redact import PreparedSecret, Redactor, forms_of, prepare
from runner.redact.short_lines import MAX_GAP, MAX_PREFIX, neighbours_of

KEY_LINES = [
    "-----BEGIN TEST KEY-----",
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    "BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj",
    "Zg==",  # the short last line of the base64 body
    "-----END TEST KEY-----",
]
KEY = "\n".join(KEY_LINES) + "\n"
M = "[REDACTED:KEY]"


def streamed(redactor: Redactor, data: bytes, cuts: list[int]) -> bytes:
    bounds = [0, *cuts, len(data)]
    stream = redactor.stream()
    out = [stream.feed(data[a:b]) for a, b in itertools.pairwise(bounds)]
    return b"".join(out) + stream.flush()


def redact_everywhere(redactor: Redactor, text: str) -> str:
    """The whole redaction, checked against a stream split at every point."""
    data = text.encode()
    whole = redactor.redact_bytes(data)
    for cut in range(len(data) + 1):
        assert streamed(redactor, data, [cut]) == whole, cut
    assert streamed(redactor, data, list(range(1, len(data)))) == whole
    assert redactor.redact(text) == whole.decode()
    return whole.decode()


def printed(lines: list[str], end: str, prefix: str = "") -> str:
    return "".join(prefix + line + end for line in lines)


@pytest.mark.parametrize(
    ("end", "prefix"),
    [
        ("\r\r\n", ""),  # a pseudo-terminal in raw-ish mode
        ("  \n", ""),  # Markdown's hard line break
        ("\t\r\n", ""),  # trailing tab, Windows line end
        ("\n", "+"),  # a diff adding the key file
        ("\n", "    "),  # indented under a YAML key
        ("\n", "> "),  # quoted in a comment
        ("\n\n", ""),  # double-spaced
    ],
    ids=["cr-cr-lf", "markdown-break", "tab-crlf", "diff", "indented", "quoted", "blank-lines"],
)
def test_every_line_masked_whatever_ends_or_decorates_it(end: str, prefix: str) -> None:
    redactor = Redactor({"KEY": KEY})
    text = "head\n" + printed(KEY_LINES, end, prefix) + "tail"
    out = redact_everywhere(redactor, text)
    assert out == "head\n" + printed([M] * len(KEY_LINES), end, prefix) + "tail"


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        ("\n", f"head\n{M}\ntail"),
        ("\r\n", f"head\n{M}\r\ntail"),
        ("\r", f"head\n{M}\rtail"),
        (" ", f"head\n{M} tail"),  # `echo $KEY` unquoted joins the lines with spaces
    ],
    ids=["lf", "crlf", "cr", "unquoted-echo"],
)
def test_the_whole_key_with_other_line_ends_is_one_marker(end: str, expected: str) -> None:
    text = "head\n" + end.join(KEY_LINES) + end + "tail"
    assert redact_everywhere(Redactor({"KEY": KEY}), text) == expected


def test_the_values_own_blanks_around_it_stay_in_place() -> None:
    redactor = Redactor({"KEY": KEY})
    assert redactor.redact(f"before\n{KEY}after") == f"before\n{M}\nafter"


def test_lines_stored_with_trailing_blanks_match_when_printed_without() -> None:
    value = "first-line-of-it   \nsecond-line-of-it\t\nab  "
    redactor = Redactor({"V": value})
    whole = redact_everywhere(redactor, "first-line-of-it\nsecond-line-of-it\nab\n")
    assert whole == "[REDACTED:V]\n"
    by_line = redact_everywhere(redactor, "first-line-of-it\r\r\nsecond-line-of-it\r\r\nab\r\r\n")
    assert by_line == "[REDACTED:V]\r\r\n[REDACTED:V]\r\r\n[REDACTED:V]\r\r\n"


@pytest.mark.parametrize(
    "text",
    [
        "Zg== on its own is an ordinary word",
        "Zg==\nZg==\n",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nxZg==\n",  # glued to other text
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nZg==x\n",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\nZg==\n",  # gap too wide
    ],
    ids=["alone", "repeated", "prefixed", "suffixed", "far-away"],
)
def test_a_short_line_elsewhere_is_left_alone(text: str) -> None:
    out = redact_everywhere(Redactor({"KEY": KEY}), text)
    assert out.count("Zg==") == text.count("Zg==")


def test_first_and_last_lines_may_touch_text_but_not_glue_onto_a_word() -> None:
    value = "ab\nlong-middle-line\nyz"
    redactor = Redactor({"V": value})
    assert redact_everywhere(redactor, "K=ab\r\r\nlong-middle-line\r\r\nyz;") == (
        "K=[REDACTED:V]\r\r\n[REDACTED:V]\r\r\n[REDACTED:V];"
    )
    assert redact_everywhere(redactor, "grab\r\r\nlong-middle-line\r\r\nyzzy") == (
        "grab\r\r\n[REDACTED:V]\r\r\nyzzy"
    )


def test_a_middle_short_line_must_stand_alone() -> None:
    value = "long-first-line\nok\nlong-last-line"
    redactor = Redactor({"V": value})
    assert redact_everywhere(redactor, "long-first-line\nokay then") == "[REDACTED:V]\nokay then"
    assert redact_everywhere(redactor, "long-first-line\nok") == "[REDACTED:V]\n[REDACTED:V]"
    assert redact_everywhere(redactor, "ok\nlong-last-line") == "[REDACTED:V]\n[REDACTED:V]"
    assert redact_everywhere(redactor, "no ok\nlong-last-line") == "no [REDACTED:V]\n[REDACTED:V]"
    assert redact_everywhere(redactor, "nook\nlong-last-line") == "nook\n[REDACTED:V]"


def test_several_short_lines_in_a_row() -> None:
    value = "a\nbc\nlong-line-here\nd\nef\ng"
    text = "x " + "\r\r\n".join(value.split("\n")) + "!"
    out = redact_everywhere(Redactor({"V": value}), text)
    assert out == "x " + "\r\r\n".join(["[REDACTED:V]"] * 6) + "!"


def test_a_value_of_short_lines_only_is_matched_whole() -> None:
    value = "abc\ndefg\nhij"
    redactor = Redactor({"V": value})
    assert redactor.redact("abc\r\ndefg\r\nhij") == "[REDACTED:V]"
    assert redactor.redact("abc defg hij") == "[REDACTED:V]"
    assert redactor.redact("abc  \ndefg  \nhij") == "abc  \ndefg  \nhij"  # a recorded limit


def test_hold_back_and_context_are_bounded_and_memory_stays_flat() -> None:
    redactor = Redactor({"KEY": KEY})
    longest = max(len(f) for f in forms_of(KEY))
    assert redactor.context > MAX_PREFIX
    assert redactor.hold_back > longest
    assert redactor.hold_back < longest + 20 * (MAX_GAP + 2 * MAX_PREFIX + 8)
    stream = redactor.stream()
    out = b""
    for _ in range(500):
        out += stream.feed(printed(KEY_LINES, "  \r\n", "+").encode())
        assert stream.held <= redactor.hold_back + 3
    out += stream.flush()
    assert b"Zg==" not in out and b"MIIE" not in out


def test_a_stream_fed_byte_by_byte_holds_no_more_than_its_hold_back() -> None:
    redactor = Redactor({"V": "LONG-LINE-abcdef-0123\nab"})
    data = (("x" * 300 + "LONG-LINE-abcdef-0123\r\r\nab\n") * 10).encode()
    stream = redactor.stream()
    out = b""
    for i in range(len(data)):
        out += stream.feed(data[i : i + 1])
        assert stream.held <= redactor.hold_back
    out += stream.flush()
    assert out == redactor.redact_bytes(data)
    assert out.count(b"[REDACTED:V]") == 20


def test_single_line_values_pay_nothing() -> None:
    redactor = Redactor({"T": "ghp_Zq8xR2mT7vLw0pK4nB9c"})
    assert redactor.context == 0
    assert redactor.hold_back == max(len(f) for f in forms_of("ghp_Zq8xR2mT7vLw0pK4nB9c")) - 1


def test_reprs_show_no_line_of_the_value() -> None:
    prepared: PreparedSecret = prepare("KEY", KEY)
    assert prepared.neighbours
    for _, rules in neighbours_of(KEY).items():
        for rule in rules:
            assert "Zg" not in repr(rule)
    assert "Zg" not in repr(prepared)
    assert "Zg" not in repr(Redactor({"KEY": KEY}))


# -- properties ---------------------------------------------------------------------------

LONG_LINE = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/=-", min_size=6, max_size=14
)
SHORT_LINE = st.text(alphabet="ABCDEFabcdef0123456789+/=", min_size=1, max_size=5)
GAP = st.sampled_from(["\n", "\r\n", "\r", "\r\r\n", "  \n", " ", "\t\n", "\n\n"])
# Nothing here can be part of a line of the value.
FILLER = st.text(alphabet="xyz \n\r\t:!", max_size=12)
PRINTED_BLOCK = re.compile(r"(?:\[REDACTED:V\]|[ \t\r\n|>])*")


@st.composite
def printings(draw: st.DrawFn) -> tuple[str, str, str, str]:
    """(value, text before it, the value as printed, text after it)."""
    lines = draw(st.lists(st.one_of(LONG_LINE, SHORT_LINE), min_size=2, max_size=6))
    if not any(len(line) >= 6 for line in lines):
        lines.append(draw(LONG_LINE))
    gap = draw(GAP)
    # A decoration on every printed line (a diff, an indentation), the first
    # maybe followed by what introduces the value (``KEY=``).
    prefix = draw(st.sampled_from(["", "|", "  ", "> "])) if "\n" in gap or "\r" in gap else ""
    intro = draw(st.sampled_from(["", "KEY=", " "]))
    before = draw(FILLER) + "\n" + prefix + intro
    after = " " + draw(FILLER)
    return "\n".join(lines), before, (gap + prefix).join(lines), after


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(printings(), st.data())
def test_a_printed_value_leaves_no_line_and_streams_alike(
    case: tuple[str, str, str, str], data: st.DataObject
) -> None:
    value, before, shown, after = case
    redactor = Redactor({"V": value})
    raw = (before + shown + after).encode()
    whole = redactor.redact_bytes(raw)
    # What surrounds the value is untouched; of the value only markers are left
    # between the line ends and decorations.
    assert whole.startswith(before.encode()) and whole.endswith(after.encode())
    block = whole[len(before.encode()) : len(whole) - len(after.encode())].decode()
    assert PRINTED_BLOCK.fullmatch(block), (value, shown, block)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    assert streamed(redactor, raw, cuts) == whole


def _random_output(rng: random.Random, values: list[list[str]]) -> bytes:
    """Log-like output long enough that a stream writes as it goes, with the values'
    lines printed whole, in part, alone, decorated, and with every kind of gap."""
    pieces = []
    for _ in range(rng.randint(10, 50)):
        lines = rng.choice(values)
        gap = rng.choice(["\n", "\r\n", "\r", "\r\r\n", "  \n", " ", "\t\n", "\n\n", "x", ""])
        decoration = rng.choice(["", "+", "  ", "> ", "+KEY=", "zz"])
        roll = rng.random()
        if roll < 0.4:
            first = rng.randrange(len(lines))
            shown = lines[first : rng.randint(first + 1, len(lines))]
            pieces.append(decoration + (gap + decoration).join(shown))
        elif roll < 0.6:
            pieces.append(rng.choice(lines))
        else:
            pieces.append("".join(rng.choice("ABCabc0123+/= \n\r\t>") for _ in range(40)))
        pieces.append(gap)
    return "".join(pieces).encode()


def _random_value(rng: random.Random) -> list[str]:
    lines = []
    for _ in range(rng.randint(2, 6)):
        size = rng.choice([rng.randint(1, 5), rng.randint(6, 14)])
        lines.append("".join(rng.choice("ABCDEFabcdef0123456789+/=") for _ in range(size)))
    return [*lines, "LONG-LINE-9"] if all(len(line) < 6 for line in lines) else lines


@pytest.mark.parametrize("seed", range(40))
def test_long_outputs_stream_exactly_as_a_whole_redaction(seed: int) -> None:
    rng = random.Random(seed)
    values = [_random_value(rng) for _ in range(rng.randint(1, 3))]
    redactor = Redactor({f"V{i}": "\n".join(lines) for i, lines in enumerate(values)})
    data = _random_output(rng, values)
    whole = redactor.redact_bytes(data)
    for _ in range(4):
        cuts = sorted(rng.sample(range(len(data) + 1), rng.randint(1, 40)))
        assert streamed(redactor, data, cuts) == whole, cuts
    step = rng.randint(1, 9)
    assert streamed(redactor, data, list(range(step, len(data), step))) == whole, step
