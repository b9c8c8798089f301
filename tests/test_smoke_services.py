"""One real round-trip with each service the suite depends on."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import TEST_IMAGE


@pytest.mark.docker
def test_container_runs_and_its_output_is_read_back(docker_client: Any) -> None:
    output = docker_client.containers.run(
        TEST_IMAGE, ["sh", "-c", "echo hello from $(uname -s)"], remove=True
    )
    assert output.decode().strip() == "hello from Linux"


@pytest.mark.postgres
def test_postgres_answers_a_query(postgres_url: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("select 40 + %s", (2,)).fetchone()
    assert row == (42,)
