"""API fuzzing: schemathesis against the coordinator's OpenAPI document.

Every operation of ``/openapi.json`` is fuzzed in-process (ASGI), with valid
data and with invalid data, authenticated (a user token for the user API, an
executor token for the executor API), on SQLite and on PostgreSQL. Half the
generated cases are pointed at real objects (a job the caller may see, the
lease of a claimed job), so they get past the 404s. Checks: no 5xx, and every
answer conforms to the schema the document declares for its status. The run
is derandomized and bounded, so `make test` sees the same cases every time.

Bugs it found are pinned below as plain, deterministic tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_attack_permissions import Matrix

schemathesis = pytest.importorskip("schemathesis")

# Starlette's TestClient asks for a package we do not use; the warning is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

EXAMPLES = 12


class World:
    """The permission matrix's coordinator, with real ids to aim at."""

    def __init__(self, root: Path, db_url: str | None = None) -> None:
        from fastapi.testclient import TestClient

        self.m = Matrix(root, db_url=db_url)
        # 5xx answers must come back as answers, not as exceptions in the test.
        self.client = TestClient(
            self.m.http.app, base_url="http://testserver", raise_server_exceptions=False
        )
        self.m.http = self.client
        self.visible_job, _ = self.m.completed_job("user:alice")
        self.claimed_job, self.lease = self.m.claimed_job("user:alice")

    def close(self) -> None:
        self.client.close()
        self.m.close()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    root = tmp_path_factory.mktemp(f"api-{request.param}")
    if request.param == "sqlite":
        w = World(root)
        yield w
        w.close()
        return
    from tests.test_queue_support import fresh_postgres_database

    with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        w = World(root, db_url=url)
        yield w
        w.close()


def _operations(world: World) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.client.app)
    return [result.ok() for result in schema.get_all_operations()]


def _aim(case: Any, world: World, aim: bool) -> str:
    """Point a case at real objects; return the token to send."""
    executor = "/executor/" in case.path
    if aim:
        if isinstance(case.path_parameters, dict) and "job_id" in case.path_parameters:
            case.path_parameters["job_id"] = world.claimed_job if executor else world.visible_job
        if executor and isinstance(case.body, dict) and "lease" in case.body:
            case.body["lease"] = world.lease
    token = world.m.token["executor" if executor else "owner"]
    assert token is not None
    return token


def _fuzz_one(world: World, operation: Any, generation: Any, checks: Any) -> list[str]:
    label = operation.label
    problems: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=generation), aim=st.booleans())
    def run(case: Any, aim: bool) -> None:
        token = _aim(case, world, aim)
        try:
            response = case.call(headers={"Authorization": f"Bearer {token}"})
        except Exception as exc:  # the ASGI transport re-raises what the app raised
            problems.append(f"{label} -> exception {type(exc).__name__}: {str(exc)[:200]}")
            return
        try:
            case.validate_response(
                response,
                checks=[
                    checks.not_a_server_error,
                    checks.response_schema_conformance,
                    checks.content_type_conformance,
                ],
            )
        except Exception as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            problems.append(f"{label} -> {response.status_code}: {first}")

    run()
    return problems


def _fuzz(world: World, mode: str) -> list[str]:
    from schemathesis import GenerationMode, checks

    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    problems: list[str] = []
    for operation in _operations(world):
        problems += _fuzz_one(world, operation, generation, checks)
    return problems


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_finds_no_server_error_and_no_schema_break(world: World, mode: str) -> None:
    problems = _fuzz(world, mode)
    assert problems == [], "\n".join(sorted(set(problems))[:20])


def test_the_document_is_valid_and_covers_the_api(world: World) -> None:
    operations = _operations(world)
    labels = {op.label for op in operations}
    assert len(operations) >= 20
    assert "POST /api/submissions" in labels and "POST /api/executor/claim" in labels
    doc = world.client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


# == What the fuzzing found, pinned ==============================================================

BIG = 2**63  # one past the largest 64-bit integer a database column takes


@pytest.mark.parametrize(
    ("who", "method", "path", "body"),
    [
        ("owner", "GET", "/api/jobs/{visible}/logs?after=" + str(BIG), None),
        (
            "executor",
            "POST",
            "/api/executor/jobs/{claimed}/logs",
            {"chunks": [{"seq": BIG, "text": "x"}]},
        ),
        (
            "executor",
            "POST",
            "/api/executor/jobs/{claimed}/steps",
            {"step": BIG, "status": "started"},
        ),
        (
            "executor",
            "POST",
            "/api/executor/jobs/{claimed}/steps",
            {"step": 1, "status": "finished", "exit_code": BIG},
        ),
    ],
    ids=["logs-after", "chunk-seq", "step-number", "exit-code"],
)
def test_huge_integers_are_refused_with_422(
    world: World, who: str, method: str, path: str, body: dict[str, Any] | None
) -> None:
    claimed, lease = world.m.claimed_job("user:alice")  # fresh: the fuzzing may end the other
    url = path.format(visible=world.visible_job, claimed=claimed)
    payload = None if body is None else {"lease": lease, **body}
    response = world.m.call(who, method, url, json=payload)
    assert response.status_code == 422, (response.status_code, response.text[:200])


def test_nul_characters_are_refused_or_stored_not_a_server_error(world: World) -> None:
    """A NUL in a log chunk: PostgreSQL text cannot hold one."""
    claimed, lease = world.m.claimed_job("user:alice")
    for path, body in (
        (f"/api/executor/jobs/{claimed}/logs", {"chunks": [{"seq": 0, "text": "a\x00b\n"}]}),
        (f"/api/executor/jobs/{claimed}/steps", {"step": 1, "status": "started"}),
    ):
        response = world.m.call("executor", "POST", path, json={"lease": lease, **body})
        assert response.status_code < 500, (path, response.status_code, response.text[:200])
    for caller in ("owner", "member"):
        response = world.m.call(
            caller, "PUT", "/api/secrets/user:alice/NUL_VALUE", json={"value": "abc\x00defghij"}
        )
        assert response.status_code in (403, 422), response.text


@pytest.mark.parametrize("value", [2**31, 2**40], ids=["2^31", "2^40"])
@pytest.mark.parametrize("field", ["seq", "step", "exit_code"])
def test_integers_past_32_bits_are_not_a_server_error(world: World, field: str, value: int) -> None:
    claimed, lease = world.m.claimed_job("user:alice")
    body: dict[str, Any]
    if field == "seq":
        path, body = "logs", {"chunks": [{"seq": value, "text": "x\n"}]}
    elif field == "step":
        path, body = "steps", {"step": value, "status": "started"}
    else:
        path, body = "steps", {"step": 1, "status": "finished", "exit_code": value}
    url = f"/api/executor/jobs/{claimed}/{path}"
    response = world.m.call("executor", "POST", url, json={"lease": lease, **body})
    assert response.status_code < 500, (response.status_code, response.text[:200])
