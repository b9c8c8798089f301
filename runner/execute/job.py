"""The workspace job: the one pipeline `runner run` and `runner executor` share.

``run_job`` takes a job from secrets to results, in this order:

1. reveal each secret the steps use, once, at its first step (through the
   ``reveal`` callable the caller passes: the local store, which audits each
   access, or the values an executor's claim carried);
2. register every value with the redactor (``register_values``, the only
   place values enter one, with its sibling ``register_mask`` for the masks
   steps print while they run) before anything of the job can print;
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
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from runner.cache import StepCache, host_mac
from runner.changeset import build_changesets
from runner.egress.seam import JobNetworkSeam, NoJobNetworks, StepNetwork
from runner.env import REGISTRY_AUTH_NAME, EnvPlan, HostEnv, SecretRef
from runner.errors import ChangesetError, RunnerError
from runner.execute.pipeline import HeldReporter, Turn, Turns
from runner.execute.reaper import Reaper
from runner.execute.registry import secret_parts
from runner.execute.runtime import ContainerRuntime
from runner.execute.steps import (
    Lookup,
    RunContext,
    RunLimits,
    WorkspaceResult,
    WorkspaceRunner,
    key_inputs,
    look_up,
)
from runner.log import get_logger
from runner.plan import Workspace
from runner.records import FrozenByIdentity
from runner.redact.protocol import Redacts
from runner.report import Reporter
from runner.sandbox import SandboxPolicy
from runner.secrets.delivery import BrokeredUse
from runner.secrets.local import LocalSecrets
from runner.secrets.value import Secret
from runner.spec.models import BatchSpec

if TYPE_CHECKING:
    from runner.egress.broker import JobBroker

log = get_logger("runner.job")

Reveal = Callable[[SecretRef, int], Secret]
"""(secret reference, number of the first step using it) → its value."""

OnBrokered = Callable[[Sequence[BrokeredUse]], object]
"""The job's brokered uses, per secret, handed over once at its end (for the audit log)."""


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
    registry_auth: Secret | None = None,
    local: LocalSecrets | None = None,
    broker: JobBroker | None = None,
) -> None:
    """Register every value a job holds, under its variable's name.

    A brokered secret's placeholder is registered under its name too: it stands
    for the value, so it shows as ``[REDACTED:NAME]`` like the value.

    Every value: each revealed secret of ``plan`` and each allowed host
    variable (a local run registers those as soon as it reads them, before
    the plan exists, so that even an early error is redacted), and the
    registry credentials with each password and token in them.
    """
    pairs: list[tuple[str, str | Secret]] = []
    if registry_auth is not None:
        pairs.append((REGISTRY_AUTH_NAME, registry_auth))
        pairs += [(REGISTRY_AUTH_NAME, part) for part in secret_parts(registry_auth)]
    if plan is not None:
        values = secrets or {}
        for planned in plan.steps.values():
            for var in planned:
                if var.secret is not None and var.secret.id in values:
                    pairs.append((var.name, values[var.secret.id]))
    if host is not None:
        pairs.extend(host.values.items())
    if local is not None:  # one-off values of a local run, as soon as they are read
        pairs.extend(local.pairs())
    if broker is not None:
        pairs.extend(broker.redaction_pairs())
    registry.register_many(pairs)


def register_mask(registry: ValueRegistry, name: str, values: Sequence[str]) -> None:
    """Register a mask a step printed (``::add-mask::``, runner.execute.masks) under ``name``.

    The sibling of ``register_values`` for values that appear while a job runs:
    the job's registry (a local run's process, an executor's job scope), so the
    value is redacted for the rest of the job and, on an executor, released with it.
    """
    registry.register_many([(name, value) for value in values])


def resolve_images(
    spec: BatchSpec, runtime: ContainerRuntime, auth: Secret | None = None
) -> dict[str, str]:
    """Image ID per `container` as written; a missing image raises, naming it.

    ``auth``: the job's ``DOCKER_AUTH_CONFIG``, for images in private registries.
    """
    images: dict[str, str] = {}
    for step in spec.steps:
        if step.container not in images:
            images[step.container] = runtime.image_id(step.container, auth)
    return images


# 4. Changesets, checked ------------------------------------------------------------------------


