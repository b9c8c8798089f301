"""The process's active redactor: registration, scopes, threads, and the CLI's errors."""

from __future__ import annotations

import threading

import pytest

from runner.cli import run_cli
from runner.errors import SecretValidationError
from runner.redact import ActiveRedactor, active
from runner.secrets import Secret

TOKEN = "ghp_Zq8xR2mT7vLw0pK4nB9c"
OTHER = "org-deploy-key-5be1a9"


def test_values_are_covered_from_registration_on() -> None:
    redactor = ActiveRedactor()
    assert redactor.redact(TOKEN) == TOKEN
    assert not redactor.knows_values()  # a full cache hit then skips its secret check
    redactor.register("GH_TOKEN", Secret(TOKEN))
    assert redactor.knows_values()
    assert redactor.redact(f"t={TOKEN}") == "t=[REDACTED:GH_TOKEN]"
    assert redactor.redact_bytes(TOKEN.encode()) == b"[REDACTED:GH_TOKEN]"


def test_a_job_scope_is_released_after_its_output_is_flushed() -> None:
    redactor = ActiveRedactor()
    redactor.register("PROCESS_WIDE", OTHER)
    with redactor.scoped("job:1") as job:
        job.register("GH_TOKEN", TOKEN)
        stream = redactor.stream()
        late = stream.feed(f"last line {TOKEN}".encode())
        late += stream.flush()
        assert late == b"last line [REDACTED:GH_TOKEN]"
    assert redactor.redact(TOKEN) == TOKEN
    assert redactor.redact(OTHER) == "[REDACTED:PROCESS_WIDE]"
    redactor.release("job:1")
    assert redactor.knows_values(), "the process-wide value is still known"
    redactor.clear()
    assert not redactor.knows_values()


def test_a_value_shared_by_two_jobs_stays_until_both_are_released() -> None:
    redactor = ActiveRedactor()
    redactor.register_many({"GH_TOKEN": TOKEN}, scope="job:1")
    redactor.register_many([("GH_TOKEN", TOKEN)], scope="job:2")
    redactor.release("job:1")
    assert redactor.redact(TOKEN) == "[REDACTED:GH_TOKEN]"
    redactor.release("job:2")
    assert redactor.redact(TOKEN) == TOKEN


def test_short_values_are_refused_at_registration() -> None:
    redactor = ActiveRedactor()
    with pytest.raises(SecretValidationError, match="SHORT"):
        redactor.register("SHORT", "abc")
    assert "abc" not in repr(redactor)


def test_concurrent_registration_and_reading() -> None:
    redactor = ActiveRedactor()
    failures: list[str] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        value = f"thread-{n}-value-{TOKEN}"
        start.wait()
        for round_ in range(20):
            redactor.register(f"T{n}_{round_}", f"{value}-{round_}", scope=f"job:{n}")
            out = redactor.redact(f"x {value}-{round_} y")
            if f"{value}-{round_}" in out:
                failures.append(out)
        redactor.release(f"job:{n}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert redactor.redact(f"thread-1-value-{TOKEN}-3") == f"thread-1-value-{TOKEN}-3"


def test_cli_error_messages_pass_through_the_active_redactor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with active().scoped("test:cli") as scope:
        scope.register("GH_TOKEN", TOKEN)
        assert run_cli([f"no-such-command-{TOKEN}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "[REDACTED:GH_TOKEN]" in err
    assert TOKEN not in err
