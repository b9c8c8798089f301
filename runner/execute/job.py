"""The workspace job: the one pipeline `runner run` and `runner executor` share.

``run_job`` takes a job from secrets to results, in this order:

1. reveal each secret the steps use, once, at its first step (through the
   ``reveal`` callable the caller passes: the local store, which audits each
   access, or the values an executor's claim carried);
2. register every value with the redactor (``register_values``, the only
   place values enter one) before anything of the job can print;
3. run each workspace's steps (``WorkspaceRunner``), several at once;
4. check and build its changesets (``checked_changesets``): a changeset that
   would hold a value fails its workspace and nothing of it is kept;
5. hand them to the caller's ``ResultSink`` (files under ``--out``, or the
   job result an executor sends) and report ``workspace.finished`` as soon as
   that workspace is done.

What differs between the front doors is only where secrets come from (the
``reveal`` callable), where events go (the ``Reporter``) and where results
go (the ``ResultSink``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from runner.cache import StepCache, host_mac
from runner.changeset import build_changesets
from runner.egress import JobNetworkSeam, NoJobNetworks, StepNetwork
from runner.env import EnvPlan, HostEnv, SecretRef
from runner.errors import ChangesetError
from runner.execute.runtime import ContainerRuntime
from runner.execute.steps import RunContext, RunLimits, WorkspaceResult, WorkspaceRunner, key_inputs
from runner.log import get_logger
from runner.plan import Workspace
from runner.redact.protocol import Redacts
from runner.report import Reporter
from runner.sandbox import SandboxPolicy
from runner.secrets.value import Secret
from runner.spec.models import BatchSpec

log = get_logger("runner.job")

Reveal = Callable[[SecretRef, int], Secret]
"""(secret reference, number of the first step using it) → its value."""


class ValueRegistry(Protocol):
    """Where values are registered: the process's redactor, or one job's scope of it."""

    def register_many(self, values: Iterable[tuple[str, str | Secret]]) -> None: ...


# 1-2. Secrets in -------------------------------------------------------------------------------


def first_uses(plan: EnvPlan) -> dict[str, tuple[SecretRef, int]]:
    """Each secret the steps use, by id, with the number of the first step using it."""
    uses: dict[str, tuple[SecretRef, int]] = {}
    for number in sorted(plan.steps):
        for var in plan.steps[number]:
            if var.secret is not None and var.secret.id not in uses:
                uses[var.secret.id] = (var.secret, number)
    return uses


def reveal_secrets(plan: EnvPlan, reveal: Reveal) -> dict[str, Secret]:
    """Reveal each secret once, at its first step (the store audits each access)."""
    return {sid: reveal(ref, step) for sid, (ref, step) in first_uses(plan).items()}


def register_values(
    registry: ValueRegistry,
    *,
    plan: EnvPlan | None = None,
    secrets: Mapping[str, Secret] | None = None,
    host: HostEnv | None = None,
) -> None:
    """Register every value a job holds, under its variable's name.

    Every value: each revealed secret of ``plan`` and each allowed host
    variable (a local run registers those as soon as it reads them, before
    the plan exists, so that even an early error is redacted).
    """
    pairs: list[tuple[str, str | Secret]] = []
    if plan is not None:
        values = secrets or {}
        for planned in plan.steps.values():
            for var in planned:
                if var.secret is not None and var.secret.id in values:
                    pairs.append((var.name, values[var.secret.id]))
    if host is not None:
        pairs.extend(host.values.items())
    registry.register_many(pairs)


def resolve_images(spec: BatchSpec, runtime: ContainerRuntime) -> dict[str, str]:
    """Image ID per `container` as written; a missing image raises, naming it."""
    images: dict[str, str] = {}
    for step in spec.steps:
        if step.container not in images:
            images[step.container] = runtime.image_id(step.container)
    return images


# 4. Changesets, checked ------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedChangeset:
    """A changeset spec (Sourcegraph's fields plus the workspace's outputs) free of values."""

    branch: str
    body: Mapping[str, Any]
    diff: bytes


def checked_changesets(
    spec: BatchSpec, result: WorkspaceResult, redactor: Redacts
) -> list[CheckedChangeset]:
    """The changesets of a changed workspace; ``ChangesetError`` if one would hold a value."""
    ws = result.workspace
    specs = build_changesets(
        spec,
        ws,
        diff=result.diff,
        changes=result.changes,
        outputs=result.outputs,
    )
    checked: list[CheckedChangeset] = []
    for cs in specs:
        body = {**cs.body, "outputs": result.outputs}
        text = json.dumps(body, ensure_ascii=False)
        if redactor.redact(text) != text:
            raise ChangesetError(
                f"the changeset for {ws.repository} would hold a secret value; "
                "nothing of it was kept"
            )
        checked.append(CheckedChangeset(cs.branch, body, cs.diff))
    return checked


# 5. Results out --------------------------------------------------------------------------------


class ResultSink(Protocol):
    """Where a workspace's changesets go: files under --out, or an executor's job result."""

    def keep(self, result: WorkspaceResult, changesets: Sequence[CheckedChangeset]) -> list[str]:
        """Keep them; return what to name in ``workspace.finished`` (may raise ``RunnerError``)."""
        ...


@dataclass
class WorkspaceOutcome:
    """A workspace's result, with the changesets kept for it and what the sink named."""

    result: WorkspaceResult
    changesets: list[CheckedChangeset] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def workspace(self) -> Workspace:
        return self.result.workspace

    @property
    def status(self) -> str:
        return self.result.status


