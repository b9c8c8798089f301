"""Load a batch spec file: read, parse with positions, validate.

``check_spec_*`` return everything checking found (the model, problems and
warnings) without raising, for `runner validate`; ``load_spec*`` return the
model or raise ``SpecError`` with every problem, and leave warnings out.
"""

from __future__ import annotations

from pathlib import Path

from runner.errors import Problem, SpecError
from runner.spec.models import BatchSpec
from runner.spec.validate import SpecCheck, validate
from runner.spec.yamlpos import MAX_BYTES, YamlError, load_yaml


def check_spec_text(text: str, path: str, *, mount_root: Path | None = None) -> SpecCheck:
    """Check spec text; ``path`` is only used in messages.

    Text has no folder of its own: give ``mount_root`` (for stdin, the current
    folder) to check `mount` paths against it; without it they are not checked.
    """
    try:
        root = load_yaml(text, path)
    except YamlError as exc:
        return SpecCheck(None, list(exc.problems))
    return validate(root, path, mount_root=mount_root)


def check_spec_bytes(data: bytes, name: str, *, mount_root: Path | None = None) -> SpecCheck:
    """Check a spec's bytes (a file's, or stdin's): UTF-8, an optional BOM, no NUL."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return SpecCheck(
            None,
            [Problem(name, line, 1, "the file is not valid UTF-8")],
            hint="save the spec as UTF-8",
        )
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\x00" in text:
        return SpecCheck(
            None, [Problem(name, 1, 1, "the file contains a NUL byte; it is not a YAML spec")]
        )
    return check_spec_text(text, name, mount_root=mount_root)


def check_spec_file(path: str | Path, *, check_mounts: bool = False) -> SpecCheck:
    """Check the spec at ``path``; ``check_mounts`` as for ``load_spec``."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return SpecCheck(None, [Problem(name, 1, 1, "no such file")], hint="check the spec's path")
    except IsADirectoryError:
        return SpecCheck(None, [Problem(name, 1, 1, "is a folder, not a spec file")])
    except OSError as exc:
        return SpecCheck(None, [Problem(name, 1, 1, f"cannot read the file: {exc.strerror}")])
    mount_root = Path(path).resolve().parent if check_mounts else None
    return check_spec_bytes(data, name, mount_root=mount_root)


def _loaded(check: SpecCheck) -> BatchSpec:
    if check.problems or check.spec is None:
        raise SpecError(check.problems, hint=check.hint)
    return check.spec


def load_spec_text(text: str, path: str, *, mount_root: Path | None = None) -> BatchSpec:
    """Validate spec text (see ``check_spec_text``). Raises ``SpecError`` with every problem."""
    return _loaded(check_spec_text(text, path, mount_root=mount_root))


def load_spec(path: str | Path, *, check_mounts: bool = False) -> BatchSpec:
    """Load and validate the spec at ``path``. Raises ``SpecError`` with every problem.

    ``check_mounts``: also refuse `mount` paths that are missing from the spec's
    folder or leave it, each at its entry (otherwise the step that mounts refuses).
    """
    return _loaded(check_spec_file(path, check_mounts=check_mounts))


def load_spec_bytes(data: bytes, name: str, *, mount_root: Path | None = None) -> BatchSpec:
    """Validate a spec's bytes (see ``check_spec_bytes``). Raises ``SpecError``."""
    return _loaded(check_spec_bytes(data, name, mount_root=mount_root))
