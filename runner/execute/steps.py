"""The step loop of one workspace: cache check, steps in containers, result.

One workspace, one thread. Everything it needs arrives in ``RunContext``; the
loop reads nothing from the process and writes only inside its temporary
folder. Output leaves containers through the redactor before anything else
sees it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from runner.cache import (
    CacheEntry,
    StepCache,
    StepKeyInput,
    WorkspaceKeyInput,
    prefix_secret_refs,
    sha256_hex,
    step_keys,
)
from runner.changeset import FileChanges
from runner.egress.seam import StepNetwork
from runner.env import EnvPlan, HostEnv, materialize
from runner.errors import (
    CacheError,
    ContainerRuntimeError,
    GitError,
    MountPathError,
    RunnerError,
    StepFailed,
    TemplateError,
)
from runner.execute.pipeline import Ahead, AnyTime, WorkspaceTurn
from runner.execute.runtime import ContainerRuntime, Mount, OutputStream, StepContainer, StepExit
from runner.execute.source import Source, resolve_source
from runner.log import get_logger
from runner.plan import Workspace
from runner.records import Frozen, FrozenByIdentity
from runner.redact.protocol import Redacts
from runner.report import PhaseEvents, Reporter, report_output
from runner.sandbox import SandboxPolicy, StepSandbox
from runner.secrets.value import Secret
from runner.spec import template as tmpl
from runner.spec.models import BatchSpec, Step
from runner.spec.mounts import resolve_mount
from runner.spec.yamlpos import YamlError, load_yaml

if TYPE_CHECKING:  # imported where a step runs: a fully cached workspace runs none
    from runner.egress.broker import JobBroker
    from runner.execute.limits import DiskWatcher
    from runner.execute.masks import MaskCommand
    from runner.execute.workspace import LocalWorkspace

Status = Literal["changed", "unchanged", "failed", "canceled"]
RUN_LABEL = "org.runner.run-id"
STDERR_TAIL_LINES = 20

log = get_logger("runner.execute")


# Frozen records (runner.records): a full cache hit loads them without generating code.
@dataclass(init=False, repr=False, eq=False)
class RunLimits(Frozen):
    timeout_s: float
    capture_limit: int
    memory_bytes: int | None = None
    cpus: float | None = None
    log_cap_bytes: int | None = None

    def __init__(
        self,
        timeout_s: float,
        capture_limit: int,
        memory_bytes: int | None = None,
        cpus: float | None = None,
        log_cap_bytes: int | None = None,
    ) -> None:
        self._fill(timeout_s, capture_limit, memory_bytes, cpus, log_cap_bytes)


# Never compared or printed: by identity, as a bag of services.
@dataclass(init=False, repr=False, eq=False)
class RunContext(FrozenByIdentity):
    """Everything the step loop needs, passed in explicitly."""

    run_id: str
    spec: BatchSpec
    spec_dir: Path
    namespace: str
    env_plan: EnvPlan
    secrets: Mapping[str, Secret]  # secret id -> value, revealed before the first step
    host: HostEnv
    host_macs: Mapping[str, str]
    images: Mapping[str, str]  # `container` as written -> image ID
    runtime: ContainerRuntime
    redactor: Redacts
    reporter: Reporter
    limits: RunLimits
    cancel: threading.Event
    cache: StepCache | None = None
    temp_root: Path | None = None
    sandbox: SandboxPolicy = field(default_factory=SandboxPolicy)
    # The workspace job's network: run_workspace passes a function that opens one for the
    # workspace on the first step that runs a container (a fully cached workspace makes none).
    network: Callable[[], StepNetwork] = StepNetwork
    # Starts opening that network on a thread once a container will run, so the engine
    # makes it while the tree is written (job.py's _WorkspaceNetwork.soon).
    network_soon: Callable[[], None] | None = None
    # What each step adds to cache keys; the same for every workspace of a run,
    # so a run computes it once (it reads every mounted file).
    step_key_inputs: Sequence[StepKeyInput] | None = None
    # The job's brokered secrets: their steps get placeholders (runner.egress.broker).
    broker: JobBroker | None = None
    # When the workspace may run its steps: job.py hands out -j turns; the workspace
    # prepares its tree, network and first container before it (runner.execute.pipeline).
    turn: WorkspaceTurn = field(default_factory=AnyTime)
    # Registers a mask a step printed (``::add-mask::``) with the job's redactor:
    # job.py's register_mask. Without it a mask is refused (and still never shown).
    add_mask: Callable[[str, Sequence[str]], None] | None = None
    # Keeps a failed workspace's tree before it is removed (`runner run --keep-workspace`:
    # runner.execute.keep, which refuses a tree holding a value).
    keep_tree: Callable[[Workspace, Path], None] | None = None

    def __init__(
        self,
        run_id: str,
        spec: BatchSpec,
        spec_dir: Path,
        namespace: str,
        env_plan: EnvPlan,
        secrets: Mapping[str, Secret],
        host: HostEnv,
        host_macs: Mapping[str, str],
        images: Mapping[str, str],
        runtime: ContainerRuntime,
        redactor: Redacts,
        reporter: Reporter,
        limits: RunLimits,
        cancel: threading.Event,
        cache: StepCache | None = None,
        temp_root: Path | None = None,
        sandbox: SandboxPolicy | None = None,
        network: Callable[[], StepNetwork] = StepNetwork,
        network_soon: Callable[[], None] | None = None,
        step_key_inputs: Sequence[StepKeyInput] | None = None,
        broker: JobBroker | None = None,
        turn: WorkspaceTurn | None = None,
        add_mask: Callable[[str, Sequence[str]], None] | None = None,
        keep_tree: Callable[[Workspace, Path], None] | None = None,
    ) -> None:
        self._fill(
            run_id,
            spec,
            spec_dir,
            namespace,
            env_plan,
            secrets,
            host,
            host_macs,
            images,
            runtime,
            redactor,
            reporter,
            limits,
            cancel,
            cache,
            temp_root,
            SandboxPolicy() if sandbox is None else sandbox,
            network,
            network_soon,
            step_key_inputs,
            broker,
            AnyTime() if turn is None else turn,
            add_mask,
            keep_tree,
        )


@dataclass(eq=False)
class WorkspaceResult:
    workspace: Workspace
    status: Status
    diff: bytes = b""
    outputs: dict[str, Any] = field(default_factory=dict)
    changes: FileChanges = field(default_factory=FileChanges)
    error: str | None = None
    steps_run: int = 0
    steps_cached: int = 0
    infrastructure_failure: bool = False
    egress_denied: int = 0  # connections the job's network refused (step.egress_denied)
    broker_mismatch: int = 0  # placeholders sent where they are not bound (runner.egress.broker)


class _StepStop(threading.Event):
    """Stops one step: set by the log cap, and also set whenever the run is canceled."""

    def __init__(self, run_cancel: threading.Event) -> None:
        super().__init__()
        self._run_cancel = run_cancel
        self.over_cap = False

    def is_set(self) -> bool:
        return super().is_set() or self._run_cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        # Either event may end the wait, so poll both.
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                return False
            super().wait(left)
        return True


def _empty_step() -> dict[str, Any]:
    return {**FileChanges().as_template(), "stdout": "", "stderr": ""}


def _mount_hashes(step: Step, spec_dir: Path) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for mount in step.mounts:
        source = _mount_source(spec_dir, mount.path, step)
        hashes[mount.mountpoint] = _tree_hash(source)
    return hashes


def _tree_hash(path: Path) -> str:
    if path.is_file():
        return sha256_hex(path.read_bytes())
    parts = []
    for child in sorted(path.rglob("*")):
        if child.is_file():
            parts.append(f"{child.relative_to(path).as_posix()}\0{sha256_hex(child.read_bytes())}")
    return sha256_hex("\n".join(parts).encode())


def _mount_source(spec_dir: Path, relative: str, step: Step) -> Path:
    try:
        return resolve_mount(spec_dir, relative)
    except MountPathError as exc:
        raise StepFailed(f"step {step.number}: {exc.message}", hint=exc.hint) from None


def key_inputs(ctx: RunContext) -> list[StepKeyInput]:
    """Per step, what enters the cache key (no secret value, no hash of one)."""
    return spec_key_inputs(ctx.spec, ctx.spec_dir, ctx.images, ctx.env_plan, ctx.host_macs)


def spec_key_inputs(
    spec: BatchSpec,
    spec_dir: Path,
    images: Mapping[str, str],
    env_plan: EnvPlan,
    host_macs: Mapping[str, str],
) -> list[StepKeyInput]:
    """``key_inputs`` from its parts (`runner workspaces` and `cache why` run no step)."""
    inputs = []
    for step in spec.steps:
        inputs.append(
            StepKeyInput(
                definition=step.definition,
                image_id=images[step.container],
                file_hashes={f.target: sha256_hex(f.content.encode()) for f in step.files},
                mount_hashes=_mount_hashes(step, spec_dir),
                env=env_plan.steps.get(step.number, ()),
                host_macs={
                    v.name: host_macs.get(v.name, "")
                    for v in env_plan.steps.get(step.number, ())
                    if v.provenance.source == "host"
                },
            )
        )
    return inputs


def workspace_key_input(
    spec: BatchSpec, namespace: str, ws: Workspace, base_tree: str
) -> WorkspaceKeyInput:
    """What a workspace adds to its steps' keys; ``base_tree`` is its commit's tree."""
    return WorkspaceKeyInput(
        namespace=namespace,
        repository=ws.repository,
        base_tree=base_tree,
        path=ws.path,
        only_fetch_workspace=ws.only_fetch_workspace,
        batch_change_name=spec.name,
        batch_change_description=spec.description,
    )


@dataclass(init=False, repr=False, eq=False)
class Lookup(FrozenByIdentity):
    """What the cache holds for a workspace, asked before anything is written for it:
    where it comes from, each step's key, and the longest cached prefix."""

    source: Source
    keyed: _Keyed

    def __init__(self, source: Source, keyed: _Keyed) -> None:
        self._fill(source, keyed)

    @property
    def full_hit(self) -> bool:
        """Every step is cached: the workspace's result comes from its last entry."""
        hit = self.keyed.hit
        return hit is not None and hit[0] == len(self.keyed.keys) - 1