# Never compared or printed: by identity, as records with no generated methods
# (runner.records), which a full cache hit loads without compiling any.
@dataclass(init=False, repr=False, eq=False)
class CheckedChangeset(FrozenByIdentity):
    """A changeset spec (Sourcegraph's fields plus the workspace's outputs) free of values."""

    branch: str
    body: Mapping[str, Any]
    diff: bytes

    def __init__(self, branch: str, body: Mapping[str, Any], diff: bytes) -> None:
        self._fill(branch, body, diff)


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


@dataclass(eq=False)
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


@dataclass(init=False, repr=False, eq=False)
class Job(FrozenByIdentity):
    """One job: a spec's workspaces in one namespace, with everything checked already."""

    id: str
    spec: BatchSpec
    spec_dir: Path
    namespace: str
    env_plan: EnvPlan
    workspaces: Sequence[Workspace]
    images: Mapping[str, str]  # `container` as written -> image ID
    host: HostEnv = field(default_factory=HostEnv)

    def __init__(
        self,
        *,
        id: str,
        spec: BatchSpec,
        spec_dir: Path,
        namespace: str,
        env_plan: EnvPlan,
        workspaces: Sequence[Workspace],
        images: Mapping[str, str],
        host: HostEnv | None = None,
    ) -> None:
        self._fill(
            id,
            spec,
            spec_dir,
            namespace,
            env_plan,
            workspaces,
            images,
            HostEnv() if host is None else host,
        )


@dataclass(init=False, repr=False, eq=False)
class JobServices(FrozenByIdentity):
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
    # `runner run --keep-workspace`: keeps a failed workspace's tree (runner.execute.keep).
    keep_tree: Callable[[Workspace, Path], None] | None = None
    # The job's brokered uses, once at its end, for the audit log (runner.egress.broker).
    on_brokered: OnBrokered | None = None

    def __init__(
        self,
        *,
        runtime: ContainerRuntime,
        registry: ValueRegistry,
        redactor: Redacts,
        reporter: Reporter,
        sink: ResultSink,
        limits: RunLimits,
        cancel: threading.Event,
        cache: StepCache | None = None,
        host_mac_key: bytes = b"",
        temp_root: Path | None = None,
        parallelism: int = 1,
        fail_fast: bool = False,
        sandbox: SandboxPolicy | None = None,
        networks: JobNetworkSeam | None = None,
        keep_tree: Callable[[Workspace, Path], None] | None = None,
        on_brokered: OnBrokered | None = None,
    ) -> None:
        self._fill(
            runtime,
            registry,
            redactor,
            reporter,
            sink,
            limits,
            cancel,
            cache,
            host_mac_key,
            temp_root,
            parallelism,
            fail_fast,
            SandboxPolicy() if sandbox is None else sandbox,
            NoJobNetworks() if networks is None else networks,
            keep_tree,
            on_brokered,
        )


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
    # Brokered secrets get their placeholders now, once for the whole job.
    broker = _job_broker(job.env_plan, secrets)
    if broker and services.sandbox.network == "none":
        log.warning(
            "the job's steps have no network (--network none): its brokered secrets "
            "are placeholders that reach nothing",
            secrets=sorted({s.name for s in broker.secrets}),
        )
    # Before anything of the job can print: every value is redacted from its first byte.
    register_values(
        services.registry, plan=job.env_plan, secrets=secrets, host=job.host, broker=broker
    )
    ctx = replace(_context(job, secrets, services), broker=broker)
    if on_open is not None:
        on_open()
    try:
        return _run_all(ctx, job.workspaces, services)
    finally:
        # Finished containers are removed in the background: none outlives the job.
        services.runtime.settle()
        # Then the networks its workspaces handed on to the next ones.
        services.networks.drain(job.id)
        if broker and services.on_brokered is not None:
            _report_brokered(broker, services.on_brokered)


def _job_broker(plan: EnvPlan, secrets: Mapping[str, Secret]) -> JobBroker | None:
    """The job's brokered secrets, None if it has none.

    A job that revealed nothing brokers nothing: the broker (and the proxy's
    rules it loads) is imported only for a job holding values.
    """
    if not secrets:
        return None
    from runner.egress.broker import JobBroker

    return JobBroker.of(plan.steps, secrets) or None


