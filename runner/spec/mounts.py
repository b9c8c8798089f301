"""Where a step's `mount` path points: inside the spec's folder, or refused.

The one rule, used when a spec is validated with its folder known (`runner
validate`, `runner submit`), by the step loop as it mounts, and by bundles as
they collect files. A relative path is read from the spec's folder; for a spec
read from stdin that folder is the current one, as src-cli has it. An absolute
path is accepted when it lies inside the folder.

The path is resolved (``..`` and every symbolic link followed) before the
containment test, so ``../x``, a link to outside and a sibling that only
shares the folder's prefix (``/specs-other`` beside ``/specs``) all leave it.
"""

from __future__ import annotations

from pathlib import Path

from runner.errors import MountPathError

_OUTSIDE_HINT = "mount only files inside the folder that holds the spec"


def resolve_mount(spec_dir: Path, relative: str) -> Path:
    """The absolute source of a `mount` entry, which must exist inside ``spec_dir``."""
    try:
        base = spec_dir.resolve()
        source = (base / relative).resolve()
        inside = source == base or base in source.parents
        exists = inside and source.exists()
    except (OSError, RuntimeError, ValueError):
        # A NUL byte, an over-long name or a loop of links: the path names nothing usable.
        # The path stays out of the message: it may be anything, of any length.
        raise MountPathError(
            "a mount path cannot be read as a path in the spec's folder", hint=_OUTSIDE_HINT
        ) from None
    if not inside:
        raise MountPathError(
            f"mount path {relative!r} leaves the spec's folder", hint=_OUTSIDE_HINT
        )
    if not exists:
        raise MountPathError(
            f"mount path {relative!r} does not exist next to the spec",
            hint=f"create {source} or fix the spec's `mount`",
        )
    return source
