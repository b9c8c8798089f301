"""Brokered secrets end to end: the real engine, the real proxy, real TLS clients.

One dense run (``runner run``, default ``open`` policy) of one step in the
Debian image with curl and git: a local HTTPS server with a CA of the test's
own (the proxy trusts it through ``--broker-ca-file``) records the
``Authorization`` it gets; a git server (``git http-backend`` over HTTPS,
basic auth) is cloned and pushed to with the placeholder as password; a
plain-HTTP server records what a placeholder sent astray looks like. The
step then hunts for the value in its environment, every process's
environment and command line, and every file it can read, and waits while
the test looks at ``docker inspect``, Docker's folders, the processes and
the temporary folders.
"""

from __future__ import annotations

import json
import secrets
import string
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runner.testing.tls import LocalCA, http_recorder, https_recorder
from tests.helpers import (
    RUNNER,
    TEST_IMAGE,
    container_leaks,
    git,
    leak_forms,
    make_repo,
    proc_cmdlines,
    runner_env,
    scan_bytes,
    scan_tree,
    set_secret,
    wait_for_file,
)
from tests.test_broker_support import git_server

pytestmark = pytest.mark.docker

RUN_LABEL = "org.runner.run-id"
GIT_USER = "x-access-token"


def test_a_step_trusts_what_its_image_trusts(docker_client: Any, debian_image: str) -> None:
    from runner.egress.broker import image_roots
    from runner.execute.docker_runtime import DockerRuntime

    runtime = DockerRuntime(docker_client.api)
    labels = {RUN_LABEL: "test-image-roots"}
    roots = image_roots(runtime, debian_image, labels)
    assert roots is not None and roots.count(b"-----BEGIN CERTIFICATE-----") > 50
    assert image_roots(runtime, TEST_IMAGE, labels) is None  # busybox: none, the host's then
    assert runtime.sweep(RUN_LABEL, "test-image-roots") == 0  # nothing left behind


def _value() -> str:
    alphabet = string.ascii_letters + string.digits
    return "ghp_" + "".join(secrets.choice(alphabet) for _ in range(36))


def _script(api: int, git_port: int, plain: int, value: str) -> str:
    dotted = ".".join(value)  # the step rebuilds the value to hunt for; no form of it is here
    return f"""\
curl -sS -o /tmp/api-answer -H "Authorization: Bearer $GITHUB_TOKEN" \\
  https://api.test.example:{api}/user && echo "api: $(cat /tmp/api-answer)"
echo "token is $GITHUB_TOKEN"
git clone -q "https://{GIT_USER}:$GITHUB_TOKEN@git.test.example:{git_port}/app.git" /tmp/app \\
  && cd /tmp/app && git -c user.name=t -c user.email=t@example.com \\
     commit -q --allow-empty -m brokered && git push -q origin HEAD:main && echo clone-push-ok
cd /work
curl -sS -o /dev/null -H "Authorization: Bearer $GITHUB_TOKEN" http://plain.test.example:{plain}/
printf %s '{dotted}' | tr -d . > /dev/shm/needle
echo "hunt env=$(env | grep -cFf /dev/shm/needle)"
echo "hunt environ=$(cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -cFf /dev/shm/needle)"
echo "hunt cmdline=$(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -cFf /dev/shm/needle)"
echo "hunt files=$(grep -rlsFf /dev/shm/needle / --exclude-dir=proc --exclude-dir=sys \\
  --exclude-dir=dev | wc -l)"
rm /dev/shm/needle
touch ready
while [ ! -f go ]; do sleep 0.1; done
rm ready go
"""


def _spec(tmp_path: Path, script: str, image: str) -> Path:
    spec = tmp_path / "spec" / "batch.yaml"
    spec.parent.mkdir()
    indented = "".join(f"      {line}\n" for line in script.splitlines())
    spec.write_text(
        "name: brokered\non:\n  - repository: github.com/acme/app\nsteps:\n"
        f"  - run: |\n{indented}    container: {image}\n    env: [GITHUB_TOKEN]\n"
        "changesetTemplate:\n  title: t\n  body: b\n  branch: brokered\n"
        "  commit:\n    message: m\n"
    )
    return spec