# The job ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Job:
    """One job: a spec's workspaces in one namespace, with everything checked already."""

    id: str
    spec: BatchSpec
    spec_dir: Path
    namespace: str
    env_plan: EnvPlan
    workspaces: Sequence[Workspace]
    images: Mapping[str, str]  # `container` as written -> image ID
    host: HostEnv = field(default_factory=HostEnv)


@dataclass(frozen=True, kw_only=True)
class JobServices:
    """What runs a job: the engine, the redactor, and where events and results go."""

    runtime: ContainerRuntime
    registry: ValueRegistry
    redactor: Redacts
    reporter: Reporter
    sink: ResultSink
    limits: RunLimits
    cancel: threading.Event
    cache: StepCache | None = None
    host_mac_key: bytes = b""
    temp_root: Path | None = None
    parallelism: int = 1
    fail_fast: bool = False
    sandbox: SandboxPolicy = field(default_factory=SandboxPolicy)
    # A network per workspace job (runner.egress); without one, steps use the engine's default.
    networks: JobNetworkSeam = field(default_factory=NoJobNetworks)


def run_job(
    job: Job,
    reveal: Reveal,
    services: JobServices,
    *,
    on_open: Callable[[], None] | None = None,
) -> list[WorkspaceOutcome]:
    """Secrets in, steps run, changesets checked and kept, one outcome per workspace.

    ``on_open`` runs once every value is revealed and registered, before the
    first workspace starts (a run announces itself there, so a secret that
    cannot be revealed stops it before anything is printed).
    """
    secrets = reveal_secrets(job.env_plan, reveal)
    # Before anything of the job can print: every value is redacted from its first byte.
    register_values(services.registry, plan=job.env_plan, secrets=secrets, host=job.host)
    ctx = _context(job, secrets, services)
    if on_open is not None:
        on_open()
    return _run_all(ctx, job.workspaces, services)


def _context(job: Job, secrets: Mapping[str, Secret], services: JobServices) -> RunContext:
    macs = {
        name: host_mac(services.host_mac_key, name, job.host.values[name])
        for name in job.env_plan.host_names()
    }
    ctx = RunContext(
        run_id=job.id,
        spec=job.spec,
        spec_dir=job.spec_dir,
        namespace=job.namespace,
        env_plan=job.env_plan,
        secrets=secrets,
        host=job.host,
        host_macs=macs,
        images=job.images,
        runtime=services.runtime,
        redactor=services.redactor,
        reporter=services.reporter,
        limits=services.limits,
        cancel=services.cancel,
        cache=services.cache,
        temp_root=services.temp_root,
        sandbox=services.sandbox,
    )
    if services.cache is not None:
        # The same for every workspace, and it reads every mounted file: once per job.
        ctx = replace(ctx, step_key_inputs=key_inputs(ctx))
    return ctx


