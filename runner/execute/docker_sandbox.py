"""A step's isolation level and hardening, in the Docker engine's words.

``docker_runtime`` puts these options into every step container's create
call; nothing here talks to the engine, so the translation is read (and
tested) in one place:

* **isolation**: ``runc`` is the engine's default runtime; ``gvisor`` is the
  ``runsc`` runtime, which gives the container a kernel of its own in user
  space (``scripts/ensure-runsc.sh`` registers it with
  ``--network=host``, so gVisor uses the network namespace Docker made for the
  container: the step sits on its job's bridge exactly as under runc).
* **file secrets**: a tmpfs at ``SECRET_FILES_DIR`` (``secret_files_tmpfs``).
* **hardening**, at every level: ``no-new-privileges``, Docker's default
  capabilities minus ``Hardening.cap_drop``, a pids limit, ``init`` (reaps
  zombies, forwards the kill), and ``--user`` where one was given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from runner.errors import ContainerRuntimeError, ExecutionError, UsageError
from runner.execute.runtime import SECRET_FILES_DIR, StepContainer
from runner.records import Frozen
from runner.sandbox import Isolation
from runner.secrets.names import VALUE_MAX_BYTES

# The engine runtime each level runs steps with; None: the engine's default (runc).
RUNTIMES: Mapping[Isolation, str | None] = MappingProxyType({"runc": None, "gvisor": "runsc"})

_PAGE = 4096

# What an operator adds to the engine's daemon.json when ensure-runsc.sh cannot.
RUNSC_CONFIG = (
    '{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=host"]}}}'
)


def missing_runtime(isolation: Isolation, runtime: str) -> ContainerRuntimeError:
    """What a runtime raises when the engine lacks the runtime a level needs."""
    return ContainerRuntimeError(
        f"the Docker engine has no {runtime} runtime, which --isolation {isolation} needs",
        hint=f"run scripts/ensure-runsc.sh as root, or add {RUNSC_CONFIG} to "
        "/etc/docker/daemon.json and reload dockerd (`kill -HUP $(pidof dockerd)`)",
    )


def check_runtimes(
    isolation: Isolation, engine_runtimes: Mapping[str, Any], names: Mapping[Isolation, str | None]
) -> None:
    """Raise ``missing_runtime`` unless ``engine_runtimes`` (``docker info``'s) has the level's."""
    runtime = names[isolation]
    if runtime is not None and runtime not in engine_runtimes:
        raise missing_runtime(isolation, runtime)


def isolation_options(step: StepContainer, names: Mapping[Isolation, str | None]) -> dict[str, Any]:
    """The host config's runtime: runsc for gvisor, nothing (the default) for runc."""
    runtime = names[step.sandbox.isolation]
    return {} if runtime is None else {"runtime": runtime}


def hardening_options(step: StepContainer) -> dict[str, Any]:
    """The host config's confinement, the same at every isolation level."""
    hardening = step.sandbox.hardening
    options: dict[str, Any] = {"init": hardening.init}
    if hardening.no_new_privileges:
        options["security_opt"] = ["no-new-privileges"]
    if hardening.cap_drop:
        options["cap_drop"] = list(hardening.cap_drop)
    if hardening.pids_limit is not None:
        options["pids_limit"] = hardening.pids_limit
    return options


@dataclass(init=False, repr=False, eq=False)  # a Frozen record: see runner.records
class Tmpfs(Frozen):
    """A tmpfs mount of a container: where, how many bytes at most, its mode."""

    target: str
    size: int
    mode: int

    def __init__(self, target: str, size: int, mode: int) -> None:
        self._fill(target, size, mode)


def secret_files_tmpfs(step: StepContainer) -> list[Tmpfs]:
    """The tmpfs a step's file secrets are written to, if it has any.

    Memory only, in that container alone, gone with it. Open to every user
    (with the sticky bit, as /tmp) because the wrapper writes the files as
    the step's user, whoever that is; each file is that user's and 0400.
    Sized by how many files it holds, never by their values: the size shows
    in ``docker inspect`` (it must not tell a value's length), and a
    container prepared ahead of its step is made before the values are
    known. Each file gets room for the largest value a secret may have.
    """
    if not step.secret_files:
        return []
    size = len(step.secret_files) * (VALUE_MAX_BYTES + _PAGE)
    return [Tmpfs(target=SECRET_FILES_DIR, size=size, mode=0o1777)]


def parse_user(text: str) -> tuple[int, int | None]:
    """``UID`` or ``UID:GID``, numbers only (a name would depend on each image's passwd)."""
    uid_text, _, gid_text = text.partition(":")
    if not uid_text.isdigit() or (gid_text and not gid_text.isdigit()) or text.endswith(":"):
        raise UsageError(f"{text!r} is not UID[:GID]", hint="give numbers, such as 1000:1000")
    return int(uid_text), int(gid_text) if gid_text else None


def hand_over_workspace(step: StepContainer) -> None:
    """Let a step run as another user (``--user``) write to its writable mounts.

    runner made the workspace as itself; a step running as UID could not write
    to it. Run as root, runner gives every entry to UID[:GID] before each step
    (cheap once done: only entries runner itself added since are changed). The
    mount's top folder stays runner's own, since git refuses a work tree owned
    by someone else, and is opened to every user instead: its parent is
    runner's private temporary folder, so nobody else on the host reaches it.
    The workspace's top-level ``.git`` is runner's bookkeeping and stays
    runner's. Run as anyone else, runner cannot change owners; then only a
    UID that is runner's own can write there.
    """
    user = step.sandbox.hardening.user
    if user is None or os.geteuid() != 0:
        return
    uid, gid = parse_user(user)
    for mount in step.mounts:
        if mount.read_only or not mount.source.is_dir():
            continue
        try:
            _hand_over_tree(mount.source, uid, -1 if gid is None else gid)
        except OSError as exc:
            raise ExecutionError(
                f"cannot hand {mount.target} to user {user}: {exc.strerror or exc}",
                hint="run without --user, or give the UID runner runs as",
            ) from exc


def _hand_over_tree(top: Path, uid: int, gid: int) -> None:
    top.chmod(top.stat().st_mode | 0o777)
    for folder, dirs, files in os.walk(top):
        here = Path(folder)
        if here == top and ".git" in dirs:
            dirs.remove(".git")
        for name in [*dirs, *files]:
            path = here / name
            info = path.lstat()
            if info.st_uid != uid or (gid != -1 and info.st_gid != gid):
                os.lchown(path, uid, gid)