def _report_brokered(broker: JobBroker, on_brokered: OnBrokered) -> None:
    """Hand the job's brokered uses over once, failed or canceled jobs too.

    The proxies are down by now, so the count is final; a failure to record
    them never fails the job.
    """
    uses = broker.used()
    if not uses:
        return
    try:
        on_brokered(uses)
    except Exception:
        log.exception("could not record the job's brokered uses")


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
        add_mask=partial(register_mask, services.registry),
        keep_tree=services.keep_tree,
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
    background: Reaper | None = None,
    lookup: Lookup | None = None,
) -> WorkspaceOutcome:
    """One workspace: its steps, its changesets checked and kept, then ``workspace.finished``.

    The steps run on a network of the workspace job's own (``networks``),
    taken down when they end, failed or canceled too: at once, or by
    ``background`` once the workspace's containers are gone (its caller
    settles it before the job ends). ``lookup``: what the cache holds for
    it, when the caller asked already.
    """
    outcome = WorkspaceOutcome(_run_steps(ctx, ws, networks or NoJobNetworks(), background, lookup))
    # A workspace that ended before its turn (failed early, canceled) still reports in it.
    ctx.turn.wait(ctx.cancel)
    _keep(ctx, outcome, sink)
    _finished(ctx, outcome)
    return outcome


def _run_steps(
    ctx: RunContext,
    ws: Workspace,
    networks: JobNetworkSeam,
    background: Reaper | None,
    lookup: Lookup | None,
) -> WorkspaceResult:
    runner: list[WorkspaceRunner] = []
    denied = [0]
    mismatched = [0]

    def network_event(name: str, host: str, **fields: Any) -> None:
        """What the job's network or proxy reports, under the step running at that moment."""
        ctx.reporter.event(
            name,
            run_id=ctx.run_id,
            repository=ws.repository,
            path=ws.path,
            branch=ws.branch,
            step=runner[0].current_step if runner else None,
            host=ctx.redactor.redact(host),
            **fields,
        )

    def on_denied(host: str, port: int) -> None:
        denied[0] += 1
        network_event("step.egress_denied", host, port=port)

    def on_broker(kind: str, secret: str, host: str) -> None:
        # A use is counted, not reported: the job's front door audits the totals at its end.
        if kind == "used" and ctx.broker is not None:
            ctx.broker.uses.add(secret, host)
        elif kind == "mismatch":
            mismatched[0] += 1
            network_event("secret.broker_mismatch", host, secret=secret)

    session = None
    if ctx.broker:
        from runner.egress.broker import BrokerSession

        session = BrokerSession(ctx.broker.rules(), on_broker)

    stack = ExitStack()
    # The network's holder runs an image the job already has (its first step's): any
    # will do, since it only waits, and nothing is pulled for it.
    holder_image = next(iter(ctx.images.values()), None)
    network = _WorkspaceNetwork(
        lambda: stack.enter_context(
            networks.open(
                ctx.run_id, ctx.sandbox, on_denied, broker=session, holder_image=holder_image
            )
        )
    )
    runner.append(WorkspaceRunner(replace(ctx, network=network, network_soon=network.soon), ws))

    def teardown() -> None:
        runner[0].settle()  # its containers are gone before its network goes
        network.join()  # one still being opened is opened, then closed with the rest
        stack.close()

    try:
        result = runner[0].run(lookup)
    finally:
        if background is None:
            teardown()
        else:  # off the critical path: the next workspace need not wait for it
            background.submit(teardown)
    result.egress_denied = denied[0]
    result.broker_mismatch = mismatched[0]
    return result


class _WorkspaceNetwork:
    """A workspace job's network, opened once: when a step first needs it, or ahead.

    Made only for a workspace that runs a container (a fully cached one needs
    none). ``soon`` starts opening it on a thread as soon as the step loop
    knows a container will run, so the engine makes the network while the
    workspace's tree is written; the first step then waits for it. A network
    that cannot be made fails that step as an engine failure, as if it were
    made in the step's own thread.
    """

    def __init__(self, open_network: Callable[[], StepNetwork]) -> None:
        self._open = open_network
        self._lock = threading.Lock()
        self._opened: StepNetwork | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def soon(self) -> None:
        with self._lock:
            if self._thread is not None or self._opened is not None:
                return
            self._thread = threading.Thread(
                target=self._open_once, name="open-network", daemon=True
            )
            self._thread.start()

    def __call__(self) -> StepNetwork:
        self.join()
        opened = self._open_once()
        if opened is None:
            assert self._error is not None
            raise self._error
        return opened

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _open_once(self) -> StepNetwork | None:
        with self._lock:
            if self._opened is None and self._error is None:
                try:
                    self._opened = self._open()
                except BaseException as exc:  # raised again in the step that needs it
                    self._error = exc
            return self._opened


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
        branch=ws.branch,
        status=outcome.status,
        changeset=kept[0] if len(kept) == 1 else (kept or None),
        error=outcome.result.error,
    )


