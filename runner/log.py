"""The one place that configures logging for every command.

Always to stderr (stdout carries results only): human-readable lines on a
terminal, JSON lines otherwise or with ``--log-format json``. The standard
library's ``logging`` (docker, urllib3, uvicorn, httpx) is routed through the
same structlog processors with ``ProcessorFormatter``, so every line, ours or
a library's, passes the same chain.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

from runner.config import LogFormat

_HANDLER_NAME = "runner-stderr"


def _renderer(fmt: LogFormat, stream: TextIO) -> Processor:
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    if use_json:
        return structlog.processors.JSONRenderer(sort_keys=False)
    return structlog.dev.ConsoleRenderer(colors=stream.isatty())


def configure_logging(
    *,
    fmt: LogFormat = "auto",
    verbose: int = 0,
    stream: TextIO | None = None,
    pre_render: Sequence[Processor] = (),
    post_render: Sequence[Processor] = (),
) -> None:
    """Configure structlog and the standard library for this process.

    ``pre_render`` processors see the event dict just before the renderer
    (after exception formatting); ``post_render`` ones see the rendered line.
    The redactor plugs into both positions.
    """
    out = stream if stream is not None else sys.stderr
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
            _renderer(fmt, out),
            *post_render,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME or not isinstance(old, logging.FileHandler):
            root.removeHandler(old)
    root.addHandler(handler)
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
