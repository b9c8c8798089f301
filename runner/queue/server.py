"""Serving the coordinator: the app, uvicorn, TLS, the listen-address rule, the resetter.

``create_app`` assembles the one FastAPI app: the JSON API (``runner.queue.api``)
and the web pages (``runner.web``), both over the same ``Coordinator``.

Secrets cross this API (claims carry values, `secret set` sends them), so
the coordinator refuses to listen on a non-loopback address without TLS
unless told ``insecure``.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from runner import __version__
from runner.db import Database, sqlite_path
from runner.errors import ConfigError, RunnerError, UsageError
from runner.log import get_logger
from runner.queue.api import add_api
from runner.queue.fastpath import ExecutorFastPath
from runner.queue.probes import add_probes
from runner.queue.service import Coordinator
from runner.queue.store import SqlJobStore
from runner.web import mount_web
from runner.web.session import Sessions, SqlSessionStore

log = get_logger("runner.queue.server")

# How long `runner server` trusts a token it has checked (``SqlTokenStore(cache_s=…)``):
# a token revoked by `runner token revoke` or on another replica stops working within
# this; one revoked through this process's store, at once.
AUTH_CACHE_S = 1.0


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    reset_interval_s: float = 5.0

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class CoordinatorApp(FastAPI):
    """FastAPI with the executors' hot endpoints answered in front of it (``fastpath``)."""

    fast_path: ExecutorFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is None:
            await super().__call__(scope, receive, send)
        else:
            await self.fast_path(scope, receive, send, super().__call__)


def create_app(
    coordinator: Coordinator,
    *,
    sessions: Sessions | None = None,
    poll_interval_s: float = 1.0,
) -> FastAPI:
    """The coordinator's app: the JSON API under ``/api``, the probes, the pages elsewhere."""
    app = CoordinatorApp(
        title="runner coordinator",
        version=__version__,
        description=(
            "Queue batch-spec jobs, run them on executors, manage secrets. "
            "Authenticate with `Authorization: Bearer TOKEN`."
        ),
        docs_url=None,
        redoc_url=None,
    )
    add_api(app, coordinator)
    jobs = coordinator.jobs
    sqlite = isinstance(jobs, SqlJobStore) and jobs.db.dialect == "sqlite"
    app.fast_path = ExecutorFastPath(coordinator, inline=sqlite)
    # /healthz, /readyz and /metrics: unauthenticated, revealing nothing else.
    add_probes(app, coordinator.metrics, jobs.db if isinstance(jobs, SqlJobStore) else None)
    # Web sessions live in the database when there is one: every replica serves them,
    # and they survive a restart.
    if sessions is None and isinstance(jobs, SqlJobStore):
        sessions = SqlSessionStore(jobs.db)
    mount_web(app, coordinator, sessions=sessions, poll_interval_s=poll_interval_s)
    return app


