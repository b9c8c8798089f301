"""A step container's exit code as soon as the engine reports it.

The engine's wait endpoint answers only once the engine has cleaned up after
the container (unmounted it, disconnected it from its network): 50–110 ms
after its process died, more with four ending at once on two cores, and on
the critical path of every step and of each wave of ``-j``. The engine's
``die`` event comes before that clean-up and carries the exit code.
``Exits`` follows the engine's event stream on one thread and hands a
watched container's code to whoever waits for it. When the stream is not
there (it broke, the engine restarted) or says nothing in time, ``code``
returns None and the caller asks the wait endpoint, as before.

Takes the low-level client as it is; only ``docker_runtime.py`` imports the
SDK.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog

log = structlog.stdlib.get_logger("runner.execute.docker")

# Events the engine recorded this long before the stream was asked for are
# replayed too: the engine subscribes a stream only after answering its request.
_REPLAY_S = 2


class Exits:
    """Exit codes of watched containers, from the engine's ``die`` events."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self._changed = threading.Condition()
        self._codes: dict[str, int | None] = {}  # watched container -> its code, once known
        self._stream: Any = None

    def watch(self, container_id: str) -> None:
        """Follow ``container_id`` (before it starts); the stream starts with the first one."""
        with self._changed:
            self._codes[container_id] = None
            if self._stream is None:
                self._follow()

    @property
    def following(self) -> bool:
        """Whether the event stream is open (else only the wait endpoint knows)."""
        with self._changed:
            return self._stream is not None

    def forget(self, container_id: str) -> None:
        with self._changed:
            self._codes.pop(container_id, None)

    def code(self, container_id: str, timeout: float) -> int | None:
        """The container's exit code once it died, or None if not known within ``timeout``."""
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                code = self._codes.get(container_id)
                if code is not None or self._stream is None:
                    return code
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def close(self) -> None:
        with self._changed:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def _follow(self) -> None:
        """Open the stream (under the lock) and read it on a thread of its own."""
        try:
            stream = self._api.events(
                since=int(time.time()) - _REPLAY_S,
                filters={"type": "container", "event": "die"},
                decode=True,
            )
        except Exception as exc:  # the wait endpoint still answers
            log.debug("no engine event stream; exit codes come from waiting", error=str(exc))
            return
        self._stream = stream
        threading.Thread(
            target=self._read, args=(stream,), name="engine-events", daemon=True
        ).start()

    def _read(self, stream: Any) -> None:
        try:
            for event in stream:
                container_id = event.get("id")
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                code = attributes.get("exitCode")
                if container_id is None or code is None:
                    continue
                with self._changed:
                    if container_id in self._codes:
                        self._codes[container_id] = int(code)
                        self._changed.notify_all()
        except Exception as exc:  # closed, or the engine went away
            log.debug("the engine event stream ended", error=str(exc))
        finally:
            with self._changed:
                if self._stream is stream:
                    self._stream = None  # the next watch opens a new one
                self._changed.notify_all()
