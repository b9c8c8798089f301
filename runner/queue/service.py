"""The coordinator's rules, apart from HTTP: who may do what, submit checks, claims.

``Coordinator`` holds the stores and answers for a ``Principal`` (what a
token says). The HTTP layer (``runner.queue.api``) only parses and maps
errors; tests drive this class directly too.

Secrets: submit resolves metadata only (a missing secret is refused there);
a claim resolves the current versions again, checks that the submitter may
still use them, decrypts them and writes one ``accessed`` audit event per
secret, naming the job and the executor. Nothing else here sees a value.
The metadata checks are kept per submission while the claim stamp the
claim's statement returned stays the same (``runner.queue.stamp``: any write
to what they read raises it); decrypting and the audit happen every time.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from runner.cache import CacheEntry, StepCache
from runner.clock import SYSTEM_CLOCK, Clock
from runner.env import EnvPlan, plan_env
from runner.errors import (
    CacheError,
    CoordinatorError,
    MissingSecretsError,
    NotAuthenticatedError,
    PermissionDeniedError,
    RunnerError,
    StaleSecretError,
    StoreError,
    UsageError,
)
from runner.execute.job import reveal_secrets
from runner.execute.registry import find_registry_auth, reveal_registry_auth
from runner.log import get_logger
from runner.metrics import CoordinatorMetrics
from runner.namespaces import Namespace, check_principal_name, parse_namespace
from runner.queue.bundle import Bundle
from runner.queue.fleet import ExecutorInfo, FleetStore, fleet_json
from runner.queue.jobs import build_payload, clone_url, env_plan_to_json
from runner.queue.memo import Memo
from runner.queue.models import (
    CLAIMABLE_STATES,
    JOB_STATES,
    FailState,
    HeartbeatAnswer,
    JobRecord,
    Lease,
    LogChunk,
    NewJob,
    Submission,
    new_id,
)
from runner.queue.policies import PolicyRecord, PolicyStore, policy_namespace
from runner.queue.routing import parse_labels, waiting_reason
from runner.queue.states import fail_state
from runner.queue.store import JobStore, SqlJobStore, not_found
from runner.queue.tokens import Principal, TokenStore
from runner.sandbox.tighten import NamespacePolicy, describe
from runner.secrets.access import AccessPolicy
from runner.secrets.delivery import BrokeredUse, Delivery
from runner.secrets.models import AuditEvent, SecretMeta
from runner.secrets.names import DEFAULT_SCOPE
from runner.secrets.store import SecretStore
from runner.secrets.value import Secret
from runner.spec import load_spec_text
from runner.spec.models import BatchSpec
from runner.users.directory import UserDirectory, ensure_owner

log = get_logger("runner.queue.coordinator")
_std_log = logging.getLogger("runner.queue.coordinator")


def _debugging() -> bool:
    """Whether debug lines are written (``-v``): the hot path skips building the rest."""
    return _std_log.isEnabledFor(logging.DEBUG)


# `runner jobs retry --failed` looks at this many of the newest jobs.
MAX_RETRY_SCAN = 10_000
# A claim that refuses this many jobs in a row (secrets gone) answers "nothing" for now.
MAX_REFUSALS_PER_CLAIM = 20
# Parsed specs kept for claims, one per submission (a submission's bundle never changes).
SPECS_KEPT = 256


@dataclass(frozen=True, kw_only=True)
class CoordinatorSettings:
    repos_root: Path | None = None
    clone_url_template: str | None = None
    max_attempts: int = 3
    max_resets: int = 3
    stall_limit_s: float = 30.0


@dataclass(frozen=True, kw_only=True)
class ClaimedJob:
    """A claimed job with its decrypted secrets; only ``to_json`` reveals them."""

    lease: Lease
    plan: EnvPlan
    secrets: Mapping[str, Secret] = field(repr=False)
    # The namespace's sandbox requirement, as it stands at the claim.
    policy: NamespacePolicy = field(default_factory=NamespacePolicy)
    # DOCKER_AUTH_CONFIG as the job resolves it: for pulling its images, not a step's.
    registry_auth: Secret | None = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, Any]:
        return env_plan_to_json(self.plan)

    def to_json(self) -> dict[str, Any]:
        job = self.lease.job
        return {
            "job": job.to_json(),
            "lease": self.lease.token,
            "attempt": self.lease.attempt,
            "namespace": job.namespace,
            "bundle": dict(self.lease.bundle),
            "workspace": dict(self.lease.payload["workspace"]),
            "clone_url": self.lease.payload["clone_url"],
            "env": dict(self.env),
            "secrets": {sid: value.reveal() for sid, value in self.secrets.items()},
            "registry_auth": self.registry_auth.reveal() if self.registry_auth else None,
            "policy": self.policy.to_json(),
        }


@dataclass(frozen=True, kw_only=True)
class _Checked:
    """What a claim checks and resolves without decrypting, the same for every job of
    a submission until the claim stamp moves: no value in it."""

    stamp: int | None
    plan: EnvPlan
    registry: SecretMeta | None
    policy: NamespacePolicy


class Coordinator:
    def __init__(
        self,
        *,
        jobs: JobStore,
        tokens: TokenStore,
        secrets: SecretStore,
        users: UserDirectory,
        settings: CoordinatorSettings,
        cache: StepCache | None = None,
        on_secret_change: Callable[[SecretMeta | None, str], object] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        policies: PolicyStore | None = None,
        fleet: FleetStore | None = None,
        metrics: CoordinatorMetrics | None = None,
    ) -> None:
        """``on_secret_change(meta_before, actor)`` runs after a secret is set or removed
        (the execution cache drops the entries of the old version). ``fleet`` keeps
        each executor's latest heartbeat; ``metrics`` is this replica's registry (a new
        one by default)."""
        self.on_secret_change = on_secret_change
        self.jobs = jobs
        self.tokens = tokens
        self.secrets = secrets
        self.users = users
        self.settings = settings
        self.cache = cache
        self.policies = policies
        self._clock = clock
        self.policy = AccessPolicy(users, secrets)
        # Each submission's spec, parsed and checked once (a claim parsed it again).
        self._specs: Memo[str, BatchSpec] = Memo(SPECS_KEPT)
        # Each submission's claim checks, under the claim stamp they were made at.
        self._checks: Memo[str, _Checked] = Memo(SPECS_KEPT)
        # A claim or a completion takes SQLite's connection once (``Database.turns``).
        self._turns = jobs.db.turns() if isinstance(jobs, SqlJobStore) else nullcontext()
        self._turn: Callable[[], AbstractContextManager[object]] = (
            jobs.db.write_turn
            if isinstance(jobs, SqlJobStore) and jobs.db.dialect == "sqlite"
            else nullcontext
        )
        self.fleet = fleet
        self.metrics = metrics or CoordinatorMetrics()
        if metrics is None and isinstance(jobs, SqlJobStore):
            self.metrics.watch(
                jobs_by_state=jobs.count_by_state,
                job_states=JOB_STATES,
                executors=(
                    partial(fleet.counts, limit_s=settings.stall_limit_s) if fleet else None
                ),
            )

    # Who is asking ---------------------------------------------------------------------------

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise NotAuthenticatedError(
                "no API token given",
                hint="send `Authorization: Bearer TOKEN`; `runner token create` makes one",
            )
        record = self.tokens.authenticate(token)
        if record is None:
            raise NotAuthenticatedError(
                "the API token is unknown or revoked",
                hint="ask the operator for a new one (`runner token create`)",
            )
        return record.principal

    def authenticate_id(self, token_id: str) -> Principal:
        """The principal of a token known by its id (a web session keeps no token)."""
        record = self.tokens.live(token_id)
        if record is None:
            raise NotAuthenticatedError(
                "the API token of this session was revoked",
                hint="sign in again with a valid token",
            )
        return record.principal

    @staticmethod
    def user(principal: Principal) -> str:
        if principal.kind != "user":
            raise PermissionDeniedError(
                "executor tokens cannot use the user API",
                hint="use a user token (`runner token create --user NAME`)",
            )
        return principal.name

    @staticmethod
    def executor(principal: Principal, name: str | None = None) -> str:
        if principal.kind != "executor":
            raise PermissionDeniedError(
                "user tokens cannot use the executor API",
                hint="run executors with a token from `runner token create --executor NAME`",
            )
        return check_principal_name(name or principal.name, "executor name")

    def _may_see(self, actor: str, namespace: str) -> bool:
        return self.policy.can_manage(actor, namespace)

    def whoami(self, principal: Principal) -> dict[str, Any]:
        admin = principal.kind == "user" and self.users.is_admin(principal.name)
        orgs = self.users.orgs_of(principal.name) if principal.kind == "user" else []
        return {"kind": principal.kind, "name": principal.name, "admin": admin, "orgs": orgs}

    # Secrets ----------------------------------------------------------------------

    def list_secrets(
        self, principal: Principal, *, namespace: Namespace | None, scope: str | None
    ) -> list[SecretMeta]:
        actor = self.user(principal)
        if namespace is None:
            metas = self.secrets.list(scope=scope)
            if self.users.is_admin(actor):
                return metas
            return [m for m in metas if self.policy.can_view(actor, m.namespace)]
        self.policy.check_view(actor, namespace)
        if namespace.is_global:
            return self.secrets.list(namespace=namespace, scope=scope)
        return self.secrets.list(visible_from=namespace, scope=scope)

    def set_secret(
        self,
        principal: Principal,
        *,
        name: str,
        namespace: Namespace,
        value: Secret,
        scope: str | None,
        delivery: Delivery | None = None,
    ) -> tuple[SecretMeta, bool]:
        actor = self.user(principal)
        ns = namespace
        chosen = scope or DEFAULT_SCOPE
        self.policy.check_manage(actor, ns, name=name, scope=chosen)
        ensure_owner(self.users, ns)
        before = self.secrets.get(name, ns, scope=chosen)
        result = self.secrets.set(name, ns, value, scope=chosen, actor=actor, delivery=delivery)
        if self.on_secret_change is not None:
            self.on_secret_change(before, actor)
        return result

    def remove_secret(
        self, principal: Principal, *, name: str, namespace: Namespace, scope: str | None
    ) -> SecretMeta:
        actor = self.user(principal)
        ns = namespace
        chosen = scope or DEFAULT_SCOPE
        self.policy.check_manage(actor, ns, name=name, scope=chosen)
        before = self.secrets.get(name, ns, scope=chosen)
        removed = self.secrets.remove(name, ns, scope=chosen, actor=actor)
        if self.on_secret_change is not None:
            self.on_secret_change(before, actor)
        return removed

    def secret_log(
        self, principal: Principal, *, name: str | None, namespace: Namespace | None
    ) -> list[AuditEvent]:
        actor = self.user(principal)
        if namespace is not None:
            self.policy.check_view(actor, namespace)
            return self.secrets.log(name, namespace=namespace)
        events = self.secrets.log(name)
        if self.users.is_admin(actor):
            return events
        return [
            e
            for e in events
            if e.namespace is not None and self.policy.can_view(actor, e.namespace)
        ]

    # Specs ----------------------------------------------------------------------

    def _spec(self, bundle: Bundle) -> BatchSpec:
        spec = load_spec_text(bundle.spec_text, bundle.spec_name)
        bundle.check_mounts(spec)
        return spec

    def _repositories(self) -> Any:
        from runner.plan import discover

        if self.settings.repos_root is None:
            raise CoordinatorError(
                "this coordinator has no repositories to run on",
                hint="start `runner server` with --repos-root DIR",
            )
        return discover(self.settings.repos_root)

    def _plan(
        self, principal: Principal, bundle: Mapping[str, Any], ns: Namespace
    ) -> tuple[str, Bundle, BatchSpec, EnvPlan]:
        """What explain and submit check first: the actor may run in ``ns``, the bundle
        and its spec are valid, and every env entry resolves (metadata only)."""
        actor = self.user(principal)
        self.policy.check_run_in(actor, ns)
        parsed = Bundle.from_json(bundle)
        spec = self._spec(parsed)
        return actor, parsed, spec, plan_env(spec, str(ns), self.secrets)

    def explain(
        self, principal: Principal, *, bundle: Mapping[str, Any], namespace: Namespace
    ) -> dict[str, Any]:
        from runner.explain import explain, render_text
        from runner.plan import plan_workspaces

        _, _, spec, plan = self._plan(principal, bundle, namespace)
        workspace = None
        if self.settings.repos_root is not None:
            found = plan_workspaces(spec, self._repositories())
            workspace = found[0] if found else None
        explained = explain(spec, plan, workspace)
        return {
            "variables": [e.as_json() for e in explained],
            "text": render_text(spec, explained, workspace),
        }

    def submit(
        self,
        principal: Principal,
        *,
        bundle: Mapping[str, Any],
        namespace: Namespace,
        labels: Sequence[str] = (),
    ) -> tuple[Submission, list[JobRecord]]:
        """Check everything that can be checked without decrypting, then queue the jobs.

        Each job requires ``labels`` and its namespace's labels of its executor.
        """
        from runner.plan import plan_workspaces

        ns = namespace
        required = set(parse_labels(labels, flag="--require"))
        actor, parsed, spec, env_plan = self._plan(principal, bundle, ns)
        if self.policies is not None:
            required.update(self.policies.get(str(ns)).labels)
        for ref in env_plan.secrets():
            self.policy.check_use(ns, ref, actor=actor)
        workspaces = plan_workspaces(spec, self._repositories())
        if not workspaces:
            raise UsageError(
                f"the spec {parsed.spec_name} selects no repository on this coordinator",
                hint="check its `on:` entries against the coordinator's repositories",
            )
        submission = Submission(
            id=new_id("sub"),
            namespace=str(ns),
            submitter=actor,
            spec_name=parsed.spec_name,
            bundle=parsed.to_json(),
            created_at=self._clock.now(),
        )
        new_jobs = [
            NewJob(
                namespace=str(ns),
                submitter=actor,
                repository=ws.repository,
                branch=ws.branch,
                commit=ws.commit,
                path=ws.path,
                payload=build_payload(
                    workspace=ws,
                    url=clone_url(
                        ws.repository,
                        repos_root=self.settings.repos_root,
                        template=self.settings.clone_url_template,
                    ),
                    env_plan=env_plan,
                ),
                labels=tuple(sorted(required)),
            )
            for ws in workspaces
        ]
        records = self.jobs.add_submission(submission, new_jobs)
        self._specs.put(submission.id, spec)
        log.info(
            "queued jobs",
            submission=submission.id,
            namespace=str(ns),
            submitter=actor,
            jobs=len(records),
        )
        return submission, records

    # Jobs (users) ---------------------------------------------------------------------------------

    def _visible_namespaces(self, actor: str) -> builtins.list[str] | None:
        if self.users.is_admin(actor):
            return None
        return [f"user:{actor}", *(f"org:{o}" for o in self.users.orgs_of(actor))]

    def list_jobs(self, principal: Principal, *, limit: int = 1000) -> list[JobRecord]:
        actor = self.user(principal)
        return self.jobs.list(namespaces=self._visible_namespaces(actor), limit=limit)

    def why_waiting(self, jobs: Sequence[JobRecord]) -> dict[str, str]:
        """For each waiting job no live executor may claim, why (its labels)."""
        waiting = [j for j in jobs if j.labels and j.state in CLAIMABLE_STATES]
        if not waiting:
            return {}
        # Live: claimed (an idle executor claims each poll) or sent a heartbeat lately.
        limit_s = self.settings.stall_limit_s
        live = self.jobs.live_labels(within_s=limit_s)
        if self.fleet is not None:
            now = self._clock.now()
            live += [
                e.info.labels for e in self.fleet.list() if not e.stale(now=now, limit_s=limit_s)
            ]
        reasons = {j.id: waiting_reason(j.labels, live) for j in waiting}
        return {job_id: why for job_id, why in reasons.items() if why}

    def jobs_json(self, jobs: Sequence[JobRecord]) -> list[dict[str, Any]]:
        """Jobs as the API and the pages list them: with ``waiting`` where one waits."""
        reasons = self.why_waiting(jobs)
        return [{**j.to_json(), "waiting": reasons.get(j.id)} for j in jobs]

    def get_job(self, principal: Principal, job_id: str) -> JobRecord:
        actor = self.user(principal)
        job = self.jobs.get(job_id)
        if job is None:
            raise not_found(job_id)
        if not self._may_see(actor, job.namespace):
            raise PermissionDeniedError(
                f"{actor} may not see jobs in {job.namespace}",
                hint="ask someone who may act in that namespace",
            )
        return job

    def show_job(self, principal: Principal, job_id: str) -> dict[str, Any]:
        job = self.get_job(principal, job_id)
        data = job.to_json(with_result=True)
        data["waiting"] = self.why_waiting([job]).get(job.id)
        payload = self.jobs.payload(job_id)
        data["env"] = payload.get("env")
        data["steps"] = [s.to_json() for s in self.jobs.steps(job_id)]
        return data

    def job_logs(
        self, principal: Principal, job_id: str, *, after: int, limit: int
    ) -> tuple[JobRecord, list[LogChunk]]:
        job = self.get_job(principal, job_id)
        return job, self.jobs.logs(job_id, after=after, limit=limit)

    def cancel_job(self, principal: Principal, job_id: str) -> JobRecord:
        actor = self.user(principal)
        before = self.get_job(principal, job_id)
        record = self.jobs.request_cancel(job_id)
        if before.state in CLAIMABLE_STATES and record.state == "canceled":
            self.metrics.ended("canceled", None)
        log.info("cancel requested", job=job_id, by=actor, state=record.state)
        return record

    def job_result(self, principal: Principal, job_id: str) -> Mapping[str, Any]:
        job = self.get_job(principal, job_id)
        if job.state != "completed" or job.result is None:
            raise CoordinatorError(
                f"job {job_id} is {job.state}; only a completed job has a result",
                hint=f"wait for it (`runner jobs logs {job_id} --follow`)",
            )
        return job.result

    # Executors ----------------------------------------------------------------------

    def turn(self) -> AbstractContextManager[object]:
        """The coordinator's turn at its database for several calls: on SQLite, its one
        connection held and what the calls write committed once, at the end.

        The API takes an executor's end of a job and its claim of the next one in one
        turn (``api.complete_answer``). On SQLite, a turn handed between threads wakes
        a sleeping one (20 µs with 8 executors' requests at once), and a commit is a
        write to the WAL of every page it changed: an end and a claim in turns and
        commits of their own paid both twice a job. A call that raises inside leaves
        the rest to commit if the caller goes on; an exception out of the block rolls
        it all back. Nothing on PostgreSQL, where requests run side by side.
        """
        return self._turn()

    def claim(
        self, principal: Principal, *, executor: str | None = None, labels: Sequence[str] = ()
    ) -> ClaimedJob | None:
        """The next job this executor may run (it has every label the job requires)."""
        name = self.executor(principal, executor)
        have = parse_labels(labels) if labels else ()
        with self._turns:
            return self._claim(name, have)

    def _claim(self, name: str, have: Sequence[str]) -> ClaimedJob | None:
        self.jobs.note_executor(name, have)
        for _ in range(MAX_REFUSALS_PER_CLAIM):
            lease = self.jobs.claim(name, have)
            if lease is None:
                return None
            try:
                checked = self._checked(lease)
                secrets, registry_auth = self._reveal(lease, checked, name)
            except StaleSecretError as exc:
                self._refuse(lease, "errored", f"a secret changed while the job was claimed: {exc}")
                continue
            except MissingSecretsError as exc:
                self._refuse(lease, "failed", _missing_at_claim(exc, lease.job))
                continue
            except (StoreError, CoordinatorError):
                self._refuse(lease, "errored", "the coordinator could not prepare the job")
                raise
            except PermissionDeniedError as exc:
                self._refuse(
                    lease,
                    "failed",
                    f"refused when claimed: {exc.message} (the submitter's rights changed "
                    "after the job was submitted)",
                )
                continue
            except RunnerError as exc:
                self._refuse(lease, "failed", f"refused when claimed: {exc}")
                continue
            # No info line for a claim or a completion: through the JSON chain each was
            # as costly as the rest of the cycle (issue 21). A job that fails, is refused
            # or reset says so at info; the audit log names each secret access, and the
            # metrics count every end.
            if _debugging():
                log.debug(
                    "job claimed",
                    job=lease.job.id,
                    executor=name,
                    attempt=lease.attempt,
                    secrets=len(secrets),
                )
            self._claimed(lease.job, len(secrets))
            return ClaimedJob(
                lease=lease,
                plan=checked.plan,
                secrets=secrets,
                policy=checked.policy,
                registry_auth=registry_auth,
            )
        return None

    def _refuse(self, lease: Lease, state: FailState, error: str) -> None:
        log.warning("job refused at claim", job=lease.job.id, state=state, error=error)
        record = self.jobs.fail(
            lease.job.id,
            lease.token,
            state=state,
            error=error,
            max_attempts=self.settings.max_attempts,
        )
        self._ended(record)

    def _checked(self, lease: Lease) -> _Checked:
        """What the claim of ``lease`` checks from metadata: kept per submission while
        the claim stamp the lease was read with stays the same (``queue/stamp.py``)."""
        job = lease.job
        if lease.stamp is None:
            return self._check(lease, None)
        kept = self._checks.get(job.submission_id, lambda: self._check(lease, lease.stamp))
        if kept.stamp != lease.stamp:
            kept = self._check(lease, lease.stamp)
            self._checks.put(job.submission_id, kept)
        return kept

    def _check(self, lease: Lease, stamp: int | None) -> _Checked:
        """The submitter may still run in the namespace and use each secret; the plan
        (current versions), the registry credentials and the namespace's policy."""
        job = lease.job
        self.policy.check_run_in(job.submitter, job.namespace)
        spec = self._specs.get(
            job.submission_id, lambda: self._spec(Bundle.from_json(lease.bundle))
        )
        plan: EnvPlan = plan_env(spec, job.namespace, self.secrets)
        for meta in plan.secrets():
            self.policy.check_use(job.namespace, meta, actor=job.submitter, job=job.id)
        registry = find_registry_auth(self.secrets, job.namespace)
        if registry is not None:
            self.policy.check_use(job.namespace, registry, actor=job.submitter, job=job.id)
        policy = self._policy_of(job.namespace)
        return _Checked(stamp=stamp, plan=plan, registry=registry, policy=policy)

    def _reveal(
        self, lease: Lease, checked: _Checked, executor: str
    ) -> tuple[dict[str, Secret], Secret | None]:
        """Each secret's value and the registry credentials', audited per claim."""
        if checked.registry is None and not any(checked.plan.steps.values()):
            return {}, None  # nothing to reveal (most jobs of a trivial spec)
        job = lease.job
        actor = f"executor:{executor}"
        values = reveal_secrets(
            checked.plan,
            lambda ref, step: self.secrets.reveal(
                ref.id, version=ref.version, actor=actor, run_id=job.id, step=step
            ),
        )
        auth = reveal_registry_auth(self.secrets, checked.registry, actor=actor, run_id=job.id)
        return values, auth

    def heartbeat(
        self,
        principal: Principal,
        *,
        executor: str | None,
        leases: Mapping[str, str],
        info: Mapping[str, Any] | None = None,
    ) -> HeartbeatAnswer:
        """Keep the leases alive; ``info`` (what the executor says about itself) is kept
        as its latest in the fleet."""
        name = self.executor(principal, executor)
        if info is not None and self.fleet is not None:
            self.fleet.record(ExecutorInfo.from_json(info, name=name))
        return self.jobs.heartbeat(name, leases)

    def append_logs(
        self, principal: Principal, job_id: str, *, lease: str, chunks: Sequence[tuple[int, str]]
    ) -> int:
        self.executor(principal)
        added = self.jobs.append_logs(job_id, lease, chunks)
        if added:
            self.metrics.log_bytes.inc(sum(len(text.encode()) for _, text in chunks))
        return added

    def record_step(
        self,
        principal: Principal,
        job_id: str,
        *,
        lease: str,
        step: int,
        status: str,
        exit_code: int | None,
    ) -> None:
        self.executor(principal)
        self.jobs.record_step(job_id, lease, step=step, status=status, exit_code=exit_code)
        self.metrics.step(job_id, step, status, self._clock.monotonic())

    def complete(
        self,
        principal: Principal,
        job_id: str,
        *,
        lease: str,
        result: Mapping[str, Any],
        brokered: Sequence[Mapping[str, Any]] = (),
    ) -> JobRecord:
        self.executor(principal)
        with self._turns:
            running = self._running_with_uses(job_id, brokered) if brokered else None
            record = self.jobs.complete(job_id, lease, result)
            self._ended(record)
            if running is not None:
                self._audit_brokered(running, brokered)
        if _debugging():
            log.debug("job completed", job=job_id, executor=record.executor)
        return record

    def fail(
        self,
        principal: Principal,
        job_id: str,
        *,
        lease: str,
        state: str,
        error: str,
        brokered: Sequence[Mapping[str, Any]] = (),
    ) -> JobRecord:
        self.executor(principal)
        running = self._running_with_uses(job_id, brokered)
        record = self.jobs.fail(
            job_id,
            lease,
            state=fail_state(state),
            error=error,
            max_attempts=self.settings.max_attempts,
        )
        self._ended(record)
        self._audit_brokered(running, brokered)
        log.info("job ended", job=job_id, state=record.state, executor=record.executor)
        return record

    def _running_with_uses(
        self, job_id: str, brokered: Sequence[Mapping[str, Any]]
    ) -> JobRecord | None:
        """The job as it runs, before its end is written, when its report has brokered uses.

        Only a report that ends a running job is audited: the same report sent again
        (its answer was lost) finds the job ended already and counts nothing twice.
        """
        if not brokered:
            return None
        record = self.jobs.get(job_id)
        return record if record is not None and record.state == "processing" else None

    def _audit_brokered(
        self, record: JobRecord | None, brokered: Sequence[Mapping[str, Any]]
    ) -> None:
        """The executor's count of the job's brokered requests, into the secrets' audit log.

        Written once the job's end is accepted, under the executor that held the
        lease, as the claim's ``accessed`` events name it. A failure here is
        logged; the job's end stands.
        """
        if record is None:
            return
        try:
            uses = [BrokeredUse.from_json(item) for item in brokered]
            self.secrets.record_brokered(
                uses,
                visible_from=record.namespace,
                actor=f"executor:{record.executor}",
                job=record.id,
            )
        except (KeyError, TypeError, ValueError, RunnerError) as exc:
            log.warning("could not audit the job's brokered uses", job=record.id, error=str(exc))

    def cache_get(self, principal: Principal, key: str) -> bytes | None:
        self.executor(principal)
        entry = self.cache.get(key) if self.cache is not None else None
        self.metrics.cache.labels("hit" if entry is not None else "miss").inc()
        return entry.to_bytes() if entry is not None else None

    def cache_put(
        self,
        principal: Principal,
        key: str,
        *,
        entry: str,
        namespace: str,
        secret_refs: Sequence[str],
    ) -> None:
        self.executor(principal)
        if self.cache is None:
            return
        try:
            parsed = CacheEntry.from_bytes(base64.b64decode(entry, validate=True))
        except (binascii.Error, CacheError) as exc:
            raise UsageError(
                f"malformed cache entry ({type(exc).__name__})",
                hint="send the entry as base64 of CacheEntry.to_bytes()",
            ) from None
        self.cache.put(
            key,
            parsed,
            namespace=str(parse_namespace(namespace)),
            secret_refs=list(secret_refs),
        )
        self.metrics.cache.labels("put").inc()

    # Namespace sandbox policies -------------------------------------------------------------

    def namespace_policy(self, principal: Principal, namespace: Namespace) -> PolicyRecord:
        """Admins and whoever may act in the namespace see what its jobs run under."""
        actor = self.user(principal)
        policy_namespace(namespace)
        if not (self.users.is_admin(actor) or self._may_see(actor, str(namespace))):
            raise PermissionDeniedError(
                f"{actor} may not see the policy of {namespace}",
                hint="ask someone who may act in that namespace, or an admin",
            )
        if self.policies is None:
            return PolicyRecord(namespace=str(namespace))
        return self.policies.get(str(namespace))

    def set_namespace_policy(
        self,
        principal: Principal,
        namespace: Namespace,
        policy: NamespacePolicy,
        *,
        labels: Sequence[str] = (),
    ) -> PolicyRecord:
        """Replace the namespace's policy (admins only); later claims carry it, and
        jobs queued from now on require ``labels`` of their executor."""
        actor = self._policy_admin(principal, namespace)
        store = self._policy_store()
        required = parse_labels(labels, flag="--require-label")
        record = store.set(str(namespace), policy, actor=actor, labels=required)
        log.info(
            "namespace policy set",
            namespace=str(namespace),
            by=actor,
            policy=describe(policy.to_json()),
            labels=list(required),
        )
        return record

    def clear_namespace_policy(self, principal: Principal, namespace: Namespace) -> bool:
        actor = self._policy_admin(principal, namespace)
        cleared = self._policy_store().clear(str(namespace))
        log.info("namespace policy cleared", namespace=str(namespace), by=actor, had_one=cleared)
        return cleared

    def _policy_admin(self, principal: Principal, namespace: Namespace) -> str:
        actor = self.user(principal)
        policy_namespace(namespace)
        if not self.users.is_admin(actor):
            raise PermissionDeniedError(
                f"{actor} may not change the sandbox policy of {namespace}: only admins may",
                hint="ask an admin to run `runner namespace set`",
            )
        return actor

    def _policy_store(self) -> PolicyStore:
        if self.policies is None:
            raise CoordinatorError(
                "this coordinator keeps no namespace policies",
                hint="start it with `runner server`, which keeps them in its database",
            )
        return self.policies

    def _policy_of(self, namespace: str) -> NamespacePolicy:
        return (
            self.policies.get(namespace).policy if self.policies is not None else NamespacePolicy()
        )

    # Housekeeping ----------------------------------------------------------------------

    def reset_stalled(self) -> list[JobRecord]:
        changed = self.jobs.reset_stalled(
            stall_limit_s=self.settings.stall_limit_s, max_resets=self.settings.max_resets
        )
        for job in changed:
            log.warning("stalled job reset", job=job.id, state=job.state, resets=job.resets)
            if job.terminal:
                self._ended(job)
        return changed

    # Operations: metrics, the executor fleet, retries --------------------------------------

    def _claimed(self, job: JobRecord, secrets: int) -> None:
        if secrets:
            self.metrics.secret_accesses.inc(secrets)
        # The claim stamped its start with the clock already.
        waited = ((job.started_at or self._clock.now()) - job.created_at).total_seconds()
        self.metrics.queue_wait_seconds.observe(max(0.0, waited))

    def _ended(self, job: JobRecord) -> None:
        """Count an attempt that reached ``job.state`` (a no-op for any other state)."""
        started = job.started_at
        if started is None:
            self.metrics.ended(job.state, None)
            return
        seconds = ((job.finished_at or self._clock.now()) - started).total_seconds()
        self.metrics.ended(job.state, seconds)

    def executors(self, principal: Principal) -> list[dict[str, Any]]:
        """Every executor's latest heartbeat, ``stale`` after the stall limit (admins only)."""
        actor = self.user(principal)
        if not self.users.is_admin(actor):
            raise PermissionDeniedError(
                f"{actor} may not list executors: only admins may",
                hint="ask an admin to run `runner executors list`",
            )
        entries = self.fleet.list() if self.fleet is not None else []
        return fleet_json(entries, now=self._clock.now(), limit_s=self.settings.stall_limit_s)

    def retry_jobs(self, principal: Principal, job_ids: Sequence[str]) -> list[JobRecord]:
        """Queue a new attempt of each finished job (whoever may cancel it may retry it)."""
        return self._retry(principal, [self.get_job(principal, job_id) for job_id in job_ids])

    def retry_failed(
        self, principal: Principal, *, namespace: Namespace | None = None
    ) -> list[JobRecord]:
        """Retry every failed job the caller may see (of ``namespace``) not retried yet."""
        actor = self.user(principal)
        namespaces = self._visible_namespaces(actor)
        if namespace is not None:
            if not self._may_see(actor, str(namespace)):
                raise PermissionDeniedError(
                    f"{actor} may not retry jobs in {namespace}",
                    hint="ask someone who may act in that namespace",
                )
            namespaces = [str(namespace)]
        visible = self.jobs.list(namespaces=namespaces, limit=MAX_RETRY_SCAN)
        retried = {j.retry_of for j in visible if j.retry_of}
        failed = [j for j in visible if j.state == "failed" and j.id not in retried]
        return self._retry(principal, failed)

    def _retry(self, principal: Principal, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        actor = self.user(principal)
        for job in jobs:
            if not job.terminal:
                raise UsageError(
                    f"job {job.id} is {job.state}; only a finished job can be retried",
                    hint=f"wait for it to end, or cancel it (`runner jobs cancel {job.id}`)",
                )
        # Plan every job first (the current secret versions; a secret removed since is
        # refused here), so that one refusal queues nothing.
        batches = [self._retry_batch(group) for group in _by_submission(jobs)]
        made: list[JobRecord] = []
        for submission, new_jobs in batches:
            made.extend(self.jobs.add_submission(submission, new_jobs))
        self.metrics.retries.inc(len(made))
        for new in made:
            log.info("job retried", job=new.retry_of, new_job=new.id, by=actor)
        return made

    def _retry_batch(self, jobs: Sequence[JobRecord]) -> tuple[Submission, list[NewJob]]:
        """A new submission (the same spec, namespace and submitter) for ``jobs``."""
        original = self.jobs.get_submission(jobs[0].submission_id)
        if original is None:
            raise not_found(jobs[0].id)
        spec = self._spec(Bundle.from_json(original.bundle))
        env = env_plan_to_json(plan_env(spec, original.namespace, self.secrets))
        submission = replace(original, id=new_id("sub"), created_at=self._clock.now())
        new_jobs = [
            NewJob(
                namespace=job.namespace,
                submitter=job.submitter,
                repository=job.repository,
                branch=job.branch,
                commit=job.commit,
                path=job.path,
                payload={**self.jobs.payload(job.id), "env": env},
                labels=job.labels,
                retry_of=job.id,
            )
            for job in jobs
        ]
        return submission, new_jobs


def _by_submission(jobs: Sequence[JobRecord]) -> list[list[JobRecord]]:
    groups: dict[str, list[JobRecord]] = {}
    for job in jobs:
        groups.setdefault(job.submission_id, []).append(job)
    return list(groups.values())


def _missing_at_claim(exc: MissingSecretsError, job: JobRecord) -> str:
    names = sorted({m.name for m in exc.missing}) or ["(unknown)"]
    searched = ", ".join(exc.searched) or job.namespace
    plural = "s" if len(names) > 1 else ""
    return (
        f"secret{plural} {', '.join(names)} no longer found in {searched} when the job was "
        f"claimed (removed after it was submitted); set {'them' if plural else 'it'} again "
        "and resubmit"
    )
