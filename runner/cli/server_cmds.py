"""`runner server`, `runner executor`, `runner token`, `runner submit`, `runner jobs`.

The coordinator and `runner token` work on the local state (``RUNNER_HOME`` /
``RUNNER_DATABASE_URL``); executors and the user commands only talk to a
coordinator with ``--url`` and ``--token-file``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from runner.cli._app import app, cli, common_options, table
from runner.cli._limits import JobLimits, limit_options
from runner.cli._network import job_networks, network_options
from runner.cli._options import Remote, remote_flags
from runner.cli._sandbox import Confinement, isolation_options, run_limits, sandbox_policy
from runner.egress import NetworkChoice
from runner.errors import RunnerError, UsageError
from runner.sandbox.tighten import describe

F = TypeVar("F", bound=Callable[..., Any])
TERMINAL = ("completed", "failed", "canceled")


def _echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


# runner server --------------------------------------------------------------------------------


@cli.command("server")
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    help="HOST:PORT to listen on. A non-loopback address needs TLS (or --insecure).",
)
@click.option(
    "--repos-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of git repositories that specs run on (executors clone file://DIR/NAME).",
)
@click.option(
    "--clone-url-template",
    help="URL executors clone from, with {repository} for the name (instead of file://).",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="PEM cert.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="PEM key.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP on a non-loopback address.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    envvar="RUNNER_SERVER_WORKERS",
    help="Server processes on the one listening socket, each a coordinator replica "
    "(PostgreSQL only; default there: the number of CPUs; SQLite: 1).  "
    "[env: RUNNER_SERVER_WORKERS]",
)
@common_options
def server_cmd(
    listen: str,
    repos_root: Path | None,
    clone_url_template: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    insecure: bool,
    workers: int | None,
) -> int:
    """Run the coordinator: the job queue, the secrets API and the executor API.

    State (jobs, tokens, secrets) lives where the CLI keeps it: RUNNER_HOME or
    RUNNER_DATABASE_URL, with the master key of RUNNER_MASTER_KEY_FILE. Secrets
    are decrypted only when an executor claims a job that uses them.
    """
    from runner.queue.server import ServeOptions, check_options, parse_listen, serve, serve_workers
    from runner.secrets import open_store

    settings = app().settings
    host, port = parse_listen(listen)
    options = ServeOptions(
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        insecure=insecure,
        reset_interval_s=max(0.2, min(settings.poll_interval_s, settings.stall_limit_s / 3)),
    )
    check_options(options)
    if repos_root is not None and not repos_root.is_dir():
        raise click.BadParameter(f"{repos_root} is not a folder", param_hint="--repos-root")
    store = open_store(settings)
    try:
        workers = _server_workers(workers, store.db.dialect)
        # Every migration this runner knows, applied now (once, before any worker starts):
        # /readyz answers ready only then.
        store.db.migrate()
        if workers == 1:
            serve(_coordinator(settings, store, repos_root, clone_url_template), options)
            return 0
    finally:
        store.close()  # (with workers: each opens its own connections, none survives a fork)

    def worker(sock: socket.socket) -> None:
        from runner.metrics import use_multiprocess_values

        use_multiprocess_values(metrics_dir)
        with open_store(settings) as mine:
            serve(_coordinator(settings, mine, repos_root, clone_url_template), options, sock)

    with _metrics_dir() as metrics_dir:
        serve_workers(options, workers, worker)
    return 0


def _server_workers(asked: int | None, dialect: str) -> int:
    """How many server processes: ``asked``, or one per CPU on PostgreSQL; one on SQLite."""
    if dialect != "postgresql":
        if asked is not None and asked > 1:
            raise UsageError(
                f"--workers {asked} needs PostgreSQL: a SQLite database has one writer, "
                "and one `runner server` serves it",
                hint="use --workers 1 (the default on SQLite), or put the state in "
                "PostgreSQL (RUNNER_DATABASE_URL=postgresql://...)",
            )
        return 1
    return asked or len(os.sched_getaffinity(0))


METRICS_PREFIX = "runner-server-metrics-"


def _remove_orphan_metrics(base: Path) -> None:
    """Remove what servers killed with SIGKILL left: our directories whose pid is gone."""
    import shutil

    from runner.pids import process_alive

    for path in base.glob(f"{METRICS_PREFIX}*-*"):
        pid = path.name[len(METRICS_PREFIX) :].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.stat().st_uid != os.getuid():
                continue
        except OSError:  # gone meanwhile
            continue
        if not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _metrics_dir() -> Iterator[str]:
    """A directory on a tmpfs where the workers keep their metrics, gone at exit.

    prometheus_client's multiprocess mode finds it in ``PROMETHEUS_MULTIPROC_DIR``,
    which the forked workers inherit; the figures are counts, never secrets, and a
    tmpfs keeps their many small writes off the disk.
    """
    import shutil

    # mkdtemp: a fresh name, mode 0700, so no other user can plant or read figures.
    tmpfs = "/dev/shm"  # noqa: S108  # a tmpfs on Linux, not a shared temporary folder
    base = tmpfs if os.path.isdir(tmpfs) else tempfile.gettempdir()
    _remove_orphan_metrics(Path(base))
    path = tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-", dir=base)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield path
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(path, ignore_errors=True)


def _coordinator(
    settings: Any, store: Any, repos_root: Path | None, clone_url_template: str | None
) -> Any:
    """The coordinator `runner server` (or one of its workers) serves, on ``store``."""
    from runner.queue.fleet import SqlFleetStore
    from runner.queue.policies import SqlPolicyStore
    from runner.queue.server import AUTH_CACHE_S
    from runner.queue.service import Coordinator, CoordinatorSettings
    from runner.queue.store import SqlJobStore
    from runner.queue.tokens import SqlTokenStore
    from runner.users.sql import SqlUserDirectory

    cache, on_change = _cache(settings, store)
    return Coordinator(
        jobs=SqlJobStore(store.db),
        tokens=SqlTokenStore(store.db, cache_s=AUTH_CACHE_S),
        secrets=store,
        users=SqlUserDirectory(store.db),
        settings=CoordinatorSettings(
            repos_root=repos_root.resolve() if repos_root else None,
            clone_url_template=clone_url_template,
            max_attempts=settings.max_attempts,
            max_resets=settings.max_resets,
            stall_limit_s=settings.stall_limit_s,
        ),
        cache=cache,
        on_secret_change=on_change,
        policies=SqlPolicyStore(store.db),
        fleet=SqlFleetStore(store.db),
    )


def _cache(settings: Any, store: Any) -> tuple[Any, Any]:
    try:
        from runner.cache.sql import invalidate_after_secret_change, open_cache
    except ImportError:  # the SQL cache is optional: without it there is no cache
        return None, None
    return (
        open_cache(settings, store),
        lambda before, actor: invalidate_after_secret_change(store, before, actor),
    )


# runner executor ------------------------------------------------------------------------------


def _default_name() -> str:
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:40].strip(".-_") or "executor"
    return f"{host}-{os.getpid()}"


@contextmanager
def staged_signals(executor: Any, name: str) -> Iterator[list[int]]:
    """First SIGTERM/SIGINT: stop claiming; second: cancel running jobs; third: exit now."""
    hits = [0]

    def handler(signum: int, frame: FrameType | None) -> None:
        hits[0] += 1
        what = signal.Signals(signum).name
        if hits[0] == 1:
            sys.stderr.write(
                f"{what}: claiming no more jobs; running jobs finish "
                "(send it again to cancel them)\n"
            )
            executor.stop_claiming()
        elif hits[0] == 2:
            sys.stderr.write(f"{what} again: canceling running jobs\n")
            executor.cancel_running(
                f"the executor {name} was stopped ({what} twice) while the job ran"
            )
        else:
            sys.stderr.write(f"{what} a third time: exiting now\n")
            sys.stderr.flush()
            os._exit(130)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield hits
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@cli.command("executor")
@remote_flags()
@click.option("--name", help="Name in job records and audit events (default: HOST-PID).")
@click.option(
    "--max-jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Jobs at once."
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between claims when idle (default: RUNNER_POLL_INTERVAL or 1).",
)
@click.option("--no-cache", is_flag=True, help="Neither read nor write the coordinator's cache.")
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="LABEL",
    help="A label of this executor (repeatable): it claims only jobs whose required "
    "labels it has every one of.",
)
@click.option(
    "--max-jobs-total",
    type=click.IntRange(min=1),
    help="Exit (status 0) once this many jobs were claimed and have ended, so an "
    "autoscaler can start a fresh executor.",
)
@click.option("--ephemeral", is_flag=True, help="Run one job, then exit: --max-jobs-total 1.")
@click.option(
    "--metrics-listen",
    metavar="HOST:PORT",
    help="Serve this executor's Prometheus metrics on http://HOST:PORT/metrics.",
)
@limit_options("job (a namespace's policy may set less)")
@network_options
@isolation_options
@common_options
def executor_cmd(
    remote: Remote,
    name: str | None,
    max_jobs: int,
    poll_interval: float | None,
    no_cache: bool,
    labels: tuple[str, ...],
    max_jobs_total: int | None,
    ephemeral: bool,
    metrics_listen: str | None,
    job_limits: JobLimits,
    network_choice: NetworkChoice,
    confinement: Confinement,
) -> int:
    """Claim jobs from a coordinator and run them in containers.

    Needs only a token: no database, no master key, no RUNNER_HOME. SIGTERM or
    Ctrl-C once stops claiming and lets running jobs finish; twice cancels
    them; three times exits at once.
    """
    from runner.execute.docker_runtime import DockerRuntime
    from runner.namespaces import check_principal_name
    from runner.queue.executor import Executor, ExecutorSettings
    from runner.queue.routing import parse_labels

    ctx = app()
    settings = ctx.settings
    chosen = check_principal_name(name or _default_name(), "executor name")
    sandbox = sandbox_policy(confinement, job_limits, network_choice)
    client = remote.client()
    runtime = DockerRuntime.from_environ(
        ctx.env, max_pool_size=max(32, max_jobs * 4 + 4), network_pool=settings.network_pool
    )
    # An executor told to use gVisor refuses to start on an engine without it.
    confinement.check(runtime)
    networks = job_networks(settings, runtime, network_choice.broker_ca_file)
    networks.preflight(sandbox)
    executor = Executor(
        api=client,
        runtime=runtime,
        settings=ExecutorSettings(
            name=chosen,
            limits=run_limits(settings),
            max_jobs=max_jobs,
            poll_interval_s=poll_interval or settings.poll_interval_s,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            temp_root=Path(tempfile.gettempdir()),
            use_cache=not no_cache,
            sandbox=sandbox,
            networks=networks,
            labels=parse_labels(labels),
            max_jobs_total=1 if ephemeral else max_jobs_total,
            info=_executor_facts(runtime, settings, sandbox),
        ),
    )
    stop_metrics = _serve_executor_metrics(executor, metrics_listen)
    try:
        with staged_signals(executor, chosen) as hits:
            code = executor.run()
    finally:
        stop_metrics()
        client.close()
        runtime.close()
    if code:
        return code
    return 130 if hits[0] >= 2 else 0


def _executor_facts(runtime: Any, settings: Any, sandbox: Any) -> dict[str, Any]:
    """What this executor's heartbeats tell the coordinator's fleet about it."""
    from runner import __version__
    from runner.sandbox.policy import ISOLATIONS

    levels = []
    for level in ISOLATIONS:
        try:
            runtime.check_isolation(level)
        except RunnerError:
            continue  # the engine lacks its runtime (gVisor's runsc)
        levels.append(level)
    try:
        engine = runtime.engine_version()
    except RunnerError:
        engine = ""
    numbers = {
        "step_timeout_s": settings.step_timeout_s,
        "step_memory_bytes": settings.step_memory_bytes,
        "step_cpus": settings.step_cpus,
        "job_timeout_s": sandbox.job_timeout_s,
        "disk_cap_bytes": sandbox.disk_cap_bytes,
    }
    return {
        "version": __version__,
        "hostname": socket.gethostname(),
        "docker_version": engine,
        "isolations": levels,
        "limits": {k: v for k, v in numbers.items() if v is not None},
    }


def _serve_executor_metrics(executor: Any, listen: str | None) -> Callable[[], None]:
    """Serve the executor's metrics on ``--metrics-listen``; returns how to stop."""
    if listen is None:
        return lambda: None
    from runner.metrics import serve_metrics
    from runner.queue.server import parse_listen

    host, port = parse_listen(listen, flag="--metrics-listen")
    try:
        return serve_metrics(executor.metrics.registry, host, port)
    except OSError as exc:
        raise UsageError(
            f"cannot serve metrics on {listen}: {exc.strerror or exc}",
            hint="pick a free port for --metrics-listen",
        ) from None


