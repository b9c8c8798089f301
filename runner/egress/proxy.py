"""The job's HTTP(S) proxy: mitmproxy's ``mitmdump``, one process per job network.

Why mitmproxy: it is a maintained proxy whose addons are plain Python, so
runner's rules (``rules.py``) decide every connection after the proxy itself
resolved the name, and the same proxy can later intercept TLS for brokered
hosts (issue 20). It runs from its own virtual environment (``make
services`` installs it; ``RUNNER_PROXY_BIN`` names another ``mitmdump``), so
its pinned dependencies never meet runner's.

The process listens on the job network's gateway address only. It gets a
scrubbed environment (never runner's own, which may hold values), its
configuration (the rules and any brokered secrets, values included) as one
JSON document on a pipe, and another pipe for events; its own output is read
and dropped, except the last lines before it is up, which say why it could
not start. Its configuration folder, where mitmproxy makes the job's
certificate authority, is on a tmpfs (``/dev/shm``) so the CA's key never
reaches a disk; it goes with the proxy. Stopping closes its stdin, which
ends it (``mitm_addon.py``); a proxy whose runner died ends the same way.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from runner.egress.broker import BrokerSession
from runner.egress.broker_rules import BrokerRules
from runner.egress.rules import EgressRules
from runner.errors import ExecutionError
from runner.log import get_logger

log = get_logger("runner.egress.proxy")

ADDON = Path(__file__).with_name("mitm_addon.py")
PROXY_PORT = 3128
START_TIMEOUT_S = 60.0

OnDenied = Callable[[str, int], None]
# A tmpfs for the proxy's folder (the job CA's key); the usual temporary folder elsewhere.
TMPFS = Path("/dev/shm")  # noqa: S108  # a tmpfs on Linux, not a shared temporary folder
CONFDIR_PREFIX = "runner-proxy-"
SYSTEM_ROOTS = Path("/etc/ssl/certs/ca-certificates.crt")


class RunningProxy(Protocol):
    # The job CA's certificate (PEM) when the proxy intercepts TLS for brokered hosts.
    ca_cert: str | None

    def stop(self) -> None:
        """End the proxy and wait for it; never raises."""
        ...


class ProxyLauncher(Protocol):
    """Starts one proxy per job network (``MitmProxy``; tests may pass a fake)."""

    def start(
        self,
        *,
        listen: str,
        port: int,
        rules: EgressRules,
        on_denied: OnDenied,
        broker: BrokerSession | None = None,
    ) -> RunningProxy:
        """A proxy listening on ``listen:port`` and enforcing ``rules``, up and accepting.

        ``on_denied(host, port)`` is called, from another thread, for every
        connection it refuses; ``broker.on_event`` for every brokering
        decision. Raises ``ExecutionError`` if it cannot start.
        """
        ...

    def check(self) -> None:
        """``ExecutionError`` now if no proxy could start (say, it is not installed)."""
        ...


class MitmProxy:
    """Launches ``mitmdump`` with runner's addon.

    ``upstream_ca`` (``--broker-ca-file``, an operator's setting) is what the
    proxy trusts for the real servers of brokered hosts; else the system's roots.
    """

    def __init__(
        self,
        binary: Path,
        *,
        start_timeout_s: float = START_TIMEOUT_S,
        upstream_ca: Path | None = None,
    ) -> None:
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._upstream_ca = upstream_ca

    def check(self) -> None:
        if not os.access(self._binary, os.X_OK):
            raise ExecutionError(
                f"the egress proxy {self._binary} is not installed",
                hint="run `make services` (it installs mitmproxy for runner), or point "
                "RUNNER_PROXY_BIN at a mitmdump",
            )

    def start(
        self,
        *,
        listen: str,
        port: int,
        rules: EgressRules,
        on_denied: OnDenied,
        broker: BrokerSession | None = None,
    ) -> RunningProxy:
        self.check()
        argv = [
            str(self._binary),
            "--quiet",
            "--mode",
            "regular",
            "--listen-host",
            listen,
            "--listen-port",
            str(port),
            "--scripts",
            str(ADDON),
            # No flow log, no event log below errors, no dump file: the proxy sees headers.
            "--set",
            "termlog_verbosity=error",
            "--set",
            "flow_detail=0",
            "--set",
            "connection_strategy=eager",
        ]
        bound = sorted(broker.rules.hosts) if broker is not None else []
        # Only bound hosts are intercepted; every other connection (TLS or not) is a
        # tunnel, passed through untouched. The addon checks each intercepted one again.
        if bound:
            names = "|".join(re.escape(host) for host in bound)
            argv += ["--allow-hosts", rf"(?i)^({names})\.?:\d+$"]
        else:
            argv += ["--ignore-hosts", ".*"]
        roots = self._upstream_ca or (SYSTEM_ROOTS if SYSTEM_ROOTS.exists() else None)
        if roots is not None:
            argv += ["--set", f"ssl_verify_upstream_trusted_ca={roots}"]
        return _MitmProcess(
            argv, listen, port, rules, on_denied, broker, timeout_s=self._start_timeout_s
        )


def _confdir(*, brokering: bool) -> Path:
    """A 0700 folder of this process's, on a tmpfs where there is one.

    A brokering proxy's CA signs what steps trust: its key may not touch a disk,
    so without a tmpfs there is no brokering.
    """
    on_tmpfs = TMPFS.is_dir() and os.access(TMPFS, os.W_OK)
    if brokering and not on_tmpfs:
        raise ExecutionError(
            f"brokered secrets need a tmpfs at {TMPFS} for the job's certificate authority",
            hint=f"mount a tmpfs at {TMPFS} (Linux has one), or store the secret without "
            "--broker-host",
        )
    base = TMPFS if on_tmpfs else None
    return Path(tempfile.mkdtemp(prefix=f"{CONFDIR_PREFIX}{os.getpid()}-", dir=base))


def sweep_confdirs() -> int:
    """Remove proxy folders whose runner process is gone (a killed run's); return how many."""
    removed = 0
    for base in {TMPFS, Path(tempfile.gettempdir())}:
        for folder in base.glob(f"{CONFDIR_PREFIX}*-*"):
            pid = folder.name[len(CONFDIR_PREFIX) :].partition("-")[0]
            if pid.isdigit() and not Path("/proc", pid).exists():
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    return removed


class _MitmProcess:
    def __init__(
        self,
        argv: list[str],
        listen: str,
        port: int,
        rules: EgressRules,
        on_denied: OnDenied,
        broker: BrokerSession | None,
        *,
        timeout_s: float,
    ) -> None:
        self._on_denied = on_denied
        self._broker = broker
        self.ca_cert: str | None = None
        self._ready = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        # The proxy's configuration folder (the job CA and its key): per job, on a tmpfs.
        self._confdir = _confdir(brokering=broker is not None)
        config_read, config_write = os.pipe()
        events_read, events_write = os.pipe()
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self._confdir),
            "LANG": "C.UTF-8",
        }
        argv = [
            *argv,
            "--set",
            f"confdir={self._confdir}",
            "--set",
            f"runner_config_fd={config_read}",
            "--set",
            f"runner_events_fd={events_write}",
        ]
        try:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(config_read, events_write),
                close_fds=True,
            )
        except OSError as exc:
            for fd in (config_write, events_read):
                os.close(fd)
            shutil.rmtree(self._confdir, ignore_errors=True)
            raise ExecutionError(
                f"the egress proxy could not start: {exc.strerror or exc}",
                hint="run `make services`, or point RUNNER_PROXY_BIN at a mitmdump",
            ) from None
        finally:
            os.close(config_read)
            os.close(events_write)
        self._events = os.fdopen(events_read, "r", encoding="utf-8", errors="replace")
        self._readers = [
            threading.Thread(target=self._read_events, name="proxy-events", daemon=True),
            threading.Thread(target=self._drain_output, name="proxy-output", daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            # The values go over this pipe and nowhere else (never argv, environment or a file).
            _send_config(config_write, rules, broker.rules if broker else BrokerRules())
            self._wait_until_up(listen, port, timeout_s)
            if broker is not None:
                self.ca_cert = (self._confdir / "mitmproxy-ca-cert.pem").read_text()
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
            else:
                try:
                    self._dispatch(event)
                except Exception:  # a reporter's failure must not stop the events
                    log.exception("could not report a proxy event")

    def _dispatch(self, event: dict[str, object]) -> None:
        kind = event.get("event")
        host = str(event.get("host", ""))[:253]
        if kind == "denied":
            port = event.get("port", 0)
            self._on_denied(host, port if isinstance(port, int) else 0)
        elif kind in ("mismatch", "used") and self._broker is not None:
            self._broker.on_event(str(kind), str(event.get("secret", "")), host)

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


def _send_config(fd: int, rules: EgressRules, broker: BrokerRules) -> None:
    document = json.dumps({"rules": rules.to_dict(), "broker": broker.to_json()})
    try:
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(document.encode("utf-8"))
    except BrokenPipeError:
        pass  # the proxy died before reading it: _wait_until_up says why


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False
