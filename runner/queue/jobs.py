"""A job's payload: what an executor needs besides the bundle and the secrets.

The workspace (repository, branch, commit, path, ...), where to clone it
from, and the env plan as *provenance*: which variable comes from which
secret id and version, never a value. The executor rebuilds an ``EnvPlan``
whose secret refs are ``SecretHandle``s, the lightweight ref the engine needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, cast, get_args
from urllib.parse import quote

from runner.env import EnvPlan, PlannedVar, Provenance, Source
from runner.errors import CoordinatorError
from runner.plan import Workspace
from runner.secrets.delivery import DEFAULT_DELIVERY, Delivery

PAYLOAD_VERSION: Final = 1
_SOURCES: Final[tuple[str, ...]] = get_args(Source)


@dataclass(frozen=True)
class SecretHandle:
    """A secret's identity for env resolution and cache keys; holds no value."""

    id: str
    name: str
    namespace: str
    version: int
    overrides_global: bool = False
    delivery: Delivery = DEFAULT_DELIVERY  # how the executor gives it to the step

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "delivery": self.delivery.to_json()}


def malformed(what: str) -> CoordinatorError:
    return CoordinatorError(
        f"malformed job payload: {what}",
        hint="the coordinator and this executor may run different runner versions",
    )


def env_plan_to_json(plan: EnvPlan) -> dict[str, Any]:
    steps: dict[str, list[dict[str, Any]]] = {}
    for number, planned in sorted(plan.steps.items()):
        items = []
        for var in planned:
            item: dict[str, Any] = {"name": var.name, **var.provenance.as_json()}
            if var.provenance.source in ("literal", "template"):
                item["text"] = var.text
            if var.secret is not None:
                item["secret"] = SecretHandle(
                    id=var.secret.id,
                    name=var.secret.name,
                    namespace=var.secret.namespace,
                    version=int(var.secret.version),
                    overrides_global=bool(var.secret.overrides_global),
                    delivery=var.delivery,
                ).to_json()
            items.append(item)
        steps[str(number)] = items
    return {"namespace": plan.namespace, "steps": steps}


def _source(text: Any) -> Source:
    if text not in _SOURCES:
        raise malformed(f"unknown env source {text!r}")
    return cast(Source, text)


def env_plan_from_json(data: Mapping[str, Any]) -> EnvPlan:
    try:
        steps: dict[int, tuple[PlannedVar, ...]] = {}
        for key, items in data["steps"].items():
            number = int(key)
            planned = []
            for item in items:
                source = _source(item["source"])
                handle = None
                if source == "secret":
                    raw = item["secret"]
                    handle = SecretHandle(
                        id=str(raw["id"]),
                        name=str(raw["name"]),
                        namespace=str(raw["namespace"]),
                        version=int(raw["version"]),
                        overrides_global=bool(raw.get("overrides_global", False)),
                        delivery=Delivery.from_json(raw.get("delivery")),
                    )
                    prov = Provenance(
                        "secret",
                        namespace=handle.namespace,
                        secret_id=handle.id,
                        version=handle.version,
                        overrides_global=handle.overrides_global,
                    )
                else:
                    prov = Provenance(source)
                planned.append(
                    PlannedVar(
                        number,
                        str(item["name"]),
                        prov,
                        text=item.get("text"),
                        secret=handle,
                        delivery=handle.delivery if handle else DEFAULT_DELIVERY,
                    )
                )
            steps[number] = tuple(planned)
        return EnvPlan(namespace=str(data["namespace"]), steps=steps)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise malformed(f"env plan ({type(exc).__name__})") from None


def workspace_to_json(ws: Workspace) -> dict[str, Any]:
    return {
        "repository": ws.repository,
        "branch": ws.branch,
        "commit": ws.commit,
        "path": ws.path,
        "only_fetch_workspace": ws.only_fetch_workspace,
        "search_result_paths": list(ws.search_result_paths),
    }


def workspace_from_json(data: Mapping[str, Any], repo_path: Path) -> Workspace:
    try:
        return Workspace(
            repository=str(data["repository"]),
            repo_path=repo_path,
            branch=str(data["branch"]),
            commit=str(data["commit"]),
            path=str(data["path"]),
            only_fetch_workspace=bool(data["only_fetch_workspace"]),
            search_result_paths=tuple(str(p) for p in data["search_result_paths"]),
        )
    except (KeyError, TypeError) as exc:
        raise malformed(f"workspace ({type(exc).__name__})") from None


def clone_url(repository: str, *, repos_root: Path | None, template: str | None) -> str:
    """``--clone-url-template`` with ``{repository}`` filled in, else ``file://ROOT/NAME``."""
    if template:
        return template.replace("{repository}", repository)
    if repos_root is None:
        raise CoordinatorError(
            "the coordinator has neither --repos-root nor --clone-url-template",
            hint="start `runner server` with --repos-root DIR",
        )
    return "file://" + quote(str(repos_root.resolve() / repository))


def build_payload(*, workspace: Workspace, url: str, env_plan: EnvPlan) -> dict[str, Any]:
    return {
        "version": PAYLOAD_VERSION,
        "workspace": workspace_to_json(workspace),
        "clone_url": url,
        "env": env_plan_to_json(env_plan),
    }
