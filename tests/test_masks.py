"""Masks a step adds at run time (``::add-mask::VALUE``), issue 19.

The parser and the output path on their own (every split of a command across
writes, both streams, names, refusals, lines that only look like commands),
the step loop on the fake runtime (later output, the diff check, the rendered
script check, the cache, warnings), the executor's log, and one run on the
real engine that scans everything it left behind.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from runner.env import plan_env
from runner.execute.capture import OutputSink
from runner.execute.job import Job, run_job
from runner.execute.masks import MAX_COMMAND_BYTES, MaskCommand, MaskFilter, parse_command
from runner.log import configure_logging
from runner.queue.executor import JobLog
from runner.redact.active import ActiveRedactor
from runner.report import LogReporter
from runner.spec import load_spec_text
from runner.testing import FakeRuntime, FakeSecretStore, FakeStepRun
from runner.testing.cache import MemoryStepCache
from tests.helpers import (
    TEST_IMAGE,
    leak_forms,
    make_repo,
    run_runner,
    runner_env,
    scan_bytes,
    scan_tree,
)
from tests.test_job import IMAGE, IMAGE_ID, NAMESPACE, Recorder, _services, _workspace
from tests.test_redact_logging import restore_logging

__all__ = ["restore_logging"]  # a fixture, used by name

MINTED = "minted-token-0123456789"


# -- the output path on its own -----------------------------------------------------------


def _sink(redactor: ActiveRedactor, lines: list[str], masks: list[MaskCommand]) -> OutputSink:
    def take(command: MaskCommand) -> None:
        masks.append(command)
        if command.problem is None:
            redactor.register_many([(command.name, v) for v in command.values])

    return OutputSink(redactor.stream(), lines.extend, limit=1 << 20, on_mask=take)


def _play(chunks: list[bytes]) -> tuple[list[str], list[MaskCommand], str]:
    redactor = ActiveRedactor()
    lines: list[str] = []
    masks: list[MaskCommand] = []
    sink = _sink(redactor, lines, masks)
    for chunk in chunks:
        sink.feed(chunk)
    sink.close()
    return lines, masks, sink.captured


OUTPUT = (
    b"before\n::add-mask::" + MINTED.encode() + b"\nthe token is " + MINTED.encode() + b"\nafter"
)


def test_a_command_split_at_any_offset_registers_its_value_and_never_shows_it() -> None:
    for cut in range(len(OUTPUT) + 1):
        lines, masks, captured = _play([OUTPUT[:cut], OUTPUT[cut:]])
        assert lines == ["before", "the token is [REDACTED:MASK]", "after"], cut
        assert captured == "before\nthe token is [REDACTED:MASK]\nafter", cut
        assert [(m.name, m.values) for m in masks] == [("MASK", (MINTED,))], cut


def test_a_command_split_byte_by_byte_or_at_random_places_still_works() -> None:
    rng = random.Random(19)
    splits = [[OUTPUT[i : i + 1] for i in range(len(OUTPUT))]]
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(OUTPUT)), 3))
        splits.append([OUTPUT[a:b] for a, b in zip([0, *cuts], [*cuts, len(OUTPUT)], strict=True)])
    for chunks in splits:
        lines, masks, _ = _play(chunks)
        assert lines == ["before", "the token is [REDACTED:MASK]", "after"]
        assert len(masks) == 1


def test_a_line_that_only_looks_like_a_command_is_shown_at_once() -> None:
    shown = MaskFilter()
    # Not at the start of a line, not followed by `::` or a space, or cut short.
    for text in (b"x ::add-mask::" + MINTED.encode() + b"\n", b"::add-masking\n", b"::add\n"):
        assert shown.feed(text) == [text]
    # The start of a line that may still become a command waits for its next byte only.
    assert shown.feed(b"ok\n::add-m") == [b"ok\n"]
    assert shown.feed(b"ore\n") == [b"::add-more\n"]
    assert shown.feed(b"::add-mas") == []
    assert shown.flush() == [b"::add-mas"]


def test_names_escapes_and_refusals_never_repeat_the_value() -> None:
    named = parse_command(b"::add-mask name=GH_APP_TOKEN::" + MINTED.encode() + b"\r")
    assert (named.name, named.values, named.problem) == ("GH_APP_TOKEN", (MINTED,), None)
    # GitHub's escapes: the value is masked as read and as printed.
    escaped = parse_command(b"::add-mask::line-one%0Aline-two%25")
    assert escaped.values == ("line-one\nline-two%", "line-one%0Aline-two%25")
    bad_name = parse_command(b"::add-mask name=no spaces!::" + MINTED.encode())
    assert (bad_name.name, bad_name.values) == ("MASK", (MINTED,))
    assert bad_name.note is not None
    for line in (
        b"::add-mask::short7",
        b"::add-mask::   ",
        b"::add-mask nameless " + MINTED.encode(),
    ):
        refused = parse_command(line)
        assert refused.values == () and refused.problem is not None
        assert "short7" not in refused.problem and MINTED not in refused.problem
    assert MINTED not in repr(named)
    # A command longer than any secret may be is dropped whole, never shown in pieces.
    long = MaskFilter()
    pieces = long.feed(b"::add-mask::" + b"x" * MAX_COMMAND_BYTES) + long.feed(b"yy\nnext\n")
    assert [p for p in pieces if isinstance(p, bytes)] == [b"next\n"]
    assert [p.problem is not None for p in pieces if isinstance(p, MaskCommand)] == [True]


# -- the step loop on the fake runtime ------------------------------------------------------


def _mask_job(tmp_path: Path, steps: str) -> Job:
    spec = load_spec_text(
        "name: masks\non:\n  - repository: acme/app\nsteps:\n"
        + steps
        + "changesetTemplate:\n  title: t\n  body: b\n  branch: masks\n  commit:\n    message: m\n",
        "spec.yaml",
    )
    return Job(
        id="masks",
        spec=spec,
        spec_dir=tmp_path,
        namespace=NAMESPACE,
        env_plan=plan_env(spec, NAMESPACE, FakeSecretStore()),
        workspaces=[_workspace(tmp_path / "repos", "acme/app")],
        images={IMAGE: IMAGE_ID},
    )


def _run(
    tmp_path: Path, steps: str, handler: Any, cache: MemoryStepCache | None = None
) -> tuple[Recorder, Any]:
    rec = Recorder(ActiveRedactor())
    runtime = FakeRuntime(handler=handler, images={IMAGE: IMAGE_ID})
    services = _services(tmp_path, runtime, rec, cache=cache)
    [outcome] = run_job(_mask_job(tmp_path, steps), lambda ref, step: None, services)  # type: ignore[arg-type,return-value]
    return rec, outcome


STEPS = "".join(
    f"  - run: step {n}\n    container: {IMAGE}\n    outputs:\n      said{n}:\n"
    f"        value: ${{{{ step.stdout }}}}\n"
    for n in (1, 2, 3)
)


def test_a_mask_covers_later_output_outputs_and_the_diff_and_stops_the_cache(
    tmp_path: Path,
) -> None:
    def handler(run: FakeStepRun) -> int:
        if run.step.script.startswith("step 1"):
            run.stdout("checking out\n")  # a step cached before the mask is fine
        elif run.step.script.startswith("step 2"):
            # Split across writes and streams' worth of waiting: never shown.
            run.stderr("::add-mask name=APP_TOKEN::" + MINTED[:5])
            run.stderr(MINTED[5:] + "\nminted it\n")
            run.stdout(f"token={MINTED}\n")
        else:
            run.stdout(f"again {MINTED}\n")
            run.write("/work/token.txt", MINTED + "\n")
        return 0

    cache = MemoryStepCache()
    rec, outcome = _run(tmp_path, STEPS, handler, cache)
    lines = [(e["stream"], e["line"]) for e in rec.events if e["event"] == "step.output"]
    assert sorted(lines) == [
        ("stderr", "minted it"),
        ("stdout", "again [REDACTED:APP_TOKEN]"),
        ("stdout", "checking out"),
        ("stdout", "token=[REDACTED:APP_TOKEN]"),
    ]
    # The diff check knows the mask: the workspace fails, naming it, and keeps nothing.
    assert outcome.status == "failed"
    assert "APP_TOKEN" in outcome.result.error and "token.txt" in outcome.result.error
    assert rec.kept == []
    # Step 1 ran before the mask and is cached; the masking step and the next are not.
    assert len(cache._entries) == 1
    assert all(MINTED not in json.dumps(e, default=str) for e in rec.events)
    assert all("add-mask" not in str(e.get("line")) for e in rec.events)


def test_a_later_script_holding_the_mask_fails_naming_it(tmp_path: Path) -> None:
    steps = (
        f"  - run: echo '::add-mask::{MINTED}'\n    container: {IMAGE}\n"
        f"  - run: curl -H 'token={MINTED}' example.com\n    container: {IMAGE}\n"
    )

    def handler(run: FakeStepRun) -> int:
        if run.step.script.startswith("echo"):
            run.stdout(f"::add-mask::{MINTED}\n")
        return 0

    _, outcome = _run(tmp_path, steps, handler)
    assert outcome.status == "failed"
    assert "rendered run script would contain the secret MASK" in outcome.result.error
    assert MINTED not in outcome.result.error


def test_a_short_mask_is_refused_with_a_warning_that_does_not_echo_it(tmp_path: Path) -> None:
    def handler(run: FakeStepRun) -> int:
        run.stdout("::add-mask::abc1234\nvalue abc1234\n")
        return 0

    rec, outcome = _run(tmp_path, f"  - run: go\n    container: {IMAGE}\n", handler)
    assert outcome.status == "unchanged"
    warnings = [e for e in rec.events if e["event"] == "step.mask_warning"]
    assert [(w["step"], w["stream"]) for w in warnings] == [(1, "stdout")]
    assert "shorter than 8 characters" in warnings[0]["message"]
    assert "abc1234" not in json.dumps(warnings)
    # Not registered (it would redact ordinary text), and the command itself not shown.
    assert [e["line"] for e in rec.events if e["event"] == "step.output"] == ["value abc1234"]


@pytest.mark.usefixtures("restore_logging")
def test_a_mask_warning_is_logged_as_a_warning() -> None:
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    LogReporter().event("step.mask_warning", repository="r", step=1, stream="stdout", message="m")
    [logged] = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert (logged["event"], logged["level"], logged["message"]) == (
        "step.mask_warning",
        "warning",
        "m",
    )


class _Api:
    """What the executor's log sends to the coordinator."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def append_logs(self, job_id: str, lease: str, chunks: list[tuple[int, str]]) -> None:
        self.sent += [text for _, text in chunks]

    def record_step(self, job_id: str, lease: str, **fields: Any) -> None:
        pass


