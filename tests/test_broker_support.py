"""A git server for the brokered-secret tests (no tests of its own).

``git_server`` serves a bare repository through ``git http-backend`` over
HTTPS, requiring basic auth with one password; the CA and the recording
HTTP(S) servers are ``runner.testing.tls``.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.testing.tls import TLSServer, serving

GIT_BACKEND = "/usr/lib/git-core/git-http-backend"


@dataclass
class GitServer:
    port: int
    root: Path
    seen_passwords: list[str] = field(default_factory=list)


def _git_handler(server: GitServer, user: str, password: str) -> type[Any]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def _cgi(self) -> None:
            auth = self.headers.get("Authorization", "")
            scheme, _, cred = auth.partition(" ")
            given = ""
            if scheme.lower() == "basic":
                given = base64.b64decode(cred).decode(errors="replace")
            if given.partition(":")[2]:
                server.seen_passwords.append(given.partition(":")[2])
            if given != f"{user}:{password}":
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env = {
                "PATH": "/usr/bin:/bin",
                "GIT_PROJECT_ROOT": str(server.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": user,
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            }
            done = subprocess.run(
                [GIT_BACKEND], input=body, env=env, capture_output=True, check=False
            )
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            status = 200
            headers = []
            for line in head.decode().split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _cgi
        do_POST = _cgi

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def git_server(
    context: ssl.SSLContext, root: Path, user: str, password: str
) -> Iterator[GitServer]:
    """``root/app.git`` (one commit on main) over HTTPS, for ``user:password`` only."""
    work = root / "seed"
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME")},
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=env)
    (work / "README.md").write_text("# served\n")
    subprocess.run(["git", "-C", str(work), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "commit", "-qm", "seed"], check=True, env=env)
    bare = root / "app.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, env=env)
    subprocess.run(
        ["git", "-C", str(bare), "config", "http.receivepack", "true"], check=True, env=env
    )
    server = GitServer(0, root)
    httpd = TLSServer(("127.0.0.1", 0), _git_handler(server, user, password), context)
    server.port = int(httpd.server_address[1])
    with serving(httpd):
        yield server
