"""Every error a coordinator route raises comes back as itself: through the client, the CLI.

One coordinator (SQLite) serves the real app, in-process and on a port; its
``list_secrets`` raises whatever error a test puts in ``Raiser.error``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.cli import run_cli
from runner.cli._text import format_error
from runner.errors import (
    REGISTRY,
    CoordinatorError,
    CoordinatorUnavailableError,
    GitError,
    MissingSecret,
    MissingSecretsError,
    NotAuthenticatedError,
    Problem,
    QueryError,
    RunnerError,
    SpecError,
    TemplateError,
    UsageError,
)
from runner.queue.client import CoordinatorClient
from runner.redact import active
from tests.helpers import run_runner, runner_env
from tests.test_queue_support import ManualClock, World, make_repos
from tests.web_support import LiveServer

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

# Errors no coordinator answer may produce, each with why.
CLIENT_SIDE_ONLY: dict[type[RunnerError], str] = {
    CoordinatorUnavailableError: "it means no answer at all: the client raises it when a "
    "request fails in transport, and an answer naming it is read as CoordinatorError",
}
REMOTE = sorted(
    (cls for cls in REGISTRY.values() if cls not in CLIENT_SIDE_ONLY), key=lambda c: c.__name__
)
SECRET = "roundtrip-secret-value-2718"


def sample(cls: type[RunnerError]) -> RunnerError:
    """An error of ``cls`` with every declared field set to something."""
    name = cls.__name__
    if issubclass(cls, SpecError):
        return cls(
            [
                Problem("spec.yaml", 7, 3, "steps[1].run: required"),
                Problem("spec.yaml", 2, 1, 'unknown field "nmae" — did you mean "name"?'),
            ]
        )
    if issubclass(cls, MissingSecretsError):
        return cls(
            "2 secrets not found in user:alice, global: GH_TOKEN, NPM_TOKEN",
            hint="create them",
            missing=[
                MissingSecret(1, "GH_TOKEN", 6, "runner secret set GH_TOKEN --user alice"),
                MissingSecret(3, "NPM_TOKEN", 14, "runner secret set NPM_TOKEN --user alice"),
            ],
            searched=["user:alice", "global"],
        )
    if issubclass(cls, TemplateError):
        return cls(f"{name}: map has no entry for key", hint="check the name", offset=17)
    if issubclass(cls, QueryError):
        return cls(f"{name}: rev: is not supported", what="rev:")
    if issubclass(cls, GitError):
        return cls(f"{name}: git fetch failed", detail="fatal: bad object HEAD")
    return cls(f"{name} happened in the coordinator", hint=f"do what fixes {name}")


def same(got: RunnerError, want: RunnerError) -> None:
    assert type(got) is type(want)
    assert got.exit_code == want.exit_code
    assert got.message == want.message
    assert got.hint == want.hint
    assert got.fields() == want.fields()
    assert str(got) == str(want)


@dataclass
class Raiser:
    error: RunnerError | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        assert self.error is not None
        raise self.error


@dataclass
class Served:
    world: World
    raiser: Raiser
    url: str
    token_file: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("roundtrip")
    world = World(f"sqlite:///{root / 'state.db'}", make_repos(root / "repos"), ManualClock())
    raiser = Raiser()
    token_file = root / "alice.token"
    token_file.write_text(world.token["alice"] + "\n")
    token_file.chmod(0o600)
    with pytest.MonkeyPatch.context() as patch, LiveServer(world.app) as live:
        patch.setattr(world.coordinator, "list_secrets", raiser)
        yield Served(world, raiser, live.url, token_file)
    world.close()


def test_every_class_is_in_the_registry_once() -> None:
    assert REGISTRY["RunnerError"] is RunnerError
    assert all(name == cls.__name__ for name, cls in REGISTRY.items())
    assert {c for c in REGISTRY.values() if c.client_only} == set(CLIENT_SIDE_ONLY)


def test_every_runner_error_subclass_is_defined_in_runner_errors() -> None:
    # The client finds classes only in the registry: one defined elsewhere would come back
    # as CoordinatorError. Import the whole package, then look for strays.
    import importlib
    import pkgutil

    import runner

    # The proxy's addon runs inside mitmdump's own environment, not in runner's process.
    elsewhere = {"runner.egress.mitm_addon"}
    for module in pkgutil.walk_packages(runner.__path__, "runner."):
        if not module.name.endswith(".__main__") and module.name not in elsewhere:
            importlib.import_module(module.name)
    strays = []
    todo: list[type[RunnerError]] = [RunnerError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("runner.") and cls.__module__ != "runner.errors":
            strays.append(f"{cls.__module__}.{cls.__name__}")
    assert strays == []


@pytest.mark.parametrize("cls", REMOTE, ids=lambda c: c.__name__)
def test_the_client_raises_the_class_the_route_raised(
    served: Served, cls: type[RunnerError]
) -> None:
    error = served.raiser.error = sample(cls)
    with pytest.raises(RunnerError) as info:
        served.world.client("alice").secrets_list()
    same(info.value, error)
    answer = served.world.http.get(
        "/api/secrets", headers={"Authorization": f"Bearer {served.world.token['alice']}"}
    )
    assert answer.status_code == cls.http_status
    assert answer.json()["error"]["type"] == cls.__name__


@pytest.mark.parametrize("cls", REMOTE, ids=lambda c: c.__name__)
def test_the_cli_exits_with_the_class_exit_code(
    served: Served, cls: type[RunnerError], capsys: pytest.CaptureFixture[str]
) -> None:
    error = served.raiser.error = sample(cls)
    remote = ["--url", served.url, "--token-file", str(served.token_file)]
    code = run_cli(["secret", "list", "--user", "alice", *remote])
    out, err = capsys.readouterr()
    assert code == cls.exit_code
    # The coordinator runs in this process too: its log of a 5xx comes first.
    shown = format_error(error.message, error.hint, error.details())
    assert err.endswith(f"\n{shown}\n") or err == f"{shown}\n"
    assert out == ""


@pytest.mark.parametrize("cls", [UsageError, MissingSecretsError, NotAuthenticatedError])
def test_a_runner_process_exits_with_the_class_exit_code(
    served: Served, cls: type[RunnerError], tmp_path: Path
) -> None:
    error = served.raiser.error = sample(cls)
    remote = ["--url", served.url, "--token-file", str(served.token_file)]
    proc = run_runner(["secret", "list", "--user", "alice", *remote], runner_env(tmp_path))
    assert proc.returncode == cls.exit_code, proc.stderr
    assert proc.stderr == format_error(error.message, error.hint, error.details()) + "\n"


def test_secret_values_in_any_field_are_redacted_on_the_way_out(served: Served) -> None:
    served.raiser.error = MissingSecretsError(
        f"not found: {SECRET}",
        hint=f"set {SECRET}",
        missing=[MissingSecret(1, "X_TOKEN", 2, f"runner secret set {SECRET}")],
        searched=[SECRET],
    )
    with active().scoped("roundtrip") as scope:
        scope.register("LEAKY", SECRET)
        response = served.world.http.get(
            "/api/secrets", headers={"Authorization": f"Bearer {served.world.token['alice']}"}
        )
    assert SECRET not in response.text
    error = response.json()["error"]
    assert error["fields"]["missing"][0]["command"] == "runner secret set [REDACTED:LEAKY]"
    assert error["fields"]["searched"] == ["[REDACTED:LEAKY]"]


def _answering(status: int, body: Any) -> CoordinatorClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://c")
    return CoordinatorClient(url="http://c", token="rnr_x", http=http)


@pytest.mark.parametrize(
    "error",
    [
        {"type": "NoSuchError", "message": "m", "hint": "h"},
        {"type": "CoordinatorUnavailableError", "message": "m", "hint": "h"},
        {"type": "SpecError", "message": "m", "hint": "h", "fields": {"problems": "nonsense"}},
        {"type": "MissingSecretsError", "message": "m", "hint": "h"},
    ],
    ids=["unknown", "client-side-only", "bad-fields", "no-fields"],
)
def test_what_the_client_cannot_rebuild_is_a_coordinator_error(error: dict[str, Any]) -> None:
    with pytest.raises(CoordinatorError) as info:
        _answering(409, {"error": error}).whoami()
    assert type(info.value) is CoordinatorError
    assert (info.value.message, info.value.hint) == ("m", "h")


def test_an_answer_that_is_no_error_body_names_the_status() -> None:
    with pytest.raises(CoordinatorError, match="answered HTTP 502") as info:
        _answering(502, ["not", "an", "error"]).whoami()
    assert type(info.value) is CoordinatorError


def test_no_answer_at_all_is_coordinator_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    http = httpx.Client(transport=httpx.MockTransport(refuse), base_url="http://c")
    with pytest.raises(CoordinatorUnavailableError, match="cannot reach the coordinator"):
        CoordinatorClient(url="http://c", token="rnr_x", http=http).whoami()
