"""Why a step missed the cache: each key's named inputs, and how two of them differ.

A key (``runner.cache.keys``) is a hash, so it cannot say what changed. Each
entry therefore keeps its *named inputs* beside it: the workspace (namespace,
repository, path, base tree), and per step of the prefix its text, image ID,
``files`` and mounted files, and env, with content as SHA-256 hashes and
secrets as name, namespace, id and version — never a value nor a hash of one
(host values and one-off local secrets are the HMACs the key already holds).
When ``runner secret set``/``rm`` drops entries, their named inputs stay
behind as tombstones (``runner.cache.sql``), so a miss can still be explained.

``runner cache why`` computes a workspace's keys and named inputs exactly as
``runner run`` does (``runner.execute.steps``), then for each step says
``hit``, or ``miss`` with the differences from the closest entry (live or
tombstone) of the same workspace and step: the one with the fewest, the
newest among equals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from runner.cache.keys import StepKeyInput, WorkspaceKeyInput, _canonical

# The inputs of a workspace that name it, rather than change its result: entries of
# the same scope and step are the ones compared.
_SCOPE_FIELDS = ("namespace", "repository", "path", "batch_change_name")


def _sha(data: Any) -> str:
    return hashlib.sha256(_canonical(data)).hexdigest()


def scope_of(workspace: WorkspaceKeyInput) -> str:
    """What identifies a workspace across runs: namespace, repository, path, batch change."""
    return _sha([getattr(workspace, name) for name in _SCOPE_FIELDS])


def named_inputs(
    workspace: WorkspaceKeyInput, steps: Sequence[StepKeyInput], upto: int
) -> dict[str, Any]:
    """The named inputs of the key of steps 1..``upto`` (what an entry keeps)."""
    return {
        "scope": scope_of(workspace),
        "step": upto,
        "workspace": {
            "repository": workspace.repository,
            "path": workspace.path,
            "base_tree": workspace.base_tree,
            "only_fetch_workspace": workspace.only_fetch_workspace,
            "description": _sha(workspace.batch_change_description),
        },
        "steps": [_step_inputs(step) for step in steps[:upto]],
    }


def _step_inputs(step: StepKeyInput) -> dict[str, Any]:
    canonical = step.canonical()
    env: dict[str, Any] = {}
    for item in canonical["env"]:
        if "secret" in item:
            env[item["name"]] = {"secret": item["secret"]}
        elif "literal" in item:  # spec text, but content: hashed like the rest
            env[item["name"]] = {"literal": _sha(item["literal"])}
        elif "host_hmac" in item:
            env[item["name"]] = {"host": item["host_hmac"]}
        else:
            env[item["name"]] = {"local": item.get("local_hmac", "")}
    definition = step.definition if isinstance(step.definition, Mapping) else {}
    return {
        "text": _sha(step.definition),
        "container": str(definition.get("container", "")),
        "image": step.image_id,
        "files": canonical["files"],
        "mounts": canonical["mounts"],
        "env": env,
    }


# Differences -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One key input that differs: ``input`` is its kind, ``name`` what it is called."""

    input: str  # base_tree, workspace, step, image, file, mount, secret, env
    name: str
    was: str | None
    now: str | None
    step: int | None = None  # the step whose input it is (None: the workspace's)

    def text(self, invalidated_by: str | None = None) -> str:
        was, now = self.was or "(none)", self.now or "(none)"
        words = {"step": "text of"}.get(self.input, self.input)
        line = f"{words} {self.name} {was} → {now}"
        if self.input == "secret" and invalidated_by:
            line += f" (invalidated by {invalidated_by})"
        return line

    def as_json(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "name": self.name,
            "was": self.was,
            "now": self.now,
            "step": self.step,
        }


def _short(text: Any) -> str | None:
    if text is None:
        return None
    value = str(text)
    if value.startswith("sha256:"):
        return value[:19]
    return value[:12] if len(value) == 64 else value


