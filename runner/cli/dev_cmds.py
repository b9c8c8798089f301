"""The developer's loop before a run: `runner workspaces` and `runner cache why`.

Both take `runner run`'s repository, namespace and secret flags and build the
same front half (``runner.cli._front``), the same image IDs and the same
cache keys, without starting a container or decrypting a secret. Images are
looked up by name in the engine (pulled if absent, without registry
credentials: those would need decrypting ``DOCKER_AUTH_CONFIG``); an image
that cannot be had makes the cache `unknown` rather than an error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from runner.cache import StepKeyInput, host_mac, step_keys
from runner.cache.why import WorkspaceWhy, explain_steps
from runner.cli._app import app, cli, common_options, spec_input_options
from runner.cli._front import FrontHalf, front_half, host_mac_key
from runner.cli._local_secrets import local_secret_options
from runner.cli.cache_cmds import cache_group
from runner.errors import ImageNotFoundError
from runner.execute.source import resolve_source
from runner.execute.steps import spec_key_inputs, workspace_key_input
from runner.plan import RepoArg, Workspace
from runner.preview import preview


@dataclass(frozen=True)
class _Keyed:
    """The front half with what every key needs: step inputs (None: an image is missing)."""

    front: FrontHalf
    inputs: list[StepKeyInput] | None
    missing_image: str | None

    def keys(self, ws: Workspace, base_tree: str) -> list[str]:
        assert self.inputs is not None
        front = self.front
        workspace = workspace_key_input(front.spec, front.namespace, ws, base_tree)
        return step_keys(workspace, self.inputs)


def _keyed(front: FrontHalf) -> _Keyed:
    from runner.cli.run_cmds import _runtime

    runtime = _runtime(app(), 1)
    images: dict[str, str] = {}
    for step in front.spec.steps:
        if step.container in images:
            continue
        try:
            images[step.container] = runtime.image_id(step.container)
        except ImageNotFoundError:
            return _Keyed(front, None, step.container)
    key = host_mac_key(front.store)
    macs = {
        name: host_mac(key, name, front.host.values[name]) for name in front.env_plan.host_names()
    }
    inputs = spec_key_inputs(front.spec, front.spec_dir, images, front.env_plan, macs)
    return _Keyed(front, inputs, None)


def _open_cache(front: FrontHalf) -> Any:
    from runner.cache.sql import open_cache

    return open_cache(app().settings, front.store)


@cli.command("workspaces")
@spec_input_options
@click.option("--no-cache", is_flag=True, help="Preview a run with --no-cache.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of workspaces.")
@local_secret_options
@common_options
def workspaces_cmd(
    spec_path: str,
    namespace: str | None,
    repos_root: Path | None,
    repos: tuple[RepoArg, ...],
    allow_host: tuple[str, ...],
    no_cache: bool,
    as_json: bool,
    secret_files: tuple[Path, ...],
    secret_names: tuple[str, ...],
) -> int:
    """Show every workspace `runner run` would make, and what it would do with each step.

    Per workspace: repository, path, branch, commit, the files its query
    matched, and per step `cached`, `skipped` (by its `if:`), `runs`, or
    `decided at run time` (an `if:` reading an earlier step's results). Takes
    the flags of `runner run`; starts no container and decrypts nothing.
    """
    front = front_half(
        app(), spec_path, namespace, repos_root, repos, allow_host, secret_files, secret_names
    )
    keys = contains = None
    note = "off (--no-cache)" if no_cache else "on"
    if not no_cache and front.spec.steps:
        keyed = _keyed(front)
        if keyed.inputs is None:
            note = f"unknown: image {keyed.missing_image} is not present (runner run pulls it)"
        else:
            keys, contains = keyed.keys, _open_cache(front).contains
    found = preview(front.spec, front.workspaces, keys=keys, contains=contains, cache_note=note)
    if as_json:
        click.echo(json.dumps([w.as_json() for w in found.workspaces], indent=2))
        return 0
    for item in found.workspaces:
        click.echo(item.text())
    click.echo(found.summary_line(), err=True)
    return 0


@cache_group.command("why")
@spec_input_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of workspaces.")
@local_secret_options
@common_options
def cache_why(
    spec_path: str,
    namespace: str | None,
    repos_root: Path | None,
    repos: tuple[RepoArg, ...],
    allow_host: tuple[str, ...],
    as_json: bool,
    secret_files: tuple[Path, ...],
    secret_names: tuple[str, ...],
) -> int:
    """For each workspace and step: `hit`, or `miss` and which key inputs changed.

    A miss lists what differs from the closest entry of that workspace and
    step: the step's text, an image (by ID), a `files` entry's or mounted
    file's content, a secret's version (never its value), the base tree.
    Entries that `runner secret set`/`rm` dropped count too, and say so.
    """
    front = front_half(
        app(), spec_path, namespace, repos_root, repos, allow_host, secret_files, secret_names
    )
    keyed = _keyed(front)
    if keyed.inputs is None:
        raise ImageNotFoundError(
            f"image {keyed.missing_image} is not present",
            hint="pull or build it (runner run does), then ask again",
        )
    cache = _open_cache(front)
    answers: list[WorkspaceWhy] = []
    for ws in front.workspaces:
        base_tree = resolve_source(ws).tree
        workspace = workspace_key_input(front.spec, front.namespace, ws, base_tree)
        keys = step_keys(workspace, keyed.inputs)
        steps = explain_steps(cache, workspace, keys, keyed.inputs)
        answers.append(WorkspaceWhy(ws.repository, ws.path, ws.branch, steps))
    _print_why(answers, as_json=as_json)
    return 0


def _print_why(answers: Sequence[WorkspaceWhy], *, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([a.as_json() for a in answers], indent=2))
        return
    for answer in answers:
        click.echo(answer.text())
    hits = sum(1 for a in answers for s in a.steps if s.hit)
    total = sum(len(a.steps) for a in answers)
    sys.stderr.write(f"{hits} of {total} steps would come from the cache\n")
