"""Where a step's `mount` path points: inside the spec's folder, or refused."""

from __future__ import annotations

from pathlib import Path

from runner.errors import RunnerError


class MountPathError(RunnerError):
    pass


def resolve_mount(spec_dir: Path, relative: str) -> Path:
    """The absolute source of a `mount` entry, which must exist inside ``spec_dir``."""
    base = spec_dir.resolve()
    source = (base / relative).resolve()
    if source != base and base not in source.parents:
        raise MountPathError(
            f"mount path {relative!r} leaves the spec's folder",
            hint="mount only files inside the folder that holds the spec",
        )
    if not source.exists():
        raise MountPathError(
            f"mount path {relative!r} does not exist next to the spec",
            hint=f"create {source} or fix the spec's `mount`",
        )
    return source