def differences(was: Mapping[str, Any], now: Mapping[str, Any]) -> list[Difference]:
    """How the named inputs ``now`` differ from ``was``, workspace first, then step by step."""
    found: list[Difference] = []
    ws_was, ws_now = was.get("workspace", {}), now.get("workspace", {})
    repository = str(ws_now.get("repository", ""))
    if ws_was.get("base_tree") != ws_now.get("base_tree"):
        found.append(
            Difference(
                "base_tree",
                repository,
                _short(ws_was.get("base_tree")),
                _short(ws_now.get("base_tree")),
            )
        )
    for name in ("only_fetch_workspace", "description"):
        if ws_was.get(name) != ws_now.get(name):
            found.append(
                Difference("workspace", name, _short(ws_was.get(name)), _short(ws_now.get(name)))
            )
    steps_was, steps_now = list(was.get("steps", [])), list(now.get("steps", []))
    for index in range(max(len(steps_was), len(steps_now))):
        before = steps_was[index] if index < len(steps_was) else {}
        after = steps_now[index] if index < len(steps_now) else {}
        found.extend(_step_differences(index + 1, before, after))
    return found


def _step_differences(
    number: int, was: Mapping[str, Any], now: Mapping[str, Any]
) -> list[Difference]:
    found: list[Difference] = []
    if was.get("text") != now.get("text"):
        found.append(
            Difference(
                "step", f"step {number}", _short(was.get("text")), _short(now.get("text")), number
            )
        )
    if was.get("image") != now.get("image"):
        container = str(now.get("container") or was.get("container") or "")
        found.append(
            Difference(
                "image", container, _short(was.get("image")), _short(now.get("image")), number
            )
        )
    for kind, key in (("file", "files"), ("mount", "mounts")):
        before, after = was.get(key, {}), now.get(key, {})
        for path in sorted(set(before) | set(after)):
            old, new = before.get(path), after.get(path)
            if old != new:
                found.append(Difference(kind, path, _short(old), _short(new), number))
    env_was, env_now = was.get("env", {}), now.get("env", {})
    for name in sorted(set(env_was) | set(env_now)):
        before, after = env_was.get(name), env_now.get(name)
        if before != after:
            found.append(_env_difference(number, name, before, after))
    return found


def _env_difference(number: int, name: str, was: Any, now: Any) -> Difference:
    secret_was = (was or {}).get("secret")
    secret_now = (now or {}).get("secret")
    if secret_was and secret_now and secret_was.get("name") == secret_now.get("name"):
        label = str(secret_now.get("name"))
        if secret_was.get("delivery") != secret_now.get("delivery") and _same_version(
            secret_was, secret_now
        ):
            return Difference(
                "secret", label, secret_was.get("delivery"), secret_now.get("delivery"), number
            )
        same_ns = secret_was.get("namespace") == secret_now.get("namespace")
        return Difference(
            "secret",
            label,
            _version(secret_was, with_namespace=not same_ns),
            _version(secret_now, with_namespace=not same_ns),
            number,
        )
    return Difference("env", name, _describe(was), _describe(now), number)