def parse_listen(text: str, *, flag: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not host or not 0 <= port <= 65535:
        raise UsageError(f"{flag} {text!r} is not HOST:PORT", hint="write it like 127.0.0.1:8080")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_options(options: ServeOptions) -> None:
    if (options.tls_cert is None) != (options.tls_key is None):
        raise UsageError(
            "--tls-cert and --tls-key go together", hint="give both, or neither on loopback"
        )
    for flag, path in (("--tls-cert", options.tls_cert), ("--tls-key", options.tls_key)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{flag} {path} is not a readable file", hint="check the path")
    if options.tls_cert is None and not is_loopback(options.host) and not options.insecure:
        raise UsageError(
            f"refusing to listen on {options.host} without TLS: tokens and secret values "
            "cross this API",
            hint="pass --tls-cert and --tls-key, listen on 127.0.0.1, or add --insecure "
            "behind a TLS-terminating proxy",
        )


class Resetter:
    """Returns stalled jobs to the queue (or fails them) every ``interval_s``."""

    def __init__(self, coordinator: Coordinator, interval_s: float) -> None:
        self._coordinator = coordinator
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resetter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._coordinator.reset_stalled()
            except RunnerError as exc:
                log.warning("the resetter failed; trying again", error=str(exc))


@contextmanager
def sole_server(db: Database | None) -> Iterator[None]:
    """On SQLite, hold a lock that a second `runner server` on the same file cannot take.

    SQLite serves one coordinator: a second would run its own resetter and keep
    its own view of the database's writers. ``flock`` on a file beside the
    database is dropped by the kernel when the process ends, however it ends, so
    a coordinator killed with SIGKILL restarts without clean-up (a PID file would
    not). PostgreSQL serves any number of replicas: no lock.
    """
    if db is None or db.dialect != "sqlite" or sqlite_path(db.url) == ":memory:":
        yield
        return
    path = Path(sqlite_path(db.url) + ".server-lock")
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another `runner server` is running on the SQLite database {sqlite_path(db.url)}",
                hint="stop it first; to run coordinator replicas, put their state in "
                "PostgreSQL (RUNNER_DATABASE_URL=postgresql://...)",
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _note_signal(signum: int, frame: FrameType | None) -> None:
    log.info("stop signal handled", signal=signal.Signals(signum).name)


def serve(
    coordinator: Coordinator, options: ServeOptions, sock: socket.socket | None = None
) -> None:
    """Run until SIGINT or SIGTERM (uvicorn stops gracefully on either).

    ``sock``: a listening socket to serve on (a worker of ``serve_workers``) instead of
    binding ``options``' address.
    """
    import uvicorn

    from runner.queue.coalesce import CoalescingHttpProtocol

    check_options(options)
    config = uvicorn.Config(
        create_app(coordinator),
        http=CoalescingHttpProtocol,
        host=options.host,
        port=options.port,
        ssl_certfile=str(options.tls_cert) if options.tls_cert else None,
        ssl_keyfile=str(options.tls_key) if options.tls_key else None,
        # Our logging set-up (redacting, stderr) stays in charge of uvicorn's loggers.
        log_config=None,
        # uvicorn builds each request's access-log arguments before asking whether the
        # line is wanted: off unless the line would show (`-vv`), 2 % of a request.
        access_log=logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO),
        lifespan="off",
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    server = uvicorn.Server(config)
    jobs = coordinator.jobs
    with sole_server(jobs.db if isinstance(jobs, SqlJobStore) else None):
        # Every replica runs a resetter: SqlJobStore.reset_stalled locks the rows it
        # resets (SKIP LOCKED) and decides again on each, so none is reset twice.
        resetter = Resetter(coordinator, options.reset_interval_s)
        resetter.start()
        log.info("coordinator listening", url=options.url, tls=options.tls_cert is not None)
        # uvicorn re-raises the stop signal once it has shut down; with a handler of ours
        # in place that ends here, and a graceful stop exits 0 instead of dying by SIGTERM.
        # The stop is graceful: requests in flight are answered (for up to 10 s) first.
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, _note_signal) for sig in signals}
        try:
            server.run(sockets=[sock] if sock is not None else None)
        finally:
            resetter.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if not server.started:
        raise ConfigError(
            f"the coordinator could not listen on {options.host}:{options.port}",
            hint="pick a free port, or check the TLS files; the log above says why",
        )
    log.info("coordinator stopped")


# How long the workers of `runner server --workers N` have to stop after SIGTERM before
# they are killed: uvicorn's graceful shutdown (10 s) and the resetter's last round.
WORKER_STOP_S = 15.0


def listen_socket(options: ServeOptions) -> socket.socket:
    """``options``' address bound once and listening, for every worker to accept on."""
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host, options.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"the coordinator could not listen on {options.host}:{options.port}: "
            f"{exc.strerror or exc}",
            hint="pick a free port",
        ) from None
    sock.listen(2048)
    return sock


