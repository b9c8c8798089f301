"""``ContainerRuntime`` over the Docker engine: the only module that imports ``docker``.

One step, one container, one round of engine calls: create, attach, start,
wait, remove. How secrets get in without being seen:

* The container's command is a fixed wrapper (below). It reads shell
  ``export`` lines from its stdin, evaluates them, and then ``exec``s the step
  script with stdin from ``/dev/null``.
* runner attaches to the container before starting it, writes those lines into
  the attach connection and half-closes it, so the wrapper's ``cat`` sees EOF.
  The values travel over the engine's socket and through pipes only: never in
  ``Config`` (so not in ``docker inspect``), argv, labels or any file.
* The script is written to a per-step host folder and bind-mounted read-only;
  it holds template output but no secret value.
* File secrets come in the same payload: the wrapper writes each onto a
  tmpfs of the container's own (``SECRET_FILES_DIR``), never the host's disk.
* Registry credentials (``DOCKER_AUTH_CONFIG``) go to the engine's pull in
  its request header only.

Every container also gets its step's sandbox: the isolation level's runtime
and the hardening, as ``runner.execute.docker_sandbox`` spells them.

The engine must share the host's filesystem (bind mounts) and be reached over
a unix socket or plain TCP: half-closing a TLS connection would end it.

What a step's exit code can also mean: 125 if the wrapper got no complete
environment (it then refuses to run the step), 127 if the image has no
``/bin/sh`` (docker-init says so on stderr), 137 if killed.

The attach connection is not a TTY, so stdout and stderr come multiplexed in
frames with an 8-byte header; ``_Demux`` splits them as bytes arrive so output
streams through without being held back until a frame or the step completes.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import shutil
import socket
import ssl
import struct
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import docker
import docker.errors
import requests.exceptions
import structlog
from docker.types import IPAMConfig, IPAMPool, LogConfig
from docker.types import Mount as DockerMount
from docker.utils import kwargs_from_env

from runner.clock import SYSTEM_CLOCK, Clock
from runner.config import DEFAULT_NETWORK_POOL
from runner.errors import ConfigError, ContainerRuntimeError, ExecutionError, ImageNotFoundError
from runner.execute.docker_exits import Exits
from runner.execute.docker_sandbox import (
    RUNTIMES,
    check_runtimes,
    hand_over_workspace,
    hardening_options,
    isolation_options,
    secret_files_tmpfs,
)
from runner.execute.reaper import Reaper
from runner.execute.registry import Credentials, credentials_for, registry_of
from runner.execute.runtime import (
    HOLDER_LABEL,
    KILLED_EXIT_CODE,
    NETWORK_LABEL,
    NETWORK_PREFIX,
    NetworkInfo,
    OutputCallback,
    OutputStream,
    PreparedStep,
    StepContainer,
    StepExit,
    creation,
    missing_image,
    payload_env,
    secret_file_path,
)
from runner.execute.subnets import SubnetBook
from runner.sandbox import Isolation
from runner.secrets.value import Secret

log = structlog.stdlib.get_logger("runner.execute.docker")

# A folder no image is likely to use; the wrapper runs the script from here.
SCRIPT_DIR = "/.runner"
SCRIPT_PATH = f"{SCRIPT_DIR}/step.sh"

# The sentinel is assigned last: if the payload is cut short or does not parse,
# the step must not run without its secrets, so the wrapper refuses with 125.
_SENTINEL = "__runner_env_ok"
WRAPPER = (
    f'eval "$(cat)" && [ "${{{_SENTINEL}-}}" = 1 ] || '
    "{ echo 'runner: the step environment did not arrive' >&2; exit 125; }; "
    f"unset {_SENTINEL}; exec /bin/sh {SCRIPT_PATH} </dev/null"
)
ENTRYPOINT = ["/bin/sh", "-c", WRAPPER]

# A network's holder runs one shell that only waits: a handful of processes and a
# few MiB are room enough, and nothing more is allowed it.
_HOLDER_PIDS = 8
_HOLDER_MEMORY = 16 * 1024 * 1024

# How long a step whose output ended waits for its die event before asking the
# engine's wait endpoint (a step may close its output long before it exits).
_EVENT_WAIT_S = 1.0

_HEADER = struct.Struct(">BxxxL")
_STREAMS: dict[int, OutputStream] = {1: "stdout", 2: "stderr", 3: "stderr"}

_ENGINE_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    OSError,
)
_ENGINE_HINT = (
    "check that the Docker engine is running and healthy (`docker info`); the step can be retried"
)


def shell_quote(value: str) -> str:
    """``value`` as one single-quoted POSIX shell word (everything literal inside)."""
    return "'" + value.replace("'", "'\\''") + "'"


def env_payload(
    secret_env: Mapping[str, Secret], secret_files: Mapping[str, Secret] | None = None
) -> bytes:
    """What the wrapper evaluates: one ``export`` per secret, then the sentinel.

    A file secret is written by the wrapper itself (so as the step's user)
    onto the step's tmpfs, readable by that user alone, and its variable
    exported as the file's path. ``printf`` must be the shell's builtin: a
    ``printf`` program would get the value on its argv.
    """
    lines = [f"export {name}={shell_quote(value.reveal())}\n" for name, value in secret_env.items()]
    if secret_files:
        lines.append(
            'case "$(command -V printf 2>/dev/null)" in *builtin*) ;; '
            "*) echo 'runner: file secrets need a /bin/sh with a printf builtin' >&2; "
            "exit 125;; esac\n"
        )
    for name, value in (secret_files or {}).items():
        path = secret_file_path(name)
        lines.append(
            f"{{ ( umask 0377 && printf '%s' {shell_quote(value.reveal())} > {path} ) && "
            f"export {name}={path}; }} || "
            f"{{ echo 'runner: could not write the secret file {path}' >&2; exit 125; }}\n"
        )
    lines.append(f"{_SENTINEL}=1\n")
    return "".join(lines).encode("utf-8")


class _Demux:
    """Splits Docker's multiplexed attach stream into (stream, bytes) pieces."""

    def __init__(self) -> None:
        self._header = b""
        self._stream: OutputStream | None = None
        self._remaining = 0

    def feed(self, data: bytes) -> Iterator[tuple[OutputStream, bytes]]:
        view = memoryview(data)
        while view:
            if self._remaining == 0:
                need = _HEADER.size - len(self._header)
                self._header += bytes(view[:need])
                view = view[need:]
                if len(self._header) < _HEADER.size:
                    return
                kind, self._remaining = _HEADER.unpack(self._header)
                self._header = b""
                # Frame type 0 would be stdin echo; nothing to show for it.
                self._stream = _STREAMS.get(kind)
                continue
            piece = bytes(view[: self._remaining])
            view = view[len(piece) :]
            self._remaining -= len(piece)
            if self._stream is not None and piece:
                yield self._stream, piece


def _reason(exc: BaseException) -> str:
    # An engine message can only carry what we sent it, and we never send a
    # secret value; still, keep it short and to one line.
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        text = str(exc.explanation)
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _engine_failure(action: str, exc: BaseException) -> NoReturn:
    raise ContainerRuntimeError(
        f"the Docker engine failed to {action}: {_reason(exc)}", hint=_ENGINE_HINT
    ) from exc


@contextlib.contextmanager
def _engine(action: str) -> Iterator[None]:
    try:
        yield
    except _ENGINE_ERRORS as exc:
        _engine_failure(action, exc)


def _single_file(archive: bytes, limit: int) -> bytes | None:
    """The one regular file in a tar archive from ``get_archive``, or None."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = next(iter(tar), None)
        if member is None or not member.isfile() or member.size > limit:
            return None
        extracted = tar.extractfile(member)
        return extracted.read() if extracted is not None else None


class DockerRuntime:
    """Runs steps through one shared low-level docker client.

    The client's connection pool makes it safe to share between worker
    threads; size it (``max_pool_size``) at least to the parallelism, since
    every running step holds one connection for its output.
    """

    def __init__(
        self,
        api: docker.APIClient,
        *,
        scratch_dir: Path | None = None,
        poll_interval_s: float = 0.1,
        pull_timeout_s: float = 600.0,
        clock: Clock = SYSTEM_CLOCK,
        network_pool: str = DEFAULT_NETWORK_POOL,
        runtimes: Mapping[Isolation, str | None] = RUNTIMES,
    ) -> None:
        self._api = api
        self._runtimes = runtimes
        self._network_pool = _pool(network_pool)
        self._subnets = SubnetBook(self._network_pool, NETWORK_PREFIX)
        self._scratch_dir = scratch_dir
        self._poll_interval_s = poll_interval_s
        self._pull_timeout_s = pull_timeout_s
        self._clock = clock
        # Finished containers go in the background; settle() waits for them. Four
        # at once: a wave of -j 4 ends together, and its networks wait for them.
        self._reaper = Reaper(workers=4)
        # Exit codes from the engine's events, ahead of its wait endpoint.
        self._exits = Exits(api)

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str],
        *,
        max_pool_size: int = 32,
        timeout_s: float = 60.0,
        scratch_dir: Path | None = None,
        network_pool: str = DEFAULT_NETWORK_POOL,
    ) -> DockerRuntime:
        """Connect as the docker CLI would with ``DOCKER_HOST``/``DOCKER_TLS_VERIFY``/...

        ``environ`` is passed in by the CLI; nothing here reads the process
        environment itself.
        """
        kwargs: dict[str, Any] = {}
        # kwargs_from_env falls back to the process environment when given an empty mapping.
        if any(key.startswith("DOCKER_") for key in environ):
            kwargs = dict(kwargs_from_env(environment=dict(environ)))
        try:
            api = docker.APIClient(
                version="auto", timeout=int(timeout_s), max_pool_size=max_pool_size, **kwargs
            )
        except _ENGINE_ERRORS as exc:
            raise ContainerRuntimeError(
                f"cannot reach the Docker engine: {_reason(exc)}",
                hint="start Docker, or point DOCKER_HOST at a running engine",
            ) from exc
        return cls(api, scratch_dir=scratch_dir, network_pool=network_pool)

    def close(self) -> None:
        self._reaper.settle()
        self._exits.close()
        self._api.close()

    # -- images --------------------------------------------------------------

    def image_id(self, image: str, auth: Secret | None = None) -> str:
        creds = None if image.startswith("sha256:") else credentials_for(auth, image)
        # With credentials the registry is asked every time (see ContainerRuntime).
        found = None if creds is not None else self._local_image_id(image)
        if found is not None:
            return found
        if image.startswith("sha256:"):
            # An image ID names content that exists only where it was built.
            raise ImageNotFoundError(
                f"image {image} is not present locally",
                hint="build or pull the image again, or name it by repository and tag",
            )
        self._pull(image, creds)
        found = self._local_image_id(image)
        if found is None:
            raise ImageNotFoundError(
                f"image {image} was pulled but is still not present",
                hint=f"check the name and try `docker pull {image}`",
            )
        return found

    def _local_image_id(self, image: str) -> str | None:
        with _engine(f"look up image {image}"):
            try:
                return str(self._api.inspect_image(image)["Id"])  # type: ignore[no-untyped-call]
            except docker.errors.NotFound:
                return None

    def _pull(self, image: str, creds: Credentials | None) -> None:
        # The SDK waits for a pull without any time limit; a registry that
        # never answers must not hang the whole run, so the pull gets a thread
        # that is abandoned (it holds nothing of ours) if it overruns.
        failure: list[str] = []

        def pull() -> None:
            try:
                # Credentials travel in a request header only: never argv or a file.
                auth_config = creds.engine_auth() if creds is not None else None
                messages = self._api.pull(image, stream=True, decode=True, auth_config=auth_config)
                for message in messages:
                    if isinstance(message, dict) and message.get("error"):
                        failure.append(str(message["error"]))
                        return
            except _ENGINE_ERRORS as exc:
                failure.append(_reason(exc))

        worker = threading.Thread(target=pull, name=f"pull {image}", daemon=True)
        worker.start()
        worker.join(self._pull_timeout_s)
        if worker.is_alive():
            failure.append(f"no answer within {self._pull_timeout_s:g}s")
        if failure:
            raise missing_image(
                image, failure[0], registry=registry_of(image), with_auth=creds is not None
            )

    # -- isolation -----------------------------------------------------------

    def check_isolation(self, isolation: Isolation) -> None:
        if self._runtimes[isolation] is None:
            return  # the engine's default runtime: `docker info` (slow) has nothing to tell
        with _engine("list its runtimes"):
            info = self._api.info()
        check_runtimes(isolation, info.get("Runtimes") or {}, self._runtimes)

    def engine_version(self) -> str:
        """The engine's version, as an executor's heartbeat reports it."""
        with _engine("tell its version"):
            return str(self._api.version().get("Version") or "")

    # -- steps ---------------------------------------------------------------

    def run_step(
        self, step: StepContainer, *, on_output: OutputCallback, cancel: threading.Event
    ) -> StepExit:
        early = step.before_start(cancel)
        if early is not None:
            return early
        payload = env_payload(step.secret_env, step.secret_files)
        hand_over_workspace(step)
        with tempfile.TemporaryDirectory(prefix="runner-step-", dir=self._scratch_dir) as tmp:
            script = Path(tmp) / "step.sh"
            script.write_text(step.script, encoding="utf-8")
            # Readable by whatever user the image runs as.
            script.chmod(0o644)
            container_id = self._create(step, script)
            try:
                return self._run(container_id, step, payload, on_output, cancel)
            finally:
                self._remove(container_id)

    def prepare(self, step: StepContainer) -> PreparedStep:
        step.before_start(threading.Event())  # refuses a missing mount source
        made = creation(step)
        scratch = Path(tempfile.mkdtemp(prefix="runner-step-", dir=self._scratch_dir))
        try:
            # Mounted now, written at the step's turn (in place: the mount holds the inode).
            script = scratch / "step.sh"
            script.touch()
            script.chmod(0o644)  # readable by whatever user the image runs as
            container_id = self._create(made, script)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        prepared = _Prepared(self, container_id, scratch, made)
        try:
            # Attached before it starts, as run_step does: attached to a running
            # container, its output would end only once the engine has cleaned up
            # after it (40-170 ms after it exits, on the critical path of its turn).
            prepared.attached = self._attach(container_id)
            with _engine("start the step's container"):
                self._api.start(container_id)
        except BaseException:
            prepared.discard()
            raise
        return prepared

    def settle(self) -> None:
        self._reaper.settle()

    def _remove_later(self, container_id: str, scratch: Path) -> threading.Event:
        def remove() -> None:
            self._remove(container_id)
            shutil.rmtree(scratch, ignore_errors=True)

        return self._reaper.submit(remove)

    def _create(self, step: StepContainer, script: Path) -> str:
        mounts = [
            DockerMount(target=m.target, source=str(m.source), type="bind", read_only=m.read_only)
            for m in step.mounts
        ]
        mounts.append(
            DockerMount(target=SCRIPT_PATH, source=str(script), type="bind", read_only=True)
        )
        mounts += [
            DockerMount(
                target=t.target, source=None, type="tmpfs", tmpfs_size=t.size, tmpfs_mode=t.mode
            )
            for t in secret_files_tmpfs(step)
        ]
        with _engine("create the step's container"):
            host_config = self._api.create_host_config(
                mounts=mounts,
                log_config=LogConfig(type=LogConfig.types.NONE),
                mem_limit=step.memory_bytes,
                nano_cpus=round(step.cpus * 1e9) if step.cpus is not None else None,
                **isolation_options(step, self._runtimes),
                **hardening_options(step),
                **_network_options(step),
            )
            created = self._api.create_container(
                step.image,
                entrypoint=ENTRYPOINT,
                environment=[f"{k}={v}" for k, v in step.env.items()],
                working_dir=step.workdir,
                labels=dict(step.labels),
                # Empty: the image's own user, as Sourcegraph runs steps.
                user=step.sandbox.hardening.user or "",
                stdin_open=True,
                tty=False,
                host_config=host_config,
                # Proxy settings from ~/.docker/config.json would add variables
                # the spec never asked for; the spec's env is the whole env.
                use_config_proxy=False,
            )
        container_id = str(created["Id"])
        self._exits.watch(container_id)  # before it starts: its death cannot be missed
        return container_id

    def _attach(self, container_id: str) -> tuple[Any, socket.socket]:
        with _engine("attach to the step's container"):
            handle = self._api.attach_socket(
                container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
        # Over a unix socket or TCP the SDK hands back a SocketIO wrapper; the
        # half-close and timeouts need the socket underneath.
        raw = handle if isinstance(handle, socket.socket) else getattr(handle, "_sock", None)
        if not isinstance(raw, socket.socket) or isinstance(raw, ssl.SSLSocket):
            handle.close()
            raise ContainerRuntimeError(
                "the Docker connection cannot pass secrets to a container's stdin",
                hint="run runner next to the engine and connect over its unix socket",
            )
        return handle, raw

    def _run(
        self,
        container_id: str,
        step: StepContainer,
        payload: bytes,
        on_output: OutputCallback,
        cancel: threading.Event,
    ) -> StepExit:
        handle, raw = self._attach(container_id)
        try:
            with _engine("start the step's container"):
                self._api.start(container_id)
        except BaseException:
            self._detach(raw, handle)
            raise
        return self._exchange(container_id, handle, raw, step, payload, on_output, cancel)

    def _exchange(
        self,
        container_id: str,
        handle: Any,
        raw: socket.socket,
        step: StepContainer,
        payload: bytes,
        on_output: OutputCallback,
        cancel: threading.Event,
    ) -> StepExit:
        """Send the payload to a started container, stream its output, wait for its exit."""
        try:
            deadline = self._clock.monotonic() + step.timeout_s
            try:
                raw.settimeout(30.0)
                raw.sendall(payload)
                raw.shutdown(socket.SHUT_WR)
            except OSError:
                # The container is already gone or closed its stdin: the
                # wrapper then exits 125 and the output below says why.
                pass
            raw.settimeout(self._poll_interval_s)
            demux = _Demux()
            while True:
                # Close the attachment before killing: a step that keeps printing
                # into an attachment nobody reads holds the engine's kill back.
                if cancel.is_set():
                    self._detach(raw, handle)
                    return self._kill(container_id, canceled=True)
                if self._clock.monotonic() >= deadline:
                    self._detach(raw, handle)
                    return self._kill(container_id, timed_out=True)
                try:
                    data = raw.recv(65536)
                except TimeoutError:
                    continue
                except OSError as exc:
                    _engine_failure("stream the step's output", exc)
                if not data:
                    break
                for stream, chunk in demux.feed(data):
                    on_output(stream, chunk)
        finally:
            self._detach(raw, handle)
        return self._wait(container_id, deadline, cancel)

    @staticmethod
    def _detach(raw: socket.socket, handle: Any) -> None:
        with contextlib.suppress(OSError):
            raw.close()
        with contextlib.suppress(OSError):
            handle.close()

    def _wait(self, container_id: str, deadline: float, cancel: threading.Event) -> StepExit:
        # Its output ended, so it has most likely died: the engine's die event says
        # so before the wait endpoint would (runner.execute.docker_exits).
        for _ in range(max(1, round(_EVENT_WAIT_S / self._poll_interval_s))):
            if cancel.is_set() or self._clock.monotonic() >= deadline:
                break
            code = self._exits.code(container_id, timeout=self._poll_interval_s)
            if code is not None:
                return self._exit_from(container_id, {"StatusCode": code})
            if not self._exits.following:
                break
        # The output ends when the step closes stdout and stderr, which it may
        # do long before it exits: keep honouring the timeout and cancel.
        while True:
            if cancel.is_set():
                return self._kill(container_id, canceled=True)
            if self._clock.monotonic() >= deadline:
                return self._kill(container_id, timed_out=True)
            with _engine("wait for the step's container"):
                try:
                    result = self._api.wait(container_id, timeout=1)
                except requests.exceptions.ReadTimeout:
                    continue
            return self._exit_from(container_id, result)

    def _exit_from(self, container_id: str, result: Mapping[str, Any]) -> StepExit:
        error = result.get("Error")
        if error and error.get("Message"):
            raise ContainerRuntimeError(
                f"the Docker engine failed to wait for the step's container: {error['Message']}",
                hint=_ENGINE_HINT,
            )
        code = int(result["StatusCode"])
        oom = False
        if code == KILLED_EXIT_CODE:
            with _engine("inspect the step's container"):
                oom = bool(self._api.inspect_container(container_id)["State"].get("OOMKilled"))
        return StepExit(exit_code=code, oom_killed=oom)

    def _kill(
        self, container_id: str, *, timed_out: bool = False, canceled: bool = False
    ) -> StepExit:
        with _engine("kill the step's container"):
            try:
                self._api.kill(container_id)
            except docker.errors.APIError as exc:
                # 409: it exited on its own meanwhile, which is fine.
                if exc.status_code != 409:
                    raise
            result = self._api.wait(container_id, timeout=30)
        code = int(result.get("StatusCode", KILLED_EXIT_CODE))
        return StepExit(exit_code=code, timed_out=timed_out, canceled=canceled)

    def _remove(self, container_id: str) -> None:
        self._exits.forget(container_id)
        # The run's label lets the next run or `runner cleanup` sweep it.
        self._force_remove(container_id, "could not remove a step container")

    def _force_remove(self, container_id: str, failed: str) -> None:
        """Kill and remove a container; one gone is fine, an engine failure a warning."""
        try:
            self._api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except _ENGINE_ERRORS as exc:
            log.warning(
                f"{failed}; it will be swept later",
                container=container_id[:12],
                reason=_reason(exc),
            )

    # -- reading an image ----------------------------------------------------

    def image_file(
        self, image: str, paths: Sequence[str], *, labels: Mapping[str, str], limit: int
    ) -> bytes | None:
        # A created, never started container: the archive API reads its layers.
        with _engine(f"read a file of image {image}"):
            created = self._api.create_container(image, command=["true"], labels=dict(labels))
        try:
            for path in paths:
                with _engine(f"read {path} from image {image}"):
                    try:
                        stream, stat = self._api.get_archive(created["Id"], path)
                    except docker.errors.NotFound:
                        continue
                    found = None
                    if int(stat.get("size") or 0) <= limit:
                        found = _single_file(b"".join(stream), limit)
                if found is not None:
                    return found
            return None
        finally:
            with contextlib.suppress(*_ENGINE_ERRORS):
                self._api.remove_container(created["Id"], force=True)

    # -- measuring -----------------------------------------------------------

    def writable_bytes(self, label_key: str, label_value: str) -> int | None:
        # The engine's SizeRw: it sums the apparent sizes of the files in the
        # container's upper layer. Asking the engine rather than walking
        # /var/lib/docker ourselves needs no root and no knowledge of the storage
        # driver; filtered to one container, it costs one walk of that layer.
        with _engine("measure the step container's writable layer"):
            found = self._api.containers(filters={"label": f"{label_key}={label_value}"}, size=True)
        if not found:
            return None
        return sum(int(c.get("SizeRw") or 0) for c in found)

    # -- clean-up ------------------------------------------------------------

    def sweep(self, label_key: str, label_value: str | None = None) -> int:
        label = label_key if label_value is None else f"{label_key}={label_value}"
        with _engine("list leftover containers"):
            leftovers = self._api.containers(all=True, quiet=True, filters={"label": label})
        removed = 0
        for container in leftovers:
            with _engine("remove a leftover container"):
                try:
                    self._api.remove_container(container["Id"], force=True, v=True)
                except docker.errors.NotFound:
                    continue
                except docker.errors.APIError as exc:
                    # 409: another sweep is already removing it.
                    if exc.status_code == 409:
                        continue
                    raise
            removed += 1
        return removed

    # -- job networks --------------------------------------------------------

    def create_network(self, job_id: str, *, internal: bool) -> NetworkInfo:
        # Networks are made concurrently: the subnet comes from this process's own
        # bookkeeping, not an engine listing per network. A subnet another process
        # took meanwhile is refused by the engine ("overlaps"); the book then lists
        # the engine's networks again and the next free subnet is tried.
        relist = False
        while (subnet := self._subnets.reserve(self._subnets_in_use, relist=relist)) is not None:
            try:
                info = self._try_network(job_id, subnet, internal=internal)
            except BaseException:
                self._subnets.release(subnet)
                raise
            if info is not None:
                self._subnets.hold(info.name, subnet)
                return info
            self._subnets.refused(subnet)
            relist = True
        raise ContainerRuntimeError(
            f"no free subnet is left in runner's network pool {self._network_pool}",
            hint="remove leftover job networks with `runner cleanup`, or give "
            "RUNNER_NETWORK_POOL a larger range",
        )

    def _subnets_in_use(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        with _engine("list networks"):
            networks = self._api.networks()
        taken: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for network in networks:
            for config in (network.get("IPAM") or {}).get("Config") or []:
                with contextlib.suppress(ValueError, TypeError):
                    taken.append(ipaddress.ip_network(config.get("Subnet"), strict=False))
        return taken

    def _try_network(
        self, job_id: str, subnet: ipaddress.IPv4Network, *, internal: bool
    ) -> NetworkInfo | None:
        token = uuid.uuid4().hex[:12]
        # A bridge name of our own (at most 15 characters) lets firewall rules name it.
        bridge = f"rnr{token}"
        gateway = str(next(subnet.hosts()))
        name = f"runner-{token}"
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet), gateway=gateway)])
        try:
            self._api.create_network(
                name,
                driver="bridge",
                options={"com.docker.network.bridge.name": bridge},
                ipam=ipam,
                internal=internal,
                labels={NETWORK_LABEL: job_id},
            )
        except docker.errors.APIError as exc:
            if "overlap" in _reason(exc).lower():
                return None  # another run took it meanwhile
            _engine_failure("create the job's network", exc)
        except _ENGINE_ERRORS as exc:
            _engine_failure("create the job's network", exc)
        return NetworkInfo(
            name=name, subnet=str(subnet), gateway=gateway, bridge=bridge, internal=internal
        )

    def remove_network(self, name: str) -> None:
        try:
            try:
                self._api.remove_network(name)
            except docker.errors.NotFound:
                raise
            except docker.errors.APIError:
                # In use: by a holder whose ID was lost (a run killed between starting
                # it and recording it), the holder goes first; else as below.
                if not self._release_holders_of(name):
                    raise
                self._api.remove_network(name)
        except docker.errors.NotFound:
            self._subnets.removed(name)
        except _ENGINE_ERRORS as exc:
            # Its label lets the next run, `runner cleanup` or the executor sweep it.
            log.warning(
                "could not remove a job network; it will be swept later",
                network=name,
                reason=_reason(exc),
            )
        else:
            self._subnets.removed(name)

    def network_jobs(self) -> frozenset[str]:
        with _engine("list job networks"):
            networks = self._api.networks(filters={"label": NETWORK_LABEL})
        return frozenset(
            str(labels[NETWORK_LABEL])
            for network in networks
            if NETWORK_LABEL in (labels := network.get("Labels") or {})
        )

    def sweep_networks(self, job_id: str | None = None) -> int:
        label = NETWORK_LABEL if job_id is None else f"{NETWORK_LABEL}={job_id}"
        with _engine("list leftover network holders"):
            holders = self._api.containers(all=True, quiet=True, filters={"label": label})
        for holder in holders:  # a network with its holder on it cannot go
            self.release_holder(holder["Id"])
        with _engine("list leftover networks"):
            leftovers = self._api.networks(filters={"label": label})
        removed = 0
        for network in leftovers:
            try:
                self._api.remove_network(network["Id"])
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                # In use by a container not yet swept, or removed by another sweep.
                log.info(
                    "left a job network in place", network=network.get("Name"), reason=_reason(exc)
                )
                continue
            except _ENGINE_ERRORS as exc:
                _engine_failure("remove a leftover network", exc)
            self._subnets.removed(str(network.get("Name")))
            removed += 1
        return removed

    def hold_network(
        self, net: NetworkInfo, *, job_id: str, image: str, extra_hosts: Mapping[str, str]
    ) -> str:
        host_config = self._api.create_host_config(
            network_mode=net.name,
            extra_hosts=dict(extra_hosts) or None,
            log_config=LogConfig(type=LogConfig.types.NONE),
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            pids_limit=_HOLDER_PIDS,
            mem_limit=_HOLDER_MEMORY,
        )

        def create() -> str:
            created = self._api.create_container(
                image,
                # sh reading a stdin left open and never written: it waits, doing nothing.
                entrypoint=["/bin/sh", "-s"],
                command=[],
                user="65534:65534",
                stdin_open=True,
                tty=False,
                labels={NETWORK_LABEL: job_id, HOLDER_LABEL: net.name},
                host_config=host_config,
                use_config_proxy=False,
                # Named after its network, so `docker ps` says what it is.
                name=f"{net.name}-holder",
            )
            return str(created["Id"])

        with _engine("start the job network's holder"):
            try:
                holder = create()
            except docker.errors.APIError as exc:
                # One of a run killed before it recorded it: the network is ours now.
                if exc.status_code != 409 or not self._release_holders_of(net.name):
                    raise
                holder = create()
        try:
            with _engine("start the job network's holder"):
                self._api.start(holder)
                # Frozen at once, for good: its namespace stays for steps to join, and the
                # image's shell runs no longer than this moment, on a fenced network.
                self._api.pause(holder)
        except BaseException:
            self.release_holder(holder)
            raise
        return holder

    def release_holder(self, holder: str) -> None:
        # Its network's label is on it: the sweep of the job's networks removes it.
        self._force_remove(holder, "could not remove a job network's holder")

    def _release_holders_of(self, network: str) -> int:
        try:
            found = self._api.containers(
                all=True, quiet=True, filters={"label": f"{HOLDER_LABEL}={network}"}
            )
        except _ENGINE_ERRORS:
            return 0
        for holder in found:
            self.release_holder(holder["Id"])
        return len(found)

    def holder_alive(self, holder: str) -> bool:
        try:
            state = self._api.inspect_container(holder).get("State") or {}
        except _ENGINE_ERRORS:  # not found among them
            return False
        return bool(state.get("Running"))  # paused, as it is kept


class _Prepared:
    """A started container whose wrapper waits on stdin for its step's payload.

    The container is made from the step's ``creation`` alone; at the step's
    turn the script is written into its (already mounted) file and the
    environment, rendered then, travels in the payload with the secrets.
    """

    def __init__(
        self, runtime: DockerRuntime, container_id: str, scratch: Path, made: StepContainer
    ) -> None:
        self._runtime = runtime
        self._id = container_id
        self._scratch = scratch
        self._made = made
        self._used = False
        self._removed: threading.Event | None = None
        # Its attach connection, made before it started; the payload goes there at its turn.
        self.attached: tuple[Any, socket.socket] | None = None

    def run(
        self, step: StepContainer, *, on_output: OutputCallback, cancel: threading.Event
    ) -> StepExit:
        if self._used:
            raise ExecutionError(
                "a prepared step container runs one step only",
                hint="prepare a new container for each step",
            )
        self._used = True
        runtime = self._runtime
        if creation(step) != self._made:
            self.discard()
            return runtime.run_step(step, on_output=on_output, cancel=cancel)
        try:
            early = step.before_start(cancel)
            if early is not None:
                return early
            hand_over_workspace(step)
            (self._scratch / "step.sh").write_text(step.script, encoding="utf-8")
            if self.attached is None:  # prepare attached it; only discard detaches it
                raise ExecutionError("a prepared step container was discarded before its turn")
            (handle, raw), self.attached = self.attached, None
            payload = _exports(payload_env(step)) + env_payload(step.secret_env, step.secret_files)
            # A container that ended before its payload (an image without /bin/sh, say)
            # refuses it; what it printed waits in the connection and is shown as its output.
            return runtime._exchange(self._id, handle, raw, step, payload, on_output, cancel)
        finally:
            self.discard()

    def discard(self) -> None:
        self._used = True
        if self.attached is not None:
            (handle, raw), self.attached = self.attached, None
            self._runtime._detach(raw, handle)
        if self._removed is None:
            self._removed = self._runtime._remove_later(self._id, self._scratch)

    def wait_removed(self) -> None:
        if self._removed is not None:
            self._removed.wait()


def _exports(env: Mapping[str, str]) -> bytes:
    """Ordinary variables as the wrapper's export lines (the sentinel comes after them)."""
    return "".join(f"export {k}={shell_quote(v)}\n" for k, v in env.items()).encode("utf-8")


def _pool(text: str) -> ipaddress.IPv4Network:
    try:
        pool = ipaddress.ip_network(text, strict=False)
    except ValueError:
        pool = None
    if not isinstance(pool, ipaddress.IPv4Network) or pool.prefixlen > NETWORK_PREFIX:
        raise ConfigError(
            f"the network pool {text!r} is not an IPv4 range of /{NETWORK_PREFIX} or larger",
            hint="set RUNNER_NETWORK_POOL to a range such as 10.213.0.0/16",
        )
    return pool


def _network_options(step: StepContainer) -> dict[str, Any]:
    """The host config's network part: the job's network (or none) and /etc/hosts entries."""
    options: dict[str, Any] = {}
    if step.sandbox.network is not None:
        options["network_mode"] = step.sandbox.network
    if step.sandbox.extra_hosts:
        options["extra_hosts"] = dict(step.sandbox.extra_hosts)
    return options
