"""`runner run` and `runner cleanup`: execute a spec locally in containers."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import click

from runner.cli._app import (
    App,
    app,
    cli,
    common_options,
    login_name,
    spec_input_options,
    table,
)
from runner.cli._front import front_half, host_mac_key
from runner.cli._limits import JobLimits, limit_options
from runner.cli._local_secrets import (
    local_secret_options,
)
from runner.cli._network import NetworkChoice, job_networks, network_options
from runner.cli._sandbox import Confinement, isolation_options, run_limits, sandbox_policy
from runner.config import parse_size
from runner.errors import RunnerError
from runner.execute.engine_probe import EngineProbe
from runner.execute.job import register_values, resolve_images
from runner.execute.lazy_runtime import LazyRuntime
from runner.execute.registry import find_registry_auth, reveal_registry_auth
from runner.execute.run import RunPlan, execute, new_run_id, sweep_leftovers
from runner.execute.runtime import ContainerRuntime
from runner.execute.steps import RUN_LABEL
from runner.log import get_logger
from runner.plan import RepoArg
from runner.report import JsonLinesReporter, LiveReporter, LogReporter, Reporter, one_line

log = get_logger("runner.cli.run")


@contextmanager
def interrupt_handling(cancel: threading.Event, interrupted: threading.Event) -> Iterator[None]:
    """First Ctrl-C or SIGTERM: stop and clean up. Second: exit at once."""
    hits = [0]

    def handler(signum: int, frame: FrameType | None) -> None:
        hits[0] += 1
        interrupted.set()
        if hits[0] == 1:
            sys.stderr.write(
                "\ninterrupted: stopping containers and cleaning up (Ctrl-C again to quit now)\n"
            )
            cancel.set()
        else:
            sys.stderr.write("\ninterrupted twice: exiting now; `runner cleanup` sweeps the rest\n")
            os._exit(130)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _runtime(ctx: App, parallelism: int) -> LazyRuntime:
    """The engine, asked through ``EngineProbe`` until a container or network is needed.

    A fully cached run never loads the docker SDK; another loads it on the
    thread that opens the first workspace's network.
    """

    def make() -> ContainerRuntime:
        from runner.execute.docker_runtime import DockerRuntime

        return DockerRuntime.from_environ(
            ctx.env,
            max_pool_size=max(32, parallelism * 2 + 4),
            network_pool=ctx.settings.network_pool,
        )

    return LazyRuntime(make, EngineProbe.from_environ(ctx.env))


def _reporter(as_json: bool, total: int, *, verbose: bool) -> Reporter:
    """JSON lines with --json; a live display on a terminal (step output with -v); else logs."""
    from runner.redact import active

    if as_json:
        return JsonLinesReporter(sys.stdout, active().redact)
    if sys.stderr.isatty():
        return LiveReporter(total, sys.stderr, show_output=verbose)
    return LogReporter()


@cli.command("run")
@spec_input_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Results folder (default: runner-out/<batch change name>).",
)
@click.option(
    "-j",
    "--jobs",
    "parallelism",
    type=click.IntRange(min=1),
    help="Workspaces at once (default: number of CPUs).",
)
@click.option("--fail-fast", is_flag=True, help="Stop everything at the first failed workspace.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds per step before its container is killed (default 1800).",
)
@click.option("--memory", help="Memory limit per step container, such as 512m.")
@click.option(
    "--cpus", type=click.FloatRange(min=0, min_open=True), help="CPU limit per step container."
)
@click.option("--log-cap", help="Fail a workspace whose steps print more than this (default 100m).")
@limit_options("workspace")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the execution cache.")
@click.option("--clear-cache", is_flag=True, help="Empty the execution cache before running.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the event stream as JSON lines on stdout."
)
@click.option(
    "--only-failed",
    is_flag=True,
    help="Run only the workspaces that failed or were canceled in --out's last run; "
    "update its summary in place.",
)
@click.option(
    "--keep-workspace",
    is_flag=True,
    help="Keep each failed workspace's files under --out (refused if they hold a secret).",
)
@local_secret_options
@isolation_options
@network_options
@common_options
def run_cmd(
    spec_path: str,
    namespace: str | None,
    repos_root: Path | None,
    repos: tuple[RepoArg, ...],
    out_dir: Path | None,
    parallelism: int | None,
    fail_fast: bool,
    timeout_s: float | None,
    memory: str | None,
    cpus: float | None,
    log_cap: str | None,
    job_limits: JobLimits,
    allow_host: tuple[str, ...],
    no_cache: bool,
    clear_cache: bool,
    as_json: bool,
    only_failed: bool,
    keep_workspace: bool,
    secret_files: tuple[Path, ...],
    secret_names: tuple[str, ...],
    confinement: Confinement,
    network_choice: NetworkChoice,
) -> int:
    """Run a batch spec locally: each step in a container, changes as patches.

    Checks the spec, repositories, secrets (all missing ones at once) and
    images before any container starts. Writes one changeset spec (.json) and
    patch (.patch) per changeset, and summary.json, under --out. Exit code 0
    when every workspace succeeded, 3 when any failed, 1 when the run could
    not start, 130 when interrupted.
    """
    from runner.redact import active

    ctx = app()
    settings = ctx.settings
    front = front_half(
        ctx, spec_path, namespace, repos_root, repos, allow_host, secret_files, secret_names
    )
    spec, ns, host, local, store = front.spec, front.namespace, front.host, front.local, front.store
    env_plan, workspaces = front.env_plan, front.workspaces
    actor = login_name(ctx.env)
    out = out_dir or Path("runner-out") / spec.name
    rerun = None
    if only_failed:  # before anything else: a run with nothing to do needs no engine
        from runner.execute.rerun import plan_rerun

        rerun, workspaces = plan_rerun(out, workspaces)
        if not workspaces:
            click.echo(f"nothing to re-run: no workspace of {out} failed", err=True)
            return 0
    jobs = parallelism or settings.parallelism
    runtime = _runtime(ctx, jobs)
    confinement.check(runtime)
    temp_root = Path(tempfile.gettempdir())
    runs_dir = settings.home / "runs"
    networks = job_networks(settings, runtime, network_choice.broker_ca_file, keep_ready=True)
    swept = sweep_leftovers(runtime, runs_dir, temp_root, RUN_LABEL, networks)
    if swept:
        log.info("swept what interrupted runs left behind", count=swept)
    run_id = new_run_id()
    # Registry credentials: revealed (and audited) only to pull, never given to a step.
    auth_meta = find_registry_auth(store, ns)
    registry_auth = reveal_registry_auth(store, auth_meta, actor=actor, run_id=run_id)
    register_values(active(), registry_auth=registry_auth)
    images = resolve_images(spec, runtime, registry_auth)
    plan = RunPlan(
        run_id=run_id,
        spec=spec,
        spec_dir=front.spec_dir,
        namespace=ns,
        actor=actor,
        workspaces=workspaces,
        env_plan=env_plan,
        host=host,
        images=images,
        local=local,
    )
    limits = run_limits(
        settings,
        timeout_s=timeout_s,
        memory_bytes=parse_size(memory) if memory else None,
        cpus=cpus,
        log_cap_bytes=parse_size(log_cap) if log_cap else None,
    )
    sandbox = sandbox_policy(confinement, job_limits, network_choice)
    networks.preflight(sandbox)
    cache = None
    if not no_cache:
        cache = _open_cache(settings, store, clear_cache)
    cancel = threading.Event()
    interrupted = threading.Event()
    record = runs_dir / run_id
    runs_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(str(os.getpid()))
    reporter = _reporter(as_json, len(workspaces), verbose=settings.verbose > 0)
    try:
        with interrupt_handling(cancel, interrupted):
            outcome = execute(
                plan,
                reveal=lambda ref, step: store.reveal(
                    ref.id, version=ref.version, actor=actor, run_id=run_id, step=step
                ),
                runtime=runtime,
                redactor=active(),
                registry=active(),
                reporter=reporter,
                limits=limits,
                out_dir=out,
                parallelism=jobs,
                fail_fast=fail_fast,
                cancel=cancel,
                cache=cache,
                host_mac_key=_host_mac_key(store),
                temp_root=temp_root,
                sandbox=sandbox,
                networks=networks,
                rerun=rerun,
                keep_workspace=keep_workspace,
                on_brokered=lambda uses: store.record_brokered(
                    uses, visible_from=ns, actor=actor, job=run_id
                ),
            )
    finally:
        reporter.close()
        _forget_run(runtime, run_id, record)
    if not as_json:
        _print_summary(outcome, out)
    return 130 if interrupted.is_set() else outcome.exit_code


def _forget_run(runtime: LazyRuntime, run_id: str, record: Path) -> None:
    """Remove the run's record once none of its containers is left.

    If the engine cannot be asked (it died mid-run), the record stays, so the
    next run or `runner cleanup` sweeps what the engine still holds.
    """
    try:
        runtime.sweep_own(RUN_LABEL, run_id)
    except RunnerError as exc:
        log.warning("could not check for leftover containers; the next run will", error=str(exc))
        return
    record.unlink(missing_ok=True)


def _open_cache(settings: Any, store: Any, clear: bool) -> Any:
    from runner.cache.sql import open_cache

    cache = open_cache(settings, store)
    if clear:
        cache.clear()
    return cache


def _host_mac_key(store: Any) -> bytes:
    return host_mac_key(store)


def _print_summary(outcome: Any, out: Path) -> None:
    """The workspace table on stdout; under a failed workspace's row, its reason."""
    from runner.redact import active

    rows = []
    reasons = []
    for result in outcome.results:
        ws = result.workspace
        paths = [p for p in outcome.changeset_paths.get(ws.key, []) if p.endswith(".json")]
        rows.append(
            (
                result.status,
                ws.repository,
                ws.path or ".",
                ", ".join(str(out / p) for p in paths) or "-",
            )
        )
        failed = result.status in ("failed", "canceled") and result.error
        reasons.append(active().redact(result.error) if failed else "")
    lines = table(["STATUS", "REPOSITORY", "PATH", "CHANGESET"], rows).splitlines()
    click.echo(lines[0])
    for line, reason in zip(lines[1:], reasons, strict=True):
        click.echo(line)
        if reason:
            click.echo(REASON_INDENT + one_line(reason, _stdout_width() - len(REASON_INDENT)))
    for message in outcome.kept_workspaces.values():
        click.echo(message)
    if outcome.failed_logs:
        click.echo("logs of the failed workspaces:")
        for log_file in outcome.failed_logs:
            click.echo(f"  {out / log_file}")
    counts = ", ".join(f"{n} {s}" for s, n in outcome.counts.items() if n)
    click.echo(f"{counts or 'no workspaces'}; summary: {outcome.summary_path}")