def look_up(ctx: RunContext, ws: Workspace) -> Lookup:
    """``ws``'s source and its steps' cache keys, and the longest cached prefix.

    The keys start from the commit's tree, which the baseline is made from
    alone: nothing is written to disk, and no event is sent.
    """
    source = resolve_source(ws, ctx.cancel)
    spec = ctx.spec
    if ctx.cache is None or not spec.steps:
        return Lookup(source, _Keyed())
    inputs = list(ctx.step_key_inputs or key_inputs(ctx))
    workspace = workspace_key_input(spec, ctx.namespace, ws, source.tree)
    keys = step_keys(workspace, inputs)
    return Lookup(source, _Keyed(keys, inputs, _longest_hit(ctx.cache, keys), workspace))


def _longest_hit(cache: StepCache, keys: Sequence[str]) -> tuple[int, CacheEntry] | None:
    # A StepCache's get never fails: an unreadable entry or store is a logged miss.
    for index in range(len(keys) - 1, -1, -1):
        entry = cache.get(keys[index])
        if entry is not None:
            return index, entry
    return None


class WorkspaceRunner:
    def __init__(self, ctx: RunContext, workspace: Workspace) -> None:
        self.ctx = ctx
        self.ws = workspace
        self.spec = ctx.spec
        self.total = len(self.spec.steps)
        self.log_volume = 0  # bytes the workspace's steps printed, against the log cap
        self.current_step: int | None = None
        self.fields = {
            "run_id": ctx.run_id,
            "repository": workspace.repository,
            "path": workspace.path,
            # Two workspaces may share a repository and path (`on:` branches): the
            # branch tells their events apart (their logs, the display's rows).
            "branch": workspace.branch,
        }
        # preparing, diffing, cleaning: so a large workspace's slow parts show
        self.phases = PhaseEvents(self.emit)
        self._keyed = _Keyed()  # set by run(), before the workspace is written
        self._ready: dict[int, _Ready] = {}  # step number -> its container, made ahead
        self._aheads: list[Ahead] = []  # every container made, to wait for their removal
        # A step printed a mask: a cached step would not register it again, so
        # neither it nor any later step of this workspace is cached.
        self.masked = False

    def emit(self, name: str, **extra: Any) -> None:
        self.ctx.reporter.event(name, **self.fields, **extra)

    def run(self, lookup: Lookup | None = None) -> WorkspaceResult:
        """The workspace's steps and its result; ``lookup``: what ``look_up`` found for
        it already (the job loop asks in its own thread whether to run it there)."""
        self.emit("workspace.started", steps=self.total)
        local: LocalWorkspace | None = None
        result: WorkspaceResult | None = None
        try:
            # The cache is asked first: a full hit needs no tree on disk at all.
            found = look_up(self.ctx, self.ws) if lookup is None else lookup
            source = found.source
            self._keyed = found.keyed
            cached = self._full_hit()
            if cached is not None:
                return self._finish(cached)
            if self.ctx.network_soon is not None:
                self.ctx.network_soon()
            self.phases.enter("preparing")
            from runner.execute.workspace import LocalWorkspace

            local = LocalWorkspace.create(
                self.ws,
                run_id=self.ctx.run_id,
                temp_root=self.ctx.temp_root,
                cancel=self.ctx.cancel,  # every slow part of it stops on Ctrl-C
                progress=self.phases.files,  # removal reports through it too
                source=source,
            )
            result = self._run_steps(local)
        except StepFailed as exc:
            result = WorkspaceResult(self.ws, "failed", error=str(exc))
        except ContainerRuntimeError as exc:
            # The engine failed, not the step: a coordinator retries such a job.
            result = WorkspaceResult(self.ws, "failed", error=str(exc), infrastructure_failure=True)
        except RunnerError as exc:
            result = WorkspaceResult(self.ws, "failed", error=str(exc))
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            result = WorkspaceResult(
                self.ws,
                "failed",
                error=f"the workspace could not be written{where}: {exc.strerror or exc} — "
                "free some space in the temporary folder (TMPDIR) and run again",
                infrastructure_failure=True,
            )
        finally:
            self._drop()  # containers made for steps that will not run now
            if local is not None:
                keep = self.ctx.keep_tree
                if keep and result and result.status == "failed" and not self.ctx.cancel.is_set():
                    keep(self.ws, local.tree_dir)
                self.phases.enter("cleaning")
                local.remove()
        assert result is not None  # each way out of the try sets it
        return self._finish(result)

    def _finish(self, result: WorkspaceResult) -> WorkspaceResult:
        if (
            self.ctx.cancel.is_set()
            and result.status == "failed"
            and not result.infrastructure_failure
        ):
            result.status = "canceled"
        if result.error:
            result.error = self.ctx.redactor.redact(result.error)
        return result

    # -- the cache -------------------------------------------------------------
    def _full_hit(self) -> WorkspaceResult | None:
        """The result of a workspace whose last step is cached, from its entry alone:
        no tree written, snapshotted or diffed, no container. What the diff writes
        still goes through the secret check, read from the diff itself."""
        keys, hit = self._keyed.keys, self._keyed.hit
        if hit is None or hit[0] != len(keys) - 1:
            return None
        entry = hit[1]
        # With no value to look for (no secret, no mask) the check finds nothing:
        # the diff is not read at all, however large.
        if self.ctx.redactor.knows_values():
            try:
                files = _written_files(self.ws.repo_path, entry.diff)
            except (CacheError, GitError) as exc:
                # A patch that shows no bytes, or a blob that cannot be read: the
                # workspace is written and its files checked instead.
                log.info("the cached diff is checked in the workspace", error=str(exc))
                return None
            self._check_written(files, entry.diff)
        for step in self.spec.steps:
            self.emit("step.cached", step=step.number, steps=self.total)
        acc = entry.accumulated
        return WorkspaceResult(
            self.ws,
            "changed" if entry.diff.strip() else "unchanged",
            diff=entry.diff,
            outputs=json.loads(json.dumps(entry.outputs)),
            changes=FileChanges(*(tuple(acc.get(f"{kind}_files", ())) for kind in _KINDS)),
            steps_cached=self.total,
        )

    # -- the loop --------------------------------------------------------------
    def _run_steps(self, local: LocalWorkspace) -> WorkspaceResult:
        ctx = self.ctx
        steps = self.spec.steps
        keys, inputs, hit = self._keyed.keys, self._keyed.inputs, self._keyed.hit
        tree = local.baseline
        outputs: dict[str, Any] = {}
        previous = _empty_step()
        start = 0
        cached = 0
        if hit is not None:
            index, entry = hit
            tree = local.apply(entry.diff)
            outputs = json.loads(json.dumps(entry.outputs))
            previous = {**dict(entry.changes), "stdout": entry.stdout, "stderr": entry.stderr}
            start = index + 1
            cached = start
            for step in steps[:start]:
                self.emit("step.cached", step=step.number, steps=self.total)
        ran = 0
        from runner.execute.limits import JobDeadline

        self._prepare_first(local, steps[start:], self._context(local, tree, previous, outputs))
        ctx.turn.wait(ctx.cancel)
        # The job timeout counts from the first step this workspace runs.
        self.deadline = JobDeadline(ctx.sandbox.job_timeout_s)
        for step in steps[start:]:
            if ctx.cancel.is_set():
                return WorkspaceResult(
                    self.ws,
                    "canceled",
                    error=f"canceled before step {step.number}",
                    steps_run=ran,
                    steps_cached=cached,
                )
            context = self._context(local, tree, previous, outputs)
            if not self._should_run(step, context):
                self._drop(step.number)
                self.emit("step.skipped", step=step.number, steps=self.total)
                if keys:
                    self._store(
                        keys, inputs, step.number - 1, local, tree, previous, outputs, skipped=True
                    )
                continue
            new_tree, step_result = self._run_one(local, step, context, tree)
            ran += 1
            context_after = {**context, "step": step_result}
            for out in step.outputs:
                outputs[out.name] = self._output(
                    step, out.name, out.value, out.format, context_after
                )
            tree = new_tree
            previous = step_result
            if keys:
                self._store(
                    keys, inputs, step.number - 1, local, tree, previous, outputs, skipped=False
                )
        self.phases.enter("diffing")
        diff = local.diff(local.baseline, tree)
        changes = local.changes(local.baseline, tree)
        self._check_for_secrets(_changed_files(local, changes), diff)
        status: Status = "changed" if diff.strip() else "unchanged"
        return WorkspaceResult(
            self.ws,
            status,
            diff=diff,
            outputs=outputs,
            changes=changes,
            steps_run=ran,
            steps_cached=cached,
        )

    def _store(
        self,
        keys: Sequence[str],
        inputs: Sequence[StepKeyInput],
        index: int,
        local: LocalWorkspace,
        tree: str,
        previous: Mapping[str, Any],
        outputs: Mapping[str, Any],
        *,
        skipped: bool,
    ) -> None:
        assert self.ctx.cache is not None
        if self.masked:
            return
        diff = local.diff(local.baseline, tree)
        entry = CacheEntry(
            diff=diff,
            changes={k: list(previous.get(k, [])) for k in FileChanges().as_template()},
            accumulated=local.changes(local.baseline, tree).as_template(),
            outputs=dict(outputs),
            stdout=str(previous.get("stdout", "")),
            stderr=str(previous.get("stderr", "")),
            skipped=skipped,
            # What `runner cache why` compares a later key with: names and hashes only.
            inputs=_named(self._keyed, index + 1),
        )
        try:
            blob = entry.to_bytes()
            # The blob re-encodes the diff, so check the diff's own bytes as well.
            redact = self.ctx.redactor.redact_bytes
            if redact(blob) != blob or redact(diff) != diff:
                log.warning("not caching a step whose result holds a secret value", step=index + 1)
                return
            self.ctx.cache.put(
                keys[index],
                entry,
                namespace=self.ctx.namespace,
                secret_refs=prefix_secret_refs(inputs, index + 1),
            )
        except CacheError as exc:  # a cache that cannot store is no reason to fail the step
            log.warning("could not write the cache entry", step=index + 1, error=exc.message)

    def _context(
        self,
        local: LocalWorkspace,
        tree: str,
        previous: Mapping[str, Any],
        outputs: Mapping[str, Any],
    ) -> dict[str, Any]:
        acc = local.changes(local.baseline, tree) if tree != local.baseline else FileChanges()
        return {
            "repository": {
                "name": self.ws.repository,
                "branch": self.ws.branch,
                "search_result_paths": tmpl.SearchResultPaths(self.ws.search_result_paths),
            },
            "batch_change": {"name": self.spec.name, "description": self.spec.description},
            "previous_step": dict(previous),
            "step": _empty_step(),  # Sourcegraph's: empty until the step has run
            "steps": {**acc.as_template(), "path": self.ws.path},
            "outputs": dict(outputs),
        }

    def _should_run(self, step: Step, context: Mapping[str, Any]) -> bool:
        cond = step.if_
        if cond is None or cond is True:
            return True
        if cond is False:
            return False
        try:
            rendered = tmpl.render_template(cond, context)
        except TemplateError as exc:
            raise StepFailed(f"step {step.number}: `if` failed to render: {exc.message}") from None
        return tmpl.condition_holds(rendered)

    def _render(self, step: Step, what: str, text: str, context: Mapping[str, Any]) -> str:
        try:
            return str(tmpl.render_template(text, context))
        except TemplateError as exc:
            raise StepFailed(
                f"step {step.number}: {what} failed to render: {exc.message}"
            ) from None

    def _run_one(
        self, local: LocalWorkspace, step: Step, context: Mapping[str, Any], tree: str
    ) -> tuple[str, dict[str, Any]]:
        ctx = self.ctx
        ready = self._ready.pop(step.number, None) or self._ready_for(local, step, context)
        stop, disk = ready.stop, ready.disk
        timeout_s, job_bound = self.deadline.step_timeout(step.number, ctx.limits.timeout_s)
        # Rendered now, with the previous step's outputs: the prepared container gets it.
        container = replace(self._container(local, step, context, disk.labels), timeout_s=timeout_s)
        self._prepare_next(local, step, context)
        self.current_step = step.number  # what a refused connection is reported under
        self.emit("step.started", step=step.number, steps=self.total, container=step.container)
        from runner.execute.capture import OutputSink

        sinks = {
            name: OutputSink(
                ctx.redactor.stream(),
                self._lines_emitter(step.number, name),
                limit=ctx.limits.capture_limit,
                on_mask=self._mask_taker(step.number, name),
            )
            for name in ("stdout", "stderr")
        }
        cap = ctx.limits.log_cap_bytes

        def on_output(stream: OutputStream, chunk: bytes) -> None:
            if stop.over_cap:
                return  # stopped: nothing more is shown, logged or kept
            self.log_volume += len(chunk)
            if cap is not None and self.log_volume > cap:
                stop.over_cap = True
                stop.set()
                return
            sinks[stream].feed(chunk)

        prepared = ready.ahead.take()
        with disk:
            if prepared is None:  # preparing it ahead failed: a new container says why
                result = ctx.runtime.run_step(container, on_output=on_output, cancel=stop)
            else:
                result = prepared.run(container, on_output=on_output, cancel=stop)
        for sink in sinks.values():
            sink.close()
        self.emit("step.finished", step=step.number, steps=self.total, exit_code=result.exit_code)
        if stop.over_cap:
            raise StepFailed(
                f"step {step.number} was stopped: the workspace's steps printed over the "
                f"log cap of {_size(cap or 0)}",
                hint="make the steps print less, or raise the cap (runner run --log-cap, "
                "RUNNER_JOB_LOG_CAP_MB)",
            )
        if disk.over:
            raise disk.failure(step.number)
        if result.timed_out and job_bound:
            raise self.deadline.timed_out(step.number)
        if not result.succeeded:
            raise StepFailed(self._failure_message(step, result, sinks["stderr"].captured))
        # Recording what the step changed reads the whole tree: slow on a large one.
        self.phases.enter("diffing", step=step.number)
        new_tree = local.snapshot()
        changes = local.changes(tree, new_tree)
        step_result = {
            **changes.as_template(),
            "stdout": sinks["stdout"].captured,
            "stderr": sinks["stderr"].captured,
        }
        return new_tree, step_result

    # -- containers made ahead (runner.execute.pipeline) ---------------------------
    def _ready_for(
        self,
        local: LocalWorkspace,
        step: Step,
        context: Mapping[str, Any],
        *,
        background: bool = False,
    ) -> _Ready:
        """Make ``step``'s container now (``background``: on a thread) from ``context``.

        Only its creation counts (image, mounts, labels, network); what
        ``context`` renders is rendered again at the step's turn.
        """
        from runner.execute.limits import DiskWatcher

        stop = _StepStop(self.ctx.cancel)
        disk = DiskWatcher(
            cap=self.ctx.sandbox.disk_cap_bytes,
            workspace=local.tree_dir,
            runtime=self.ctx.runtime,
            stop=stop,
        )
        container = self._container(local, step, context, disk.labels)
        ahead = Ahead(self.ctx.runtime, container, background=background)
        self._aheads.append(ahead)
        return _Ready(stop, disk, ahead)

    def _prepare_first(
        self, local: LocalWorkspace, steps: Sequence[Step], context: Mapping[str, Any]
    ) -> None:
        """The first step to run, made before the workspace's turn (its context is exact)."""
        if steps and self._should_run(steps[0], context):
            self._ready[steps[0].number] = self._ready_for(local, steps[0], context)

    def _prepare_next(self, local: LocalWorkspace, step: Step, context: Mapping[str, Any]) -> None:
        """The next step that may run, made while ``step`` runs.

        Its ``if:`` and templates wait for ``step``'s outputs; made from
        ``step``'s context (with the outputs ``step`` will set, empty, so
        templates naming them render), it is discarded if it does not run.
        """
        unset = {out.name: "" for out in step.outputs}
        context = {**context, "outputs": {**unset, **context.get("outputs", {})}}
        for later in self.spec.steps[step.number :]:
            if later.if_ is False:
                continue
            try:
                self._ready[later.number] = self._ready_for(local, later, context, background=True)
            except RunnerError as exc:  # its turn renders it again and says what is wrong
                log.debug("not preparing a step ahead", step=later.number, error=exc.message)
            return

    def _drop(self, number: int | None = None) -> None:
        """Discard the container made for step ``number`` (every one if None)."""
        for key in list(self._ready) if number is None else [number]:
            ready = self._ready.pop(key, None)
            if ready is not None:
                ready.ahead.drop()

    def settle(self) -> None:
        """Wait until every container of this workspace is gone (before its network goes)."""
        self._drop()
        for ahead in self._aheads:
            ahead.wait_removed()

    def _container(
        self,
        local: LocalWorkspace,
        step: Step,
        context: Mapping[str, Any],
        labels: Mapping[str, str],
    ) -> StepContainer:
        """``step``'s container as ``context`` renders it (its timeout is set at its turn)."""
        ctx = self.ctx
        script = self._render(step, "run", step.run, context)
        self._refuse_secrets(step, "run script", script)
        try:
            resolved = materialize(
                ctx.env_plan.steps.get(step.number, ()),
                context=context,
                secrets=ctx.secrets,
                host=ctx.host,
            )
        except TemplateError as exc:
            raise StepFailed(f"step {step.number}: env failed to render: {exc.message}") from None
        env = {r.name: r.value for r in resolved if isinstance(r.value, str)}
        # A file secret reaches the step as a file on a tmpfs; its variable holds the path.
        secret_files = {
            r.name: r.value
            for r in resolved
            if isinstance(r.value, Secret) and r.delivery.type == "file"
        }
        secret_env = {
            r.name: self._delivered(r.value)
            for r in resolved
            if isinstance(r.value, Secret) and r.name not in secret_files
        }
        for name, value in env.items():
            self._refuse_secrets(step, f"env value of {name}", value)

        step_dir = local.root / f"step-{step.number}"
        step_dir.mkdir(exist_ok=True)
        mounts = [Mount(source=local.tree_dir.resolve(), target="/work", read_only=False)]
        mounts += [Mount(source=src.resolve(), target=dst) for src, dst in local.git_mounts()]
        for i, f in enumerate(step.files):
            content = self._render(step, f"files[{f.target}]", f.content, context)
            self._refuse_secrets(step, f"file {f.target}", content)
            host_file = step_dir / f"file-{i}"
            host_file.write_text(content)
            mounts.append(Mount(source=host_file.resolve(), target=f.target))
        for m in step.mounts:
            mounts.append(
                Mount(source=_mount_source(ctx.spec_dir, m.path, step), target=m.mountpoint)
            )

        network = ctx.network()
        trust: dict[str, str] = {}
        if network.ca_cert is not None:  # the job's proxy brokers: trust its CA
            from runner.egress.broker import CA_BUNDLE_PATH, ca_bundle, image_roots, trust_env

            image = ctx.images[step.container]
            bundle = local.root / f"ca-bundle-{image.rpartition(':')[2][:16]}.pem"
            if not bundle.exists():
                roots = image_roots(ctx.runtime, image, {RUN_LABEL: ctx.run_id})
                bundle.write_bytes(ca_bundle(network.ca_cert, roots))
            mounts.append(Mount(source=bundle.resolve(), target=CA_BUNDLE_PATH))
            trust = trust_env()
        return StepContainer(
            image=ctx.images[step.container],
            script=script,
            workdir=local.workdir_in_container,
            mounts=mounts,
            env={**env, **network.proxy_env, **trust},
            secret_env=secret_env,
            secret_files=secret_files,
            labels={RUN_LABEL: ctx.run_id, **labels},
            timeout_s=ctx.limits.timeout_s,
            memory_bytes=ctx.limits.memory_bytes,
            cpus=ctx.limits.cpus,
            sandbox=StepSandbox(
                isolation=ctx.sandbox.isolation,
                hardening=ctx.sandbox.hardening,
                network=network.network,
                extra_hosts=network.extra_hosts,
                proxy_env=network.proxy_env,
            ),
        )

    def _delivered(self, value: Secret) -> Secret:
        """What a step's variable holds: a brokered secret's placeholder, else the value."""
        broker = self.ctx.broker
        placeholder = broker.placeholder_for(value) if broker is not None else None
        return placeholder if placeholder is not None else value

    def _refuse_secrets(self, step: Step, what: str, text: str) -> None:
        """Templates can rebuild a secret from pieces (say, two outputs holding its
        halves): what they render goes to disk and into the container's
        configuration, so it must hold no secret value."""
        names = _leaked_names(self.ctx.redactor, text.encode("utf-8", "surrogateescape"))
        if names:
            raise StepFailed(
                f"step {step.number}: the rendered {what} would contain the secret "
                f"{', '.join(names)}; runner writes no secret value into scripts, files or "
                "container settings",
                hint="pass secrets to steps through `env` instead of building them in templates",
            )

    def _lines_emitter(self, number: int, stream: str) -> Callable[[list[str]], None]:
        def emit(lines: list[str]) -> None:
            report_output(self.ctx.reporter, lines, **self.fields, step=number, stream=stream)

        return emit

    def _mask_taker(self, number: int, stream: str) -> Callable[[MaskCommand], None]:
        def take(command: MaskCommand) -> None:
            self.masked = True
            add, warning = self.ctx.add_mask, command.problem
            if warning is None and add is None:
                warning = "masks cannot be added here; the line was not shown"
            elif warning is None and add is not None:
                add(command.name, command.values)
                warning = command.note
            if warning is not None:  # never the value: the command's text is not repeated
                self.emit("step.mask_warning", step=number, stream=stream, message=warning)

        return take

    def _failure_message(self, step: Step, result: StepExit, stderr: str) -> str:
        if result.canceled:
            return f"step {step.number} was canceled"
        if result.timed_out:
            return f"step {step.number} timed out after {self.ctx.limits.timeout_s:g} s"
        what = f"step {step.number} failed with exit code {result.exit_code}"
        if result.oom_killed:
            what = f"step {step.number} was killed: it went over its memory limit"
        tail = [line for line in stderr.splitlines() if line.strip()][-STDERR_TAIL_LINES:]
        if tail:
            what += ": " + " | ".join(tail)[-2000:]
        return what

    def _output(
        self, step: Step, name: str, value: str, fmt: str, context: Mapping[str, Any]
    ) -> Any:
        text = self._render(step, f"outputs.{name}", value, context)
        if fmt == "text":
            return text
        try:
            if fmt == "json":
                return json.loads(text)
            root = load_yaml(text, f"outputs.{name}")
            return None if root is None else root.plain()
        except (ValueError, YamlError) as exc:
            raise StepFailed(
                f"step {step.number}: output {name} is not valid {fmt}: {str(exc)[:200]}",
                hint=f"make the step print {fmt}, or set `format: text`",
            ) from None
        except RecursionError:
            raise StepFailed(
                f"step {step.number}: output {name} is not valid {fmt}: it nests too deeply",
                hint=f"make the step print flatter {fmt}, or set `format: text`",
            ) from None

    # -- the diff check ----------------------------------------------------------
    def _check_written(self, files: Sequence[tuple[str, bytes]], diff: bytes) -> None:
        """``_check_for_secrets`` in one pass over everything, the usual case being clean;
        only a leak is looked for again file by file, to name the file."""
        from runner.patch import SEPARATOR

        whole = SEPARATOR.join([*(data for _, data in files), diff])
        if _leaked_names(self.ctx.redactor, whole):
            self._check_for_secrets(files, diff)
            raise StepFailed(
                "the workspace's changes put a secret into the diff; no diff was written",
                hint="make the steps keep secret values out of the files they change",
            )

    def _check_for_secrets(self, files: Iterable[tuple[str, bytes]], diff: bytes) -> None:
        """No secret value in a changed file (whole: a binary diff hides bytes) or the diff."""
        redactor = self.ctx.redactor
        for path, data in files:
            names = _leaked_names(redactor, data)
            if names:
                raise StepFailed(
                    f"the workspace's changes put the secret {', '.join(names)} into {path}; "
                    "no diff was written",
                    hint="make the steps keep secret values out of the files they change",
                )
        names = _leaked_names(redactor, diff)
        if names:
            raise StepFailed(
                f"the workspace's diff holds the secret {', '.join(names)}; no diff was written",
                hint="make the steps keep secret values out of the files they change",
            )


