"""The job proxy's mitmproxy addon: runner's egress rules, events on a pipe.

mitmdump loads this file (``-s``) in the proxy's own environment, which has
mitmproxy and the standard library but not runner: it loads ``rules.py``
beside it by path. runner passes the rules as JSON in ``RUNNER_EGRESS_RULES``
and a pipe's descriptor in ``RUNNER_EGRESS_EVENTS_FD``; the addon writes one
JSON line there when the proxy is up and one per refused connection, with the
host and port only (never a path, a query or credentials). The proxy writes
nothing to disk of its own and logs nothing (runner starts it quiet).

A refusal by name (not on the allow list) answers the step 403 at once, for
plain HTTP and for CONNECT alike; a listed name that resolves only to refused
addresses fails when the proxy would connect (the step sees 502). An allowed
connection goes to the very address that was checked, so a name cannot be
re-pointed between the check and the connection.

runner keeps the proxy's stdin open; when runner closes it or dies, the
proxy exits, so no proxy outlives its job.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from mitmproxy import http
from mitmproxy.proxy import server_hooks


def _load_rules() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "runner_egress_rules", Path(__file__).with_name("rules.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


_rules = _load_rules()


class RunnerEgress:
    def __init__(self) -> None:
        self.rules = _rules.EgressRules.from_json(os.environ["RUNNER_EGRESS_RULES"])
        self._events = os.fdopen(int(os.environ["RUNNER_EGRESS_EVENTS_FD"]), "w", buffering=1)
        self._lock = threading.Lock()

    def running(self) -> None:
        self._send({"event": "ready"})
        threading.Thread(target=self._exit_with_runner, daemon=True).start()

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._check_name(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.method != "CONNECT" and flow.response is None:
            self._check_name(flow)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if address is None:
            return
        host, port = str(address[0]), int(address[1])
        verdict = self.rules.check(host, port)
        if verdict.allowed:
            data.server.address = (verdict.address, port)
            return
        data.server.error = f"runner: egress to {host}:{port} refused: {verdict.reason}"
        self._denied(host, port)

    def _check_name(self, flow: http.HTTPFlow) -> None:
        host, port = flow.request.host, flow.request.port
        if self.rules.listed(host, port):
            return
        flow.response = http.Response.make(
            403,
            f"runner: egress to {host}:{port} is not allowed by the job's network policy\n",
            {"Content-Type": "text/plain"},
        )
        self._denied(host, port)

    def _denied(self, host: str, port: int) -> None:
        self._send({"event": "denied", "host": host[:253], "port": port})

    def _send(self, event: dict[str, Any]) -> None:
        with self._lock:
            try:
                self._events.write(json.dumps(event) + "\n")
            except OSError:
                os._exit(0)  # runner is gone: so is the job

    def _exit_with_runner(self) -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            os._exit(0)


addons = [RunnerEgress()]