def _die_with_parent() -> None:
    """Have the kernel send this worker SIGTERM when its parent ends, however it ends
    (even SIGKILL), so no worker outlives its server."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def serve_workers(
    options: ServeOptions, workers: int, worker: Callable[[socket.socket], None]
) -> None:
    """Serve with ``workers`` processes forked after binding one listening socket.

    Each child calls ``worker(sock)``: it builds its own coordinator (its own database
    connections: a connection does not survive a fork) and serves on ``sock``; the
    kernel hands each connection to whichever worker accepts it first. The parent only
    supervises: SIGINT or SIGTERM stops every worker gracefully; a worker that ends on
    its own stops the others and the server, with its pid and exit status in the
    error, for the service manager to restart the whole server (a half-sized server
    would hide the failure).
    """
    check_options(options)
    sock = listen_socket(options)
    pids: set[int] = set()
    try:
        for _ in range(workers):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child's code ends in os._exit
                _run_worker(sock, worker)
            pids.add(pid)
        sock.close()  # the workers hold it; the parent accepts nothing
        log.info("coordinator workers started", url=options.url, workers=sorted(pids))
        failed = _supervise(pids)
    finally:
        sock.close()
        _stop(pids)
    if failed is not None:
        pid, code = failed
        how = f"exited with status {code}" if code >= 0 else f"was killed by signal {-code}"
        raise RunnerError(
            f"coordinator worker {pid} {how}; the server stopped its other workers",
            hint="the log above says why; restart the server",
        )
    log.info("coordinator stopped")


def _run_worker(sock: socket.socket, worker: Callable[[socket.socket], None]) -> None:
    """A forked worker: serve, then leave without running the parent's clean-up."""
    code = 0
    try:
        _die_with_parent()
        if os.getppid() == 1:  # the parent ended before the line above
            os._exit(1)
        # Out of the terminal's process group: Ctrl-C reaches the parent alone, which
        # stops each worker once (a second signal would make uvicorn skip its graceful
        # stop).
        os.setpgid(0, 0)
        worker(sock)
    except RunnerError as exc:
        log.error("coordinator worker failed", error=str(exc))
        code = 1
    except BaseException as exc:  # a worker reports whatever ended it
        log.error("coordinator worker failed", error=f"{type(exc).__name__}: {exc}")
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


def _supervise(pids: set[int]) -> tuple[int, int] | None:
    """Wait for the workers; return the first that ended unasked (pid, exit code)."""
    stopping = False
    waiting = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        log.info("stop signal handled", signal=signal.Signals(signum).name)
        stopping = True
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        if waiting:  # out of os.wait, which a handled signal would otherwise resume
            raise _Stopping

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    failed: tuple[int, int] | None = None
    try:
        # Until the first worker ends or a stop signal comes; then the rest have
        # WORKER_STOP_S to follow, as a worker that does not (one stuck starting or
        # stopping) must not hold the server.
        while pids and not stopping:
            try:
                waiting = True
                pid, status = os.wait()
            except (ChildProcessError, _Stopping):
                break
            finally:
                waiting = False
            pids.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if not stopping:
                log.error("a coordinator worker ended; stopping the others", pid=pid, code=code)
                failed, stopping = (pid, code), True
                for other in pids:
                    _signal(other, signal.SIGTERM)
        _reap(pids)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return failed


class _Stopping(Exception):
    """A stop signal came while the supervisor waited for a worker to end (control flow
    within `_supervise`, never raised past it: not one of runner's errors)."""


def _stop(pids: set[int]) -> None:
    """SIGTERM the workers still running, wait up to WORKER_STOP_S, then SIGKILL."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    _reap(pids)


def _reap(pids: set[int]) -> None:
    """Wait up to WORKER_STOP_S for ``pids`` (signalled to stop) to end, then SIGKILL them."""
    deadline = time.monotonic() + WORKER_STOP_S
    while pids:
        for pid in list(pids):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                pids.discard(pid)
        if pids and time.monotonic() > deadline:
            for pid in pids:
                _signal(pid, signal.SIGKILL)
            deadline = float("inf")
        if pids:
            time.sleep(0.05)


def _signal(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # it ended already
        os.kill(pid, sig)
