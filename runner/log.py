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

``log_lines`` logs many lines that differ in one field (a step's output) at
the cost of their bytes: one line goes through the whole chain with a
placeholder, the others are that line with the placeholder replaced (quoted
as the renderer quotes a string), and the batch is redacted in one pass. If
that pass finds anything, or the set-up is not the one configured here (other
handlers, custom processors), each line goes through the whole chain.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from json.encoder import encode_basestring_ascii
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


@dataclass(frozen=True)
class _Batches:
    """What ``log_lines`` needs of the configured chain to render lines itself."""

    handler: logging.StreamHandler  # type: ignore[type-arg]
    shared: tuple[Processor, ...]  # the processors before the formatter's
    json: bool
    redactor: Redacts
    stamper: structlog.processors.TimeStamper  # the chain's, for each batch's own time
    # Rendered lines with placeholders, per kind of line (``_template``).
    templates: dict[tuple[str, ...], tuple[str, str]] = field(default_factory=dict)


_BATCHES: _Batches | None = None
_TIME_KEY = "timestamp"
_TIME_PLACEHOLDER = "runnertimeplaceholderk2m9"
_TEMPLATES_KEPT = 256
# Letters only: every renderer writes it as is, with no quotes or escapes.
_PLACEHOLDER = "runnerlineplaceholderq7x3"
# Characters that make structlog's console renderer quote a string with repr.
_CONSOLE_QUOTED = re.compile("[ \t=\r\n\"']")
# Printable ASCII, and the newlines between lines.
_PRINTABLE_ASCII = bytes(range(32, 127)) + b"\n"


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
    global _BATCHES
    out = stream if stream is not None else sys.stderr
    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key=_TIME_KEY)
    redacting = RedactingProcessor(_redactor_or_active(redactor))
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        stamper,
        structlog.processors.StackInfoRenderer(),
    ]
    renderer = _renderer(fmt, out)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            *pre_render,
            redacting,
            renderer,
            *post_render,
            redacting,
        ],
    )
    handler = _RedactingStreamHandler(out, _redactor_or_active(redactor))
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    # Custom processors may change any line: then every line goes through them.
    _BATCHES = (
        None
        if pre_render or post_render
        else _Batches(
            handler=handler,
            shared=tuple(shared),
            json=isinstance(renderer, structlog.processors.JSONRenderer),
            redactor=_redactor_or_active(redactor),
            stamper=stamper,
        )
    )

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


def log_lines(
    name: str, event: str, fields: Mapping[str, Any], key: str, values: Sequence[str]
) -> None:
    """Log ``event`` at INFO once per value, with ``fields`` and ``key=value``.

    Writes what ``get_logger(name).info(event, **fields, key=value)`` would
    for each value (one timestamp for the batch), in one write.
    """
    std = logging.getLogger(name)
    if not values or not std.isEnabledFor(logging.INFO):
        return
    batches = _BATCHES
    parts = _template(std, batches, event, fields, key) if batches is not None else None
    if batches is None or parts is None:
        _one_by_one(name, event, fields, key, values)
        return
    head, tail = parts
    if batches.json:
        text = json_lines(head, tail, values, encode_basestring_ascii)
    else:
        text = _console_lines(head, tail, values)
    if batches.redactor.redact(text) != text:
        _one_by_one(name, event, fields, key, values)  # the exact chain, line by line
        return
    handler = batches.handler
    handler.acquire()
    try:
        with contextlib.suppress(OSError, ValueError):
            handler.stream.write(text)
            handler.flush()
    finally:
        handler.release()


def json_lines(head: str, tail: str, values: Sequence[str], encode: Callable[[str], str]) -> str:
    """``head + encode(value) + tail`` for each value, joined: JSON lines in one go.

    ``encode`` is one of ``json.encoder``'s string encoders. When the values
    hold no newline and no backslash, every ``\\n`` in the encoding of the
    values joined by newlines is one of those newlines, so the whole batch is
    encoded in one call.
    """
    if not values:
        return ""
    joined = "\n".join(values)
    if "\\" in joined or joined.count("\n") != len(values) - 1:
        return "".join([head + encode(value) + tail for value in values])
    between = '"' + tail + head + '"'
    return head + encode(joined).replace("\\n", between) + tail


