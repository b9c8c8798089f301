"""Shared pieces of the attack suite (tests/test_attack_*.py); no tests of its own.

- ``Dockerd``: a throwaway Docker engine with its own data root, exec root,
  pid file, socket and containerd namespace, no bridge and no iptables, that a
  test may SIGKILL and restart without touching the engine other tests use.
- ``Postgres``: a throwaway PostgreSQL server (initdb as the postgres user in a
  private folder, on a private port) that a test may restart.
- ``Cluster``: a coordinator, executors and the CLI, each its own process.
- Canary specs: steps that try every way to print a secret; ``LocalCanary``, a
  local run's folders and environment, and the scan of all it left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from runner.redact.encodings import forms_of

RUNNER = str(Path(sys.executable).with_name("runner"))
TEST_IMAGE = "runner-test/busybox:latest"
RUN_LABEL = "org.runner.run-id"
REQUIRE_SERVICES = os.environ.get("RUNNER_TEST_REQUIRE_SERVICES") == "1"


def unavailable(what: str, why: str) -> None:
    """Skip, or fail under `make test` (where every service must be there)."""
    message = f"{what} is not available ({why})"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line mentions ``text`` (a private path of ours)."""
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _unmount_under(root: Path) -> None:
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            target = line.split()[1].replace("\\040", " ")
            if target == str(root) or target.startswith(f"{root}/"):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def remove_cgroups(name: str) -> None:
    """Remove the (empty) cgroups a private engine made under its cgroup parent ``name``."""
    base = Path("/sys/fs/cgroup")
    for top in [base / name, *base.glob(f"*/{name}")]:
        if not top.is_dir():
            continue
        for folder, _, _ in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(folder)


# A throwaway Docker engine -------------------------------------------------------------------