# runner token ---------------------------------------------------------------------------------


@cli.group("token")
def token_group() -> None:
    """API tokens for users and executors (kept as SHA-256 hashes only)."""


@token_group.command("create")
@click.option("--user", "user", metavar="NAME", help="A token acting as user NAME.")
@click.option("--executor", "executor", metavar="NAME", help="A token for executor NAME.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def token_create(user: str | None, executor: str | None, as_json: bool) -> None:
    """Create a token and print it once: store it now, it cannot be shown again."""
    from runner.errors import UsageError
    from runner.queue.tokens import SqlTokenStore
    from runner.secrets import open_store
    from runner.users.sql import SqlUserDirectory

    if bool(user) == bool(executor):
        raise UsageError("give exactly one owner", hint="use --user NAME or --executor NAME")
    with open_store(app().settings) as store:
        if user:
            SqlUserDirectory(store.db).add_user(user)
        record, token = SqlTokenStore(store.db).create(
            "user" if user else "executor", user or executor or ""
        )
    if as_json:
        _echo_json({**record.to_json(), "token": token})
    else:
        click.echo(token)
    click.echo(
        f"created {record.kind} token {record.id} for {record.owner}; "
        "it is shown only once, so store it in a file readable only by you",
        err=True,
    )


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def token_list(as_json: bool) -> None:
    """List tokens: ids, owners, last use (never the tokens themselves)."""
    from runner.db import connect
    from runner.queue.tokens import SqlTokenStore

    with connect(app().settings.effective_database_url) as db:
        records = SqlTokenStore(db).list()
    if as_json:
        _echo_json([r.to_json() for r in records])
        return
    if not records:
        click.echo("no tokens", err=True)
        return
    rows = [
        [
            r.id,
            r.kind,
            r.owner,
            _short_time(r.to_json()["created_at"]),
            _short_time(r.to_json()["last_used_at"]) or "never",
            _short_time(r.to_json()["revoked_at"]) or "",
        ]
        for r in records
    ]
    click.echo(table(["ID", "KIND", "OWNER", "CREATED", "LAST USED", "REVOKED"], rows))


def _short_time(text: str | None) -> str:
    return text.split(".")[0] + "Z" if text else ""


@token_group.command("revoke")
@click.argument("token_id", metavar="ID")
@common_options
def token_revoke(token_id: str) -> None:
    """Revoke a token at once (requests with it are refused from now on)."""
    from runner.db import connect
    from runner.queue.tokens import SqlTokenStore

    with connect(app().settings.effective_database_url) as db:
        record = SqlTokenStore(db).revoke(token_id)
    click.echo(f"revoked {record.kind} token {record.id} of {record.owner}")


# runner submit --------------------------------------------------------------------------------


@cli.command("submit")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@remote_flags()
@click.option("--namespace", help="Namespace of the jobs (default: user:YOU).")
@click.option(
    "--require",
    "labels",
    multiple=True,
    metavar="LABEL",
    help="Run only on executors with this label (repeatable: every one is required).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the queued jobs as JSON.")
@common_options
def submit_cmd(
    spec_path: str,
    remote: Remote,
    namespace: str | None,
    labels: tuple[str, ...],
    as_json: bool,
) -> None:
    """Queue SPEC on a coordinator, one job per workspace; print the job ids.

    Uploads the spec and the files its steps mount. The coordinator checks the
    spec, the repositories and that every secret resolves before queuing.
    """
    from runner.errors import SpecError
    from runner.queue.bundle import Bundle
    from runner.queue.routing import parse_labels
    from runner.spec import load_spec

    required = parse_labels(labels, flag="--require")
    try:  # bad mounts are refused at their entries before anything is uploaded
        load_spec(spec_path, check_mounts=True)
    except SpecError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        raise
    bundle = Bundle.from_spec_file(spec_path)
    with remote.client() as client:
        ns = namespace or f"user:{client.whoami()['name']}"
        answer = client.submit(bundle, ns, labels=required)
    if as_json:
        _echo_json(answer)
        return
    for job in answer["jobs"]:
        click.echo(job["id"])
    click.echo(
        f"queued {len(answer['jobs'])} job(s) in {answer['namespace']} "
        f"(submission {answer['submission_id']})",
        err=True,
    )


# runner jobs ----------------------------------------------------------------------------------


@cli.group("jobs")
def jobs_group() -> None:
    """Jobs on a coordinator: list, show, logs, cancel, retry."""


@jobs_group.command("list")
@remote_flags()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def jobs_list(remote: Remote, as_json: bool) -> None:
    """Jobs of the namespaces you may act in, oldest first."""
    with remote.client() as client:
        jobs = client.jobs_list()
    if as_json:
        _echo_json(jobs)
        return
    if not jobs:
        click.echo("no jobs", err=True)
        return
    rows = [
        [
            j["id"],
            f"{j['state']} ({j['waiting']})" if j.get("waiting") else j["state"],
            j["repository"],
            j["path"] or ".",
            j["executor"] or "",
            str(j["resets"]),
            _short_time(j["created_at"]),
            _short_time(j["finished_at"]),
        ]
        for j in jobs
    ]
    click.echo(
        table(
            ["ID", "STATE", "REPOSITORY", "PATH", "EXECUTOR", "RESETS", "CREATED", "FINISHED"],
            rows,
        )
    )


@jobs_group.command("show")
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@remote_flags()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def jobs_show(job_ids: tuple[str, ...], remote: Remote, as_json: bool) -> None:
    """A job's state, error, steps and result (its changeset specs)."""
    with remote.client() as client:
        shown = [client.job_show(job_id) for job_id in job_ids]
    if as_json:
        _echo_json(shown[0] if len(shown) == 1 else shown)
        return
    for job in shown:
        click.echo(_describe_job(job))


def _describe_job(job: Mapping[str, Any]) -> str:
    lines = [
        f"{job['id']}: {job['state']}",
        f"  repository  {job['repository']} ({job['branch']} @ {job['commit'][:12]})",
        f"  path        {job['path'] or '.'}",
        f"  namespace   {job['namespace']} (submitted by {job['submitter']})",
        *([f"  labels      {', '.join(job['labels'])}"] if job.get("labels") else []),
        *([f"  waiting     {job['waiting']}"] if job.get("waiting") else []),
        f"  executor    {job['executor'] or '-'} (attempts {job['attempts']}, "
        f"resets {job['resets']})",
        f"  created     {job['created_at']}",
        f"  finished    {job['finished_at'] or '-'}",
    ]
    if job.get("retry_of"):
        lines.append(f"  retry of    {job['retry_of']}")
    if job.get("error"):
        lines.append(f"  error       {job['error']}")
    for step in job.get("steps") or []:
        code = f" exit {step['exit_code']}" if step["exit_code"] is not None else ""
        lines.append(f"  step {step['step']}      {step['status']}{code}")
    result = job.get("result")
    if result and result.get("sandbox"):
        lines.append(f"  sandbox     {describe(result['sandbox'])}")
    if result:
        lines.append(f"  status      {result.get('status')}")
        for changeset in result.get("changesets", []):
            lines.append(f"  changeset   {changeset.get('headRef')}: {changeset.get('title')}")
    return "\n".join(lines)


def _render_line(line: str, prefix: str) -> str:
    try:
        event = json.loads(line)
    except ValueError:
        return prefix + line
    name = event.get("event", "")
    if name == "step.output":
        return f"{prefix}step {event.get('step')} {event.get('stream')}: {event.get('line')}"
    details = [
        f"{key}={event[key]}"
        for key in (
            *("step", "exit_code", "status", "state", "executor", "attempt", "error"),
            *("secret", "host", "port"),  # step.egress_denied, secret.broker_mismatch
        )
        if event.get(key) is not None
    ]
    return f"{prefix}{name} {' '.join(details)}".rstrip()


@jobs_group.command("logs")
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@remote_flags()
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the jobs end.")
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON lines.")
@common_options
def jobs_logs(
    job_ids: tuple[str, ...],
    remote: Remote,
    follow: bool,
    as_json: bool,
) -> None:
    """A job's log: its events and its steps' output (redacted), page by page."""
    interval = app().settings.poll_interval_s
    cursors = dict.fromkeys(job_ids, 0)
    done: set[str] = set()
    with remote.client() as client:
        while True:
            for job_id in job_ids:
                if job_id in done:
                    continue
                while True:
                    page = client.job_logs(job_id, after=cursors[job_id])
                    prefix = f"{job_id} " if len(job_ids) > 1 else ""
                    for chunk in page["chunks"]:
                        for line in chunk["text"].splitlines():
                            click.echo(line if as_json else _render_line(line, prefix))
                    cursors[job_id] = page["next"]
                    if not page["chunks"]:
                        break
                if not follow or page["state"] in TERMINAL:
                    done.add(job_id)
            if len(done) == len(job_ids):
                return
            time.sleep(interval)


@jobs_group.command("cancel")
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@remote_flags()
@common_options
def jobs_cancel(job_ids: tuple[str, ...], remote: Remote) -> int:
    """Cancel jobs: a waiting one at once, a running one within one heartbeat."""
    failed = 0
    with remote.client() as client:
        for job_id in job_ids:
            try:
                job = client.job_cancel(job_id)
            except RunnerError as exc:
                click.echo(f"error: {exc}", err=True)
                failed += 1
                continue
            if job["state"] == "canceled":
                click.echo(f"{job_id} canceled")
            elif job["state"] == "processing":
                click.echo(f"{job_id} cancel requested; its executor stops it")
            else:
                click.echo(f"{job_id} already {job['state']}")
    return 1 if failed else 0


@jobs_group.command("retry")
@click.argument("job_ids", metavar="ID...", nargs=-1)
@click.option("--failed", is_flag=True, help="Retry every failed job not retried yet.")
@click.option("--namespace", help="With --failed: only the jobs of this namespace.")
@remote_flags()
@click.option("--json", "as_json", is_flag=True, help="Print the new jobs as JSON.")
@common_options
def jobs_retry(
    job_ids: tuple[str, ...],
    failed: bool,
    namespace: str | None,
    remote: Remote,
    as_json: bool,
) -> None:
    """Queue a new attempt of finished jobs, with the current secret versions.

    Each new job names the one it retries; the old job, its log and its result
    stay as they were. Whoever may cancel a job may retry it.
    """
    if failed == bool(job_ids):
        raise UsageError("give job ids or --failed, not both", hint="runner jobs retry ID...")
    if namespace and not failed:
        raise UsageError("--namespace goes with --failed", hint="runner jobs retry --failed ...")
    with remote.client() as client:
        made = client.jobs_retry(job_ids, failed=failed, namespace=namespace)
    if as_json:
        _echo_json(made)
        return
    for job in made:
        click.echo(job["id"])
    if not made:
        click.echo("no job to retry", err=True)
    for job in made:
        click.echo(f"{job['id']} queued, retrying {job['retry_of']}", err=True)


# runner executors -----------------------------------------------------------------------------


@cli.group("executors")
def executors_group() -> None:
    """The executors a coordinator has heard from (admins)."""


@executors_group.command("list")
@remote_flags()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def executors_list(remote: Remote, as_json: bool) -> None:
    """Each executor's latest heartbeat: version, labels, jobs, last seen, stale or not.

    An executor is stale once it has been quiet for longer than the
    coordinator's stall limit (its jobs are then handed to others).
    """
    with remote.client() as client:
        executors = client.executors_list()
    if as_json:
        _echo_json(executors)
        return
    if not executors:
        click.echo("no executors yet", err=True)
        return
    rows = [
        [
            e["name"],
            e["version"] or "?",
            ",".join(e["labels"]) or "-",
            str(e["jobs"]),
            _short_time(e["last_seen"]),
            "stale" if e["stale"] else "live",
        ]
        for e in executors
    ]
    click.echo(table(["NAME", "VERSION", "LABELS", "JOBS", "LAST SEEN", "STATE"], rows))
