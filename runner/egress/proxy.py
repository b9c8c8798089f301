"""The job's HTTP(S) proxy: mitmproxy's ``mitmdump``, one process per job network.

Why mitmproxy: it is a maintained proxy whose addons are plain Python, so
runner's rules (``rules.py``) decide every connection after the proxy itself
resolved the name, and the same proxy can later intercept TLS for brokered
hosts (issue 20). It runs from its own virtual environment (``make
services`` installs it; ``RUNNER_PROXY_BIN`` names another ``mitmdump``), so
its pinned dependencies never meet runner's.

The process listens on the job network's gateway address only. It gets a
scrubbed environment (never runner's own, which may hold values), the rules
as JSON, and a pipe for events; its own output is read and dropped, except
the last lines before it is up, which say why it could not start. Stopping
closes its stdin, which ends it (``mitm_addon.py``); a proxy whose runner
died ends the same way.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from runner.egress.rules import EgressRules
from runner.errors import ExecutionError
from runner.log import get_logger

log = get_logger("runner.egress.proxy")

ADDON = Path(__file__).with_name("mitm_addon.py")
PROXY_PORT = 3128
START_TIMEOUT_S = 60.0

OnDenied = Callable[[str, int], None]


class RunningProxy(Protocol):
    def stop(self) -> None:
        """End the proxy and wait for it; never raises."""
        ...


class ProxyLauncher(Protocol):
    """Starts one proxy per job network (``MitmProxy``; tests may pass a fake)."""

    def start(
        self, *, listen: str, port: int, rules: EgressRules, on_denied: OnDenied
    ) -> RunningProxy:
        """A proxy listening on ``listen:port`` and enforcing ``rules``, up and accepting.

        ``on_denied(host, port)`` is called, from another thread, for every
        connection it refuses. Raises ``ExecutionError`` if it cannot start.
        """
        ...

    def check(self) -> None:
        """``ExecutionError`` now if no proxy could start (say, it is not installed)."""
        ...


class MitmProxy:
    """Launches ``mitmdump`` with runner's addon."""

    def __init__(self, binary: Path, *, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self._binary = binary
        self._start_timeout_s = start_timeout_s

    def check(self) -> None:
        if not os.access(self._binary, os.X_OK):
            raise ExecutionError(
                f"the egress proxy {self._binary} is not installed",
                hint="run `make services` (it installs mitmproxy for runner), or point "
                "RUNNER_PROXY_BIN at a mitmdump",
            )

    def start(
        self, *, listen: str, port: int, rules: EgressRules, on_denied: OnDenied
    ) -> RunningProxy:
        self.check()
        return _MitmProcess(self._binary, listen, port, rules, on_denied, self._start_timeout_s)


class _MitmProcess:
    def __init__(
        self,
        binary: Path,
        listen: str,
        port: int,
        rules: EgressRules,
        on_denied: OnDenied,
        timeout_s: float,
    ) -> None:
        self._on_denied = on_denied
        self._ready = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        # The proxy's configuration folder (its CA lives there): per job, removed with it.
        self._confdir = Path(tempfile.mkdtemp(prefix="runner-proxy-"))
        read_fd, write_fd = os.pipe()
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self._confdir),
            "LANG": "C.UTF-8",
            "RUNNER_EGRESS_RULES": rules.to_json(),
            "RUNNER_EGRESS_EVENTS_FD": str(write_fd),
        }
        argv = [
            str(binary),
            "--quiet",
            "--mode",
            "regular",
            "--listen-host",
            listen,
            "--listen-port",
            str(port),
            "--scripts",
            str(ADDON),
            "--set",
            f"confdir={self._confdir}",
            # TLS passes through untouched until brokered hosts need interception.
            "--ignore-hosts",
            ".*",
            "--set",
            "connection_strategy=eager",
            "--set",
            "termlog_verbosity=error",
            "--set",
            "flow_detail=0",
        ]
        try:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(write_fd,),
                close_fds=True,
            )
        except OSError as exc:
            os.close(read_fd)
            shutil.rmtree(self._confdir, ignore_errors=True)
            raise ExecutionError(
                f"the egress proxy could not start: {exc.strerror or exc}",
                hint="run `make services`, or point RUNNER_PROXY_BIN at a mitmdump",
            ) from None
        finally:
            os.close(write_fd)
        self._events = os.fdopen(read_fd, "r", encoding="utf-8", errors="replace")
        self._readers = [
            threading.Thread(target=self._read_events, name="proxy-events", daemon=True),
            threading.Thread(target=self._drain_output, name="proxy-output", daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            self._wait_until_up(listen, port, timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_until_up(self, listen: str, port: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self._ready.wait(0.1) and _accepts(listen, port):
                return
        why = " | ".join(line for line in self._tail if line.strip())[-500:]
        raise ExecutionError(
            f"the egress proxy did not come up on {listen}:{port}"
            + (f": {why}" if why else f" within {timeout_s:g} s"),
            hint="check that mitmproxy is installed (`make services`) and the job network exists",
        )

    def _read_events(self) -> None:
        for line in self._events:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "ready":
                self._ready.set()
            elif event.get("event") == "denied":
                try:
                    self._on_denied(str(event.get("host", ""))[:253], int(event.get("port", 0)))
                except Exception:  # a reporter's failure must not stop the events
                    log.exception("could not report a refused connection")

    def _drain_output(self) -> None:
        out: IO[bytes] | None = self._process.stdout
        if out is None:
            return
        for raw in out:
            # Kept only until the proxy is up: it says why a start failed. After
            # that its output (which may name URLs) is dropped unread.
            if not self._ready.is_set():
                self._tail.append(raw.decode("utf-8", "replace").rstrip())

    def stop(self) -> None:
        process = self._process
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for reader in self._readers:
            reader.join(5)
        with contextlib.suppress(OSError):
            self._events.close()
        if process.stdout is not None:
            with contextlib.suppress(OSError):
                process.stdout.close()
        shutil.rmtree(self._confdir, ignore_errors=True)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False