def test_on_an_executor_the_coordinator_receives_only_redacted_text(tmp_path: Path) -> None:
    def handler(run: FakeStepRun) -> int:
        run.stdout(f"::add-mask::{MINTED}\nhere it is: {MINTED}\n")
        run.write("/work/leak.txt", MINTED)
        return 0

    process = ActiveRedactor()
    api = _Api()
    claim = type("Claim", (), {"job_id": "j1", "lease": "l1"})()
    with process.scoped("job:j1") as registry:
        log = JobLog(api, claim, process, interval_s=0.01, on_lost=lambda: None)  # type: ignore[arg-type]
        log.start()
        runtime = FakeRuntime(handler=handler, images={IMAGE: IMAGE_ID})
        # The executor's wiring: the job's scope registers, the process's redactor reads.
        services = replace(
            _services(tmp_path, runtime, Recorder(process)), registry=registry, reporter=log
        )
        job = _mask_job(tmp_path, f"  - run: go\n    container: {IMAGE}\n")
        [outcome] = run_job(job, lambda ref, step: None, services)  # type: ignore[arg-type,return-value]
        assert log.finish(5)
        # The mask lives in the job's scope, on the executor only.
        assert process.redact(MINTED) == "[REDACTED:MASK]"
    assert process.redact(MINTED) == MINTED  # released with the job
    sent = "".join(api.sent)
    assert "here it is: [REDACTED:MASK]" in sent
    assert scan_bytes(sent.encode(), leak_forms([MINTED])) == []
    assert "MASK" in (outcome.result.error or "")


