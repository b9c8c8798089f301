"""Job networks kept ready between local runs, each used by one run at a time.

Making a job network and removing it cost the engine a few tenths of a
second each, on the critical path of a run's first workspaces and after its
last ones. So `runner run` keeps the networks its last workspaces used (their
containers gone) on this shelf instead of removing them, and the next run
takes them from it; ``JobNetworks`` fences each one afresh when it is taken.
Only networks of the ``open`` policy without a proxy are kept: their fence
is the only thing that differs between runs, and it is made again.

The shelf is a folder under ``RUNNER_HOME``:

* ``NAME.json``: a kept network, free for the next run (its ``NetworkInfo``
  and the address pool it came from);
* ``NAME.PID.claim``: the same network, in use by process PID. A run claims
  a kept one by renaming its file (only one of two runs can), and one it
  makes as soon as it is made.

A kept network carries the shelf's label (``label``), never a run's, so the
sweep of a run's leftovers leaves it to the shelf: ``stale`` hands over the
networks of claims whose process is gone (the next run and `runner cleanup`
remove them), and `runner cleanup` removes the free ones too (``take_all``).
The label names the machine and the shelf's folder: a `runner cleanup` of
any home removes the networks of shelves whose folder is gone from this
machine (``abandoned``), which no shelf would ever take or remove again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from runner.execute.runtime import NetworkInfo
from runner.pids import process_alive

CLAIM = ".claim"
FREE = ".json"
# A kept network's job label: this prefix, the machine's id, then the shelf's folder.
LABEL_PREFIX = "ready:"
_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


@cache
def machine_id() -> str | None:
    """This machine's id, as systemd and D-Bus keep it; None where there is none."""
    for path in _MACHINE_ID_FILES:
        try:
            found = path.read_text().strip()
        except OSError:
            continue
        if found:
            return found
    return None


def shelf_label(folder: Path) -> str:
    """The job label of the networks kept on the shelf in ``folder``."""
    where = str(folder.resolve())
    machine = machine_id()
    if machine is None:  # nothing tells this machine apart: the label says nothing of it
        return f"ready-{hashlib.sha256(where.encode()).hexdigest()[:12]}"
    return f"{LABEL_PREFIX}{machine}:{where}"


def abandoned(label: str) -> bool:
    """Whether ``label`` is a shelf's of this machine whose folder is gone (its
    ``RUNNER_HOME`` was deleted): nothing will take or remove its networks but a sweep.

    A shelf of another machine (an engine shared over TCP), or one whose
    folder cannot be looked at, is never abandoned.
    """
    if not label.startswith(LABEL_PREFIX):
        return False
    machine, sep, folder = label.removeprefix(LABEL_PREFIX).partition(":")
    if not sep or machine != machine_id() or not folder.startswith("/"):
        return False
    try:
        os.lstat(folder)
    except FileNotFoundError:
        return True
    except OSError:  # not ours to look at (permissions): it may well be there
        return False
    return False


@dataclass
class ReadyNetworks:
    """The shelf of one ``RUNNER_HOME``: at most ``limit`` free networks of ``pool``."""

    folder: Path
    pool: str
    limit: int = 8
    pid: int = field(default_factory=os.getpid)

    @property
    def label(self) -> str:
        """What kept networks carry as their job label: this shelf's, not a run's."""
        return shelf_label(self.folder)

    def new_label(self) -> str:
        """``label``, for a network about to be made for this shelf: the folder exists
        from now on, so no sweep takes the network for an abandoned shelf's meanwhile."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.label

    def claimed(self, net: NetworkInfo, fence: str) -> None:
        """``net`` was just made to be kept, fenced by the rules ``fence`` names: it is
        this process's until parked or removed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{net.name}.{self.pid}.tmp"
        tmp.write_text(json.dumps({**self._record(net), "fence": fence}))
        tmp.rename(self._claim(net.name, self.pid))

    def take(self, fence: str) -> NetworkInfo | None:
        """Claim a free network of this shelf's pool kept for rules ``fence``; None if none."""
        for path in self._free():
            net, kept = _read(path)
            if net is None or kept != (self.pool, fence):
                continue
            try:
                path.rename(self._claim(net.name, self.pid))
            except FileNotFoundError:
                continue  # another run took it first
            return net
        return None

    def park(self, net: NetworkInfo) -> bool:
        """Free ``net`` (claimed by this process) for the next run; False if the shelf is full."""
        if self.limit <= 0 or sum(1 for _ in self._free()) >= self.limit:
            return False
        try:
            self._claim(net.name, self.pid).rename(self.folder / f"{net.name}{FREE}")
        except FileNotFoundError:
            return False  # not on the shelf: not this shelf's to keep
        return True

    def drop(self, net: NetworkInfo) -> None:
        """``net`` is removed (or gone): forget this process's claim on it."""
        self._claim(net.name, self.pid).unlink(missing_ok=True)

    def stale(self) -> list[NetworkInfo]:
        """The networks of claims whose process is gone, claimed now by this one."""
        found: list[NetworkInfo] = []
        for path in self._files(f"*{CLAIM}"):
            name, _, pid = path.name.removesuffix(CLAIM).rpartition(".")
            if not pid.isdigit() or process_alive(int(pid)):
                continue
            net, _ = _read(path)
            try:
                path.rename(self._claim(name, self.pid))
            except FileNotFoundError:
                continue  # another sweep took it
            if net is not None:
                found.append(net)
            else:
                self._claim(name, self.pid).unlink(missing_ok=True)
        return found

    def take_all(self) -> list[NetworkInfo]:
        """Claim every free network, whatever its pool (`runner cleanup` removes them)."""
        found: list[NetworkInfo] = []
        for path in self._free():
            net, _ = _read(path)
            name = path.name.removesuffix(FREE)
            try:
                path.rename(self._claim(name, self.pid))
            except FileNotFoundError:
                continue
            if net is not None:
                found.append(net)
            else:
                self._claim(name, self.pid).unlink(missing_ok=True)
        return found

    def _record(self, net: NetworkInfo) -> dict[str, object]:
        return {
            "name": net.name,
            "subnet": net.subnet,
            "gateway": net.gateway,
            "bridge": net.bridge,
            "internal": net.internal,
            "holder": net.holder,
            "pool": self.pool,
        }

    def _claim(self, name: str, pid: int) -> Path:
        return self.folder / f"{name}.{pid}{CLAIM}"

    def _free(self) -> Iterator[Path]:
        return self._files(f"*{FREE}")

    def _files(self, pattern: str) -> Iterator[Path]:
        if not self.folder.is_dir():
            return iter(())
        return iter(sorted(self.folder.glob(pattern)))


def _read(path: Path) -> tuple[NetworkInfo | None, tuple[str, str] | None]:
    """A record's network, and the pool and fence it was kept for; Nones if unreadable."""
    try:
        data = json.loads(path.read_text())
        net = NetworkInfo(
            name=str(data["name"]),
            subnet=str(data["subnet"]),
            gateway=str(data["gateway"]),
            bridge=data.get("bridge"),
            internal=bool(data.get("internal")),
            holder=data.get("holder"),
        )
        return net, (str(data.get("pool")), str(data.get("fence")))
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