class Dockerd:
    """A private dockerd (root only). ``host`` is its DOCKER_HOST."""

    def __init__(self) -> None:
        if os.geteuid() != 0 or shutil.which("dockerd") is None:
            unavailable("a private dockerd", "needs root and the dockerd binary")
        # A short path: a unix socket's path must fit in 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="atk-dockerd-", dir="/tmp"))
        self.sock = self.root / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.log = self.root / "dockerd.log"
        # containerd's namespaces take letters and digits (mkdtemp's names also hold _ and -).
        self.ident = "atk-" + re.sub(r"[^A-Za-z0-9]", "x", self.root.name[-8:])
        self.proc: subprocess.Popen[bytes] | None = None
        self.holder: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        r = self.root
        config = r / "daemon.json"
        if not config.exists():
            config.write_text("{}\n")
        # Its own network namespace: an engine started with --bridge=none deletes the
        # host's docker0 bridge (moby removes the default bridge it does not manage),
        # which would cut the shared engine's containers off. The namespace outlives a
        # killed engine, so the restarted one still reaches the old containers' shims
        # (their sockets are abstract, so per network namespace).
        if self.holder is None:
            self.holder = subprocess.Popen(
                ["unshare", "--net", "--", "sleep", "infinity"], stdin=subprocess.DEVNULL
            )
            mine = os.readlink("/proc/self/ns/net")
            wait_for(
                lambda: os.readlink(f"/proc/{self.holder.pid}/ns/net") != mine,  # type: ignore[union-attr]
                timeout=10,
                what="a private network namespace",
            )
        return [
            "nsenter",
            f"--net=/proc/{self.holder.pid}/ns/net",
            "--",
            "dockerd",
            f"--config-file={config}",
            f"--data-root={r / 'data'}",
            f"--exec-root={r / 'exec'}",
            f"--pidfile={r / 'dockerd.pid'}",
            f"-H={self.host}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--storage-driver=vfs",
            f"--containerd-namespace={self.ident}",
            f"--containerd-plugins-namespace={self.ident}-plugins",
            f"--cgroup-parent=/{self.ident}",
        ]

    def start(self) -> None:
        # A killed engine leaves containerd's pid file behind; if that pid is gone (or a
        # zombie nobody reaped), a new engine would wait for it forever.
        stale = self.root / "exec" / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            if not _running(int(stale.read_text().strip())):
                stale.unlink()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args(), stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        wait_for(self.answers, timeout=60, what="the private dockerd", every=0.2)

    def answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the private dockerd exited: {self.log.read_text()[-2000:]}")
        proc = subprocess.run(
            ["docker", "-H", self.host, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    def docker(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["docker", "-H", self.host, *args], capture_output=True, text=True, check=False
        )
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def load_image(self, image: str = TEST_IMAGE) -> None:
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run(
            ["docker", "-H", self.host, "load"],
            stdin=save.stdout,
            capture_output=True,
            check=False,
        )
        assert save.stdout is not None
        save.stdout.close()
        save.wait(60)
        assert load.returncode == 0, load.stderr

    def kill(self) -> None:
        """SIGKILL the engine, as a crash would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def containers(self, label: str = RUN_LABEL) -> list[str]:
        out = self.docker("ps", "-aq", "--filter", f"label={label}")
        return out.split()

    def close(self) -> None:
        try:
            if self.proc is None or self.proc.poll() is not None:
                with contextlib.suppress(AssertionError):
                    self.start()
            if self.proc is not None and self.proc.poll() is None:
                ids = self.docker("ps", "-aq", check=False).split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False)
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            # Whatever outlived the engine (a shim) was started by it, for us.
            for pid in pids_mentioning(str(self.root)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if self.holder is not None:
                self.holder.kill()
                self.holder.wait(10)
            _unmount_under(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
            remove_cgroups(self.ident)


@contextlib.contextmanager
def private_dockerd() -> Iterator[Dockerd]:
    engine = Dockerd()
    try:
        engine.start()
        engine.load_image()
        yield engine
    finally:
        engine.close()


# A throwaway PostgreSQL ----------------------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts)
    return found[-1].parent if found else None


class Postgres:
    """A private PostgreSQL server that tests may stop and restart."""

    def __init__(self) -> None:
        pgbin = _pg_bin()
        if pgbin is None:
            unavailable("PostgreSQL binaries", "scripts/with-postgres.sh installs them")
            raise AssertionError("unreachable")
        self.bin = pgbin
        self.root = Path(tempfile.mkdtemp(prefix="atk-pg-", dir="/tmp"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")

    def _as_pg(self, *args: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *args], capture_output=True, text=True, check=False)

    def init(self) -> None:
        proc = self._as_pg(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"
        )
        assert proc.returncode == 0, proc.stderr

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        proc = self._as_pg(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-o",
            options,
            "start",
        )
        assert proc.returncode == 0, proc.stderr + proc.stdout

    def stop(self, mode: str = "fast") -> None:
        self._as_pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def dump(self, database: str) -> bytes:
        proc = subprocess.run(
            [str(self.bin / "pg_dump"), "--no-owner", self.url(database)],
            capture_output=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[Postgres]:
    server = Postgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.close()


# Leak scanning -------------------------------------------------------------------------------


def leak_forms(values: Iterable[str]) -> dict[bytes, str]:
    """Each value, each registered encoding of it, and its shell-variable spellings."""
    found: dict[bytes, str] = {}
    for value in values:
        label = value[:4] + "…"
        for form in forms_of(value):
            found[form] = label
        found[value.encode()] = label
    return found


_AUTOMATA: dict[int, tuple[Mapping[bytes, str], Any, list[str]]] = {}


def hits(data: bytes, forms: Mapping[bytes, str]) -> list[str]:
    """The labels of the forms found in ``data`` (one Aho-Corasick pass)."""
    import ahocorasick_rs

    cached = _AUTOMATA.get(id(forms))
    if cached is None or cached[0] is not forms:
        patterns = list(forms)
        automaton = ahocorasick_rs.BytesAhoCorasick(patterns)
        cached = (forms, automaton, [forms[p] for p in patterns])
        _AUTOMATA[id(forms)] = cached
    _, automaton, labels = cached
    found = automaton.find_matches_as_indexes(bytes(data), overlapping=True)
    return sorted({labels[index] for index, _, _ in found})


def scan_paths(
    paths: Iterable[Path], forms: Mapping[bytes, str], *, skip: Callable[[Path], bool] | None = None
) -> list[str]:
    """``path: label`` for every file under ``paths`` holding a form (``skip`` excepted)."""
    found: list[str] = []
    for base in paths:
        if not base.exists():
            continue
        files = [base] if base.is_file() else _files_under(base)
        if skip is not None:
            files = [f for f in files if not skip(f)]
        for file in files:
            try:
                data = file.read_bytes()
            except OSError:
                continue
            found += [f"{file}: {label}" for label in hits(data, forms)]
    return found


def _files_under(base: Path) -> list[Path]:
    """Every file below ``base``; folders removed while it walks (a run cleaning up) are skipped."""
    files: list[Path] = []
    for folder, _, names in os.walk(base, onerror=lambda exc: None):
        files += [p for p in (Path(folder) / n for n in names) if p.is_file()]
    return files


def proc_cmdlines() -> bytes:
    out = bytearray()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                out += (entry / "cmdline").read_bytes() + b"\n"
    return bytes(out)


def runner_temp_leftovers(tmp: Path) -> list[Path]:
    """What runner's own temporary folders left in ``tmp``."""
    return sorted(
        p for pattern in ("runner-ws-*", "runner-step-*", "runner-job-*") for p in tmp.glob(pattern)
    )


# Processes -----------------------------------------------------------------------------------


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "DOCKER_"))}
    env.update(PYTHONUNBUFFERED="1", RUNNER_READY_NETWORKS="0")  # see conftest.py
    env.update(extra)
    return env


