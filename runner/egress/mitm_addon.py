"""The job proxy's mitmproxy addon: runner's egress rules and brokering, events on a pipe.

mitmdump loads this file (``-s``) in the proxy's own environment, which has
mitmproxy and the standard library but not runner: it loads ``rules.py`` and
``broker_rules.py`` beside it by path.

Configuration arrives on one pipe and events leave on another, both passed
to the process as inherited descriptors whose numbers are the addon's
options ``runner_config_fd`` and ``runner_events_fd`` (numbers only on the
command line; never a value, never the environment, never a file). The
configuration is one JSON document: the egress rules, and the brokered
secrets with their values and placeholders. Events are JSON lines: ``ready``
once the proxy is up, ``denied`` per refused connection (host and port),
``mismatch`` and ``used`` per brokering decision (secret name and host);
never a path, a query, a header or a value. The proxy writes nothing to
disk of its own and logs nothing (runner starts it quiet).

A refusal by name (not on the allow list) answers the step 403 at once, for
plain HTTP and for CONNECT alike; a listed name that resolves only to refused
addresses fails when the proxy would connect (the step sees 502). An allowed
connection goes to the very address that was checked, so a name cannot be
re-pointed between the check and the connection.

TLS is intercepted only for a CONNECT to a host some brokered secret is
bound to (and only when the client's SNI names that host); everything else
is tunnelled untouched. Intercepted and plain requests pass through
``BrokerRules.rewrite``; their responses through ``BrokerRules.scrub``.

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

from mitmproxy import addonmanager, http, tls
from mitmproxy.proxy import server_hooks


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"runner_egress_{name}", Path(__file__).with_name(f"{name}.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


_rules = _load("rules")
_broker = _load("broker_rules")


def _read_document(fd: int) -> dict[str, Any]:
    with os.fdopen(fd, "rb") as pipe:
        data: dict[str, Any] = json.loads(pipe.read().decode("utf-8"))
    return data


class RunnerEgress:
    def __init__(self) -> None:
        self.rules = _rules.EgressRules()
        self.broker = _broker.BrokerRules()
        self._events: Any = None
        self._lock = threading.Lock()
        # The host each client CONNECTed to: what TLS interception and brokering go by
        # (the server address is rewritten to the checked IP address).
        self._connected: dict[str, str] = {}

    def load(self, loader: addonmanager.Loader) -> None:
        loader.add_option("runner_config_fd", int, -1, "Descriptor of runner's configuration.")
        loader.add_option("runner_events_fd", int, -1, "Descriptor of runner's event pipe.")

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        if "runner_config_fd" in updated and ctx.options.runner_config_fd >= 0:
            document = _read_document(ctx.options.runner_config_fd)
            self.rules = _rules.EgressRules.from_dict(document.get("rules", {}))
            self.broker = _broker.BrokerRules.from_json(document.get("broker", []))
        if "runner_events_fd" in updated and ctx.options.runner_events_fd >= 0:
            self._events = os.fdopen(ctx.options.runner_events_fd, "w", buffering=1)

    def running(self) -> None:
        self._send({"event": "ready"})
        threading.Thread(target=self._exit_with_runner, daemon=True).start()

    # Egress rules ----------------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._connected[flow.client_conn.id] = flow.request.host
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

    def client_disconnected(self, client: Any) -> None:
        self._connected.pop(client.id, None)

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

    # Brokering -------------------------------------------------------------------------------

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        host = self._connected.get(data.context.client.id)
        sni = data.client_hello.sni
        if (
            host is None
            or not self.broker.intercepts(host)
            or (sni is not None and sni.lower().rstrip(".") != host.lower().rstrip("."))
        ):
            data.ignore_connection = True
            return
        # Verify the real server as the bound name, whatever address it was checked at.
        data.context.server.sni = host

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.method == "CONNECT" or flow.response is not None:
            return
        secure = flow.request.scheme == "https"
        if secure:
            host = self._connected.get(flow.client_conn.id, "")
        else:
            self._check_name(flow)
            if flow.response is not None:
                return
            host = flow.request.host
        if not self.broker.bindings:
            return
        rewrite = self.broker.rewrite(
            host=host,
            secure=secure,
            headers=list(flow.request.headers.items(multi=True)),
            target=flow.request.path,
            body=flow.request.raw_content or b"",
        )
        for name in rewrite.mismatched:
            self._send({"event": "mismatch", "secret": name, "host": host[:253]})
        if rewrite.used:
            flow.request.headers.clear()
            for name, value in rewrite.headers:
                flow.request.headers.add(name, value)
            for name in rewrite.used:
                self._send({"event": "used", "secret": name, "host": host[:253]})
        # Plain bodies only, so every form of a value can be found in the answer.
        flow.request.headers["accept-encoding"] = "identity"

    def response(self, flow: http.HTTPFlow) -> None:
        # Bodies are buffered whole (runner never sets stream_large_bodies), so every form
        # of a value is found even across the reads that brought it.
        if not self.broker.bindings or flow.response is None:
            return
        response = flow.response
        fields = list(response.headers.items(multi=True))
        scrubbed = [(name, self.broker.scrub_text(value)) for name, value in fields]
        if scrubbed != fields:
            response.headers.clear()
            for name, value in scrubbed:
                response.headers.add(name, value)
        content = response.get_content(strict=False)
        if content and (clean := self.broker.scrub(content)) != content:
            response.set_content(clean)

    # Events ----------------------------------------------------------------------------------

    def _denied(self, host: str, port: int) -> None:
        self._send({"event": "denied", "host": host[:253], "port": port})

    def _send(self, event: dict[str, Any]) -> None:
        if self._events is None:
            return
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
