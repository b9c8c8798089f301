"""`runner token`, `runner server`'s listen rules and TLS, the user commands' output."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.cli import run_cli
from runner.queue.client import CoordinatorClient
from tests.test_queue_support import free_port

RUNNER = str(Path(sys.executable).with_name("runner"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [k for k in os.environ if k.startswith("RUNNER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_tokens_are_shown_once_listed_and_revoked(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["token", "create", "--user", "alice"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("rnr_") and "shown only once" in err
    assert run_cli(["token", "create", "--executor", "ci", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["kind"] == "executor" and created["owner"] == "ci"
    assert run_cli(["token", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(t["kind"], t["owner"]) for t in listed] == [("user", "alice"), ("executor", "ci")]
    assert token not in json.dumps(listed)
    assert run_cli(["token", "revoke", listed[0]["id"]]) == 0
    assert "revoked user token" in capsys.readouterr().out
    assert run_cli(["token", "list"]) == 0
    table = capsys.readouterr().out
    assert "REVOKED" in table and token not in table
    assert token.encode() not in b"".join(p.read_bytes() for p in home.glob("runner.db*"))


def test_token_create_needs_exactly_one_owner(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["token", "create"]) == 2
    assert run_cli(["token", "create", "--user", "a", "--executor", "b"]) == 2
    assert "give exactly one owner" in capsys.readouterr().err
    assert run_cli(["token", "revoke", "tok_nope"]) == 1
    assert "no token with id tok_nope" in capsys.readouterr().err


def test_server_refuses_plain_http_off_loopback(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["server", "--listen", "0.0.0.0:8080"]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without TLS" in err and "--tls-cert" in err
    assert run_cli(["server", "--listen", "nonsense"]) == 2
    assert run_cli(["server", "--listen", "127.0.0.1:1", "--tls-cert", "x.pem"]) == 2
    assert "go together" in capsys.readouterr().err


def test_user_commands_report_an_unreachable_coordinator(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "t.token"
    token.write_text("rnr_whatever\n")
    url = f"http://127.0.0.1:{free_port()}"
    assert run_cli(["jobs", "list", "--url", url, "--token-file", str(token)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the coordinator") and "rnr_whatever" not in err
    assert run_cli(["jobs", "list", "--url", url, "--token-file", str(tmp_path / "none")]) == 1
    assert "cannot read the token file" in capsys.readouterr().err


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def tls_server(home: Path, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    cert, key = _self_signed(tmp_path)
    env = {**os.environ, "RUNNER_HOME": str(home)}
    made = subprocess.run(
        [RUNNER, "token", "create", "--user", "alice"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            RUNNER,
            "server",
            "--listen",
            f"127.0.0.1:{port}",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield f"https://127.0.0.1:{port}", cert, made.stdout.strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_the_coordinator_serves_tls(tls_server: tuple[str, Path, str]) -> None:
    import httpx

    url, cert, token = tls_server
    deadline = time.monotonic() + 20
    with CoordinatorClient(url=url, token=token, verify=str(cert), timeout_s=2) as client:
        while True:
            try:
                assert client.whoami()["name"] == "alice"
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    # Without the CA the certificate is refused; plain HTTP gets no answer.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/openapi.json", timeout=2)
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https", "http") + "/openapi.json", timeout=2)
