"""A local run: the front door of `runner run` onto the workspace job.

The CLI checks everything that can fail before a container starts (env
resolution with every missing secret at once, images) and builds a
``RunPlan``; ``execute`` hands it to ``runner.execute.job.run_job`` with the
local store's audited ``reveal``, a ``FileSink`` that writes each changeset
under ``--out`` as its workspace finishes, and writes ``summary.json``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.cache import StepCache
from runner.changeset import import_records
from runner.egress import JobNetworkSeam, NoJobNetworks
from runner.env import EnvPlan, HostEnv, SecretRef
from runner.execute.job import (
    CheckedChangeset,
    Job,
    JobServices,
    OnBrokered,
    Reveal,
    ValueRegistry,
    WorkspaceOutcome,
    run_job,
)
from runner.execute.runtime import ContainerRuntime
from runner.execute.steps import RunLimits, WorkspaceResult
from runner.execute.workspace_logs import WorkspaceLogs
from runner.output import (
    changeset_base,
    prepare_out_dir,
    remove_stale,
    write_file,
    write_file_if_changed,
    write_summary,
)
from runner.pids import process_alive
from runner.plan import Workspace
from runner.records import Frozen
from runner.redact.protocol import Redacts
from runner.report import Reporter, now_rfc3339
from runner.sandbox import SandboxPolicy
from runner.secrets.local import LocalRef, LocalSecrets
from runner.secrets.value import Secret
from runner.spec.models import BatchSpec

if TYPE_CHECKING:
    from runner.execute.keep import WorkspaceKeeper
    from runner.execute.rerun import Rerun  # --only-failed, and a last run's kept trees


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


# Records of one run: their methods are not generated per class (runner.records), which
# Python 3.11 compiles at import, and every run pays.
@dataclass(init=False, repr=False, eq=False)
class RunPlan(Frozen):
    """The checked front half of a run: nothing has been decrypted yet."""

    run_id: str
    spec: BatchSpec
    spec_dir: Path
    namespace: str
    actor: str
    workspaces: Sequence[Workspace]
    env_plan: EnvPlan
    host: HostEnv
    images: Mapping[str, str]
    # One-off values of this run (--secret-file, --secret): never stored, never audited.
    local: LocalSecrets = field(default_factory=LocalSecrets)

    def __init__(
        self,
        *,
        run_id: str,
        spec: BatchSpec,
        spec_dir: Path,
        namespace: str,
        actor: str,
        workspaces: Sequence[Workspace],
        env_plan: EnvPlan,
        host: HostEnv,
        images: Mapping[str, str],
        local: LocalSecrets | None = None,
    ) -> None:
        self._fill(
            run_id,
            spec,
            spec_dir,
            namespace,
            actor,
            workspaces,
            env_plan,
            host,
            images,
            LocalSecrets() if local is None else local,
        )


class RunOutcome:
    """What a run did: each workspace's result, and what it wrote under --out."""

    def __init__(
        self,
        run_id: str,
        results: list[WorkspaceResult],
        summary_path: Path | None,
        counts: dict[str, int] | None = None,
        changeset_paths: dict[str, list[str]] | None = None,
        failed_logs: list[str] | None = None,  # below --out, failed and canceled
        kept_workspaces: dict[str, str] | None = None,  # key -> where, or why not
    ) -> None:
        self.run_id = run_id
        self.results = results
        self.summary_path = summary_path
        self.counts = counts or {}
        self.changeset_paths = changeset_paths or {}
        self.failed_logs = failed_logs or []
        self.kept_workspaces = kept_workspaces or {}

    @property
    def exit_code(self) -> int:
        """3 when a workspace failed or was stopped (--fail-fast); an interrupt is the CLI's."""
        return 3 if self.counts.get("failed") or self.counts.get("canceled") else 0


class FileSink:
    """Writes each changeset as ``OUT/<repository>/<path>/<branch>.json`` and ``.patch``."""

    def __init__(self, out_dir: Path) -> None:
        self._out = out_dir

    def keep(self, result: WorkspaceResult, changesets: Sequence[CheckedChangeset]) -> list[str]:
        ws = result.workspace
        written: list[str] = []
        for cs in changesets:
            base = changeset_base(self._out, ws.repository, ws.path, cs.branch)
            body = (json.dumps(cs.body, indent=2, ensure_ascii=False) + "\n").encode()
            for suffix, data in ((".json", body), (".patch", cs.diff)):
                path = base.with_name(base.name + suffix)
                write_file_if_changed(path, data)  # a cached re-run's are the same bytes
                written.append(str(path.relative_to(self._out)))
        return written


