"""The front half of a local run, shared by `runner run`, `runner workspaces` and `cache why`.

Spec, namespace, allowed host variables, one-off local secrets, the env plan
against the local store and the workspaces: nothing decrypted, nothing run.
Built once here so the preview commands see exactly what `runner run` will.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runner.cli._app import App, closed_at_end, plan_local
from runner.cli._local_secrets import keyed_for_cache, read_local_secrets, say_notices
from runner.env import EnvPlan, HostEnv, plan_env
from runner.execute.job import register_values
from runner.plan import RepoArg, Workspace, require_repositories
from runner.secrets.local import LocalSecrets
from runner.spec import BatchSpec, load_spec

if TYPE_CHECKING:
    from runner.secrets.store import SqlSecretStore


class FrontHalf:
    """What the front half found; a plain class (no dataclass code generated at import)."""

    def __init__(
        self,
        *,
        spec: BatchSpec,
        spec_dir: Path,
        namespace: str,
        host: HostEnv,
        local: LocalSecrets,
        store: SqlSecretStore,
        env_plan: EnvPlan,
        workspaces: list[Workspace],
    ) -> None:
        self.spec = spec
        self.spec_dir = spec_dir
        self.namespace = namespace
        self.host = host
        self.local = local
        self.store = store
        self.env_plan = env_plan
        self.workspaces = workspaces


def host_mac_key(store: SqlSecretStore) -> bytes:
    """The key host values and one-off secrets are HMACed under for cache keys."""
    key: bytes = store.keyring.derive("cache-host-hmac")
    return key


def front_half(
    ctx: App,
    spec_path: str,
    namespace: str | None,
    repos_root: Path | None,
    repos: Sequence[RepoArg],
    allow_host: Sequence[str],
    secret_files: tuple[Path, ...],
    secret_names: tuple[str, ...],
) -> FrontHalf:
    """Everything `runner run` checks before it asks the engine for anything."""
    from runner.redact import active
    from runner.secrets import open_store

    require_repositories(repos_root, repos)
    spec = load_spec(spec_path, check_mounts=True)
    ns = namespace or ctx.default_namespace()
    host = HostEnv.from_environ(allow_host, ctx.env)
    local = read_local_secrets(secret_files, secret_names)
    # redacted even if a failure comes first
    register_values(active(), host=host, local=local)

    store = closed_at_end(open_store(ctx.settings))
    local = keyed_for_cache(local, host_mac_key(store))
    env_plan = plan_env(spec, ns, store, host, local)
    say_notices(env_plan)
    workspaces = plan_local(spec, repos_root, repos)  # warns of queries that match nothing
    return FrontHalf(
        spec=spec,
        spec_dir=Path(spec_path).resolve().parent,
        namespace=ns,
        host=host,
        local=local,
        store=store,
        env_plan=env_plan,
        workspaces=workspaces,
    )
