"""What `runner env explain` shows: each step's variables and their sources.

Front half of the pipeline only: nothing runs and nothing is decrypted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.env import EnvPlan, PlannedVar
from runner.errors import TemplateError
from runner.plan import Workspace
from runner.secrets.delivery import DEFAULT_DELIVERY
from runner.spec import template as tmpl
from runner.spec.models import BatchSpec

RUNTIME = "rendered at run time"


@dataclass(frozen=True)
class ExplainedVar:
    step: int
    name: str
    planned: PlannedVar
    shown: str  # what the text output prints after the name

    def as_json(self) -> dict[str, Any]:
        planned = self.planned
        source = planned.provenance.source
        data: dict[str, Any] = {"step": self.step, "name": self.name}
        data.update(planned.provenance.as_json())
        if source == "local":
            data["secret_name"] = planned.secret.name
        elif planned.secret is not None:
            data["secret_name"] = planned.secret.name
            data["delivery"] = planned.delivery.to_json()
            data["delivered_as"] = planned.delivery.describe()
        elif source == "literal":
            data["value"] = planned.text
        elif source == "template":
            data["template"] = planned.text
            data["rendered_at_run_time"] = planned.runtime_template
            if not planned.runtime_template:
                data["value"] = self.shown
        return data


def template_context(spec: BatchSpec, workspace: Workspace | None) -> Mapping[str, Any]:
    """The context templates see before any step ran (the first step's)."""
    if workspace is None:
        repository = {"name": "<repository>", "branch": "<branch>", "search_result_paths": []}
        path = ""
    else:
        repository = {
            "name": workspace.repository,
            "branch": workspace.branch,
            "search_result_paths": list(workspace.search_result_paths),
        }
        path = workspace.path
    empty_step = {
        "modified_files": [],
        "added_files": [],
        "deleted_files": [],
        "renamed_files": [],
        "stdout": "",
        "stderr": "",
    }
    return {
        "repository": repository,
        "batch_change": {"name": spec.name, "description": spec.description},
        "previous_step": empty_step,
        "steps": {
            "modified_files": [],
            "added_files": [],
            "deleted_files": [],
            "renamed_files": [],
            "path": path,
        },
        "outputs": {},
    }


def explain(spec: BatchSpec, plan: EnvPlan, workspace: Workspace | None) -> list[ExplainedVar]:
    context = template_context(spec, workspace)
    out: list[ExplainedVar] = []
    for step in spec.steps:
        for var in plan.steps.get(step.number, ()):
            out.append(ExplainedVar(step.number, var.name, var, _shown(var, context)))
    return out


def _shown(var: PlannedVar, context: Mapping[str, Any]) -> str:
    prov = var.provenance
    if prov.source == "literal":
        return f"literal {var.text}"
    if prov.source == "template":
        if var.runtime_template:
            return f"template {var.text} ({RUNTIME})"
        try:
            return str(tmpl.render_template(var.text or "", context))
        except TemplateError as exc:
            return f"template {var.text} (cannot render yet: {exc.message})"
    if prov.source == "local":
        return prov.describe()
    if var.secret is not None:
        text = f"secret {var.secret.name} from {prov.namespace} v{prov.version}"
        text += " (overrides global)" if prov.overrides_global else ""
        # Only a delivery other than a plain variable is worth a word.
        if var.delivery != DEFAULT_DELIVERY:
            text += f", {var.delivery.describe()}"
        return text
    return "host"


def render_text(spec: BatchSpec, explained: list[ExplainedVar], workspace: Workspace | None) -> str:
    lines = []
    where = workspace.key if workspace else "a placeholder repository"
    lines.append(f"{spec.name}: env of {len(spec.steps)} step(s), templates shown for {where}")
    by_step: dict[int, list[ExplainedVar]] = {}
    for item in explained:
        by_step.setdefault(item.step, []).append(item)
    for step in spec.steps:
        items = by_step.get(step.number, [])
        lines.append(f"step {step.number} ({step.container}):")
        if not items:
            lines.append("  (no env)")
        width = max((len(i.name) for i in items), default=0)
        for item in items:
            shown = item.shown
            if item.planned.provenance.source == "template" and not item.planned.runtime_template:
                shown = f"template {item.planned.text} → {shown}"
            lines.append(f"  {item.name.ljust(width)}  {shown}")
    return "\n".join(lines) + "\n"