def _while_paused(tmp: Path, docker_client: Any, run_id: str, value: str) -> None:
    """With the step paused: nothing of the engine's or the host's holds the value."""
    ready = wait_for_file(tmp, "**/ready", timeout_s=120)
    forms = leak_forms([value])
    assert container_leaks(docker_client, run_id, [value]) == []
    # No process's command line, nor the proxy's environment; nothing on the tmpfs.
    assert scan_bytes(proc_cmdlines(), forms) == []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"mitm_addon.py" in (entry / "cmdline").read_bytes():
                assert scan_bytes((entry / "environ").read_bytes(), forms) == []
        except OSError:
            continue
    assert scan_tree([Path("/dev/shm")], [value]) == []
    (ready.parent / "go").touch()


@pytest.mark.slow
def test_a_brokered_token_authenticates_https_and_git_and_never_enters_the_container(
    tmp_path: Path, docker_client: Any, debian_image: str
) -> None:
    value = _value()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = runner_env(tmp_path / "home", TMPDIR=str(tmp))
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/app", {"README.md": "# app\n"})
    set_secret(
        env,
        "GITHUB_TOKEN",
        value,
        "--user",
        "alice",
        "--broker-host",
        "api.test.example",
        "--broker-host",
        "git.test.example",
    )
    ca = LocalCA(tmp_path / "ca")
    out = tmp_path / "out"
    with (
        https_recorder(ca.issue("api.test.example")) as api,
        git_server(ca.issue("git.test.example"), tmp_path / "git", GIT_USER, value) as served,
        http_recorder() as plain,
    ):
        spec = _spec(tmp_path, _script(api.port, served.port, plain.port, value), debian_image)
        hosts = ("api.test.example", "git.test.example", "plain.test.example")
        where = ["--repos-root", str(repos), "--out", str(out), "--json"]
        flags = ["--broker-ca-file", str(ca.path)]
        flags += [arg for host in hosts for arg in ("--add-host", f"{host}:127.0.0.1")]
        pipe = subprocess.PIPE
        command = [RUNNER, "run", str(spec), *where, *flags]
        proc = subprocess.Popen(command, env=env, stdout=pipe, stderr=pipe, text=True)
        try:
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline())
            assert first["event"] == "run.started"
            _while_paused(tmp, docker_client, first["run_id"], value)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    events = [first, *(json.loads(line) for line in stdout.splitlines() if line.strip())]
    output = "\n".join(
        str(e.get("line", e.get("lines"))) for e in events if e["event"] == "step.output"
    )
    # The servers got the real value over HTTPS; the step saw only the placeholder, redacted.
    assert api.authorizations == [f"Bearer {value}"]
    assert value in served.seen_passwords
    assert "clone-push-ok" in output
    pushed = git(tmp_path / "git" / "app.git", "log", "-1", "--format=%s", "main")
    assert pushed.strip() == "brokered"
    assert "token is [REDACTED:GITHUB_TOKEN]" in output
    assert "api: recorder saw: Bearer [REDACTED:GITHUB_TOKEN]" in output
    # Plain HTTP carried only the placeholder, and said so.
    (sent,) = plain.authorizations
    placeholder = sent.removeprefix("Bearer ")
    assert placeholder != value and len(placeholder) == len(value)
    assert placeholder.startswith("ghp_")
    mismatches = [e for e in events if e["event"] == "secret.broker_mismatch"]
    assert [(e["step"], e["secret"], e["host"]) for e in mismatches] == [
        (1, "GITHUB_TOKEN", "plain.test.example")
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["broker_mismatch"] == 1
    # The step's own hunt: in no variable, process and file it could read.
    for place in ("env", "environ", "cmdline", "files"):
        assert f"hunt {place}=0" in output, output
    # Nothing the run left behind holds the value or the placeholder's stand-in.
    left = [tmp_path / "home", tmp, out, tmp_path / "spec"]
    assert scan_tree(left, [value]) == []
    assert scan_tree([Path(docker_client.info()["DockerRootDir"]) / "containers"], [value]) == []
    assert placeholder not in stdout + stderr
    assert list(Path("/dev/shm").glob(f"runner-proxy-{proc.pid}-*")) == []
