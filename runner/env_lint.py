"""`runner env explain --lint`: what in a spec's env is likely a mistake. Warnings only.

From the env plan and the spec alone, nothing decrypted:

- a secret a step receives that its ``run`` never mentions, as ``$NAME`` or
  ``${NAME}``: either the step does not need it (drop it from ``env``: a
  secret given to a step is one more place it can leak from) or a tool reads
  it from the environment by itself, which is fine;
- a step that receives secrets from an image not pinned by digest
  (``IMAGE@sha256:…``): whoever can push that tag gets the secrets;
- a secret of the run's namespace that overrides a global one of the same
  name although no step of the spec uses it: the override may be forgotten.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

from runner.env import EnvPlan
from runner.spec.models import BatchSpec


class NamedSecret(Protocol):
    """What the lint needs of a stored secret's metadata (``SecretMeta`` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def overrides_global(self) -> bool: ...


def mentions(script: str, name: str) -> bool:
    """Whether a shell script reads ``$NAME`` or ``${NAME…}`` (any expansion of it)."""
    escaped = re.escape(name)
    return (
        re.search(rf"\$(?:\{{{escaped}(?![A-Za-z0-9_])|{escaped}(?![A-Za-z0-9_]))", script)
        is not None
    )


def lint(spec: BatchSpec, plan: EnvPlan, namespace_secrets: Iterable[NamedSecret]) -> list[str]:
    """Every warning, in step order, then the unused overrides."""
    warnings: list[str] = []
    used: set[str] = set()
    for step in spec.steps:
        secrets = [v for v in plan.steps.get(step.number, ()) if v.secret is not None]
        used.update(v.secret.name for v in secrets)
        for var in secrets:
            if not mentions(step.run, var.name):
                warnings.append(
                    f"step {step.number}: receives the secret {var.name} but its run never "
                    f"mentions ${var.name} or ${{{var.name}}} — drop it from env unless a "
                    "tool reads it from the environment"
                )
        if secrets and "@sha256:" not in step.container:
            names = ", ".join(sorted({v.name for v in secrets}))
            warnings.append(
                f"step {step.number}: receives {names} but its image {step.container} is not "
                "pinned by digest — whoever can push that tag gets the secrets; write "
                f"{step.container.split('@')[0]}@sha256:…"
            )
    for secret in sorted(namespace_secrets, key=lambda s: s.name):
        if secret.overrides_global and secret.name not in used:
            warnings.append(
                f"{secret.name} of {secret.namespace} overrides the global {secret.name}, but "
                "no step of this spec uses it — remove the override if it is stale"
            )
    return warnings