def _console_lines(head: str, tail: str, values: Sequence[str]) -> str:
    """``head + VALUE + tail`` per value, each as structlog's console renderer writes it.

    It quotes a value with ``repr`` when it holds a blank, ``=`` or a quote.
    When every value needs that and none holds a quote, a backslash or an
    unprintable character, ``repr`` only adds single quotes: one join does all.
    """
    joined = "\n".join(values)
    if (
        joined.count("\n") == len(values) - 1
        and "'" not in joined
        and "\\" not in joined
        and all(map(str.__contains__, values, repeat(" ")))  # a blank: quoted
        and _printable(joined)
    ):
        between = "'" + tail + head + "'"
        return head + "'" + joined.replace("\n", between) + "'" + tail
    quoted = _CONSOLE_QUOTED.search
    return "".join([head + (repr(v) if quoted(v) else v) + tail for v in values])


def _printable(lines: str) -> bool:
    """Whether ``repr`` would escape nothing in these newline-joined lines."""
    if lines.isascii():  # the usual case: one pass in C, no per-character lookups
        return not lines.encode("ascii").translate(None, _PRINTABLE_ASCII)
    return lines.replace("\n", " ").isprintable()


def _one_by_one(
    name: str, event: str, fields: Mapping[str, Any], key: str, values: Sequence[str]
) -> None:
    log = get_logger(name)
    for value in values:
        log.info(event, **fields, **{key: value})


def _template(
    std: logging.Logger, batches: _Batches, event: str, fields: Mapping[str, Any], key: str
) -> tuple[str, str] | None:
    """The rendered line around where the value goes, or None if lines cannot be batched.

    Rendered once per kind of line (its fields and context) with a placeholder
    for the time too, which each batch fills in with its own timestamp.
    """
    if not _only_handler(std, batches.handler):
        return None
    context = repr(tuple(structlog.contextvars.get_contextvars().items()))
    kind = (std.name, event, key, repr(tuple(fields.items())), context)
    parts = batches.templates.get(kind)
    if parts is None:
        parts = _render_template(std, batches, event, fields, key, timeless=True)
        if parts is None or (parts[0] + parts[1]).count(_TIME_PLACEHOLDER) != 1:
            return _render_template(std, batches, event, fields, key, timeless=False)
        if len(batches.templates) >= _TEMPLATES_KEPT:
            batches.templates.clear()
        batches.templates[kind] = parts
    head, tail = parts
    stamped = batches.stamper(std, "info", {})
    stamp = str(stamped[_TIME_KEY])
    return head.replace(_TIME_PLACEHOLDER, stamp), tail.replace(_TIME_PLACEHOLDER, stamp)


def _render_template(
    std: logging.Logger,
    batches: _Batches,
    event: str,
    fields: Mapping[str, Any],
    key: str,
    *,
    timeless: bool,
) -> tuple[str, str] | None:
    event_dict: Any = {**fields, key: _PLACEHOLDER, "event": event}
    for processor in batches.shared:
        event_dict = processor(std, "info", event_dict)
    if timeless and _TIME_KEY in event_dict:
        event_dict[_TIME_KEY] = _TIME_PLACEHOLDER
    record = std.makeRecord(
        std.name,
        logging.INFO,
        "(runner)",
        0,
        event_dict,
        (),
        None,
        extra={"_logger": std, "_name": "info"},
    )
    rendered = batches.handler.format(record) + batches.handler.terminator
    parts = rendered.split(_PLACEHOLDER)
    if len(parts) != 2:
        return None
    head, tail = parts
    if batches.json:  # the quotes come with each value
        if not (head.endswith('"') and tail.startswith('"')):
            return None
        head, tail = head[:-1], tail[1:]
    return head, tail


def _only_handler(std: logging.Logger, handler: logging.Handler) -> bool:
    """Whether a record of ``std`` reaches ``handler`` alone, unfiltered."""
    if logging.root.manager.disable >= logging.INFO or handler.filters:
        return False
    if handler.level > logging.INFO:
        return False
    current: logging.Logger | None = std
    seen: list[logging.Handler] = []
    while current is not None:
        if current.filters:
            return False
        seen.extend(current.handlers)
        if not current.propagate:
            break
        current = current.parent
    return seen == [handler]
