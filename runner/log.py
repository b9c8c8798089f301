"""The one place that configures logging for every command.

Always to stderr (stdout carries results only): human-readable lines on a
terminal, JSON lines otherwise or with ``--log-format json``. The standard
library's ``logging`` (docker, urllib3, uvicorn, httpx) is routed through the
same structlog processors with ``ProcessorFormatter``, so every line, ours or
a library's, passes the same chain.

The chain redacts twice: the event dict just before the renderer (after
exceptions are formatted) and the rendered line after it, both through the
process's active redactor, so values registered after this set-up are covered.
Warnings go through ``logging`` too, and any log file handler that survives
the set-up gets a redacting formatter, so no line leaves unredacted.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

from runner.config import LogFormat
from runner.redact import RedactingFormatter, RedactingProcessor, Redacts, active

_HANDLER_NAME = "runner-stderr"


def _renderer(fmt: LogFormat, stream: TextIO) -> Processor:
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    if use_json:
        return structlog.processors.JSONRenderer(sort_keys=False)
    return structlog.dev.ConsoleRenderer(colors=stream.isatty())


def _redactor_or_active(redactor: Redacts | None) -> Redacts:
    return redactor if redactor is not None else active()


class _RedactingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler whose own error report cannot show a record's arguments.

    The standard one prints the message and its arguments to stderr when a
    record fails to format, which would put a secret passed as an argument
    there unredacted.
    """

    def __init__(self, stream: TextIO, redactor: Redacts) -> None:
        super().__init__(stream)
        self._redactor = redactor

    def handleError(self, record: logging.LogRecord) -> None:
        if not logging.raiseExceptions:
            return
        exc = sys.exc_info()[1]
        what = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(
                self._redactor.redact(
                    f"--- logging error in a record of {record.name} "
                    f"({record.pathname}:{record.lineno}): {what}\n"
                )
            )


def configure_logging(
    *,
    fmt: LogFormat = "auto",
    verbose: int = 0,
    stream: TextIO | None = None,
    pre_render: Sequence[Processor] = (),
    post_render: Sequence[Processor] = (),
    redactor: Redacts | None = None,
) -> None:
    """Configure structlog and the standard library for this process.

    ``pre_render`` processors see the event dict just before the renderer
    (after exception formatting); ``post_render`` ones see the rendered line.
    ``redactor`` (default: the process's active one) runs after each group,
    so nothing a custom processor adds escapes it.
    """
    out = stream if stream is not None else sys.stderr
    redacting = RedactingProcessor(_redactor_or_active(redactor))
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            *pre_render,
            redacting,
            _renderer(fmt, out),
            *post_render,
            redacting,
        ],
    )
    handler = _RedactingStreamHandler(out, _redactor_or_active(redactor))
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME or not isinstance(old, logging.FileHandler):
            root.removeHandler(old)
        else:
            # A log file kept from before formats records itself, past our chain.
            inner = old.formatter
            if isinstance(inner, RedactingFormatter):
                inner = inner.inner
            old.setFormatter(RedactingFormatter(inner, _redactor_or_active(redactor)))
    root.addHandler(handler)
    # Off first: logging only installs its hook when it believes none is in place,
    # and something else (a test harness, a library) may have replaced it since.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    # Ours at INFO (DEBUG with -v); libraries only speak up with -vv.
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("runner").setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "runner", **initial: Any) -> Any:
    """A structlog logger under the ``runner`` hierarchy."""
    if not name.startswith("runner"):
        name = f"runner.{name}"
    return structlog.stdlib.get_logger(name, **initial)
