"""The execution cache through `runner run`, against the real Docker engine.

Container starts are counted from the engine's own event stream, filtered by the
run's label, so other containers on the same engine do not count.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runner.cache import CacheEntry
from tests.helpers import (
    TEST_IMAGE,
    leak_forms,
    make_repo,
    run_runner,
    runner_env,
    scan_bytes,
    scan_tree,
    set_secret,
)

pytestmark = pytest.mark.docker

RUN_LABEL = "org.runner.run-id"
TAIL = """
changesetTemplate:
  title: Cache test
  body: Made by the cache tests
  branch: runner/cache
  commit:
    message: Cache test
"""
VALUE_1 = "first-token-value-0123456789"
VALUE_2 = "second-token-value-9876543210"
GLOBAL_VALUE = "global-token-value-5555555555"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    events: list[dict[str, Any]]
    starts: int  # container start events the engine saw for this run

    def steps(self, event: str) -> list[int]:
        return [e["step"] for e in self.events if e["event"] == event]

    @property
    def run_id(self) -> str:
        return str(self.events[0]["run_id"])


class EngineStarts:
    """The engine's container starts with runner's run label, from an event stream
    opened before the run and read until a marker container of our own is seen.

    Not the engine's replay of past events (`since`/`until`): it keeps only the
    last 256, and the other test worker's containers overran it within one run.
    Events reach a stream in order, so once the marker's `create` arrives every
    start of the run has too.
    """

    def __init__(self, docker_client: Any) -> None:
        self._docker = docker_client
        self._marker = f"marker-{uuid.uuid4().hex}"
        self._seen: list[tuple[str, str]] = []  # (action, run label value)
        self._marked = threading.Event()
        self._stream = docker_client.events(
            decode=True,
            filters={"type": "container", "event": ["start", "create"], "label": RUN_LABEL},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for event in self._stream:
            label = event.get("Actor", {}).get("Attributes", {}).get(RUN_LABEL, "")
            self._seen.append((event.get("Action", ""), label))
            if label == self._marker:
                self._marked.set()

    def __enter__(self) -> EngineStarts:
        return self

    def __exit__(self, *exc: object) -> None:
        marker = self._docker.containers.create(
            TEST_IMAGE, ["true"], labels={RUN_LABEL: self._marker}
        )
        try:
            assert self._marked.wait(30), "the engine's event stream never showed the marker"
        finally:
            marker.remove(force=True)
            self._stream.close()

    def starts(self, *, run_id: str) -> int:
        return sum(1 for action, label in self._seen if action == "start" and label == run_id)


class Harness:
    def __init__(self, tmp_path: Path, docker_client: Any) -> None:
        self.tmp = tmp_path
        self.docker = docker_client
        (tmp_path / "tmp").mkdir()
        self.env = runner_env(tmp_path / "home", TMPDIR=str(tmp_path / "tmp"))
        self.repos = tmp_path / "repos"
        make_repo(self.repos, "github.com/acme/app", {"README.md": "# app\n"})
        self.spec = tmp_path / "spec" / "batch.yaml"
        self.spec.parent.mkdir()
        self.out = tmp_path / "out"

    def write_spec(self, steps: str, *, name: str = "cache-test") -> Path:
        self.spec.write_text(
            f"name: {name}\non:\n  - repository: github.com/acme/app\nsteps:\n{steps}{TAIL}"
        )
        return self.spec

    def run(self, *extra: str, env: dict[str, str] | None = None, spec: Path | None = None) -> Run:
        with EngineStarts(self.docker) as watch:
            proc = run_runner(
                [
                    "run",
                    str(spec or self.spec),
                    "--repos-root",
                    str(self.repos),
                    "--out",
                    str(self.out),
                    "--json",
                    *extra,
                ],
                env or self.env,
            )
        assert proc.returncode == 0, proc.stderr
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        run = Run(proc, events, watch.starts(run_id=str(events[0]["run_id"])))
        assert run.starts == len(run.steps("step.started")), "every started step is one container"
        return run

    def patch(self) -> str:
        return (self.out / "github.com/acme/app/_root/runner-cache.patch").read_text()

    def cache_entries(self, *extra: str) -> list[dict[str, Any]]:
        proc = run_runner(["cache", "list", "--json", *extra], self.env)
        assert proc.returncode == 0, proc.stderr
        entries: list[dict[str, Any]] = json.loads(proc.stdout)
        return entries


@pytest.fixture
def h(tmp_path: Path, docker_client: Any) -> Harness:
    return Harness(tmp_path, docker_client)


def step(run: str, *, env: str = "", extra: str = "", image: str = TEST_IMAGE) -> str:
    text = f"  - run: {run}\n    container: {image}\n"
    if env:
        text += f"    env:\n      - {env}\n"
    return text + extra


THREE_STEPS_SECOND_USES_TOKEN = (
    step("echo one > one.txt")
    + step("printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1 > token.sha", env="TOKEN")
    + step("cat one.txt token.sha > three.txt")
)


# A second run ----------------------------------------------------------------------------------


def test_a_second_run_starts_no_container_and_writes_the_same_changeset(h: Harness) -> None:
    h.write_spec(step("echo one > one.txt") + step("echo two >> one.txt") + step("ls > list.txt"))
    first = h.run()
    assert (first.starts, first.steps("step.cached")) == (3, [])
    patch = h.patch()
    assert "+two" in patch and "+one.txt" in patch

    second = h.run()
    assert second.starts == 0
    assert second.steps("step.started") == []
    assert second.steps("step.cached") == [1, 2, 3]
    assert h.patch() == patch
    summary = json.loads((h.out / "summary.json").read_text())
    assert (summary["workspaces"][0]["steps_run"], summary["workspaces"][0]["steps_cached"]) == (
        0,
        3,
    )


def test_a_changed_step_reruns_from_there_with_outputs_and_previous_step_restored(
    h: Harness,
) -> None:
    first_steps = (
        "  - run: printf hello-from-one\n"
        f"    container: {TEST_IMAGE}\n"
        "    outputs:\n"
        "      greeting:\n"
        "        value: ${{ step.stdout }}\n"
    )
    second = "  - run: echo '${{ outputs.greeting }}/${{ previous_step.stdout }}' > {name}\n"
    h.write_spec(first_steps + second.replace("{name}", "a.txt") + f"    container: {TEST_IMAGE}\n")
    assert h.run().starts == 2
    h.write_spec(first_steps + second.replace("{name}", "b.txt") + f"    container: {TEST_IMAGE}\n")
    run = h.run()
    assert run.steps("step.cached") == [1]
    assert run.steps("step.started") == [2]
    assert run.starts == 1
    assert "+hello-from-one/hello-from-one" in h.patch()
    assert "b.txt" in h.patch() and "a.txt" not in h.patch()


def test_the_same_spec_in_another_namespace_does_not_hit(h: Harness) -> None:
    h.write_spec(step("echo one > one.txt") + step("echo two > two.txt"))
    assert h.run("--namespace", "user:alice").starts == 2
    other = h.run("--namespace", "org:acme")
    assert (other.starts, other.steps("step.cached")) == (2, [])
    assert h.run("--namespace", "user:alice").starts == 0
    assert h.run("--namespace", "org:acme").starts == 0
    assert {e["namespace"] for e in h.cache_entries()} == {"user:alice", "org:acme"}
    assert len(h.cache_entries("--namespace", "org:acme")) == 2


# Secrets ----------------------------------------------------------------------------------------


def test_rotating_the_secret_of_step_2_reruns_steps_2_and_3_with_the_new_value(
    h: Harness,
) -> None:
    set_secret(h.env, "TOKEN", VALUE_1, "--user", "alice")
    h.write_spec(THREE_STEPS_SECOND_USES_TOKEN)
    assert h.run().starts == 3
    assert sha(VALUE_1) in h.patch()

    set_secret(h.env, "TOKEN", VALUE_2, "--user", "alice")
    run = h.run()
    assert run.steps("step.cached") == [1]
    assert run.steps("step.started") == [2, 3]
    assert run.starts == 2
    assert sha(VALUE_2) in h.patch() and sha(VALUE_1) not in h.patch()
    assert h.run().starts == 0


def test_secret_set_and_rm_delete_the_entries_of_the_old_version_and_audit_it(
    h: Harness,
) -> None:
    set_secret(h.env, "TOKEN", VALUE_1, "--user", "alice")
    h.write_spec(THREE_STEPS_SECOND_USES_TOKEN)
    h.run()
    using = [e for e in h.cache_entries() if e["secrets"]]
    assert len(using) == 2 and len(h.cache_entries()) == 3  # steps 2 and 3 used TOKEN v1

    set_secret(h.env, "TOKEN", VALUE_2, "--user", "alice")
    assert [e for e in h.cache_entries() if e["secrets"]] == []
    assert len(h.cache_entries()) == 1
    h.run()
    run_runner(["secret", "rm", "TOKEN", "--user", "alice"], h.env)
    assert len(h.cache_entries()) == 1
    log = run_runner(["secret", "log", "TOKEN", "--json"], h.env)
    counts = [
        (e["version"], e["count"])
        for e in json.loads(log.stdout)
        if e["event"] == "cache_invalidated"
    ]
    assert counts == [(1, 2), (2, 2)]


def test_removing_a_namespaced_override_falls_back_to_global_and_reruns_from_its_first_use(
    h: Harness,
) -> None:
    set_secret(h.env, "TOKEN", GLOBAL_VALUE, "--global")
    set_secret(h.env, "TOKEN", VALUE_1, "--user", "alice")
    h.write_spec(THREE_STEPS_SECOND_USES_TOKEN)
    assert h.run().starts == 3
    assert sha(VALUE_1) in h.patch()

    assert run_runner(["secret", "rm", "TOKEN", "--user", "alice"], h.env).returncode == 0
    run = h.run()
    assert run.steps("step.cached") == [1]
    assert run.steps("step.started") == [2, 3]
    assert sha(GLOBAL_VALUE) in h.patch() and sha(VALUE_1) not in h.patch()


def test_adding_a_namespaced_override_reruns_from_its_first_use(h: Harness) -> None:
    set_secret(h.env, "TOKEN", GLOBAL_VALUE, "--global")
    h.write_spec(THREE_STEPS_SECOND_USES_TOKEN)
    assert h.run().starts == 3
    set_secret(h.env, "TOKEN", VALUE_1, "--user", "alice")
    run = h.run()
    assert (run.steps("step.cached"), run.steps("step.started")) == ([1], [2, 3])
    assert sha(VALUE_1) in h.patch()


def test_a_secret_deleted_and_recreated_with_the_same_value_reruns(h: Harness) -> None:
    set_secret(h.env, "TOKEN", VALUE_1, "--user", "alice")
    h.write_spec(THREE_STEPS_SECOND_USES_TOKEN)
    assert h.run().starts == 3
    assert run_runner(["secret", "rm", "TOKEN", "--user", "alice"], h.env).returncode == 0
    set_secret(h.env, "TOKEN", VALUE_1, "--user", "alice")
    run = h.run()
    assert (run.steps("step.cached"), run.steps("step.started")) == ([1], [2, 3])
    assert run.starts == 2
    assert sha(VALUE_1) in h.patch()


# Mounted files and images -----------------------------------------------------------------------


def test_a_mounted_files_content_counts_and_its_modification_time_does_not(h: Harness) -> None:
    script = h.spec.parent / "script.sh"
    script.write_text("echo version-one > out.txt\n")
    h.write_spec(
        step("echo before > before.txt")
        + step(
            "sh /opt/script.sh",
            extra="    mount:\n      - path: ./script.sh\n        mountpoint: /opt/script.sh\n",
        )
    )
    assert h.run().starts == 2

    stat = script.stat()
    script.write_text("echo version-one > out.txt\n")
    os.utime(script, (stat.st_atime + 100, stat.st_mtime + 100))
    assert h.run().starts == 0  # same bytes, newer time: still a hit

    script.write_text("echo version-two > out.txt\n")
    os.utime(script, (stat.st_atime, stat.st_mtime))  # new bytes, the old time
    run = h.run()
    assert (run.steps("step.cached"), run.steps("step.started")) == ([1], [2])
    assert "+version-two" in h.patch()


@pytest.fixture
def retaggable_image(docker_client: Any) -> Iterator[tuple[str, list[str]]]:
    """An image name that tests can point at new content (new image IDs)."""
    name = f"runner-test/cache-{uuid.uuid4().hex[:10]}:latest"
    built: list[str] = []
    yield name, built
    for image_id in built:
        docker_client.images.remove(image_id, force=True)


def _build(docker_client: Any, tag: str, label: str) -> str:
    dockerfile = f"FROM {TEST_IMAGE}\nLABEL org.runner.test.cache={label}\n"
    image, _ = docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, pull=False
    )
    return str(image.id)


def test_a_new_image_behind_the_same_tag_reruns_from_its_first_step(
    h: Harness, docker_client: Any, retaggable_image: tuple[str, list[str]]
) -> None:
    name, built = retaggable_image
    built.append(_build(docker_client, name, "one"))
    h.write_spec(step("echo one > one.txt") + step("echo two > two.txt", image=name))
    assert h.run().starts == 2
    assert h.run().starts == 0
    built.append(_build(docker_client, name, "two"))
    assert built[0] != built[1]
    run = h.run()
    assert (run.steps("step.cached"), run.steps("step.started")) == ([1], [2])


# Flags, clearing and the size limit ----------------------------------------------------------


def test_no_cache_neither_reads_nor_writes_and_cache_clear_empties_it(h: Harness) -> None:
    h.write_spec(step("echo one > one.txt") + step("echo two > two.txt"))
    assert h.run("--no-cache").starts == 2
    assert h.cache_entries() == []
    assert h.run().starts == 2  # nothing was written by the --no-cache run
    assert len(h.cache_entries()) == 2
    no_read = h.run("--no-cache")
    assert (no_read.starts, no_read.steps("step.cached")) == (2, [])
    assert h.run().starts == 0

    cleared = run_runner(["cache", "clear"], h.env)
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.strip() == "removed 2 cache entries"
    assert h.cache_entries() == []
    assert h.run().starts == 2
    assert h.run("--clear-cache").starts == 2  # it would have been a full hit
    assert len(h.cache_entries()) == 2


def test_least_recently_used_entries_are_evicted_past_the_size_limit(h: Harness) -> None:
    env = {**h.env, "RUNNER_CACHE_MAX_MB": "1"}
    # About 0.6 MiB of diff each: two entries do not fit in 1 MiB together.
    big_a = h.write_spec(step("seq 1 90000 > a.txt"), name="cache-a")
    big_b = h.spec.parent / "b.yaml"
    big_b.write_text(big_a.read_text().replace("cache-a", "cache-b").replace("a.txt", "b.txt"))

    assert h.run(env=env, spec=big_a).starts == 1
    assert h.run(env=env, spec=big_a).starts == 0
    assert h.run(env=env, spec=big_b).starts == 1  # a goes: a and b together exceed 1 MiB
    entries = h.cache_entries()
    assert len(entries) == 1 and sum(e["size"] for e in entries) <= 1024 * 1024
    assert h.run(env=env, spec=big_b).starts == 0
    assert h.run(env=env, spec=big_a).starts == 1
    assert [e["size"] > 512 * 1024 for e in h.cache_entries()] == [True]


# No secret value in the cache -----------------------------------------------------------------


NON_ASCII_VALUE = "ünïcødé-sécrét-€-värde"


@pytest.mark.parametrize(
    "value",
    [
        VALUE_1,
        NON_ASCII_VALUE,
    ],
    ids=["ascii", "non-ascii"],
)
def test_the_cache_storage_holds_no_secret_value_in_any_encoding(h: Harness, value: str) -> None:
    set_secret(h.env, "TOKEN", value, "--user", "alice")
    # Step 1 leaves the value in the workspace (its entry must not be stored), step 2
    # removes it; both print it in several encodings (redacted before capture).
    h.write_spec(
        step(
            'printf %s "$TOKEN" > leak.txt; echo "out $TOKEN"; printf %s "$TOKEN" | base64 >&2',
            env="TOKEN",
            extra="    outputs:\n      said:\n        value: ${{ step.stdout }}\n",
        )
        + step(
            'rm leak.txt; echo "again $TOKEN"; echo "${{ outputs.said }}" > said.txt',
            env="TOKEN",
        )
    )
    first = h.run()
    assert first.starts == 2

    forms = leak_forms([value])
    forms[sha(value).encode()] = "sha256"
    home = Path(h.env["RUNNER_HOME"])
    with sqlite3.connect(home / "runner.db") as conn:
        blobs = [r[0] for r in conn.execute("SELECT entry FROM step_cache")]
        rows = (
            conn.execute("SELECT key, namespace, entry, secret_refs FROM step_cache").fetchall()
            + conn.execute("SELECT * FROM step_cache_secrets").fetchall()
        )
    dumped = b"\n".join(v if isinstance(v, bytes) else str(v).encode() for r in rows for v in r)
    # What a reader of the cache gets back, decoded from the entry's own format.
    for blob in blobs:
        stored = CacheEntry.from_bytes(blob)
        dumped += stored.diff + json.dumps([stored.outputs, stored.stdout, stored.stderr]).encode()
    assert b"[REDACTED:TOKEN]" in dumped  # the outputs were captured, redacted
    assert scan_bytes(dumped, forms) == []
    assert len(blobs) == 1  # step 1's entry held the value in its diff: refused
    listing = run_runner(["cache", "list", "--json"], h.env).stdout.encode()
    assert scan_bytes(listing, forms) == []
    assert scan_tree([home, Path(h.env["TMPDIR"])], [value]) == []

    second = h.run()
    assert (second.starts, second.steps("step.cached")) == (0, [1, 2])
    assert "+out [REDACTED:TOKEN]" in h.patch()
