"""`runner run` loads only what a local run uses: no PostgreSQL driver, no web stack.

Every import is start-up time a user waits for before the first container
starts. The command group loads a command's module when the command is
called (runner.cli.commands), and psycopg is loaded only for a PostgreSQL URL.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TEST_IMAGE, make_repo, runner_env

# Modules of the coordinator, its web pages and metrics, and of PostgreSQL.
NOT_FOR_A_LOCAL_RUN = ("psycopg", "fastapi", "uvicorn", "starlette", "jinja2", "prometheus_client")
# What only a step that runs needs, which a fully cached run never loads: the job
# network's machinery (proxy, its rules, the broker, the shelf of ready networks),
# output capture, masks, limits, --keep-workspace, the tree on disk, and what writes a
# cache entry.
ONLY_FOR_A_STEP = (
    "runner.egress.network",
    "runner.egress.proxy",
    "runner.egress.rules",
    "runner.egress.ready",
    "runner.egress.broker",
    "runner.egress.broker_rules",
    "runner.execute.capture",
    "runner.execute.masks",
    "runner.execute.limits",
    "runner.execute.keep",
    "runner.execute.workspace",
    "runner.cache.why",
)
# What only `--only-failed` (or a previous run's kept trees) needs.
ONLY_FOR_A_RERUN = ("runner.execute.rerun",)


# Runs the CLI as `runner` does, then names every module loaded, on stderr's last line.
_SNIPPET = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("\\nMODULES " + " ".join(sorted(sys.modules)) + "\\n"))
from runner.cli import main
sys.argv[0] = "runner"
main()
"""


def _loaded(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", _SNIPPET, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
    )
    last = proc.stderr.rstrip().rsplit("\n", 1)[-1]
    assert last.startswith("MODULES "), proc.stderr[-2000:]
    return proc, set(last.split()[1:])


def forbidden(names: set[str]) -> list[str]:
    return sorted(n for n in names if n.split(".")[0] in NOT_FOR_A_LOCAL_RUN)


def test_run_loads_its_command_alone_and_no_server_or_postgres_module() -> None:
    proc, names = _loaded("run", "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--jobs" in proc.stdout
    assert "runner.cli.run_cmds" in names
    # Other commands' modules are not loaded for `run`.
    assert not {"runner.cli.server_cmds", "runner.cli.secret_cmds", "runner.cli.dev_cmds"} & names
    assert forbidden(names) == []


def test_every_command_is_found_from_a_fresh_process() -> None:
    """The lazy group still lists and finds every command, subcommands of other modules too."""
    proc, _ = _loaded("--help")
    assert proc.returncode == 0
    for name in ("run", "cleanup", "secret", "server", "executor", "validate", "workspaces"):
        assert f"  {name} " in proc.stdout
    # `cache why` lives in dev_cmds, `cache list` in cache_cmds: both load for `cache`.
    proc, _ = _loaded("cache", "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "why" in proc.stdout and "list" in proc.stdout
    proc, _ = _loaded("no-such-command")
    assert proc.returncode == 2
    assert "no-such-command" in proc.stderr


def test_the_command_map_names_every_module_that_adds_to_a_command() -> None:
    from runner.cli._app import cli
    from runner.cli.commands import COMMAND_MODULES, register_commands

    register_commands()
    for name, command in cli.commands.items():
        assert name in COMMAND_MODULES, f"add {name!r} to runner.cli.commands.COMMAND_MODULES"
        subcommands = getattr(command, "commands", {})
        for sub in [command, *subcommands.values()]:
            assert sub.callback is not None
            # Options wrappers keep the command's own module in __wrapped__.
            module = getattr(sub.callback, "__wrapped__", sub.callback).__module__
            assert module.rsplit(".", 1)[1] in COMMAND_MODULES[name], (name, sub.name, module)


@pytest.mark.docker
def test_a_local_run_never_loads_psycopg_or_the_web_stack(tmp_path: Path) -> None:
    repos = tmp_path / "repos"
    make_repo(repos, "github.com/acme/lazy", {"README.md": "hi\n"})
    spec = tmp_path / "lazy.batch.yaml"
    spec.write_text(
        "name: lazy\non:\n  - repository: github.com/acme/lazy\nsteps:\n"
        f"  - run: echo hello >> README.md\n    container: {TEST_IMAGE}\n"
        "changesetTemplate:\n  title: t\n  body: b\n  branch: lazy\n"
        "  commit:\n    message: m\n"
    )
    env = runner_env(tmp_path / "home")
    args = ("run", str(spec), "--repos-root", str(repos), "--out", str(tmp_path / "out"))
    proc, names = _loaded(*args, env=env)
    assert proc.returncode == 0, proc.stderr[:3000]
    assert "changed" in proc.stdout
    # It did load what a run uses (the engine's SDK, the cache), and nothing else.
    assert {"docker", "runner.cache.sql", "runner.execute.docker_runtime"} <= names
    assert forbidden(names) == []
    # Fully cached, it asks the engine for the image's ID on its socket: no SDK, no
    # container runtime, no cipher library (it decrypts nothing).
    proc, names = _loaded(*args, env=env)
    assert proc.returncode == 0, proc.stderr[:3000]
    assert "changed" in proc.stdout and "runner.execute.engine_probe" in names
    assert not {"docker", "runner.execute.docker_runtime", "cryptography"} & names
    assert not set(ONLY_FOR_A_STEP) & names
    assert not set(ONLY_FOR_A_RERUN) & names
    assert forbidden(names) == []
