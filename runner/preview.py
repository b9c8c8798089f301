"""What `runner workspaces` shows: every workspace a run would make, and its steps' fate.

For each workspace: its repository, path, branch and commit, the files its
query matched, and per step whether the run would take it from the cache,
skip it by its ``if:`` or run it. Nothing runs and nothing is decrypted: the
workspaces come from ``runner.plan``, the keys from the same functions the
step loop uses (``runner.execute.steps.spec_key_inputs`` and
``workspace_key_input``, ``runner.cache.step_keys``), and the cache is only
asked whether a key is there (``contains``: no entry is read or marked used).

The step loop takes the longest cached prefix, then decides each ``if:`` as
it reaches it. An ``if:`` that reads only the repository and the batch change
is decided here as the run would; one that reads step results or outputs is
``decided at run time``, unless no step before it runs (its context is then
exactly the first step's).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from runner.errors import TemplateError
from runner.execute.source import resolve_source
from runner.explain import template_context
from runner.plan import Workspace
from runner.spec import template as tmpl
from runner.spec.models import BatchSpec, Step
from runner.spec.validate import STEP_ROOTS, uses_runtime_values

StepFate = Literal["cached", "skipped", "runs", "decided at run time"]
Keys = Callable[[Workspace, str], Sequence[str]]  # (workspace, base tree) -> step keys


@dataclass(frozen=True)
class StepPreview:
    step: int
    fate: StepFate
    why: str = ""  # the `if:` as written, for a skipped or undecided step

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"step": self.step, "status": self.fate}
        if self.why:
            data["if"] = self.why
        return data


@dataclass(frozen=True)
class WorkspacePreview:
    workspace: Workspace
    steps: Sequence[StepPreview]
    cache: str  # "on", "off", or why it cannot be told ("unknown: …")

    def count(self, fate: StepFate) -> int:
        return sum(1 for s in self.steps if s.fate == fate)

    def as_json(self) -> dict[str, Any]:
        ws = self.workspace
        return {
            "repository": ws.repository,
            "path": ws.path,
            "branch": ws.branch,
            "commit": ws.commit,
            "files": list(ws.search_result_paths),
            "cache": self.cache,
            "steps_cached": self.count("cached"),
            "steps_to_run": self.count("runs"),
            "steps_skipped": self.count("skipped"),
            "steps_undecided": self.count("decided at run time"),
            "steps": [s.as_json() for s in self.steps],
        }

    def text(self) -> str:
        ws = self.workspace
        lines = [f"{ws.repository}@{ws.branch}:{ws.path or '.'}  {ws.commit[:12]}"]
        if ws.search_result_paths:
            shown = ", ".join(ws.search_result_paths[:10])
            more = len(ws.search_result_paths) - 10
            lines.append(f"  files: {shown}" + (f" … and {more} more" if more > 0 else ""))
        if self.cache.startswith("unknown"):
            lines.append(f"  cache: {self.cache}")
        for step in self.steps:
            why = f" (if: {step.why})" if step.why else ""
            lines.append(f"  step {step.step}  {step.fate}{why}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Preview:
    workspaces: Sequence[WorkspacePreview] = field(default_factory=tuple)

    def totals(self) -> dict[str, int]:
        fates: tuple[StepFate, ...] = ("cached", "runs", "skipped", "decided at run time")
        return {fate: sum(w.count(fate) for w in self.workspaces) for fate in fates}

    def summary_line(self) -> str:
        totals = self.totals()
        n = len(self.workspaces)
        parts = [f"{totals['cached']} cached", f"{totals['runs']} to run"]
        parts.append(f"{totals['skipped']} skipped")
        if totals["decided at run time"]:
            parts.append(f"{totals['decided at run time']} decided at run time")
        return f"{n} workspace{'s' if n != 1 else ''}; steps: {', '.join(parts)}"


def preview(
    spec: BatchSpec,
    workspaces: Sequence[Workspace],
    *,
    keys: Keys | None,
    contains: Callable[[str], bool] | None,
    cache_note: str = "on",
    cancel: threading.Event | None = None,
) -> Preview:
    """Each workspace's steps as ``runner run`` would treat them.

    ``keys``/``contains``: the run's key function and the cache's presence
    test; ``None`` when the cache is off (``cache_note`` says why).
    """
    found = []
    for ws in workspaces:
        cached = 0
        note = cache_note
        if keys is not None and contains is not None:
            base_tree = resolve_source(ws, cancel).tree
            cached = _cached_prefix(keys(ws, base_tree), contains)
        found.append(WorkspacePreview(ws, _fates(spec, ws, cached), note))
    return Preview(tuple(found))


def _cached_prefix(keys: Sequence[str], contains: Callable[[str], bool]) -> int:
    """How many steps the run takes from the cache: the longest cached prefix, as it looks."""
    for index in range(len(keys) - 1, -1, -1):
        if contains(keys[index]):
            return index + 1
    return 0


def _fates(spec: BatchSpec, ws: Workspace, cached: int) -> list[StepPreview]:
    context = _first_context(spec, ws)
    exact = cached == 0  # until a step runs, every `if:` sees the first step's context
    fates: list[StepPreview] = []
    for step in spec.steps:
        if step.number <= cached:
            fates.append(StepPreview(step.number, "cached"))
            continue
        decided = _decide(step, context, exact=exact)
        why = step.if_ if isinstance(step.if_, str) else ""
        if decided is None:
            fates.append(StepPreview(step.number, "decided at run time", why))
            exact = False
        elif decided:
            fates.append(StepPreview(step.number, "runs"))
            exact = False
        else:
            fates.append(StepPreview(step.number, "skipped", why or "false"))
    return fates


def _first_context(spec: BatchSpec, ws: Workspace) -> dict[str, Any]:
    context = dict(template_context(spec, ws))
    # As the step loop hands them to templates: sorted and shell-quoted.
    repository: Mapping[str, Any] = context["repository"]
    context["repository"] = {
        **repository,
        "search_result_paths": tmpl.SearchResultPaths(ws.search_result_paths),
    }
    return context


def _decide(step: Step, context: Mapping[str, Any], *, exact: bool) -> bool | None:
    """Whether the step runs; ``None`` when only the run can tell."""
    cond = step.if_
    if cond is None or cond is True:
        return True
    if cond is False:
        return False
    if not exact and uses_runtime_values(cond, STEP_ROOTS):
        return None
    try:
        return tmpl.condition_holds(str(tmpl.render_template(cond, context)))
    except TemplateError:
        return None  # the run fails the workspace there, saying why