REASON_INDENT = "  └ "


def _stdout_width() -> int:
    """The terminal's width; a file or pipe keeps first lines up to 200 characters."""
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return 200


@cli.command("cleanup")
@common_options
def cleanup_cmd() -> int:
    """Remove containers and temporary folders that interrupted runs left behind.

    Also removes the job networks this RUNNER_HOME keeps ready for its next
    run, and those kept by any RUNNER_HOME on this machine that was deleted.
    """
    ctx = app()
    runtime = _runtime(ctx, 1)
    # Even with RUNNER_READY_NETWORKS=0: what an earlier setting kept goes too.
    networks = job_networks(replace(ctx.settings, ready_networks=1), runtime, keep_ready=True)
    swept = sweep_leftovers(
        runtime, ctx.settings.home / "runs", Path(tempfile.gettempdir()), RUN_LABEL, networks
    )
    click.echo(f"swept {swept} leftover{'s' if swept != 1 else ''}")
    kept = networks.sweep_ready(everything=True)
    if kept:
        click.echo(f"removed {kept} network{'s' if kept != 1 else ''} kept ready")
    # Kept by homes deleted since (their shelves are gone): nothing else removes them.
    abandoned = networks.sweep_abandoned()
    if abandoned:
        click.echo(
            f"removed {abandoned} network{'s' if abandoned != 1 else ''} kept ready "
            "for a RUNNER_HOME that is gone"
        )
    # Rules whose network is gone, whoever's run left them (counted apart: they are not
    # this user's runs).
    stale = networks.sweep_stale_rules()
    if stale:
        click.echo(f"removed {stale} stale firewall rule{'s' if stale != 1 else ''}")
    return 0
