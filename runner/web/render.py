"""Templates and what they show: times, job log lines, redaction markers, URLs.

Jinja2 autoescapes everything; the only markup built here is from escaped
text. Every text that comes from a job or an error passes through the
process's redactor before it is shown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import jinja2
from markupsafe import Markup, escape
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Scope

from runner.namespaces import Namespace, parse_namespace
from runner.redact import active
from runner.secrets.names import DEFAULT_SCOPE

HERE: Final = Path(__file__).parent
TEMPLATES_DIR: Final = HERE / "templates"
STATIC_DIR: Final = HERE / "static"

_REDACTED_RE: Final = re.compile(r"\[REDACTED:[^\]\s]{1,160}\]")


def redact(text: str | None) -> str:
    return active().redact(text) if text else ""


def parse_time(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def when(value: datetime | str | None, *, short: bool = False) -> Markup:
    """A ``<time>`` element in UTC (``short``: without the zone, for tables), or a dash."""
    moment = parse_time(value)
    if moment is None:
        return Markup('<span class="none">—</span>')
    utc = moment.astimezone(UTC).replace(microsecond=0)
    machine = utc.isoformat().replace("+00:00", "Z")
    return Markup('<time datetime="{}">{}</time>').format(
        machine, utc.strftime("%Y-%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S UTC")
    )


def mark_redactions(text: str) -> Markup:
    """Escaped text with each ``[REDACTED:NAME]`` marker in a span the CSS highlights."""
    out: list[Markup] = []
    last = 0
    for match in _REDACTED_RE.finditer(text):
        out.append(escape(text[last : match.start()]))
        out.append(Markup('<span class="redacted">{}</span>').format(match.group(0)))
        last = match.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)


# URLs ------------------------------------------------------------------------------


def _scope_query(scope: str | None) -> str:
    return "" if not scope or scope == DEFAULT_SCOPE else "?" + urlencode({"scope": scope})


def namespace_url(namespace: str | Namespace) -> str:
    return "/secrets/" + quote(str(namespace), safe=":")


def secret_url(namespace: str, name: str, action: str, scope: str | None = None) -> str:
    return f"{namespace_url(namespace)}/{quote(name, safe='')}/{action}{_scope_query(scope)}"


def job_url(job_id: str, suffix: str = "") -> str:
    return "/jobs/" + quote(job_id, safe="") + suffix


def namespace_title(namespace: str | Namespace, viewer: str | None = None) -> str:
    """How page headings name a namespace, after the product's pages."""
    ns = parse_namespace(namespace)
    if ns.is_global:
        return "Site admin"
    if ns.kind == "user" and ns.name == viewer:
        return "Your settings"
    return f"{'Organization' if ns.kind == 'org' else 'User'} {ns.name}"


# Job logs --------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    text: str
    kind: str  # "stdout", "stderr", "event" or "plain"

    def to_json(self) -> dict[str, str]:
        return {"text": self.text, "kind": self.kind}


# What a job log line shows of an event, after its name.
EVENT_DETAILS = (
    "phase",
    "files",
    "total_files",
    "step",
    "exit_code",
    "status",
    "state",
    "executor",
    "attempt",
    "error",
)


def render_line(line: str) -> LogLine:
    """One JSON-lines log event as ``runner jobs logs`` prints it, redacted again."""
    try:
        event = json.loads(line)
    except ValueError:
        return LogLine(redact(line), "plain")
    if not isinstance(event, dict):
        return LogLine(redact(line), "plain")
    name = str(event.get("event", ""))
    if name == "step.output":
        stream = "stderr" if event.get("stream") == "stderr" else "stdout"
        text = f"step {event.get('step')} {stream}: {event.get('line', '')}"
        return LogLine(redact(text), stream)
    details = [f"{key}={event[key]}" for key in EVENT_DETAILS if event.get(key) is not None]
    return LogLine(redact(f"{name} {' '.join(details)}".rstrip()), "event")


def render_chunks(texts: Iterable[str]) -> list[LogLine]:
    return [render_line(line) for text in texts for line in text.splitlines() if line.strip()]


# The environment -------------------------------------------------------------------


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["redactions"] = mark_redactions
    env.filters["redact"] = redact
    env.globals.update(
        namespace_url=namespace_url,
        secret_url=secret_url,
        job_url=job_url,
        namespace_title=namespace_title,
        default_scope=DEFAULT_SCOPE,
    )
    return Jinja2Templates(env=env)


def changesets_of(result: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not result:
        return []
    found = result.get("changesets") or []
    return [c for c in found if isinstance(c, Mapping)]


class HardenedStaticFiles(StaticFiles):
    """The CSS and JavaScript, served with ``nosniff``."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
