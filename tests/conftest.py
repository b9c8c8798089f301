"""Shared fixtures: the real Docker engine and PostgreSQL server.

`make test` sets RUNNER_TEST_REQUIRE_SERVICES=1 and starts both, so there a
missing service fails the test instead of skipping it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import cast

import pytest

REQUIRE_SERVICES = os.environ.get("RUNNER_TEST_REQUIRE_SERVICES") == "1"
# Each test's RUNNER_HOME is thrown away with its networks kept ready for the next run
# (runner.egress.ready), which nothing would then remove: tests keep none unless they ask.
os.environ.setdefault("RUNNER_READY_NETWORKS", "0")
TEST_IMAGE = "runner-test/busybox:latest"
DEBIAN_IMAGE = "runner-test/debian-tools:latest"


def _unavailable(what: str, why: str) -> None:
    message = f"{what} is not available ({why}); `make test` starts it"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    import docker
    from docker.errors import DockerException, ImageNotFound

    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        _unavailable("the Docker engine", str(exc))
        raise AssertionError("unreachable") from exc
    try:
        client.images.get(TEST_IMAGE)
    except ImageNotFound:
        _unavailable(f"the image {TEST_IMAGE}", "run scripts/ensure-images.sh")
    yield client
    client.close()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("RUNNER_TEST_POSTGRES_URL")
    if not url:
        _unavailable("PostgreSQL", "RUNNER_TEST_POSTGRES_URL is not set")
        raise AssertionError("unreachable")
    return url


@pytest.fixture(scope="session")
def debian_image(docker_client: object) -> str:
    """The image with curl and git that `make services` builds from Debian's packages."""
    import docker
    from docker.errors import ImageNotFound

    try:
        cast(docker.DockerClient, docker_client).images.get(DEBIAN_IMAGE)
    except ImageNotFound:
        _unavailable(f"the image {DEBIAN_IMAGE}", "run scripts/ensure-images.sh")
    return DEBIAN_IMAGE


@pytest.fixture(scope="session")
def gvisor(docker_client: object) -> None:
    """The engine can run steps under gVisor: `make test` registers runsc with it."""
    import docker

    runtimes = cast(docker.DockerClient, docker_client).info().get("Runtimes") or {}
    if "runsc" not in runtimes:
        _unavailable("gVisor's runsc runtime", "run scripts/ensure-runsc.sh as root")
