"""A local run: the front door of `runner run` onto the workspace job.

The CLI checks everything that can fail before a container starts (env
resolution with every missing secret at once, images) and builds a
``RunPlan``; ``execute`` hands it to ``runner.execute.job.run_job`` with the
local store's audited ``reveal``, a ``FileSink`` that writes each changeset
under ``--out`` as its workspace finishes, and writes ``summary.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.cache import StepCache
from runner.changeset import import_records
from runner.egress import JobNetworkSeam, NoJobNetworks
from runner.env import EnvPlan, HostEnv
from runner.execute.job import (
    CheckedChangeset,
    Job,
    JobServices,
    Reveal,
    ValueRegistry,
    WorkspaceOutcome,
    run_job,
)
from runner.execute.runtime import ContainerRuntime
from runner.execute.steps import RunLimits, WorkspaceResult
from runner.output import changeset_base, prepare_out_dir, write_file, write_summary
from runner.plan import Workspace
from runner.redact.protocol import Redacts
from runner.report import Reporter, now_rfc3339
from runner.sandbox import SandboxPolicy
from runner.spec.models import BatchSpec


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class RunPlan:
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


@dataclass
class RunOutcome:
    run_id: str
    results: list[WorkspaceResult]
    summary_path: Path | None
    counts: dict[str, int] = field(default_factory=dict)
    changeset_paths: dict[str, list[str]] = field(default_factory=dict)

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
                write_file(path, data)
                written.append(str(path.relative_to(self._out)))
        return written


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
) -> RunOutcome:
    prepare_out_dir(out_dir)
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
        reporter=reporter,
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

    outcomes = run_job(job, reveal, services, on_open=announce)
    outcome = _write_summary(plan, outcomes, out_dir, started, services.sandbox)
    reporter.event("run.finished", run_id=plan.run_id, counts=outcome.counts)
    return outcome


def _write_summary(
    plan: RunPlan,
    outcomes: list[WorkspaceOutcome],
    out_dir: Path,
    started: str,
    sandbox: SandboxPolicy,
) -> RunOutcome:
    files: list[str] = []
    entries: list[dict[str, Any]] = []
    counts = dict.fromkeys(("changed", "unchanged", "failed", "canceled"), 0)
    for outcome in outcomes:
        ws, result = outcome.workspace, outcome.result
        files.extend(outcome.kept)
        counts[result.status] += 1
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
            }
        )
    imports = import_records(plan.spec)
    if imports:
        write_file(out_dir / "imports.json", (json.dumps(imports, indent=2) + "\n").encode())
        files.append("imports.json")
    summary = {
        "run_id": plan.run_id,
        "batch_change": plan.spec.name,
        "namespace": plan.namespace,
        "spec": plan.spec.path,
        "started_at": started,
        "finished_at": now_rfc3339(),
        "isolation": sandbox.isolation,  # the level every step of the run ran at
        "counts": counts,
        "egress_denied": sum(o.result.egress_denied for o in outcomes),
        "workspaces": entries,
        "imports": imports,
    }
    summary_path = write_summary(out_dir, summary, files)
    return RunOutcome(
        plan.run_id,
        [o.result for o in outcomes],
        summary_path,
        counts,
        {o.workspace.key: o.kept for o in outcomes},
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
        if pid and _alive(pid):
            continue
        run_id = record.name
        swept += runtime.sweep(label, run_id)
        # After the containers: a network still in use cannot go.
        swept += networks.sweep(run_id) if networks else runtime.sweep_networks(run_id)
        for leftover in temp_root.glob(f"runner-ws-{run_id}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
            swept += 1
        record.unlink(missing_ok=True)
    return swept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