def local_first(reveal: Reveal, local: LocalSecrets) -> Reveal:
    """``reveal`` that answers a local secret's ref from ``local`` (the store has none)."""

    def reveal_one(ref: SecretRef, step: int) -> Secret:
        if isinstance(ref, LocalRef):
            return local.value(ref)
        return reveal(ref, step)

    return reveal_one


def execute(
    plan: RunPlan,
    *,
    reveal: Reveal,
    runtime: ContainerRuntime,
    redactor: Redacts,
    registry: ValueRegistry,
    reporter: Reporter,
    limits: RunLimits,
    out_dir: Path,
    parallelism: int,
    fail_fast: bool,
    cancel: threading.Event,
    cache: StepCache | None = None,
    host_mac_key: bytes,
    temp_root: Path | None = None,
    sandbox: SandboxPolicy | None = None,
    networks: JobNetworkSeam | None = None,
    rerun: Rerun | None = None,
    keep_workspace: bool = False,
    on_brokered: OnBrokered | None = None,
) -> RunOutcome:
    """Run ``plan``'s workspaces, writing results, logs and summary.json under ``out_dir``.

    ``rerun`` (``--only-failed``): ``plan`` holds only the workspaces to run
    again, and the previous summary is updated in place. ``keep_workspace``:
    keep each failed workspace's tree, unless it holds a value. ``on_brokered``
    gets the run's brokered uses once, at its end (the local store audits them).
    """
    previous = _prepare(out_dir, rerun)
    logs = WorkspaceLogs(reporter, out_dir, plan.workspaces, redactor.redact)
    if rerun is None:
        # Until the real one: marks --out as runner's and names the previous run's files
        # and the logs about to be written, so the next run clears them even if this one
        # is killed.
        stub = {"run_id": plan.run_id, "batch_change": plan.spec.name, "workspaces": []}
        write_summary(out_dir, stub, sorted({*previous, *logs.planned()}))
    keeper = None
    if keep_workspace:  # --keep-workspace only
        from runner.execute.keep import WorkspaceKeeper

        keeper = WorkspaceKeeper(out_dir, redactor)
    job = Job(
        id=plan.run_id,
        spec=plan.spec,
        spec_dir=plan.spec_dir,
        namespace=plan.namespace,
        env_plan=plan.env_plan,
        workspaces=plan.workspaces,
        images=plan.images,
        host=plan.host,
    )
    services = JobServices(
        runtime=runtime,
        registry=registry,
        redactor=redactor,
        reporter=logs,  # each workspace's events and output also go to its log
        sink=FileSink(out_dir),
        limits=limits,
        cancel=cancel,
        cache=cache,
        host_mac_key=host_mac_key,
        temp_root=temp_root,
        parallelism=parallelism,
        fail_fast=fail_fast,
        sandbox=sandbox or SandboxPolicy(),
        networks=networks or NoJobNetworks(),
        keep_tree=keeper,
        on_brokered=on_brokered,
    )
    started = now_rfc3339()

    def announce() -> None:
        reporter.event(
            "run.started",
            run_id=plan.run_id,
            batch_change=plan.spec.name,
            namespace=plan.namespace,
            workspaces=len(plan.workspaces),
            isolation=services.sandbox.isolation,
        )

    try:
        outcomes = run_job(job, local_first(reveal, plan.local), services, on_open=announce)
    finally:
        logs.close_logs()
    found = _Found(logs, keeper, rerun, previous)
    outcome = _write_summary(plan, outcomes, out_dir, started, services.sandbox, found)
    reporter.event(
        "run.finished",
        run_id=plan.run_id,
        counts=outcome.counts,
        failed_logs=outcome.failed_logs,
    )
    return outcome


def _prepare(out: Path, rerun: Rerun | None) -> list[str]:
    """A re-run clears only its workspaces' files; a run, the last one's kept trees.

    A run's answer: the files the last run wrote, which stay until this one has
    written its own (``_write_summary`` removes those it did not write again).
    """
    if rerun is not None:
        rerun.prepare(out)
        return []
    previous = prepare_out_dir(out)
    if previous is None:
        return []
    everything = frozenset(
        (str(e.get("repository")), str(e.get("path") or ""), str(e.get("branch")))
        for e in previous.get("workspaces", [])
        if isinstance(e, dict) and e.get("workspace")
    )
    if everything:  # kept trees are folders
        from runner.execute.rerun import Rerun

        Rerun(previous, everything).prepare(out, files=False)
    return [str(f) for f in previous.get("files", [])]


