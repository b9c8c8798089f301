"""The executor daemon: claim jobs from a coordinator, run them, report back.

It holds a token and nothing else: no database, no master key, no
``RUNNER_HOME``. Each claimed job arrives with its secrets; they are
registered with the process's redactor under the job's own scope, kept in
memory only, and released after the job's last log chunk and its result
have been sent.

Shape (after dramatiq's worker): a main loop claims while there is room,
polling with jitter and backing off on errors; each job runs on its own
thread with the local engine (clone, steps in containers, the secret check
on diffs, the cache through the coordinator); a heartbeat thread keeps the
leases alive and learns which jobs to cancel. ``stop_claiming`` lets running
jobs finish; ``cancel_running`` stops them (containers killed, jobs failed
with a reason).
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from runner.backoff import Backoff, Retry, jittered
from runner.cache import CacheEntry
from runner.cache.remote import CoordinatorStepCache
from runner.clock import SYSTEM_CLOCK, Clock
from runner.egress import JobNetworkSeam, NoJobNetworks
from runner.errors import (
    ContainerRuntimeError,
    ExecutionError,
    GitError,
    ImageNotFoundError,
    LeaseLostError,
    NotAuthenticatedError,
    PermissionDeniedError,
    RunnerError,
)
from runner.execute.job import (
    CheckedChangeset,
    Job,
    JobServices,
    ValueRegistry,
    WorkspaceOutcome,
    register_values,
    resolve_images,
    run_job,
)
from runner.execute.runtime import ContainerRuntime
from runner.execute.steps import (
    RUN_LABEL,
    RunLimits,
    WorkspaceResult,
)
from runner.execute.workspace import remove_tree
from runner.git import git, git_text
from runner.log import get_logger
from runner.metrics import ExecutorMetrics
from runner.queue.client import Claim, JobEnd, NextJob
from runner.queue.jobs import workspace_from_json
from runner.queue.models import HeartbeatAnswer
from runner.redact import ActiveRedactor, Redacts, active
from runner.report import now_rfc3339, output_events
from runner.sandbox import SandboxPolicy
from runner.sandbox.tighten import sandbox_summary, tighten
from runner.secrets.delivery import BrokeredUse, UsesJson
from runner.spec import load_spec_text

log = get_logger("runner.executor")

EndState = Literal["completed", "failed", "errored", "canceled"]
MAX_CHUNK_BYTES = 256 * 1024


class ExecutorApi(Protocol):
    """What an executor needs of the coordinator (``CoordinatorClient`` has it)."""

    def claim(self, executor: str | None = None, labels: Sequence[str] = ()) -> Claim | None: ...
    def heartbeat(
        self,
        executor: str | None,
        leases: Mapping[str, str],
        info: Mapping[str, Any] | None = None,
    ) -> HeartbeatAnswer: ...
    def append_logs(self, job_id: str, lease: str, chunks: Sequence[tuple[int, str]]) -> int: ...
    def record_step(
        self, job_id: str, lease: str, *, step: int, status: str, exit_code: int | None = None
    ) -> None: ...
    # ``brokered``: the job's brokered uses (``BrokeredUse.to_json``), for the coordinator's audit.
    def complete(
        self, job_id: str, lease: str, result: Mapping[str, Any], *, brokered: UsesJson = ()
    ) -> Mapping[str, Any]: ...
    def fail(
        self, job_id: str, lease: str, *, state: str, error: str, brokered: UsesJson = ()
    ) -> Mapping[str, Any]: ...
    # ``complete`` or ``fail``, with the executor's next job claimed in the same request.
    def end_and_claim(
        self, job_id: str, lease: str, end: JobEnd, executor: str | None, labels: Sequence[str]
    ) -> NextJob: ...
    def cache_get(self, key: str) -> CacheEntry | None: ...
    def cache_put(
        self, key: str, entry: CacheEntry, *, namespace: str, secret_refs: Sequence[str]
    ) -> None: ...


@dataclass(frozen=True, kw_only=True)
class ExecutorSettings:
    name: str
    limits: RunLimits
    max_jobs: int = 1
    poll_interval_s: float = 1.0
    heartbeat_interval_s: float = 5.0
    max_backoff_s: float = 30.0
    log_flush_interval_s: float = 0.5
    # How long a finished job keeps retrying to send its last logs and result.
    report_timeout_s: float = 120.0
    temp_root: Path | None = None
    use_cache: bool = True
    # The operator's own sandbox policy; each job runs under it tightened by its claim's.
    sandbox: SandboxPolicy = field(default_factory=SandboxPolicy)
    # A network per job (runner.egress); without one, steps use the engine's default.
    networks: JobNetworkSeam = field(default_factory=NoJobNetworks)
    # Jobs requiring labels go only to executors having them all (runner.queue.routing).
    labels: tuple[str, ...] = ()
    # Exit (0) after claiming this many jobs, once they end: an autoscaler's one-job executor.
    max_jobs_total: int | None = None
    # What each heartbeat tells the coordinator about this executor besides its name,
    # labels and running jobs (runner.queue.fleet.ExecutorInfo: version, host, engine, ...).
    info: Mapping[str, Any] = field(default_factory=dict)


# Resending the log and the result: quick at first, never more than a few seconds apart.
LOG_BACKOFF = Backoff(first_s=0.2, cap_s=5.0, jitter=0)
REPORT_BACKOFF = Backoff(first_s=0.5, cap_s=10.0, jitter=0)


# The job's log: a Reporter that ships events ---------------------------------------------------

_STEP_STATUS = {
    "step.started": "started",
    "step.finished": "finished",
    "step.skipped": "skipped",
    "step.cached": "cached",
}


class JobLog:
    """Engine events → JSON lines → sequence-numbered chunks sent to the coordinator.

    Lines arrive redacted from the engine and are redacted once more here. A
    sender thread ships them every ``interval_s``; a chunk that fails is sent
    again, unchanged and with the same number, until it goes through (the
    coordinator stores a number once). ``finish`` sends the rest.
    """

    def __init__(
        self,
        api: ExecutorApi,
        claim: Claim,
        redactor: Redacts,
        *,
        interval_s: float,
        on_lost: Callable[[], None],
        clock: Clock = SYSTEM_CLOCK,
        metrics: ExecutorMetrics | None = None,
    ) -> None:
        self._api = api
        self._claim = claim
        self._redactor = redactor
        self._metrics = metrics
        self._clock = clock
        self._interval = interval_s
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._steps: list[tuple[int, str, int | None]] = []
        self._seq = 0
        self._inflight: tuple[int, str] | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._retry = Retry(LOG_BACKOFF, clock=clock)
        self.lost = False
        self._thread = threading.Thread(target=self._loop, name=f"log-{claim.job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # Reporter
    def event(self, name: str, **fields: Any) -> None:
        data = {"event": name, "time": now_rfc3339(), "job_id": self._claim.job_id, **fields}
        if self._metrics is not None:
            self._metrics.event(self._claim.job_id, name, fields, self._clock.monotonic())
        line = self._redactor.redact(json.dumps(data, ensure_ascii=False, default=str))
        with self._lock:
            self._lines.append(line)
            status = _STEP_STATUS.get(name)
            if status is not None and isinstance(fields.get("step"), int):
                self._steps.append((fields["step"], status, fields.get("exit_code")))

    def step_output(self, lines: Sequence[str], **fields: Any) -> None:
        # A chunk's lines in one go: output costs its bytes (runner.report.report_output).
        head = {"event": "step.output", "time": now_rfc3339(), "job_id": self._claim.job_id}
        text = output_events({**head, **fields}, lines, self._redactor.redact)
        with self._lock:
            self._lines.extend(text.split("\n")[:-1])

    def close(self) -> None:
        pass

    def finish(self, timeout_s: float) -> bool:
        """Send everything left; True when all of it reached the coordinator."""
        self._retry.give_up_after(timeout_s)
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout_s + 5)
        with self._lock:
            return not self.lost and not self._lines and not self._steps and not self._inflight

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                while self._send_one():
                    self._retry.reset()
            except LeaseLostError:
                self.lost = True
                self._on_lost()
                return
            except RunnerError as exc:
                # Only ``finish`` sets a deadline: until then a failed chunk waits and goes again.
                log.warning("could not send log lines; retrying", error=str(exc))
                if not self._retry.wait():
                    log.error(
                        "giving up sending the job's log", job=self._claim.job_id, error=str(exc)
                    )
                    return
                self._wake.set()
                continue
            if self._closing.is_set():
                return

    def _send_one(self) -> bool:
        """Send the next chunk or step result; False when there is nothing to send."""
        claim = self._claim
        with self._lock:
            if self._inflight is None and self._lines:
                taken: list[str] = []
                size = 0
                while self._lines and (not taken or size + len(self._lines[0]) < MAX_CHUNK_BYTES):
                    line = self._lines.pop(0)
                    taken.append(line)
                    size += len(line) + 1
                self._inflight = (self._seq, "\n".join(taken) + "\n")
            chunk = self._inflight
            step = self._steps[0] if self._steps and chunk is None else None
        if chunk is not None:
            self._api.append_logs(claim.job_id, claim.lease, [chunk])
            with self._lock:
                self._inflight = None
                self._seq += 1
            return True
        if step is not None:
            number, status, exit_code = step
            self._api.record_step(
                claim.job_id, claim.lease, step=number, status=status, exit_code=exit_code
            )
            with self._lock:
                self._steps.pop(0)
            return True
        return False


# One job --------------------------------------------------------------------------------------


class NextJobs(Protocol):
    """Whether a job ending now may ask for the next one (``Executor`` decides)."""

    def reserve(self) -> bool:
        """True to ask with the end: a slot is then held for the answer."""
        ...

    def settle(self, next_job: NextJob | None) -> Claim | None:
        """The answer (None when the report failed); the claim to start, if any."""
        ...


@dataclass
class Outcome:
    state: EndState
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


class JobRunner:
    """Runs one claimed job on its own thread, from clone to the final report."""

    def __init__(
        self,
        claim: Claim,
        *,
        api: ExecutorApi,
        runtime: ContainerRuntime,
        settings: ExecutorSettings,
        redactor: ActiveRedactor,
        on_done: Callable[[JobRunner], None],
        clock: Clock = SYSTEM_CLOCK,
        metrics: ExecutorMetrics | None = None,
        next_jobs: NextJobs | None = None,
    ) -> None:
        self.claim = claim
        self._api = api
        self._runtime = runtime
        self._settings = settings
        self._redactor = redactor
        self._on_done = on_done
        self._clock = clock
        self._metrics = metrics
        self.cancel_event = threading.Event()
        self.cancel_reason: str | None = None
        self.canceled_by_user = False
        self.reporting = False
        self.lost = False
        self.outcome: Outcome | None = None
        self.sandbox = settings.sandbox  # what the job runs under, once claimed
        # What the job's proxy authenticated, reported with its end for the audit log.
        self.brokered: list[BrokeredUse] = []
        self._next_jobs = next_jobs
        # The job claimed with this one's end: it takes this job's slot.
        self.next_claim: Claim | None = None
        self.thread = threading.Thread(target=self.run, name=f"job-{claim.job_id}", daemon=True)

    @property
    def job_id(self) -> str:
        return self.claim.job_id

    def cancel(self, reason: str, *, by_user: bool = False) -> None:
        """Stop the job: a user's cancel ends it ``canceled``, anything else ``failed``."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self.canceled_by_user = by_user
        self.cancel_event.set()

    def lose(self) -> None:
        """The coordinator no longer counts this job as ours: stop, and report nothing."""
        if self.reporting:
            return  # a heartbeat raced the report of the job's end
        if not self.lost:
            log.warning("lease lost; stopping the job", job=self.job_id)
        self.lost = True
        self.cancel("the lease was lost")

    def run(self) -> None:
        scope = f"job:{self.job_id}:{self.claim.attempt}"
        try:
            with self._redactor.scoped(scope) as registry:
                job_log = JobLog(
                    self._api,
                    self.claim,
                    self._redactor,
                    interval_s=self._settings.log_flush_interval_s,
                    on_lost=self.lose,
                    clock=self._clock,
                    metrics=self._metrics,
                )
                job_log.start()
                try:
                    outcome = self._execute(job_log, registry)
                except RunnerError as exc:
                    outcome = Outcome("failed", error=str(exc))
                except Exception as exc:  # a bug here must not leave the job hanging
                    outcome = Outcome(
                        "errored", error=f"the executor failed: {type(exc).__name__}: {exc}"
                    )
                if outcome.error:
                    outcome.error = self._redactor.redact(outcome.error)
                self.outcome = outcome
                if self._metrics is not None:
                    self._metrics.job_ended(outcome.state)
                job_log.finish(self._settings.report_timeout_s)
                if not (self.lost or job_log.lost):
                    self.reporting = True
                    self._report(outcome)
        finally:
            self._sweep()
            # The values go with the claim; nothing else kept them.
            self.claim = replace(self.claim, secrets={}, registry_auth=None)
            self._on_done(self)

    def _sweep(self) -> None:
        """Remove every container of this job, of this attempt or an earlier one.

        An attempt whose engine died, or whose executor was killed, can leave a
        container behind; whoever ends the job on this engine removes it.
        """
        try:
            self._runtime.sweep(RUN_LABEL, self.job_id)
            self._settings.networks.sweep(self.job_id)
        except RunnerError as exc:
            log.warning("could not sweep the job's containers", job=self.job_id, error=str(exc))

    def _report(self, outcome: Outcome) -> None:
        claim = self.claim
        retry = Retry(REPORT_BACKOFF, clock=self._clock, timeout_s=self._settings.report_timeout_s)
        brokered = [use.to_json() for use in self.brokered]
        while True:
            # Ask for the next job with this one's end only when the executor would claim
            # one now; the slot stays reserved until the answer is in.
            ask = self._next_jobs is not None and self._next_jobs.reserve()
            next_job: NextJob | None = None
            try:
                next_job = self._send_end(outcome, brokered, ask)
                log.info("job finished", job=claim.job_id, state=outcome.state, error=outcome.error)
                return
            except LeaseLostError:
                log.warning(
                    "the job was taken from this executor; result dropped", job=claim.job_id
                )
                return
            except RunnerError as exc:
                log.warning("could not report the job's end; retrying", error=str(exc))
                if not retry.wait():
                    log.error("could not report the job's end", job=claim.job_id, error=str(exc))
                    return
            finally:
                if ask and self._next_jobs is not None:
                    self.next_claim = self._next_jobs.settle(next_job)

    def _send_end(self, outcome: Outcome, brokered: UsesJson, ask: bool) -> NextJob | None:
        """Report the end; with ``ask``, the next job claimed in the same request."""
        claim, api, settings = self.claim, self._api, self._settings
        error = outcome.error or outcome.state
        if ask:
            end = JobEnd(state=outcome.state, result=outcome.result, error=error, brokered=brokered)
            return api.end_and_claim(claim.job_id, claim.lease, end, settings.name, settings.labels)
        if outcome.state == "completed":
            api.complete(claim.job_id, claim.lease, outcome.result, brokered=brokered)
        else:
            api.fail(claim.job_id, claim.lease, state=outcome.state, error=error, brokered=brokered)
        return None

    def _execute(self, job_log: JobLog, registry: ValueRegistry) -> Outcome:
        claim = self.claim
        settings = self._settings
        # Before anything can print: every value the claim carried is redacted from the
        # first line (``run_job`` registers them again, by variable name, as it starts).
        register_values(
            registry, plan=claim.env, secrets=claim.secrets, registry_auth=claim.registry_auth
        )
        # Never looser than what the coordinator set for the job's namespace.
        self.sandbox = tighten(settings.sandbox, claim.policy)
        root = Path(tempfile.mkdtemp(prefix=f"runner-job-{claim.job_id}-", dir=settings.temp_root))
        job_log.event(
            "run.started",
            run_id=claim.job_id,
            namespace=claim.namespace,
            executor=settings.name,
            attempt=claim.attempt,
            workspaces=1,
            sandbox=sandbox_summary(self.sandbox),
        )
        try:
            spec_path = claim.bundle.write_to(root / "spec")
            spec = load_spec_text(claim.bundle.spec_text, claim.bundle.spec_name)
            try:
                repo = self._clone(root / "repo.git", str(claim.workspace.get("commit", "")))
            except GitError as exc:
                return Outcome("errored", error=f"cannot clone {claim.clone_url}: {exc}")
            workspace = workspace_from_json(claim.workspace, repo)
            try:
                images = resolve_images(spec, self._runtime, claim.registry_auth)
                if self.sandbox.isolation != settings.sandbox.isolation:
                    # The namespace asks for gVisor of an executor started without it:
                    # an engine lacking runsc sends the job back for another executor.
                    self._runtime.check_isolation(self.sandbox.isolation)
            except ImageNotFoundError as exc:
                return Outcome("failed", error=str(exc))
            except ContainerRuntimeError as exc:
                return Outcome("errored", error=str(exc))
            job = Job(
                id=claim.job_id,
                spec=spec,
                spec_dir=spec_path.parent,
                namespace=claim.namespace,
                env_plan=claim.env,
                workspaces=[workspace],
                images=images,
            )
            services = JobServices(
                runtime=self._runtime,
                registry=registry,
                redactor=self._redactor,
                reporter=job_log,
                sink=_ResultSink(),
                limits=settings.limits,
                cancel=self.cancel_event,
                cache=CoordinatorStepCache(self._api) if settings.use_cache else None,
                temp_root=settings.temp_root,
                sandbox=self.sandbox,
                networks=settings.networks,
                on_brokered=self.brokered.extend,
            )
            (done,) = run_job(job, lambda ref, step: claim.secrets[ref.id], services)
            outcome = self._outcome(done)
            job_log.event("run.finished", run_id=claim.job_id, state=outcome.state)
            return outcome
        except ExecutionError as exc:
            return Outcome("errored", error=str(exc))
        except RunnerError as exc:
            return Outcome("failed", error=str(exc))
        finally:
            remove_tree(root)  # the clone and its workspace: unlinked in parallel

    def _clone(self, target: Path, commit: str) -> Path:
        git(["clone", "--bare", "--quiet", "--", self.claim.clone_url, str(target)])
        try:
            git_text(["rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"], cwd=target)
        except GitError:
            git(["fetch", "--quiet", "origin", commit], cwd=target)
        return target

    def _outcome(self, done: WorkspaceOutcome) -> Outcome:
        """The job's end state: what only an executor decides (retry, cancel, lost)."""
        result, ws = done.result, done.workspace
        if result.status == "canceled":
            detail = f" ({result.error})" if result.error else ""
            if self.canceled_by_user or self.cancel_reason is None:
                return Outcome("canceled", error=f"canceled on request{detail}")
            return Outcome("failed", error=f"{self.cancel_reason}{detail}")
        if result.status == "failed":
            state: EndState = "errored" if result.infrastructure_failure else "failed"
            return Outcome(state, error=result.error or "the workspace failed")
        return Outcome(
            "completed",
            result={
                "status": result.status,
                "repository": ws.repository,
                "path": ws.path,
                "branch": ws.branch,
                "commit": ws.commit,
                "changesets": [dict(cs.body) for cs in done.changesets],
                "outputs": result.outputs,
                "steps_run": result.steps_run,
                "steps_cached": result.steps_cached,
                "egress_denied": result.egress_denied,
                "broker_mismatch": result.broker_mismatch,
                "sandbox": sandbox_summary(self.sandbox),
            },
        )