def run_cli(
    args: list[str],
    env: Mapping[str, str],
    *,
    input: str | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNNER, *args],
        env=dict(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{")]


class Cluster:
    """A coordinator and executors, each a separate `runner` process, logging to files."""

    def __init__(self, root: Path, repos: Path, **settings: str) -> None:
        self.root = root
        self.repos = repos
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = root / "coordinator-home"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.exec_tmp = root / "executor-tmp"
        self.exec_tmp.mkdir(exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[IO[bytes]] = []
        defaults = {
            "RUNNER_POLL_INTERVAL": "0.2",
            "RUNNER_HEARTBEAT_INTERVAL": "0.5",
            "RUNNER_STALL_LIMIT": "3",
            "RUNNER_USER": "operator",
        }
        defaults.update(settings)
        self.env = base_env(**defaults)
        self.coord_env = {**self.env, "RUNNER_HOME": str(self.home)}
        self.tokens: dict[str, Path] = {}

    # The operator's CLI, on the coordinator's state
    def cli(self, *args: str, stdin: str | None = None, ok: bool = True) -> str:
        proc = run_cli(list(args), self.coord_env, input=stdin, timeout=60)
        with (self.logs / "cli.log").open("a") as fh:
            fh.write(proc.stderr)
        if ok:
            assert proc.returncode == 0, (args, proc.stderr)
        return proc.stdout

    def token(self, kind: str, owner: str, file_name: str | None = None) -> Path:
        path = self.root / (file_name or f"{owner}.tok")
        out = json.loads(self.cli("token", "create", f"--{kind}", owner, "--json"))
        path.write_text(out["token"] + "\n")
        path.chmod(0o600)
        self.tokens[path.stem] = path
        return path

    def remote(self, *args: str, who: str = "alice") -> subprocess.CompletedProcess[str]:
        proc = run_cli(
            [*args, "--url", self.url, "--token-file", str(self.tokens[who])],
            self.env,
            timeout=60,
        )
        with (self.logs / "remote.log").open("a") as fh:
            fh.write(proc.stdout + proc.stderr)
        return proc

    def spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        self._files.append(log)
        proc = subprocess.Popen(
            [RUNNER, *args],
            env=dict(env),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def start_server(self, name: str = "server") -> None:
        self.spawn(
            name,
            ["server", "--listen", f"127.0.0.1:{self.port}", "--repos-root", str(self.repos)],
            self.coord_env,
        )
        wait_for(self.answers, timeout=30, what="the coordinator", every=0.2)

    def answers(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/openapi.json", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start_executor(
        self, name: str, *extra: str, who: str = "exec", **env: str
    ) -> subprocess.Popen[bytes]:
        home = self.root / f"{name}-home"
        home.mkdir(exist_ok=True)
        full = {**self.env, "RUNNER_HOME": str(home), "TMPDIR": str(self.exec_tmp), **env}
        return self.spawn(
            name,
            [
                "executor",
                "--url",
                self.url,
                "--token-file",
                str(self.tokens[who]),
                "--name",
                name,
                *extra,
            ],
            full,
        )

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def api(self, who: str = "alice") -> Any:
        from runner.queue.client import CoordinatorClient

        value = self.tokens[who].read_text().strip()
        return CoordinatorClient(url=self.url, token=value, timeout_s=10)

    def jobs(self, who: str = "alice") -> dict[str, dict[str, Any]]:
        with self.api(who) as api:
            return {j["id"]: j for j in api.jobs_list()}

    def job_lines(self, job_id: str, who: str = "alice") -> list[str]:
        lines: list[str] = []
        with self.api(who) as api:
            after = 0
            while True:
                page = api.job_logs(job_id, after=after)
                if not page["chunks"]:
                    break
                lines += [ln for ch in page["chunks"] for ln in ch["text"].splitlines()]
                after = page["next"]
        return lines

    def events(self, job_id: str, who: str = "alice") -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.job_lines(job_id, who) if x.strip()]

    def wait_jobs(
        self, ids: Iterable[str], *, states: tuple[str, ...], timeout: float, who: str = "alice"
    ) -> dict[str, dict[str, Any]]:
        wanted = list(ids)
        seen: dict[str, dict[str, Any]] = {}

        def done() -> bool:
            nonlocal seen
            try:
                seen = self.jobs(who)
            except Exception:  # the coordinator may be restarting
                return False
            return all(seen.get(j, {}).get("state") in states for j in wanted)

        wait_for(done, timeout=timeout, what=f"jobs {wanted} to reach {states}", every=0.3)
        return seen

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name, signal.SIGKILL, timeout=10)
        for fh in self._files:
            fh.close()


# Canary specs --------------------------------------------------------------------------------

# Characters that URL encoding, JSON, HTML and the shell each treat specially.
CANARY = 'Cn4ry/s3cr+t=v&l u%e"q\\z<>'
CANARY_TAIL = """\
changesetTemplate:
  title: canary {title}
  body: |
    ${{{{ outputs.leak }}}} ${{{{ outputs.leak_err }}}} ${{{{ steps.modified_files }}}}
  branch: canary/{title}
  commit:
    message: canary ${{{{ outputs.leak }}}}
"""


def canary_script(var: str) -> str:
    """A shell script printing ``$var`` every way we can think of (busybox sh)."""
    v = f'"${var}"'
    return "\n".join(
        [
            f"echo plain {v}",
            f"echo stderr {v} >&2",
            # base64 at each alignment, wrapped and not
            f"printf '%s' {v} | base64",
            f"printf 'x%s' {v} | base64",
            f"printf 'xy%s' {v} | base64",
            f"printf '%s' {v} | base64 -w 0; echo",
            # hex, both cases
            f"printf '%s' {v} | od -An -tx1 -v | tr -d ' \\n'; echo",
            f"printf '%s' {v} | hexdump -v -e '/1 \"%02X\"'; echo",
            # URL encoding, as a shell would do it
            f's={v}; while [ -n "$s" ]; do c=${{s%"${{s#?}}"}}; s=${{s#?}}; '
            "case $c in [a-zA-Z0-9.~_-]) printf '%s' \"$c\";; "
            "*) printf '%%%02X' \"'$c\";; esac; done; echo",
            # JSON, escaped
            f'printf \'{{"k": "%s"}}\\n\' "$(printf \'%s\' {v} | sed \'s/\\\\/\\\\\\\\/g; s/"/\\\\"/g\')"',
            # split across writes separated by sleeps, and one byte at a time
            f"printf '%s' {v} | head -c 5; sleep 0.3; printf '%s' {v} | tail -c +6; echo",
            f"printf '%s\\n' {v} | fold -w 1 | while IFS= read -r c; do printf '%s' \"$c\"; "
            "sleep 0.01; done; echo",
            f"printf '%s\\r\\n' {v}",
        ]
    )


def canary_spec(
    *,
    title: str,
    repositories: Iterable[str],
    image: str = TEST_IMAGE,
    variables: Sequence[str] = ("CANARY",),
    fail: bool = False,
    write_file: bool = False,
) -> str:
    """A spec whose steps print each variable every way, and pass it on through outputs
    into the next step's script and the changeset template.

    ``fail``: the last step prints the first variable in its error and exits 1.
    ``write_file``: a step writes it into a file of the repository (the diff check).
    """
    on = "".join(f"  - repository: {r}\n" for r in repositories)
    env = "    env:\n" + "".join(f"      - {v}\n" for v in variables)
    first = variables[0]

    def block(text: str, indent: int = 6) -> str:
        pad = " " * indent
        return "".join(f"{pad}{line}\n" for line in text.splitlines())

    second = "".join(f'echo "second step: ${{{{ outputs.leak }}}} ${v}"\n' for v in variables)
    second += "echo changed > changed.txt\n"
    if write_file:
        second += f'printf "%s" "${first}" > leaked.txt\n'
    if fail:
        second += f'echo "fatal: the token ${first} was refused" >&2\nexit 1\n'
    steps = (
        "  - run: |\n"
        + block("\n".join(canary_script(v) for v in variables))
        + f"    container: {image}\n"
        + env
        + "    outputs:\n"
        + "      leak:\n"
        + "        value: ${{ step.stdout }}\n"
        + "      leak_err:\n"
        + "        value: ${{ step.stderr }}\n"
        + "  - run: |\n"
        + block(second)
        + f"    container: {image}\n"
        + env
    )
    return (
        f"name: canary-{title}\ndescription: tries to print a secret\non:\n{on}steps:\n"
        + steps
        + CANARY_TAIL.format(title=title)
    )


def step_written(path: Path) -> bool:
    """A file a step itself wrote into its workspace (the diff check's business)."""
    parts = path.parts
    return any(
        part.startswith("runner-ws-") and i + 1 < len(parts) and parts[i + 1] == "repo"
        for i, part in enumerate(parts)
    )


class Watcher:
    """While a run goes on, look at what others could see of its containers.

    Every ``interval`` seconds: ``docker inspect`` of each container carrying
    the run label, the files of its folder in Docker's root, and every
    process's command line. Keeps only the hits (and a count of what it saw).
    """

    def __init__(
        self,
        forms: Mapping[bytes, str],
        *,
        docker_host: str | None = None,
        extra_paths: Iterable[Path] = (),
        interval: float = 0.15,
    ) -> None:
        import threading

        import docker

        self.forms = forms
        self.client = (
            docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
        )
        self.root = Path(self.client.info()["DockerRootDir"])
        self.extra_paths = list(extra_paths)
        self.interval = interval
        self.found: set[str] = set()
        self.containers_seen: set[str] = set()
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="watcher", daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.look()
            self._stop.wait(self.interval)

    def look(self) -> None:
        import docker.errors

        self.rounds += 1
        try:
            listed = self.client.api.containers(all=True, filters={"label": RUN_LABEL})
        except docker.errors.DockerException:
            return
        for item in listed:
            cid = item["Id"]
            try:
                inspect = self.client.api.inspect_container(cid)
            except docker.errors.DockerException:
                continue
            self.containers_seen.add(cid)
            for label in hits(json.dumps(inspect).encode(), self.forms):
                self.found.add(f"docker inspect {cid[:12]}: {label}")
            self.found.update(scan_paths([self.root / "containers" / cid], self.forms))
        for label in hits(proc_cmdlines(), self.forms):
            self.found.add(f"/proc/*/cmdline: {label}")
        self.found.update(scan_paths(self.extra_paths, self.forms, skip=step_written))


@dataclass(frozen=True)
class LocalCanary:
    """A canary's local runs: RUNNER_HOME, TMPDIR and --out under one folder, run as alice."""

    home: Path
    tmp: Path
    out: Path
    env: dict[str, str]

    @classmethod
    def make(cls, root: Path) -> LocalCanary:
        home, tmp, out = root / "home", root / "tmp", root / "out"
        tmp.mkdir(parents=True)
        env = base_env(RUNNER_HOME=str(home), TMPDIR=str(tmp), RUNNER_USER="alice")
        return cls(home, tmp, out, env)

    def set_secret(self, name: str, value: str, *flags: str) -> None:
        proc = run_cli(["secret", "set", name, *flags], self.env, input=value)
        assert proc.returncode == 0, proc.stderr

    def assert_no_leaks(
        self, printed: bytes, watcher: Watcher, forms: Mapping[bytes, str], *also: Path
    ) -> None:
        """Zero hits: in what runner printed, what the watcher saw while steps ran, every
        file under --out, RUNNER_HOME, TMPDIR and ``also``, and every process's command
        line; and no temporary folder of runner's left behind."""
        assert hits(printed, forms) == []
        assert sorted(watcher.found) == [], sorted(watcher.found)
        assert scan_paths([self.out, self.home, self.tmp, *also], forms) == []
        assert hits(proc_cmdlines(), forms) == []
        assert runner_temp_leftovers(self.tmp) == []