@dataclass(init=False, repr=False, eq=False)
class _Ready(FrozenByIdentity):
    """A step's container made ahead, with the stop event and disk watcher it was labelled for."""

    stop: _StepStop
    disk: DiskWatcher
    ahead: Ahead

    def __init__(self, stop: _StepStop, disk: DiskWatcher, ahead: Ahead) -> None:
        self._fill(stop, disk, ahead)


@dataclass(init=False, repr=False, eq=False)
class _Keyed(FrozenByIdentity):
    """A workspace's cache keys, what went into them, and the longest cached prefix."""

    keys: Sequence[str] = ()
    inputs: Sequence[StepKeyInput] = ()
    hit: tuple[int, CacheEntry] | None = None
    workspace: WorkspaceKeyInput | None = None

    def __init__(
        self,
        keys: Sequence[str] = (),
        inputs: Sequence[StepKeyInput] = (),
        hit: tuple[int, CacheEntry] | None = None,
        workspace: WorkspaceKeyInput | None = None,
    ) -> None:
        self._fill(keys, inputs, hit, workspace)


def _named(keyed: _Keyed, upto: int) -> dict[str, Any] | None:
    """The named inputs of the key of steps 1..``upto`` (runner.cache.why)."""
    if keyed.workspace is None:
        return None
    from runner.cache.why import named_inputs  # for a cache entry written: not on a full hit

    return named_inputs(keyed.workspace, keyed.inputs, upto)