class _Found:
    """What a run wrote besides changesets: logs, kept trees; and the summary it updates."""

    def __init__(
        self,
        logs: WorkspaceLogs,
        keeper: WorkspaceKeeper | None,
        rerun: Rerun | None,
        previous: Sequence[str],  # the files the last run wrote (a whole run's: see _prepare)
    ) -> None:
        self.logs = logs
        self.keeper = keeper
        self.rerun = rerun
        self.previous = previous

    def entry_fields(self, ws: Workspace) -> dict[str, Any]:
        kept = self.keeper.kept.get(ws.key) if self.keeper else None
        return {
            "log": self.logs.relative(ws),
            "workspace": kept.path if kept else None,
            "workspace_not_kept": kept.refused if kept else None,
        }


def _write_summary(
    plan: RunPlan,
    outcomes: list[WorkspaceOutcome],
    out_dir: Path,
    started: str,
    sandbox: SandboxPolicy,
    found: _Found,
) -> RunOutcome:
    files: list[str] = []
    entries: list[dict[str, Any]] = []
    for outcome in outcomes:
        ws, result = outcome.workspace, outcome.result
        files.extend(outcome.kept)
        extra = found.entry_fields(ws)
        if extra["log"]:
            files.append(extra["log"])
        entries.append(
            {
                "repository": ws.repository,
                "path": ws.path,
                "branch": ws.branch,
                "commit": ws.commit,
                "status": result.status,
                "error": result.error,
                "changesets": [w for w in outcome.kept if w.endswith(".json")],
                "patches": [w for w in outcome.kept if w.endswith(".patch")],
                "steps_run": result.steps_run,
                "steps_cached": result.steps_cached,
                "egress_denied": result.egress_denied,
                "broker_mismatch": result.broker_mismatch,
                **extra,
            }
        )
    imports = import_records(plan.spec)
    if imports:
        write_file(out_dir / "imports.json", (json.dumps(imports, indent=2) + "\n").encode())
        files.append("imports.json")
    if found.rerun is not None:  # the other workspaces' entries and files stay as they were
        entries, files = found.rerun.merge(entries, files)
    counts = dict.fromkeys(("changed", "unchanged", "failed", "canceled"), 0)
    for entry in entries:
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    summary = {
        "run_id": plan.run_id,
        "batch_change": plan.spec.name,
        "namespace": plan.namespace,
        "spec": plan.spec.path,
        "started_at": started,
        "finished_at": now_rfc3339(),
        "isolation": sandbox.isolation,  # the level every step of the run ran at
        "counts": counts,
        "egress_denied": sum(int(e.get("egress_denied") or 0) for e in entries),
        "broker_mismatch": sum(int(e.get("broker_mismatch") or 0) for e in entries),
        "only_failed": found.rerun is not None,
        "workspaces": entries,
        "imports": imports,
    }
    # The last run's files this one did not write again, now that its own are written.
    remove_stale(out_dir, found.previous, keep=frozenset(files))
    summary_path = write_summary(out_dir, summary, files)
    return RunOutcome(
        plan.run_id,
        [o.result for o in outcomes],
        summary_path,
        counts,
        {o.workspace.key: o.kept for o in outcomes},
        failed_logs=[
            str(e["log"]) for e in entries if e.get("log") and e["status"] in ("failed", "canceled")
        ],
        kept_workspaces={
            o.workspace.key: kept.message(out_dir, o.workspace.key)
            for o in outcomes
            if found.keeper and (kept := found.keeper.kept.get(o.workspace.key))
        },
    )


def sweep_leftovers(
    runtime: ContainerRuntime,
    runs_dir: Path,
    temp_root: Path,
    label: str,
    networks: JobNetworkSeam | None = None,
) -> int:
    """Remove what interrupted runs left: containers, job networks, temporary folders.

    A run records itself in ``runs_dir/<run_id>`` with its pid; a run whose
    process is gone is swept. Runs still alive (another terminal) are left alone.
    """
    swept = 0
    runs_dir.mkdir(parents=True, exist_ok=True)
    for record in runs_dir.iterdir():
        try:
            pid = int(record.read_text().strip() or "0")
        except (OSError, ValueError):
            pid = 0
        if pid and process_alive(pid):
            continue
        run_id = record.name
        swept += runtime.sweep(label, run_id)
        # After the containers: a network still in use cannot go.
        swept += networks.sweep(run_id) if networks else runtime.sweep_networks(run_id)
        for leftover in temp_root.glob(f"runner-ws-{run_id}-*"):
            from runner.execute.workspace import remove_tree  # what a killed run left

            remove_tree(leftover)  # in parallel, as a workspace is removed
            swept += 1
        record.unlink(missing_ok=True)
    # Networks kept ready that a run took and did not give back (it was killed).
    if networks is not None:
        swept += networks.sweep_ready()
    return swept