def run_workspace(
    ctx: RunContext,
    ws: Workspace,
    sink: ResultSink,
    *,
    networks: JobNetworkSeam | None = None,
) -> WorkspaceOutcome:
    """One workspace: its steps, its changesets checked and kept, then ``workspace.finished``.

    The steps run on a network of the workspace job's own (``networks``),
    taken down when they end, failed or canceled too.
    """
    outcome = WorkspaceOutcome(_run_steps(ctx, ws, networks or NoJobNetworks()))
    _keep(ctx, outcome, sink)
    _finished(ctx, outcome)
    return outcome


def _run_steps(ctx: RunContext, ws: Workspace, networks: JobNetworkSeam) -> WorkspaceResult:
    runner: list[WorkspaceRunner] = []
    denied = [0]

    def on_denied(host: str, port: int) -> None:
        denied[0] += 1
        ctx.reporter.event(
            "step.egress_denied",
            run_id=ctx.run_id,
            repository=ws.repository,
            path=ws.path,
            step=runner[0].current_step if runner else None,
            host=ctx.redactor.redact(host),
            port=port,
        )

    with ExitStack() as stack:
        opened: list[StepNetwork] = []

        def network() -> StepNetwork:
            # Made on the first step that runs a container: a fully cached workspace needs
            # none. A network that cannot be made fails that step as an engine failure.
            if not opened:
                opened.append(
                    stack.enter_context(networks.open(ctx.run_id, ctx.sandbox, on_denied))
                )
            return opened[0]

        runner.append(WorkspaceRunner(replace(ctx, network=network), ws))
        result = runner[0].run()
    result.egress_denied = denied[0]
    return result


def _keep(ctx: RunContext, outcome: WorkspaceOutcome, sink: ResultSink) -> None:
    result = outcome.result
    if result.status != "changed":
        return
    try:
        outcome.changesets = checked_changesets(ctx.spec, result, ctx.redactor)
        outcome.kept = sink.keep(result, outcome.changesets)
    except ChangesetError as exc:
        result.status = "failed"
        result.error = ctx.redactor.redact(str(exc))
        outcome.changesets = []


def _finished(ctx: RunContext, outcome: WorkspaceOutcome) -> None:
    ws = outcome.workspace
    kept = outcome.kept
    ctx.reporter.event(
        "workspace.finished",
        run_id=ctx.run_id,
        repository=ws.repository,
        path=ws.path,
        status=outcome.status,
        changeset=kept[0] if len(kept) == 1 else (kept or None),
        error=outcome.result.error,
    )


def _run_all(
    ctx: RunContext, workspaces: Sequence[Workspace], services: JobServices
) -> list[WorkspaceOutcome]:
    """Run the workspaces ``parallelism`` at a time, in order of the list."""
    width = max(1, services.parallelism)
    outcomes: dict[int, WorkspaceOutcome] = {}
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="workspace") as pool:
        pending: dict[Future[WorkspaceOutcome], int] = {}
        queue = list(enumerate(workspaces))
        while queue or pending:
            while queue and len(pending) < width and not ctx.cancel.is_set():
                index, ws = queue.pop(0)
                future = pool.submit(
                    run_workspace, ctx, ws, services.sink, networks=services.networks
                )
                pending[future] = index
            if not pending:
                break
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                outcomes[index] = _collect(ctx, future, workspaces[index])
                if services.fail_fast and outcomes[index].status == "failed":
                    ctx.cancel.set()
        for index, ws in queue:
            result = WorkspaceResult(ws, "canceled", error="not started: the run was stopped")
            outcomes[index] = WorkspaceOutcome(result)
            _finished(ctx, outcomes[index])
    return [outcomes[i] for i in range(len(workspaces))]


def _collect(ctx: RunContext, future: Future[WorkspaceOutcome], ws: Workspace) -> WorkspaceOutcome:
    try:
        return future.result()
    except Exception as exc:  # a bug must not take the other workspaces down
        log.exception("workspace crashed", workspace=ws.key)
        result = WorkspaceResult(
            ws,
            "failed",
            error=ctx.redactor.redact(
                f"internal error: {type(exc).__name__}: {exc} — rerun with --debug and report it"
            ),
        )
        outcome = WorkspaceOutcome(result)
        _finished(ctx, outcome)
        return outcome
