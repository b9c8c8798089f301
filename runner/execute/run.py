"""A local run: checks, secrets, workspaces in parallel, results on disk.

``prepare`` does everything that can fail before a container starts (env
resolution with every missing secret at once, images); ``execute`` reveals
the secrets (audited), registers them with the redactor, runs the workspaces
on a thread pool and writes the results.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runner.cache import StepCache, host_mac
from runner.changeset import ChangesetError, build_changesets, import_records
from runner.env import EnvPlan, HostEnv
from runner.execute.runtime import ContainerRuntime
from runner.execute.steps import (
    RunContext,
    RunLimits,
    WorkspaceResult,
    WorkspaceRunner,
    key_inputs,
)
from runner.log import get_logger
from runner.output import changeset_base, prepare_out_dir, write_file, write_summary
from runner.plan import Workspace
from runner.report import Reporter, now_rfc3339
from runner.secrets.value import Secret
from runner.spec.models import BatchSpec

log = get_logger("runner.run")


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


def resolve_images(spec: BatchSpec, runtime: ContainerRuntime) -> dict[str, str]:
    """Image ID per `container` as written; a missing image raises, naming it."""
    images: dict[str, str] = {}
    for step in spec.steps:
        if step.container not in images:
            images[step.container] = runtime.image_id(step.container)
    return images


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


Reveal = Callable[[Any, int], Secret]  # (secret ref, first step using it) -> value


def reveal_secrets(plan: RunPlan, reveal: Reveal) -> dict[str, Secret]:
    """Decrypt each secret the run uses once; the store audits each access."""
    first_use: dict[str, tuple[Any, int]] = {}
    for number in sorted(plan.env_plan.steps):
        for var in plan.env_plan.steps[number]:
            if var.secret is not None and var.secret.id not in first_use:
                first_use[var.secret.id] = (var.secret, number)
    return {sid: reveal(ref, step) for sid, (ref, step) in first_use.items()}


def execute(
    plan: RunPlan,
    *,
    secrets: Mapping[str, Secret],
    runtime: ContainerRuntime,
    redactor: Any,
    reporter: Reporter,
    limits: RunLimits,
    out_dir: Path,
    parallelism: int,
    fail_fast: bool,
    cancel: threading.Event,
    cache: StepCache | None = None,
    host_mac_key: bytes,
    temp_root: Path | None = None,
) -> RunOutcome:
    # Every value is registered before the first step, and stays registered.
    for var_list in plan.env_plan.steps.values():
        for var in var_list:
            if var.secret is not None:
                redactor.register(var.name, secrets[var.secret.id])
            elif var.provenance.source == "host":
                redactor.register(var.name, plan.host.values[var.name])
    prepare_out_dir(out_dir)
    macs = {
        name: host_mac(host_mac_key, name, plan.host.values[name])
        for name in plan.env_plan.host_names()
    }
    ctx = RunContext(
        run_id=plan.run_id,
        spec=plan.spec,
        spec_dir=plan.spec_dir,
        namespace=plan.namespace,
        env_plan=plan.env_plan,
        secrets=secrets,
        host=plan.host,
        host_macs=macs,
        images=plan.images,
        runtime=runtime,
        redactor=redactor,
        reporter=reporter,
        limits=limits,
        cancel=cancel,
        cache=cache,
        temp_root=temp_root,
    )
    if cache is not None:
        ctx = replace(ctx, step_key_inputs=key_inputs(ctx))
    started = now_rfc3339()
    reporter.event(
        "run.started",
        run_id=plan.run_id,
        batch_change=plan.spec.name,
        namespace=plan.namespace,
        workspaces=len(plan.workspaces),
    )
    results = _run_all(ctx, plan.workspaces, parallelism, fail_fast)
    outcome = _write(plan, ctx, results, out_dir, started)
    reporter.event("run.finished", run_id=plan.run_id, counts=outcome.counts)
    return outcome


def _run_all(
    ctx: RunContext, workspaces: Sequence[Workspace], parallelism: int, fail_fast: bool
) -> list[WorkspaceResult]:
    results: dict[int, WorkspaceResult] = {}
    with ThreadPoolExecutor(
        max_workers=max(1, parallelism), thread_name_prefix="workspace"
    ) as pool:
        pending: dict[Future[WorkspaceResult], int] = {}
        queue = list(enumerate(workspaces))
        while queue or pending:
            while queue and len(pending) < max(1, parallelism) and not ctx.cancel.is_set():
                index, ws = queue.pop(0)
                pending[pool.submit(WorkspaceRunner(ctx, ws).run)] = index
            if not pending:
                break
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                try:
                    results[index] = future.result()
                except Exception as exc:  # a bug must not take the other workspaces down
                    log.exception("workspace crashed", workspace=workspaces[index].key)
                    results[index] = WorkspaceResult(
                        workspaces[index],
                        "failed",
                        error=ctx.redactor.redact(
                            f"internal error: {type(exc).__name__}: {exc} — "
                            "rerun with --debug and report it"
                        ),
                    )
                if fail_fast and results[index].status == "failed":
                    ctx.cancel.set()
        for index, ws in queue:
            results[index] = WorkspaceResult(
                ws, "canceled", error="not started: the run was stopped"
            )
    return [results[i] for i in range(len(workspaces))]


def _write(
    plan: RunPlan, ctx: RunContext, results: list[WorkspaceResult], out_dir: Path, started: str
) -> RunOutcome:
    files: list[str] = []
    entries: list[dict[str, Any]] = []
    paths_by_ws: dict[str, list[str]] = {}
    for result in results:
        ws = result.workspace
        written: list[str] = []
        if result.status == "changed":
            try:
                written = _write_changesets(plan, ctx, result, out_dir)
            except ChangesetError as exc:
                result.status = "failed"
                result.error = ctx.redactor.redact(str(exc))
        files.extend(written)
        paths_by_ws[ws.key] = written
        changeset = [w for w in written if w.endswith(".json")]
        ctx.reporter.event(
            "workspace.finished",
            run_id=plan.run_id,
            repository=ws.repository,
            path=ws.path,
            status=result.status,
            changeset=changeset[0] if len(changeset) == 1 else (changeset or None),
            error=result.error,
        )
        entries.append(
            {
                "repository": ws.repository,
                "path": ws.path,
                "branch": ws.branch,
                "commit": ws.commit,
                "status": result.status,
                "error": result.error,
                "changesets": changeset,
                "patches": [w for w in written if w.endswith(".patch")],
                "steps_run": result.steps_run,
                "steps_cached": result.steps_cached,
            }
        )
    counts = dict.fromkeys(("changed", "unchanged", "failed", "canceled"), 0)
    for result in results:
        counts[result.status] += 1
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
        "counts": counts,
        "workspaces": entries,
        "imports": imports,
    }
    summary_path = write_summary(out_dir, summary, files)
    return RunOutcome(plan.run_id, results, summary_path, counts, paths_by_ws)


def _write_changesets(
    plan: RunPlan, ctx: RunContext, result: WorkspaceResult, out_dir: Path
) -> list[str]:
    ws = result.workspace

    def diff_for(paths: list[str] | None) -> bytes:
        # The workspace folder is gone; split the full diff by file instead.
        return split_diff(result.diff, paths)

    specs = build_changesets(
        plan.spec,
        ws,
        diff=result.diff,
        changes=result.changes,
        outputs=result.outputs,
        diff_for=diff_for,
    )
    written: list[str] = []
    for cs in specs:
        body = dict(cs.body)
        body["outputs"] = result.outputs
        data = (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode()
        if ctx.redactor.redact_bytes(data) != data:
            raise ChangesetError(
                f"the changeset for {ws.repository} would hold a secret value; nothing was written"
            )
        base = changeset_base(out_dir, ws.repository, ws.path, cs.branch)
        write_file(base.with_name(base.name + ".json"), data)
        write_file(base.with_name(base.name + ".patch"), cs.diff)
        for suffix in (".json", ".patch"):
            written.append(str(base.with_name(base.name + suffix).relative_to(out_dir)))
    return written


def split_diff(diff: bytes, paths: list[str] | None) -> bytes:
    if paths is None:
        return diff
    wanted = set(paths)
    out: list[bytes] = []
    keep = False
    for chunk in file_sections(diff):
        header = chunk.split(b"\n", 1)[0]
        keep = any(
            header.endswith(b" b/" + p.encode()) or (b" a/" + p.encode() + b" ") in header
            for p in wanted
        )
        if keep:
            out.append(chunk)
    return b"".join(out)


def file_sections(diff: bytes) -> list[bytes]:
    sections: list[bytes] = []
    marker = b"diff --git "
    pos = diff.find(marker)
    if pos < 0:
        return [diff] if diff else []
    while pos >= 0:
        nxt = diff.find(b"\n" + marker, pos + 1)
        end = len(diff) if nxt < 0 else nxt + 1
        sections.append(diff[pos:end])
        pos = -1 if nxt < 0 else nxt + 1
    return sections


def sweep_leftovers(runtime: ContainerRuntime, runs_dir: Path, temp_root: Path, label: str) -> int:
    """Remove what interrupted runs left: their containers and temporary folders.

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