# -- the real engine ------------------------------------------------------------------------

RUN_TIME = "abc-run-time-token-123"
SPEC = """name: masks
on:
  - repository: github.com/acme/app
steps:
  - run: echo "::add-mask::$(echo 321-nekot-emit-nur-cba | rev)"; echo minted >&2
    container: {image}
  - run: echo "the token is $(echo 321-nekot-emit-nur-cba | rev)" && echo "$(echo 321-nekot-emit-nur-cba | rev)" > token.txt
    container: {image}
changesetTemplate:
  title: t
  body: b
  branch: masks
  commit:
    message: m
"""


@pytest.mark.docker
def test_a_mask_added_at_run_time_is_redacted_in_everything_the_run_leaves(
    tmp_path: Path,
) -> None:
    assert RUN_TIME[::-1] == "321-nekot-emit-nur-cba"  # the spec never holds the value
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp))
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "# app\n"})
    spec = tmp_path / "batch.yaml"
    spec.write_text(SPEC.format(image=TEST_IMAGE))
    out = tmp_path / "out"
    args = ["run", str(spec), "--repos-root", str(repos), "--out", str(out)]
    json_run = run_runner([*args, "--json"], env)
    assert json_run.returncode == 3, json_run.stderr
    events = [json.loads(line) for line in json_run.stdout.splitlines()]
    lines = [(e["step"], e["line"]) for e in events if e["event"] == "step.output"]
    assert lines == [(1, "minted"), (2, "the token is [REDACTED:MASK]")]
    [finished] = [e for e in events if e["event"] == "workspace.finished"]
    assert finished["status"] == "failed" and "MASK" in finished["error"]
    assert "token.txt" in finished["error"]
    # No step was cached: run again (the cache is on by default) and every step runs.
    logs_run = run_runner(args, env)
    assert logs_run.returncode == 3
    assert "step.cached" not in logs_run.stderr
    assert logs_run.stderr.count('"event": "step.started"') == 2
    assert "[REDACTED:MASK]" in logs_run.stderr
    forms = leak_forms([RUN_TIME])
    for proc in (json_run, logs_run):
        assert scan_bytes((proc.stdout + proc.stderr).encode(), forms) == []
        assert "add-mask" not in proc.stdout + proc.stderr
    assert scan_tree([out, tmp_path / "home", tmp], [RUN_TIME]) == []
