"""Redaction throughput: the stream redactor and the structlog processors.

Not a test. Goals (one core): streaming at least 100 MiB/s with 100 secrets
and 50 MiB/s with 1,000, fed in 64 KiB chunks; the processors at most 20 µs
per event with 100 secrets.

    .venv/bin/python -m bench.bench_redaction [--quick]

(``python -m bench`` runs it with the rest of the suite.)
"""

from __future__ import annotations

import json
import random
import statistics
import string
import sys
import time
from typing import Any

from runner.redact import RedactingProcessor, Redactor

MIB = 1024 * 1024
CHUNK = 64 * 1024
SECRET_COUNTS = (10, 100, 1000)
# fmt: off
_WORDS = (
    "INFO", "WARN", "DEBUG", "step", "container", "image", "pulled", "layer", "sha256",
    "commit", "branch", "diff", "applying", "patch", "writing", "file", "running", "tests",
    "ok", "passed", "failed", "retry", "fetching", "origin", "main", "remote", "objects",
    "compressing", "delta", "resolving", "done", "npm", "yarn", "go", "build",
)
# fmt: on


def make_secrets(count: int, rng: random.Random) -> dict[str, str]:
    """Token-like values, and a share of passwords with punctuation (more forms)."""
    tokens = string.ascii_letters + string.digits
    punct = tokens + "!#$%&()*+,-./:;<=>?@[]^_{|}~"
    values: dict[str, str] = {}
    for i in range(count):
        if i % 4 == 3:
            value = "".join(rng.choice(punct) for _ in range(rng.randint(12, 24)))
        else:
            value = "ghp_" + "".join(rng.choice(tokens) for _ in range(36))
        values[f"SECRET_{i}"] = value
    return values


def make_log_text(size: int, secrets: dict[str, str], rng: random.Random) -> bytes:
    """Log-like lines, with a secret about once every 64 KiB."""
    block: list[str] = []
    block_size = 0
    values = list(secrets.values())
    while block_size < 4 * MIB:
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14)))
        line = (
            f"2024-05-01T12:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z "
            f"{words} id={rng.getrandbits(64):016x}\n"
        )
        if values and rng.random() < 1 / 700:
            line = f"token={rng.choice(values)} {line}"
        block.append(line)
        block_size += len(line)
    data = "".join(block).encode()
    return (data * (size // len(data) + 1))[:size]


def stream_mib_s(redactor: Redactor, data: bytes, reps: int) -> float:
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    rates = []
    for _ in range(reps):
        stream = redactor.stream()
        start = time.perf_counter()
        for chunk in chunks:
            stream.feed(chunk)
        stream.flush()
        rates.append(len(data) / MIB / (time.perf_counter() - start))
    return statistics.median(rates)


def processor_us(redactor: Redactor, events: int, reps: int) -> float:
    """Both positions: the event dict before the renderer and the line after it."""
    processor = RedactingProcessor(redactor)
    event = {
        "event": "step.output",
        "run_id": "r-20240501-0001",
        "repository": "github.com/acme/widgets",
        "path": "services/api",
        "step": 3,
        "stream": "stdout",
        "line": "npm notice Run `npm install -g npm@10.7.0` to update!",
        "level": "info",
        "logger": "runner.execute",
        "timestamp": "2024-05-01T12:00:00.000000Z",
    }
    line = json.dumps(event)
    per_event = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(events):
            processor(None, "info", dict(event))
            processor(None, "info", line)
        per_event.append((time.perf_counter() - start) / events * 1e6)
    return statistics.median(per_event)


def run(
    quick: bool = False,
    *,
    size_mib: int | None = None,
    counts: tuple[int, ...] = SECRET_COUNTS,
    events: int | None = None,
) -> dict[str, Any]:
    """The figures; ``size_mib``, ``counts`` and ``events`` shrink it for a smoke test."""
    rng = random.Random(20240501)  # noqa: S311 (reproducible data, not keys)
    size = (size_mib or (8 if quick else 64)) * MIB
    reps = 3 if quick else 5
    rates: dict[str, float] = {}
    per_event = 0.0
    for count in counts:
        secrets = make_secrets(count, rng)
        redactor = Redactor(secrets)
        data = make_log_text(size, secrets, rng)
        rates[str(count)] = round(stream_mib_s(redactor, data, reps), 1)
        if count == 100:
            n_events = events or (2_000 if quick else 20_000)
            per_event = round(processor_us(redactor, n_events, reps), 2)
    return {"redaction_mib_s": rates, "processor_us_per_event": per_event}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