def _run_all(
    ctx: RunContext, workspaces: Sequence[Workspace], services: JobServices
) -> list[WorkspaceOutcome]:
    """Run the workspaces ``parallelism`` at a time, in order of the list.

    Each waiting turn has one more workspace getting ready behind it
    (``runner.execute.pipeline.Turns``): its tree, network and first
    container are made while the running ones run.
    """
    turns = Turns(services.parallelism)
    teardowns = Reaper(workers=turns.width, max_pending=2 * turns.width)
    outcomes: dict[int, WorkspaceOutcome] = {}
    with ThreadPoolExecutor(max_workers=2 * turns.width, thread_name_prefix="workspace") as pool:
        pending: dict[Future[WorkspaceOutcome], int] = {}
        queue = list(enumerate(workspaces))
        drained = False
        while queue or pending:
            while queue and turns.may_start(queue[0][0]) and not ctx.cancel.is_set():
                index, ws = queue.pop(0)
                turn = turns.turn(index, HeldReporter(ctx.reporter))
                # With nothing else running, the cache is asked here: a workspace it holds
                # whole is done in this thread in a millisecond (a fully cached re-run
                # starts no thread, and hands nothing between threads).
                lookup = None if pending else _ask_cache(ctx, ws)
                if lookup is not None and lookup.full_hit:
                    done_here = _done_now(_in_turn, ctx, ws, services, turn, None, lookup)
                    outcomes[index] = _collect(ctx, done_here, ws)
                    if services.fail_fast and outcomes[index].status == "failed":
                        ctx.cancel.set()
                    continue
                future = pool.submit(_in_turn, ctx, ws, services, turn, teardowns, lookup)
                future.add_done_callback(lambda _: turns.poke())
                pending[future] = index
            if not queue and not drained:
                # No workspace left to start: a network handed back now would wait for
                # nobody, so it goes at once, off the critical path (and so do the spares).
                drained = True
                teardowns.submit(partial(services.networks.drain, ctx.run_id))
            if not pending:
                break
            with turns.changed:
                if not any(f.done() for f in pending):
                    turns.changed.wait(0.2)
            done = [f for f in pending if f.done()]
            for future in done:
                index = pending.pop(future)
                outcomes[index] = _collect(ctx, future, workspaces[index])
                if services.fail_fast and outcomes[index].status == "failed":
                    ctx.cancel.set()
        for index, ws in queue:
            outcomes[index] = _not_started(ctx, ws)
    teardowns.settle()
    return [outcomes[i] for i in range(len(workspaces))]


def _ask_cache(ctx: RunContext, ws: Workspace) -> Lookup | None:
    """What the cache holds for ``ws`` (None: no cache, or the question failed; the
    workspace's own thread asks again and reports why)."""
    if ctx.cache is None:
        return None
    try:
        return look_up(ctx, ws)
    except (RunnerError, OSError):
        return None


def _done_now(work: Callable[..., WorkspaceOutcome], *args: Any) -> Future[WorkspaceOutcome]:
    """``work`` run in this thread, as a finished future (``_collect`` reads either)."""
    done: Future[WorkspaceOutcome] = Future()
    try:
        done.set_result(work(*args))
    except Exception as exc:  # reported by _collect, as from a workspace's thread
        done.set_exception(exc)
    return done


def _in_turn(
    ctx: RunContext,
    ws: Workspace,
    services: JobServices,
    turn: Turn,
    background: Reaper | None,
    lookup: Lookup | None = None,
) -> WorkspaceOutcome:
    held = replace(ctx, reporter=turn.reporter, turn=turn)
    turn.take_if_free(ctx.cancel)
    try:
        outcome = run_workspace(
            held,
            ws,
            services.sink,
            networks=services.networks,
            background=background,
            lookup=lookup,
        )
        if services.fail_fast and outcome.status == "failed":
            ctx.cancel.set()  # before the turn passes on: the next one must not run
    finally:
        turn.end()
    # Canceled while it waited for its turn: it got ready, but never ran.
    return _not_started(ctx, ws) if turn.missed else outcome


def _not_started(ctx: RunContext, ws: Workspace) -> WorkspaceOutcome:
    outcome = WorkspaceOutcome(
        WorkspaceResult(ws, "canceled", error="not started: the run was stopped")
    )
    _finished(ctx, outcome)
    return outcome


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