def _same_version(was: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
    return all(was.get(k) == now.get(k) for k in ("namespace", "id", "version"))


def _version(secret: Mapping[str, Any], *, with_namespace: bool) -> str:
    version = f"v{secret.get('version')}"
    return f"{secret.get('namespace')} {version}" if with_namespace else version


def _describe(entry: Any) -> str | None:
    if not entry:
        return None
    if "secret" in entry:
        secret = entry["secret"]
        return f"secret {secret.get('name')} {_version(secret, with_namespace=True)}"
    if "literal" in entry:
        return f"literal {_short(entry['literal'])}"
    if "host" in entry:
        return f"host {_short(entry['host'])}"
    return f"local {_short(entry.get('local'))}"


# Finding the closest entry -------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """An entry, or the tombstone of one, of the same workspace and step."""

    inputs: Mapping[str, Any]
    at: datetime  # when it was stored, or dropped
    invalidated_by: str | None = None  # a tombstone's reason: "secret set", "secret rm"


class WhyCache(Protocol):
    """What ``runner cache why`` asks of a cache (``SqlStepCache`` answers)."""

    def contains(self, key: str) -> bool: ...

    def candidates(self, scope: str, step: int) -> list[Candidate]: ...


def closest(
    now: Mapping[str, Any], candidates: Sequence[Candidate]
) -> tuple[Candidate, list[Difference]] | None:
    """The candidate with the fewest differences from ``now`` (the newest among equals)."""
    best: tuple[Candidate, list[Difference]] | None = None
    for candidate in sorted(candidates, key=lambda c: c.at, reverse=True):
        found = differences(candidate.inputs, now)
        if best is None or len(found) < len(best[1]):
            best = (candidate, found)
    return best


@dataclass(frozen=True)
class StepWhy:
    step: int
    hit: bool
    differences: Sequence[Difference] = ()
    invalidated_by: str | None = None
    closest: str | None = None  # "entry", "tombstone", or None: nothing to compare with

    def lines(self, shown: set[Difference] | None = None) -> list[str]:
        """Its text; differences already in ``shown`` (said for an earlier step) are summed up."""
        if self.hit:
            return [f"step {self.step}: hit"]
        if self.closest is None:
            return [f"step {self.step}: miss (no entry of this workspace and step yet)"]
        head = f"step {self.step}: miss"
        if not self.differences:  # same inputs, yet gone
            if self.invalidated_by:
                return [head + f" (its entry was dropped by {self.invalidated_by})"]
            return [head + " (its entry was evicted or removed; the inputs are the same)"]
        seen = shown if shown is not None else set()
        earlier = sorted({d.step or 0 for d in self.differences if d in seen})
        lines = [head + (f", as step {', '.join(map(str, earlier))} above" if earlier else "")]
        for diff in self.differences:
            if diff in seen:
                continue
            seen.add(diff)
            where = f"step {diff.step}: " if diff.step not in (None, self.step) else ""
            lines.append(f"  {where}{diff.text(self.invalidated_by)}")
        return lines

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "status": "hit" if self.hit else "miss",
            "closest": self.closest,
            "invalidated_by": self.invalidated_by,
            "differences": [d.as_json() for d in self.differences],
        }


@dataclass(frozen=True)
class WorkspaceWhy:
    repository: str
    path: str
    branch: str
    steps: Sequence[StepWhy] = field(default_factory=tuple)

    def text(self) -> str:
        lines = [f"{self.repository}@{self.branch}:{self.path or '.'}"]
        shown: set[Difference] = set()
        for step in self.steps:
            lines.extend("  " + line for line in step.lines(shown))
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "path": self.path,
            "branch": self.branch,
            "steps": [s.as_json() for s in self.steps],
        }


def explain_steps(
    cache: WhyCache,
    workspace: WorkspaceKeyInput,
    keys: Sequence[str],
    inputs: Sequence[StepKeyInput],
) -> list[StepWhy]:
    """Per step of one workspace: hit, or miss with what differs from the closest entry."""
    scope = scope_of(workspace)
    answers: list[StepWhy] = []
    for index, key in enumerate(keys):
        number = index + 1
        if cache.contains(key):
            answers.append(StepWhy(number, hit=True))
            continue
        now = named_inputs(workspace, inputs, number)
        best = closest(now, cache.candidates(scope, number))
        if best is None:
            answers.append(StepWhy(number, hit=False))
            continue
        candidate, found = best
        answers.append(
            StepWhy(
                number,
                hit=False,
                differences=found,
                invalidated_by=candidate.invalidated_by,
                closest="tombstone" if candidate.invalidated_by else "entry",
            )
        )
    return answers