class _ResultSink:
    """An executor keeps changesets in the job result it sends; the event names their branches."""

    def keep(self, result: WorkspaceResult, changesets: Sequence[CheckedChangeset]) -> list[str]:
        return [cs.branch for cs in changesets]


# The daemon -----------------------------------------------------------------------------------


class Executor:
    def __init__(
        self,
        *,
        api: ExecutorApi,
        runtime: ContainerRuntime,
        settings: ExecutorSettings,
        redactor: ActiveRedactor | None = None,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM_CLOCK,
        metrics: ExecutorMetrics | None = None,
    ) -> None:
        self._api = api
        self._runtime = runtime
        self.settings = settings
        self._redactor = redactor or active()
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self._clock = clock
        self._lock = threading.Lock()
        self._running: dict[str, JobRunner] = {}
        self._stop_claiming = threading.Event()
        self._stopped = threading.Event()
        self._slot_free = threading.Event()
        self.finished: list[JobRunner] = []
        self.exit_code = 0
        self.claimed = 0
        # Claims sent and not answered yet: they count against --max-jobs-total.
        self._asking = 0
        self._cancel_reason: str | None = None
        self.metrics = metrics or ExecutorMetrics(running=lambda: len(self.running))

    # Control (signal handlers call these) ------------------------------------------------------

    def stop_claiming(self) -> None:
        self._stop_claiming.set()
        self._slot_free.set()

    def cancel_running(self, reason: str) -> None:
        self.stop_claiming()
        with self._lock:
            self._cancel_reason = reason
            runners = list(self._running.values())
        for runner in runners:
            runner.cancel(reason)

    @property
    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    # The loop ----------------------------------------------------------------------------------

    def run(self) -> int:
        settings = self.settings
        if settings.temp_root is not None:
            settings.temp_root.mkdir(parents=True, exist_ok=True)
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        log.info("executor started", name=settings.name, max_jobs=settings.max_jobs)
        # The first failed claim waits one poll interval, later ones longer.
        backoff = Backoff(
            first_s=settings.poll_interval_s,
            cap_s=max(settings.max_backoff_s, settings.poll_interval_s),
        )
        retry = Retry(backoff, clock=self._clock, stop=self._stop_claiming, rng=self._rng)
        try:
            while not self._stop_claiming.is_set():
                if self._claimed_enough():
                    break
                if len(self.running) >= settings.max_jobs or not self.reserve():
                    self._slot_free.wait(settings.poll_interval_s)
                    self._slot_free.clear()
                    continue
                claim = None
                try:
                    claim = self._api.claim(settings.name, labels=settings.labels)
                except (NotAuthenticatedError, PermissionDeniedError) as exc:
                    self._refused(exc)
                    break
                except RunnerError as exc:
                    log.warning("cannot claim a job", error=str(exc), retry_in_s=retry.delay)
                    retry.wait()
                    continue
                finally:
                    self._answered(claim)
                retry.reset()
                if claim is None:
                    pause = jittered(settings.poll_interval_s, self._rng)
                    self._clock.wait(self._stop_claiming, pause)
                    continue
                self._start(claim)
            self._drain()
        finally:
            self._stopped.set()
            beat.join(timeout=settings.heartbeat_interval_s + 5)
        log.info("executor stopped", name=settings.name)
        return self.exit_code

    def _claimed_enough(self) -> bool:
        total = self.settings.max_jobs_total
        if total is None or self.claimed < total:
            return False
        log.info("claimed --max-jobs-total jobs; exiting once they end", max_jobs_total=total)
        return True

    def reserve(self) -> bool:
        """Whether to claim a job now (a slot is free is the caller's check): not once
        stopping or once --max-jobs-total claims are made or on their way."""
        total = self.settings.max_jobs_total
        with self._lock:
            if self._stop_claiming.is_set():
                return False
            if total is not None and self.claimed + self._asking >= total:
                return False
            self._asking += 1
            return True

    def settle(self, next_job: NextJob | None) -> Claim | None:
        """A job's end was reported asking for the next one; what came back."""
        claim = next_job.claim if next_job is not None else None
        self._answered(claim)
        refused = next_job.refused if next_job is not None else None
        if isinstance(refused, (NotAuthenticatedError, PermissionDeniedError)):
            self._refused(refused)
        elif refused is not None:
            log.warning("cannot claim a job", error=str(refused))
        return claim

    def _answered(self, claim: Claim | None) -> None:
        with self._lock:
            self._asking -= 1
            if claim is not None:
                self.claimed += 1
        self._slot_free.set()  # the main loop may claim what this answer did not

    def _refused(self, exc: RunnerError) -> None:
        log.error("the coordinator refused this executor's token", error=str(exc))
        self.exit_code = 1
        self.stop_claiming()

    def _start(self, claim: Claim) -> None:
        runner = JobRunner(
            claim,
            api=self._api,
            runtime=self._runtime,
            settings=self.settings,
            redactor=self._redactor,
            on_done=self._done,
            clock=self._clock,
            metrics=self.metrics,
            next_jobs=self,
        )
        with self._lock:
            self._running[claim.job_id] = runner
            if self._cancel_reason is not None:  # claimed as the executor was told to stop
                runner.cancel(self._cancel_reason)
        log.info(
            "job claimed",
            job=claim.job_id,
            repository=claim.workspace.get("repository"),
            attempt=claim.attempt,
        )
        runner.thread.start()

    def _done(self, runner: JobRunner) -> None:
        if runner.next_claim is not None:
            # Started before the old job leaves, so a drain never sees no job running.
            self._start(runner.next_claim)
            runner.next_claim = None
        with self._lock:
            self._running.pop(runner.job_id, None)
            self.finished.append(runner)
        self._slot_free.set()

    def _drain(self) -> None:
        if self.running:
            log.info("waiting for running jobs to finish", jobs=self.running)
        while self.running:
            # Short waits, so the main thread keeps handling signals.
            self._slot_free.wait(0.2)
            self._slot_free.clear()

    def heartbeat_info(self, running: Sequence[str]) -> dict[str, Any]:
        """What this heartbeat says about the executor (``runner.queue.fleet.ExecutorInfo``)."""
        settings = self.settings
        limits = {"max_jobs": settings.max_jobs, **dict(settings.info.get("limits") or {})}
        if settings.max_jobs_total is not None:
            limits["max_jobs_total"] = settings.max_jobs_total
        return {
            **settings.info,
            "labels": list(settings.labels),
            "running": list(running),
            "limits": limits,
        }

    def _heartbeat_loop(self) -> None:
        # Idle executors beat too: the coordinator's fleet shows who is alive.
        interval = self.settings.heartbeat_interval_s
        while True:
            self._beat()
            if self._stopped.wait(interval):
                return

    def _beat(self) -> None:
        with self._lock:
            leases = {job_id: r.claim.lease for job_id, r in self._running.items()}
        try:
            answer = self._api.heartbeat(
                self.settings.name, leases, info=self.heartbeat_info(sorted(leases))
            )
        except RunnerError as exc:
            log.warning("heartbeat failed", error=str(exc))
            return
        with self._lock:
            runners = dict(self._running)
        for job_id in answer.cancel:
            if job_id in runners:
                log.info("job canceled by a user", job=job_id)
                runners[job_id].cancel("canceled on request", by_user=True)
        for job_id in answer.lost:
            if job_id in runners:
                runners[job_id].lose()
