"""Redaction in structlog events, rendered lines and the standard library's logging."""

from __future__ import annotations

import copy
import io
import json
import logging
import warnings
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from runner.log import configure_logging, get_logger
from runner.redact import ActiveRedactor, RedactingProcessor, Redactor

VALUE = 'tok-Üñí"cödé\\9x'
TOKEN = "ghp_Zq8xR2mT7vLw0pK4nB9c"
MARK = "[REDACTED:SECRET]"

Pair = namedtuple("Pair", "left right")


class Holder:
    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Holder(value={self.value!r})"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor({"SECRET": VALUE, "TOKEN": TOKEN})


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    runner_level = logging.getLogger("runner").level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("runner").setLevel(runner_level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def leaks(text: str) -> bool:
    escaped = json.dumps(VALUE)[1:-1]
    return any(v in text for v in (VALUE, escaped, repr(VALUE)[1:-1], TOKEN, "cödé", "cöd"))


def test_event_dict_keys_values_and_nesting(redactor: Redactor) -> None:
    processor = RedactingProcessor(redactor)
    event = {
        "event": f"using {TOKEN}",
        VALUE: "as a key",
        "nested": {"list": [VALUE, 1, None], "tuple": (TOKEN, 2.5), "set": {VALUE}},
        "pair": Pair(VALUE, 3),
        "raw": VALUE.encode(),
        "blob": bytearray(TOKEN.encode()),
        "count": 7,
    }
    before = copy.deepcopy(event)
    out = processor(None, "info", event)
    assert event == before  # the caller's dict and its containers are untouched
    assert out["event"] == "using [REDACTED:TOKEN]"
    assert out[MARK] == "as a key"
    assert out["nested"] == {
        "list": [MARK, 1, None],
        "tuple": ("[REDACTED:TOKEN]", 2.5),
        "set": {MARK},
    }
    assert out["pair"] == Pair(MARK, 3)
    assert type(out["pair"]) is Pair
    assert out["raw"] == MARK.encode()
    assert out["blob"] == b"[REDACTED:TOKEN]"
    assert out["count"] == 7


def test_repr_of_an_arbitrary_object(redactor: Redactor) -> None:
    out = RedactingProcessor(redactor)(None, "info", {"event": "x", "obj": Holder(VALUE)})
    assert out["obj"] == f"Holder(value='{MARK}')"
    plain = Holder("nothing secret here")
    assert RedactingProcessor(redactor)(None, "info", {"obj": plain})["obj"] is plain


def test_event_without_secrets_is_returned_as_is(redactor: Redactor) -> None:
    event = {"event": "step.started", "step": 1, "repository": "github.com/a/b"}
    assert RedactingProcessor(redactor)(None, "info", event) is event


def test_exception_text_after_format_exc_info(redactor: Redactor) -> None:
    try:
        raise RuntimeError(f"login failed with {VALUE}")
    except RuntimeError as exc:
        event = {"event": "boom", "exc_info": (type(exc), exc, exc.__traceback__)}
        formatted = structlog.processors.format_exc_info(None, "error", dict(event))
        out = RedactingProcessor(redactor)(None, "error", formatted)
        # Placed too early, it renders the exception itself rather than let it through.
        early = RedactingProcessor(redactor)(None, "error", dict(event))
    for result in (out, early):
        assert "RuntimeError: login failed with [REDACTED:SECRET]" in result["exception"]
        assert not leaks(json.dumps(result))


def test_after_the_renderer_catches_reprs_and_json_escaping(redactor: Redactor) -> None:
    processor = RedactingProcessor(redactor)
    rendered = structlog.processors.JSONRenderer()(None, "info", {"v": VALUE, "o": Holder(TOKEN)})
    assert isinstance(rendered, str)
    assert "\\u00dc" in rendered  # JSON's own escaping of "Ü"
    out = processor(None, "info", rendered)
    assert json.loads(out) == {"v": MARK, "o": "Holder(value='[REDACTED:TOKEN]')"}
    assert processor(None, "info", rendered.encode()) == out.encode()


def test_console_renderer_quoting_is_caught_after_rendering(redactor: Redactor) -> None:
    rendered = structlog.dev.ConsoleRenderer(colors=False)(
        None, "info", {"event": "x", "v": f"has space {VALUE}"}
    )
    assert not leaks(RedactingProcessor(redactor)(None, "info", rendered))


def _configured(fmt: str, redactor: Any) -> io.StringIO:
    buf = io.StringIO()
    configure_logging(fmt=fmt, stream=buf, redactor=redactor)  # type: ignore[arg-type]
    return buf


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_configured_logging_redacts_our_lines_and_libraries(fmt: str) -> None:
    active = ActiveRedactor()
    buf = _configured(fmt, active)
    # Registered after logging was configured: still covered.
    active.register("SECRET", VALUE)
    active.register("TOKEN", TOKEN)
    log = get_logger("test")
    log.info(f"event with {VALUE}", token=TOKEN, nested={"k": [VALUE]}, obj=Holder(VALUE))
    try:
        raise ValueError(f"bad credentials {TOKEN}")
    except ValueError:
        log.exception("step failed")
        logging.getLogger("docker.api").warning("pull failed for %s", VALUE, exc_info=True)
    logging.getLogger("urllib3.connectionpool").warning("GET /?access_token=%s", TOKEN)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"deprecated use of {TOKEN}", UserWarning, stacklevel=1)
    output = buf.getvalue()
    assert output.count("[REDACTED:SECRET]") >= 4
    assert output.count("[REDACTED:TOKEN]") >= 5
    assert "pull failed for" in output
    assert "access_token=" in output
    assert "deprecated use of" in output
    assert not leaks(output), output


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_stay_valid_json(redactor: Redactor) -> None:
    buf = _configured("json", redactor)
    get_logger("test").info("x", value=VALUE, data=VALUE.encode())
    line = json.loads(buf.getvalue().strip())
    assert line["value"] == MARK
    assert line["event"] == "x"


