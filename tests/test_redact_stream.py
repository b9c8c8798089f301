"""The stream redactor: output that arrives in arbitrary chunks."""

from __future__ import annotations

import base64
import itertools
import secrets as pysecrets
from collections.abc import Iterable

import pytest

from runner.redact import ActiveRedactor, Redactor

TOKEN = "ghp_Zq8xR2mT7vLw0pK4nB9c"
UNICODE = "kéy-ü-✓-🔑-value"


def feed_all(redactor: Redactor, chunks: Iterable[bytes]) -> bytes:
    stream = redactor.stream()
    out = [stream.feed(chunk) for chunk in chunks]
    out.append(stream.flush())
    return b"".join(out)


def split_at(data: bytes, *cuts: int) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def test_secret_split_at_every_chunk_boundary() -> None:
    redactor = Redactor({"T": TOKEN, "U": UNICODE})
    text = f"start {TOKEN} middle {UNICODE} {base64.b64encode(TOKEN.encode()).decode()} end"
    data = text.encode()
    expected = redactor.redact_bytes(data)
    assert TOKEN.encode() not in expected
    for cut in range(1, len(data)):
        assert feed_all(redactor, split_at(data, cut)) == expected, cut


def test_secret_split_at_every_pair_of_boundaries() -> None:
    redactor = Redactor({"T": TOKEN})
    data = f"ab{TOKEN}cd{TOKEN}".encode()
    expected = redactor.redact_bytes(data)
    for first in range(1, len(data)):
        for second in range(first, len(data)):
            assert feed_all(redactor, split_at(data, first, second)) == expected


def test_byte_by_byte_feeding() -> None:
    redactor = Redactor({"T": TOKEN, "U": UNICODE})
    data = f"x {TOKEN}{UNICODE} y {UNICODE}".encode()
    out = feed_all(redactor, (data[i : i + 1] for i in range(len(data))))
    assert out == b"x [REDACTED:T][REDACTED:U] y [REDACTED:U]"


def test_split_inside_a_multibyte_character() -> None:
    redactor = Redactor({"U": UNICODE})
    data = f"«{UNICODE}»".encode()
    emoji_at = data.index("🔑".encode())
    for cut in range(emoji_at + 1, emoji_at + 4):  # inside the 4-byte character
        assert feed_all(redactor, split_at(data, cut)) == "«[REDACTED:U]»".encode()


def test_emitted_pieces_of_utf8_text_decode_on_their_own() -> None:
    redactor = Redactor({"T": TOKEN})
    data = ("äöü✓🔑 " * 200).encode()
    for size in (1, 5, 7, 13):
        stream = redactor.stream()
        text = ""
        for i in range(0, len(data), size):
            text += stream.feed(data[i : i + size]).decode("utf-8")  # fails on a cut character
        text += stream.flush().decode("utf-8")
        assert text.encode() == data


def test_self_overlapping_secret_split_across_two_writes() -> None:
    # GitLab's runner leaks this one: the second write starts inside a false start.
    out = feed_all(Redactor({"P": "passpassword1"}), [b"passpass", b"password1"])
    assert out == b"pass[REDACTED:P]"


def test_overlapping_secrets_split_across_writes_merge_into_one_marker() -> None:
    redactor = Redactor({"A": "XXXXsecretAAAA", "B": "AAAAmoreYYYY"})
    data = b"<XXXXsecretAAAAmoreYYYY>"
    for cut in range(1, len(data)):
        out = feed_all(redactor, split_at(data, cut))
        assert out.count(b"[REDACTED:") == 1, (cut, out)
        for piece in (b"secret", b"more", b"YYYY", b"XXXX"):
            assert piece not in out


def test_ten_kilobyte_secret_split_across_many_chunks() -> None:
    value = pysecrets.token_urlsafe(7800)[:10_240]
    redactor = Redactor({"BIG": value})
    data = f"head {value} tail".encode()
    chunks = [data[i : i + 997] for i in range(0, len(data), 997)]
    assert feed_all(redactor, chunks) == b"head [REDACTED:BIG] tail"


def test_memory_stays_bounded_on_an_endless_chain_of_overlaps() -> None:
    redactor = Redactor({"AB": "abababab"})
    stream = redactor.stream()
    markers = 0
    for _ in range(2_000):
        out = stream.feed(b"ab" * 512)
        markers += out.count(b"[REDACTED:AB]")
        assert b"ab" not in out.replace(b"[REDACTED:AB]", b"")
        assert stream.held <= redactor.hold_back + 3
    tail = stream.flush()
    assert b"ab" not in tail
    # One unbroken run of the secret overlapping itself: one marker.
    assert markers == 1


def test_held_bytes_are_only_what_the_longest_form_needs() -> None:
    redactor = Redactor({"T": TOKEN})
    stream = redactor.stream()
    out = stream.feed(b"x" * 10_000)
    assert stream.held == redactor.hold_back
    assert len(out) == 10_000 - redactor.hold_back
    assert stream.flush() == b"x" * redactor.hold_back


def test_flush_redacts_what_was_held() -> None:
    stream = Redactor({"T": TOKEN}).stream()
    assert stream.feed(f"tail {TOKEN}".encode()) == b""
    assert stream.flush() == b"tail [REDACTED:T]"
    assert stream.flush() == b""


def test_binary_output_passes_through() -> None:
    redactor = Redactor({"T": TOKEN})
    data = bytes(range(256)) * 50 + TOKEN.encode() + b"\x80\x80\x80\x80"
    for size in (1, 3, 64, 4096):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert feed_all(redactor, chunks) == redactor.redact_bytes(data)


def test_active_stream_covers_values_registered_after_it_opened() -> None:
    active = ActiveRedactor()
    active.register("FIRST", TOKEN)
    stream = active.stream()
    head = stream.feed(b"log line one\n")
    active.register("LATER", "later-registered-value")
    rest = stream.feed(b"later-registered-value and " + TOKEN.encode()) + stream.flush()
    assert head + rest == b"log line one\n[REDACTED:LATER] and [REDACTED:FIRST]"


@pytest.mark.docker
def test_container_output_in_real_docker_chunks(docker_client: object) -> None:
    """A step that prints a value in pieces, with pauses, and its base64."""
    import docker

    client = docker_client
    assert isinstance(client, docker.DockerClient)
    value = "runner-test-token-8f2d1c"
    head, tail = value[:9], value[9:]
    script = (
        f"printf '%s' '{head}'; sleep 0.3; printf '%s\\n' '{tail}'; "
        f"printf '%s%s' '{head}' '{tail}' | base64"
    )
    container = client.containers.run(
        "runner-test/busybox:latest", ["/bin/sh", "-c", script], detach=True
    )
    try:
        stream = Redactor({"TOK": value}).stream()
        chunks = list(container.logs(stream=True, follow=True))
        out = b"".join(stream.feed(chunk) for chunk in chunks) + stream.flush()
    finally:
        container.remove(force=True)
    assert len(chunks) >= 2
    assert out.startswith(b"[REDACTED:TOK]\n")
    assert value.encode() not in out
    assert b"[REDACTED:TOK]" in out.split(b"\n")[1]
    assert value.encode() not in base64.b64decode(out.split(b"\n")[1] + b"===", validate=False)