_KINDS = ("modified", "added", "deleted", "renamed")  # FileChanges' fields, in order


def _written_files(repo: Path, diff: bytes) -> list[tuple[str, bytes]]:
    """What ``diff`` writes into each file it touches, from the diff (runner.patch) and
    the old blobs of its binary deltas."""
    from runner.execute.workspace import read_blobs
    from runner.patch import apply_delta, written

    parts = list(written(diff))
    bases = iter(read_blobs(repo, [p.base for p in parts if p.base is not None]))
    return [(p.path, p.data if p.base is None else apply_delta(next(bases), p.data)) for p in parts]


def _changed_files(local: LocalWorkspace, changes: FileChanges) -> Iterator[tuple[str, bytes]]:
    for path in (*changes.modified, *changes.added, *changes.renamed):
        file = local.tree_dir / path
        try:
            yield path, file.read_bytes() if file.is_file() else b""
        except OSError:
            continue


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n / 1024:g} KiB"


_MARKER = re.compile(rb"\[REDACTED:([A-Za-z0-9_]+)\]")


def _leaked_names(redactor: Redacts, data: bytes) -> list[str]:
    redacted = redactor.redact_bytes(data)
    if redacted == data:
        return []
    before = set(_MARKER.findall(data))
    return sorted(
        {m.decode() for m in _MARKER.findall(redacted)} - {b.decode() for b in before}
    ) or ["(unnamed)"]