@pytest.mark.usefixtures("restore_logging")
def test_log_file_handler_kept_from_before_is_redacted(redactor: Redactor, tmp_path: Path) -> None:
    path = tmp_path / "runner.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger().addHandler(handler)
    _configured("json", redactor)
    logging.getLogger("runner.test").warning("token %s", TOKEN)
    get_logger("test").warning("value", v=VALUE)
    handler.close()
    text = path.read_text(encoding="utf-8")
    assert "[REDACTED:TOKEN]" in text
    assert MARK in text
    assert not leaks(text)


@pytest.mark.usefixtures("restore_logging")
def test_a_record_that_fails_to_format_does_not_print_its_arguments(
    redactor: Redactor, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):  # pytest's own log file would format it first
        root.removeHandler(handler)
    buf = _configured("json", redactor)
    logging.getLogger("runner.test").warning("two %s %s but one argument", TOKEN)
    err = capsys.readouterr().err
    assert "logging error" in err
    assert "not enough arguments" in err
    assert TOKEN not in err
    assert TOKEN not in buf.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_a_log_file_gets_a_redacted_note_for_a_record_that_fails_to_format(
    redactor: Redactor, tmp_path: Path
) -> None:
    path = tmp_path / "runner.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    logging.getLogger().addHandler(handler)
    _configured("json", redactor)
    logging.getLogger("runner.test").warning("two %s %s for " + TOKEN, TOKEN)
    handler.close()
    text = path.read_text(encoding="utf-8")
    assert "could not be formatted" in text
    assert TOKEN not in text


@pytest.mark.usefixtures("restore_logging")
def test_default_set_up_consults_the_process_active_redactor() -> None:
    from runner.redact import active

    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    with active().scoped("test:logging") as scope:
        scope.register("TOKEN", TOKEN)
        get_logger("test").info("late line", token=TOKEN)
    get_logger("test").info("after release", token=TOKEN)
    first, second = buf.getvalue().splitlines()
    assert json.loads(first)["token"] == "[REDACTED:TOKEN]"
    # Released with its job: no longer this process's to hide.
    assert json.loads(second)["token"] == TOKEN
