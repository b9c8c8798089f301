"""The coordinator's HTTP client, for executors and for the CLI's remote mode.

One ``httpx.Client`` underneath (pass ``http=`` to use another transport,
such as FastAPI's ``TestClient`` in tests). Transport failures become
``CoordinatorUnavailableError``; error answers become the error class the
coordinator named (``PermissionDeniedError``, ``LeaseLostError``, ...) with
its message, hint and fields (``runner.errors.error_from_json``), so the CLI
prints them as if they happened locally.
Secret values arrive only from ``claim`` and are wrapped in ``Secret`` at once.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from runner.cache import CacheEntry
from runner.env import EnvPlan
from runner.errors import (
    ConfigError,
    CoordinatorError,
    CoordinatorUnavailableError,
    RunnerError,
    UsageError,
    error_from_json,
)
from runner.queue.bundle import Bundle
from runner.queue.jobs import env_plan_from_json
from runner.queue.models import ENDED_HEADER, HeartbeatAnswer
from runner.sandbox.tighten import NamespacePolicy
from runner.secrets.delivery import Delivery, UsesJson
from runner.secrets.models import AuditEvent, SecretMeta
from runner.secrets.value import Secret


def read_token_file(path: Path) -> str:
    """The token in ``path`` (its first line), or ``ConfigError`` saying what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the token file {path}: {exc.strerror or type(exc).__name__}",
            hint="pass --token-file with a file holding a token from `runner token create`",
        ) from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise ConfigError(
            f"the token file {path} is empty",
            hint="write the token from `runner token create` into it",
        )
    return token


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A job an executor claimed: everything it needs, its secrets masked."""

    job_id: str
    lease: str = field(repr=False)
    attempt: int
    namespace: str
    bundle: Bundle
    workspace: Mapping[str, Any]
    clone_url: str
    env: EnvPlan
    secrets: Mapping[str, Secret] = field(repr=False)
    job: Mapping[str, Any] = field(default_factory=dict)
    # What the coordinator requires of the job's sandbox (its namespace's policy).
    policy: NamespacePolicy = field(default_factory=NamespacePolicy)
    # The job's DOCKER_AUTH_CONFIG: pulls its images, never reaches a step.
    registry_auth: Secret | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Claim:
        try:
            secrets = {str(k): Secret(str(v)) for k, v in data["secrets"].items()}
            auth = data.get("registry_auth")
            return cls(
                job_id=str(data["job"]["id"]),
                lease=str(data["lease"]),
                attempt=int(data["attempt"]),
                namespace=str(data["namespace"]),
                bundle=Bundle.from_json(data["bundle"]),
                workspace=dict(data["workspace"]),
                clone_url=str(data["clone_url"]),
                env=env_plan_from_json(data["env"]),
                secrets=secrets,
                job=dict(data["job"]),
                policy=NamespacePolicy.from_json(data.get("policy")),
                registry_auth=Secret(str(auth)) if auth else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError, UsageError) as exc:
            raise CoordinatorError(
                f"malformed claim answer ({type(exc).__name__})",
                hint="the coordinator and this executor may run different runner versions",
            ) from None


@dataclass(frozen=True, kw_only=True)
class JobEnd:
    """A job's end as its executor reports it: ``completed`` with its result, or
    another end state with its error; ``brokered``: what its proxy authenticated."""

    state: str
    result: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""
    brokered: UsesJson = ()


@dataclass(frozen=True)
class NextJob:
    """What reporting a job's end brought back when it also asked for the next job.

    ``claim``: the next job, or None (none queued, or a coordinator that does not claim
    with an end). ``refused``: the claim part's error; the end itself was recorded.
    """

    claim: Claim | None = None
    refused: RunnerError | None = None


def _tls_context(verify: bool | str | ssl.SSLContext) -> bool | ssl.SSLContext:
    """``verify`` as httpx wants it: a CA file path becomes a context trusting that CA."""
    if not isinstance(verify, str):
        return verify
    try:
        return ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the CA certificate {verify}: {exc}",
            hint="pass --ca-cert with the PEM file of the CA that signed the coordinator's cert",
        ) from None


class CoordinatorClient:
    def __init__(
        self,
        *,
        url: str,
        token: str,
        verify: bool | str | ssl.SSLContext = True,
        timeout_s: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._http = http or httpx.Client(
            base_url=self.url, verify=_tls_context(verify), timeout=timeout_s
        )
        self._owns_http = http is None

    def __repr__(self) -> str:
        return f"CoordinatorClient({self.url!r})"

    @classmethod
    def from_token_file(
        cls, url: str, token_file: Path, *, ca_cert: Path | None = None, timeout_s: float = 30.0
    ) -> CoordinatorClient:
        verify: bool | str = str(ca_cert) if ca_cert is not None else True
        return cls(url=url, token=read_token_file(token_file), verify=verify, timeout_s=timeout_s)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Plumbing ----------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> httpx.Response | None:
        response = self._send(method, path, body=body, params=params)
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _send(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        """The answer, whatever its status; ``CoordinatorUnavailableError`` when none came."""
        headers = {"Authorization": f"Bearer {self._token}"}
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            return self._http.request(
                method, path, json=body, params=clean or None, headers=headers
            )
        except httpx.HTTPError as exc:
            raise CoordinatorUnavailableError(
                f"cannot reach the coordinator at {self.url}: {type(exc).__name__}: {exc}",
                hint="check --url, the network, and that `runner server` is running",
            ) from exc

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        assert response is not None
        return self._decode(response, path)

    def _decode(self, response: httpx.Response, path: str) -> Any:
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:
            raise CoordinatorError(
                f"the coordinator at {self.url} answered {path} with something other than JSON",
                hint="check that --url points at `runner server`",
            ) from None

    def _error(self, response: httpx.Response) -> RunnerError:
        try:
            return error_from_json(response.json()["error"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return CoordinatorError(
                f"the coordinator at {self.url} answered HTTP {response.status_code}",
                hint="check that --url points at `runner server`, and its log",
            )

    # Users ----------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/api/whoami")
        return result

    def secrets_list(
        self, *, namespace: str | None = None, scope: str | None = None
    ) -> list[SecretMeta]:
        data = self._json("GET", "/api/secrets", params={"namespace": namespace, "scope": scope})
        return [SecretMeta.from_json(item) for item in data]

    def secret_set(
        self,
        name: str,
        namespace: str,
        value: Secret,
        *,
        scope: str | None = None,
        delivery: Delivery | None = None,
    ) -> tuple[SecretMeta, bool]:
        """``delivery`` None keeps the secret's current one (env for a new secret)."""
        body: dict[str, Any] = {"value": value.reveal(), "scope": scope}
        if delivery is not None:
            body["delivery"] = delivery.to_json()
        data = self._json("PUT", f"/api/secrets/{namespace}/{name}", body=body)
        return SecretMeta.from_json(data["secret"]), bool(data["created"])

    def secret_remove(self, name: str, namespace: str, *, scope: str | None = None) -> SecretMeta:
        data = self._json("DELETE", f"/api/secrets/{namespace}/{name}", params={"scope": scope})
        return SecretMeta.from_json(data)

    def secret_log(
        self, name: str | None = None, *, namespace: str | None = None
    ) -> list[AuditEvent]:
        data = self._json("GET", "/api/secrets/log", params={"name": name, "namespace": namespace})
        return [AuditEvent.from_json(item) for item in data]

    def env_explain(self, bundle: Bundle, namespace: str) -> dict[str, Any]:
        """``{"variables": [...], "text": "..."}``, as `runner env explain` prints them."""
        result: dict[str, Any] = self._json(
            "POST", "/api/env/explain", body={"namespace": namespace, "bundle": bundle.to_json()}
        )
        return result

    def submit(
        self, bundle: Bundle, namespace: str, *, labels: Sequence[str] = ()
    ) -> dict[str, Any]:
        body = {"namespace": namespace, "bundle": bundle.to_json(), "labels": list(labels)}
        result: dict[str, Any] = self._json("POST", "/api/submissions", body=body)
        return result

    def jobs_list(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/jobs", params={"limit": limit})
        return result

    def job_show(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/jobs/{job_id}")
        return result

    def job_logs(self, job_id: str, *, after: int = 0, limit: int = 500) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "GET", f"/api/jobs/{job_id}/logs", params={"after": after, "limit": limit}
        )
        return result

    def jobs_retry(
        self, job_ids: Sequence[str] = (), *, failed: bool = False, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Queue new attempts; the new jobs, each naming the one it retries (``retry_of``)."""
        body = {"job_ids": list(job_ids), "failed": failed, "namespace": namespace}
        data = self._json("POST", "/api/jobs/retry", body=body)
        jobs: list[dict[str, Any]] = data["jobs"]
        return jobs

    def executors_list(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/executors")
        return result

    def job_cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", f"/api/jobs/{job_id}/cancel")
        return result

    def job_result(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/jobs/{job_id}/result")
        return result

    # Namespaces ----------------------------------------------------------------------

    def namespace_policy(self, namespace: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/namespaces/{namespace}/policy")
        return result

    def namespace_policy_set(
        self, namespace: str, policy: NamespacePolicy, *, labels: Sequence[str] = ()
    ) -> dict[str, Any]:
        body = {**policy.to_json(), "require_labels": list(labels)}
        result: dict[str, Any] = self._json("PUT", f"/api/namespaces/{namespace}/policy", body=body)
        return result

    def namespace_policy_clear(self, namespace: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("DELETE", f"/api/namespaces/{namespace}/policy")
        return result

    # Executors ----------------------------------------------------------------------

    def claim(self, executor: str | None = None, labels: Sequence[str] = ()) -> Claim | None:
        body = {"executor": executor, "labels": list(labels)}
        data = self._json("POST", "/api/executor/claim", body=body)
        return Claim.from_json(data) if data is not None else None

    def end_and_claim(
        self, job_id: str, lease: str, end: JobEnd, executor: str | None, labels: Sequence[str]
    ) -> NextJob:
        """``complete`` or ``fail``, and the executor's next job claimed in the same request."""
        if end.state == "completed":
            path = f"/api/executor/jobs/{job_id}/complete"
            body: dict[str, Any] = {"lease": lease, "result": dict(end.result)}
        else:
            path = f"/api/executor/jobs/{job_id}/fail"
            body = {"lease": lease, "state": end.state, "error": end.error}
        body["brokered"] = [*end.brokered]
        body["claim"] = {"executor": executor, "labels": list(labels)}
        response = self._send("POST", path, body=body)
        if ENDED_HEADER not in response.headers:
            # The end was refused (the error is the end's), or a coordinator older than
            # the claim field recorded it and answered with the job: no next job then.
            if response.status_code >= 400:
                raise self._error(response)
            return NextJob()
        if response.status_code >= 400:
            return NextJob(refused=self._error(response))
        try:
            data = self._decode(response, path)
            return NextJob(claim=Claim.from_json(data) if data is not None else None)
        except RunnerError as exc:  # a malformed claim answer: the end is recorded all the same
            return NextJob(refused=exc)

    def heartbeat(
        self,
        executor: str | None,
        leases: Mapping[str, str],
        info: Mapping[str, Any] | None = None,
    ) -> HeartbeatAnswer:
        data = self._json(
            "POST",
            "/api/executor/heartbeat",
            body={
                "executor": executor,
                "jobs": [{"id": k, "lease": v} for k, v in sorted(leases.items())],
                "info": dict(info) if info is not None else None,
            },
        )
        return HeartbeatAnswer(
            cancel=tuple(str(j) for j in data.get("cancel", [])),
            lost=tuple(str(j) for j in data.get("lost", [])),
        )

    def append_logs(self, job_id: str, lease: str, chunks: Sequence[tuple[int, str]]) -> int:
        data = self._json(
            "POST",
            f"/api/executor/jobs/{job_id}/logs",
            body={"lease": lease, "chunks": [{"seq": s, "text": t} for s, t in chunks]},
        )
        return int(data.get("added", 0))

    def record_step(
        self, job_id: str, lease: str, *, step: int, status: str, exit_code: int | None = None
    ) -> None:
        self._json(
            "POST",
            f"/api/executor/jobs/{job_id}/steps",
            body={"lease": lease, "step": step, "status": status, "exit_code": exit_code},
        )

    def complete(
        self, job_id: str, lease: str, result: Mapping[str, Any], *, brokered: UsesJson = ()
    ) -> dict[str, Any]:
        data: dict[str, Any] = self._json(
            "POST",
            f"/api/executor/jobs/{job_id}/complete",
            body={"lease": lease, "result": dict(result), "brokered": [*brokered]},
        )
        return data

    def fail(
        self, job_id: str, lease: str, *, state: str, error: str, brokered: UsesJson = ()
    ) -> dict[str, Any]:
        data: dict[str, Any] = self._json(
            "POST",
            f"/api/executor/jobs/{job_id}/fail",
            body={"lease": lease, "state": state, "error": error, "brokered": [*brokered]},
        )
        return data

    def cache_get(self, key: str) -> CacheEntry | None:
        response = self._request("GET", f"/api/executor/cache/{key}", missing_ok=True)
        if response is None:
            return None
        return CacheEntry.from_bytes(base64.b64decode(response.json()["entry"]))

    def cache_put(
        self, key: str, entry: CacheEntry, *, namespace: str, secret_refs: Sequence[str]
    ) -> None:
        self._json(
            "PUT",
            f"/api/executor/cache/{key}",
            body={
                "namespace": namespace,
                "secret_refs": list(secret_refs),
                "entry": base64.b64encode(entry.to_bytes()).decode("ascii"),
            },
        )
