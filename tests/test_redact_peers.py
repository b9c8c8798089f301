"""Other CI runners' masker tests, ported as data: ``tests/data/redaction_peer_cases.json``.

Each case names the peer test it came from (actions/runner, Azure Pipelines'
agent, GitLab Runner, the Buildkite agent). It runs through ``Redactor.redact``,
``redact_bytes``, the process's ``ActiveRedactor``, and a stream fed the peer's
own writes, one byte at a time, and split at every point. Where runner refuses
a value the peer accepts, the case says so and the refusal is checked; the
peer tests that do not apply are listed in the file with the reason.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from runner.errors import SecretValidationError
from runner.redact import ActiveRedactor, Redactor, forms_of

ROOT = Path(__file__).resolve().parent.parent
DATA = json.loads((ROOT / "tests/data/redaction_peer_cases.json").read_text(encoding="utf-8"))
SOURCES = (
    "actions/runner",
    "microsoft/azure-pipelines-agent",
    "gitlab-org/gitlab-runner",
    "buildkite/agent",
)
CASES = [case for case in DATA["cases"] if case["kind"] != "refused"]
REFUSED = [case for case in DATA["cases"] if case["kind"] == "refused"]
MARKERS = re.compile(rb"\[REDACTED(?::[^\]]*)?\]")
# Inputs up to this long are split at every point; longer ones at this many points.
EVERY_SPLIT_UP_TO = 2048
SAMPLED_SPLITS = 97


def text(spec: Any) -> str:
    """A text of the data file: a string, or strings and ``{"repeat", "times"}`` pieces."""
    if isinstance(spec, str):
        return spec
    return "".join(p if isinstance(p, str) else p["repeat"] * p["times"] for p in spec)


def secrets_of(case: dict[str, Any]) -> dict[str, str]:
    return {name: text(value) for name, value in case["secrets"].items()}


def writes_of(case: dict[str, Any]) -> list[bytes]:
    return [text(w).encode("utf-8", "surrogatepass") for w in case["writes"]]


def expected_of(case: dict[str, Any]) -> bytes:
    return text(case["expected"]).encode("utf-8", "surrogatepass")


def streamed(redactor: Redactor, chunks: Iterable[bytes]) -> bytes:
    stream = redactor.stream()
    out = [stream.feed(chunk) for chunk in chunks]
    return b"".join(out) + stream.flush()


def split_points(size: int) -> range:
    if size <= EVERY_SPLIT_UP_TO:
        return range(size + 1)
    return range(0, size + 1, max(1, size // SAMPLED_SPLITS))


def case_id(case: dict[str, Any]) -> str:
    return str(case["id"])


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_whole_text(case: dict[str, Any]) -> None:
    redactor = Redactor(secrets_of(case))
    data = b"".join(writes_of(case))
    expected = expected_of(case)
    assert redactor.redact(data.decode("utf-8", "surrogatepass")) == expected.decode()
    assert redactor.redact_bytes(data) == expected


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_active_redactor(case: dict[str, Any]) -> None:
    active = ActiveRedactor()
    active.register_many(secrets_of(case))
    data = b"".join(writes_of(case))
    assert active.redact_bytes(data) == expected_of(case)
    assert streamed(active.current(), writes_of(case)) == expected_of(case)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_stream_in_the_peers_writes_and_byte_by_byte(case: dict[str, Any]) -> None:
    redactor = Redactor(secrets_of(case))
    writes = writes_of(case)
    assert streamed(redactor, writes) == expected_of(case)
    data = b"".join(writes)
    if len(data) <= EVERY_SPLIT_UP_TO:
        assert streamed(redactor, (data[i : i + 1] for i in range(len(data)))) == expected_of(case)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_stream_split_at_every_point(case: dict[str, Any]) -> None:
    redactor = Redactor(secrets_of(case))
    data = b"".join(writes_of(case))
    for cut in split_points(len(data)):
        assert streamed(redactor, [data[:cut], data[cut:]]) == expected_of(case), cut


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_no_registered_form_is_left_in_the_expected_output(case: dict[str, Any]) -> None:
    rest = MARKERS.sub(b"\0", expected_of(case))
    left = [
        name for name, value in secrets_of(case).items() if any(f in rest for f in forms_of(value))
    ]
    assert left == []


@pytest.mark.parametrize("case", REFUSED, ids=case_id)
def test_values_runner_refuses(case: dict[str, Any]) -> None:
    secrets = secrets_of(case)
    with pytest.raises(SecretValidationError) as info:
        Redactor(secrets)
    for value in secrets.values():
        # Blanks and single characters occur in any message; a value never does.
        assert not value.strip() or len(value) < 2 or value not in str(info.value)


def test_every_case_names_its_source_and_kind() -> None:
    ids = [case["id"] for case in DATA["cases"]]
    assert len(ids) == len(set(ids))
    for case in DATA["cases"]:
        source = case["source"]
        assert source["repo"] in SOURCES, case["id"]
        assert source["file"] and source["test"], case["id"]
        assert case["kind"] in DATA["kinds"], case["id"]
        if case["kind"] != "ported":
            assert case.get("why"), case["id"]
    for skipped in DATA["not_ported"]:
        assert skipped["source"]["repo"] in SOURCES
        assert skipped["source"]["test"] and skipped["reason"]


def test_each_peer_contributes_cases_that_run() -> None:
    counts = Counter(case["source"]["repo"] for case in CASES)
    assert set(counts) == set(SOURCES), counts


def test_every_deliberate_difference_is_in_the_compatibility_table() -> None:
    doc = (ROOT / "docs/compatibility.md").read_text(encoding="utf-8")
    kinds = ("differs", "refused")
    missing = [c["id"] for c in DATA["cases"] if c["kind"] in kinds and c["id"] not in doc]
    assert missing == []


def test_the_counts_in_the_compatibility_table_are_the_data_files() -> None:
    doc = (ROOT / "docs/compatibility.md").read_text(encoding="utf-8")
    kinds = ("ported", "adapted", "differs", "refused")
    for repo in SOURCES:
        row = re.search(rf"^\| {re.escape(repo)} \|([ 0-9|]+)$", doc, re.MULTILINE)
        assert row, repo
        shown = [int(n) for n in row.group(1).split("|") if n.strip()]
        counts = Counter(c["kind"] for c in DATA["cases"] if c["source"]["repo"] == repo)
        skipped = sum(1 for s in DATA["not_ported"] if s["source"]["repo"] == repo)
        assert shown == [*(counts[k] for k in kinds), skipped], repo


def test_refused_cases_cover_each_peer_that_accepts_short_values() -> None:
    repos = {case["source"]["repo"] for case in REFUSED}
    assert repos == set(SOURCES)
    assert all(case["secrets"] for case in REFUSED)
    assert all(len(text(v)) < 8 for case in REFUSED for v in case["secrets"].values())
