"""What `runner submit` uploads: the spec text and the files its ``mount`` entries name.

Each file travels with its SHA-256, checked on arrival; paths are relative to
the spec's folder and may not leave it. An executor writes the bundle into a
temporary folder that acts as the spec's folder, so mounts resolve as they
would next to the original spec.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final

from runner.errors import BundleError, MountPathError
from runner.spec import load_spec
from runner.spec.models import BatchSpec
from runner.spec.mounts import resolve_mount

MAX_BUNDLE_BYTES: Final = 16 * 1024 * 1024
MAX_FILES: Final = 2000


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def clean_path(text: str) -> str:
    """A relative POSIX path inside the spec's folder, or ``BundleError``."""
    pure = PurePosixPath(text)
    if (
        not text
        or "\\" in text
        or "\0" in text
        or pure.is_absolute()
        or any(part in ("..", "") for part in pure.parts)
    ):
        raise BundleError(
            f"bundle path {text!r} is not a relative path inside the spec's folder",
            hint="mount only files inside the folder that holds the spec",
        )
    normal = pure.as_posix()
    return "" if normal == "." else normal


@dataclass(frozen=True)
class BundleFile:
    path: str
    content: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return sha256_hex(self.content)


@dataclass(frozen=True)
class Bundle:
    spec_name: str
    spec_text: str = field(repr=False)
    files: tuple[BundleFile, ...] = ()

    @classmethod
    def from_spec_file(cls, path: str | Path) -> Bundle:
        """The spec at ``path`` (validated) and every file its steps mount."""
        spec_path = Path(path)
        spec = load_spec(spec_path)
        text = spec_path.read_bytes().decode("utf-8").removeprefix("\ufeff")
        base = spec_path.resolve().parent
        files: dict[str, bytes] = {}
        for relative in mount_paths(spec):
            try:
                source = resolve_mount(base, relative)
            except MountPathError as exc:
                raise BundleError(exc.message, hint=exc.hint) from None
            chosen = [source] if source.is_file() else sorted(source.rglob("*"))
            for item in chosen:
                if item.is_file() and not item.is_symlink():
                    files[item.relative_to(base).as_posix()] = item.read_bytes()
        bundle = cls(
            spec_name=spec_path.name,
            spec_text=text,
            files=tuple(BundleFile(p, c) for p, c in sorted(files.items())),
        )
        bundle.check_size()
        return bundle

    def check_size(self) -> None:
        total = len(self.spec_text.encode()) + sum(len(f.content) for f in self.files)
        if total > MAX_BUNDLE_BYTES or len(self.files) > MAX_FILES:
            raise BundleError(
                f"the spec and its mounted files come to {total} bytes in {len(self.files)} "
                f"files, over the limit of {MAX_BUNDLE_BYTES} bytes and {MAX_FILES} files",
                hint="mount fewer or smaller files; put large tools into the step's image",
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": {"name": self.spec_name, "text": self.spec_text},
            "files": [
                {
                    "path": f.path,
                    "sha256": f.sha256,
                    "content": base64.b64encode(f.content).decode("ascii"),
                }
                for f in self.files
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Bundle:
        """Parse and check an uploaded bundle: names, hashes, sizes."""
        try:
            spec = data["spec"]
            name = str(spec["name"])
            text = spec["text"]
            items = data.get("files", [])
            if not isinstance(text, str) or not isinstance(items, list):
                raise TypeError("wrong types")
            files = []
            for item in items:
                path = clean_path(str(item["path"]))
                content = base64.b64decode(str(item["content"]), validate=True)
                if sha256_hex(content) != str(item["sha256"]):
                    raise BundleError(
                        f"bundle file {path} does not match its SHA-256",
                        hint="submit again; the upload was altered or cut short",
                    )
                files.append(BundleFile(path, content))
        except (KeyError, TypeError, binascii.Error) as exc:
            raise BundleError(
                f"malformed bundle ({type(exc).__name__})",
                hint="upload it with `runner submit`",
            ) from None
        base_name = PurePosixPath(name).name
        if not base_name or base_name in (".", ".."):
            raise BundleError("the bundle's spec has no file name", hint="name the spec file")
        if len({f.path for f in files}) != len(files):
            raise BundleError(
                "the bundle lists a file twice", hint="upload it with `runner submit`"
            )
        bundle = cls(spec_name=base_name, spec_text=text, files=tuple(files))
        bundle.check_size()
        return bundle

    def covers(self, relative: str) -> bool:
        """Whether the bundle holds the file or some file under the folder ``relative``."""
        path = clean_path(relative)
        return any(f.path == path or not path or f.path.startswith(path + "/") for f in self.files)

    def check_mounts(self, spec: BatchSpec) -> None:
        missing = [p for p in mount_paths(spec) if not self.covers(p)]
        if missing:
            raise BundleError(
                f"the bundle lacks the mounted path{'s' if len(missing) > 1 else ''} "
                + ", ".join(missing),
                hint="submit with `runner submit`, which uploads every mounted file",
            )

    def write_to(self, folder: Path) -> Path:
        """Write the spec and its files under ``folder``; return the spec's path."""
        folder.mkdir(parents=True, exist_ok=True)
        for item in self.files:
            target = folder / clean_path(item.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.content)
        spec_path = folder / self.spec_name
        spec_path.write_text(self.spec_text, encoding="utf-8")
        return spec_path


def mount_paths(spec: BatchSpec) -> list[str]:
    """Every distinct mount source path of the spec, as written, normalised."""
    seen: dict[str, None] = {}
    for step in spec.steps:
        for mount in step.mounts:
            seen.setdefault(clean_path(mount.path.removeprefix("./") or "."), None)
    return list(seen)
