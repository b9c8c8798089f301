"""A few read-only questions to the Docker engine, without the docker SDK.

A fully cached run needs only an image's ID (for the cache key), maybe the
engine's runtimes (for ``--isolation``), and nothing else from the engine. The
SDK (with requests and urllib3) costs more to import than such a run costs in
all, so these questions go over the engine's unix socket as one HTTP/1.0
request each (even ``http.client`` and the email parser it loads cost more
than the request), and the SDK is loaded only once a container or a network
must be made (``runner.execute.lazy_runtime``).

Every answer here is advisory: on any failure (no socket, a TCP or TLS engine,
an unexpected status) the probe answers None and the caller asks the SDK,
which gives the user the proper error.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

DEFAULT_SOCKET = "/var/run/docker.sock"


class EngineProbe:
    """GET requests to an engine on a unix socket; None for anything unexpected."""

    def __init__(self, socket_path: str, *, timeout_s: float = 10.0) -> None:
        self._path = socket_path
        self._timeout_s = timeout_s

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EngineProbe | None:
        """A probe for the engine the docker CLI would use, or None if it is not a unix socket.

        ``environ`` is passed in by the CLI. TLS settings or a TCP/SSH
        ``DOCKER_HOST`` leave it to the SDK.
        """
        if environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH"):
            return None
        host = environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
        if not host.startswith("unix://"):
            return None
        return cls(host.removeprefix("unix://"))

    def _get(self, path: str) -> tuple[int, Any] | None:
        """The status and (for 200) JSON body of ``GET path``; None if the engine did not answer."""
        request = f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self._timeout_s)
                sock.connect(self._path)
                sock.sendall(request)
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            # HTTP/1.0: the engine sends the whole body and closes, never in chunks.
            head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            return status, (json.loads(body) if status == 200 else None)
        except (OSError, ValueError, IndexError):
            return None

    def image_id(self, image: str) -> str | None:
        """The local image's ID; None if it is not here or the engine could not say."""
        got = self._get(f"/images/{quote(image, safe='/:@')}/json")
        if got is None or got[0] != 200 or not isinstance(got[1], dict):
            return None
        found = got[1].get("Id")
        return found if isinstance(found, str) and found else None

    def runtimes(self) -> dict[str, Any] | None:
        """The engine's container runtimes, as `docker info` lists them."""
        got = self._get("/info")
        if got is None or got[0] != 200 or not isinstance(got[1], dict):
            return None
        found = got[1].get("Runtimes")
        return found if isinstance(found, dict) else {}
