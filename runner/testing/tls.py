"""HTTPS for tests and benches: a certificate authority of one's own and recording servers.

``LocalCA`` makes a CA and server certificates with ``cryptography``;
``https_recorder`` serves HTTPS on loopback and records the ``Authorization``
each request brought (and echoes it, as some APIs do); ``http_recorder``
does the same over plain HTTP. The brokered-secret tests and
``bench/broker.py`` stand them behind the job's proxy.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import socketserver
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class LocalCA:
    """A CA of the caller's own; ``issue`` writes a server's certificate and key to ``folder``."""

    folder: Path
    key: ec.EllipticCurvePrivateKey = field(init=False)
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("runner test CA"))
            .issuer_name(_name("runner test CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @property
    def path(self) -> Path:
        return self.folder / "test-ca.pem"

    def issue(self, *names: str) -> ssl.SSLContext:
        """A server context presenting a certificate for ``names`` signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        stem = self.folder / names[0]
        (stem.with_suffix(".crt")).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (stem.with_suffix(".key")).write_bytes(_pem_key(key))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(stem.with_suffix(".crt"), stem.with_suffix(".key"))
        return context


@dataclass
class Recorded:
    """What a recorder saw: each request's Authorization and path, in order."""

    port: int = 0
    authorizations: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


def _recorder(record: Recorded) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            record.authorizations.append(auth)
            record.paths.append(self.path)
            # Echoes the credential, as some APIs do: the broker must scrub it.
            body = f"recorder saw: {auth}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Echo", auth)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def https_recorder(context: ssl.SSLContext) -> Iterator[Recorded]:
    record = Recorded()
    server = TLSServer(("127.0.0.1", 0), _recorder(record), context)
    record.port = int(server.server_address[1])
    with serving(server):
        yield record


@contextlib.contextmanager
def http_recorder() -> Iterator[Recorded]:
    record = Recorded()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _recorder(record))
    record.port = int(server.server_address[1])
    with serving(server):
        yield record


class TLSServer(http.server.ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], handler: Any, context: ssl.SSLContext) -> None:
        super().__init__(address, handler)
        self._context = context

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        return self._context.wrap_socket(sock, server_side=True), address
