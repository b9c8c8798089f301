"""Prometheus metrics of the coordinator and of an executor, defined in one place.

Each process makes its own registry (``CoordinatorMetrics()``,
``ExecutorMetrics()``), never the library's global one, so a test can run
several coordinators in one process and read each one's figures apart.
Figures are recorded where the events already happen: the coordinator's
service (claims, ends, steps, logs, the cache), an executor's job log (the
``Reporter`` that sees every step event), and the two gauges read from the
database at scrape time (``runner_jobs``, ``runner_executors``), so every
replica on one PostgreSQL answers the same.

No label carries a secret, a spec's text or an unbounded value: labels are
job states, outcomes and a few fixed words, never a namespace, a repository
or a job id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runner.log import get_logger

log = get_logger("runner.metrics")

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
OUTCOMES: Final = ("completed", "failed", "errored", "canceled")
# Seconds: a claim answers in milliseconds; jobs and steps run for seconds to hours.
CLAIM_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RUN_BUCKETS: Final = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
# Steps whose start a replica remembers to time their end; beyond it the oldest go.
MAX_OPEN_STEPS: Final = 10_000


class DatabaseGauge(Collector):
    """A gauge with one label, read at scrape time (``read`` returns counts per value).

    Every value of ``known`` is exported, 0 when absent, so an alert on one
    state does not vanish while nothing is in it. A failed read leaves the
    family out of this scrape and says why in the log.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        known: Sequence[str],
        read: Callable[[], Mapping[str, int]],
    ) -> None:
        self._name = name
        self._doc = documentation
        self._label = label
        self._known = tuple(known)
        self._read = read

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self._name, self._doc, labels=[self._label])

    def describe(self) -> Iterable[Metric]:
        # Without this, registering would call collect and read the database.
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        try:
            counts = dict(self._read())
        except Exception as exc:  # a scrape must answer even when the database does not
            log.warning("could not read a gauge", metric=self._name, error=type(exc).__name__)
            return
        family = self._family()
        for value in sorted({*self._known, *counts}):
            family.add_metric([value], float(counts.get(value, 0)))
        yield family


def _counter(
    registry: CollectorRegistry, name: str, doc: str, label: str, values: Sequence[str]
) -> Counter:
    """A counter with one label, each known value exported at 0 from the start (an alert
    on a rate then sees the series before its first event)."""
    counter = Counter(name, doc, [label], registry=registry)
    for value in values:
        counter.labels(value)
    return counter


class _Registry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # What a scrape reads: the registry itself, or (several worker processes) the
        # figures every worker wrote into the shared directory.
        self.exposed = self.registry

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.exposed)


# Set in each worker process of a `runner server --workers N` (``use_multiprocess_values``).
_multiprocess_dir: str | None = None


def use_multiprocess_values(directory: str) -> None:
    """Keep the value of every metric created from now on in a file of ``directory``
    (which the caller also names in ``PROMETHEUS_MULTIPROC_DIR``: only the CLI sets the
    environment), and let a coordinator's scrape sum the files of every worker process,
    so any worker of one `runner server` answers the server's figures."""
    from prometheus_client import values

    global _multiprocess_dir
    _multiprocess_dir = directory
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


class CoordinatorMetrics(_Registry):
    """What a coordinator replica counts, and the gauges it reads from the database.

    In a worker process of `runner server --workers N` (``use_multiprocess_values``),
    a scrape answers the counters and histograms summed over every worker.
    """

    def __init__(self) -> None:
        super().__init__()
        if _multiprocess_dir is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            self.exposed = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self.exposed, path=_multiprocess_dir)  # type: ignore[no-untyped-call]
        r = self.registry
        self.outcomes = _counter(
            r,
            "runner_job_outcomes_total",
            "Attempts that ended, by outcome (errored attempts are claimed again).",
            "outcome",
            OUTCOMES,
        )
        self.claims = _counter(
            r,
            "runner_claims_total",
            "Claim requests answered, by result: claimed (a job) or empty (nothing to run).",
            "result",
            ("claimed", "empty"),
        )
        self.claim_seconds = Histogram(
            "runner_claim_duration_seconds",
            "Time to answer an executor's claim, secrets revealed included.",
            buckets=CLAIM_BUCKETS,
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            "runner_job_queue_wait_seconds",
            "Time from a job's submission to the claim of its attempt.",
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.job_seconds = Histogram(
            "runner_job_duration_seconds",
            "Time from a claim to the end of that attempt, by outcome.",
            ["outcome"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.step_seconds = Histogram(
            "runner_step_duration_seconds",
            "Time from a step's start to its end, as its executor reported them.",
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.secret_accesses = Counter(
            "runner_secret_accesses_total",
            "Secret values revealed to executors at claims (each one audited).",
            registry=r,
        )
        self.cache = _counter(
            r,
            "runner_cache_requests_total",
            "Executors' execution-cache lookups, by result (hit or miss), and stores (put).",
            "result",
            ("hit", "miss", "put"),
        )
        self.log_bytes = Counter(
            "runner_log_bytes_total",
            "Bytes of job log newly stored (already redacted by the executor).",
            registry=r,
        )
        self.retries = Counter(
            "runner_job_retries_total", "Jobs queued again by `runner jobs retry`.", registry=r
        )
        self._open_steps: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()
        self._ends: dict[str, Counter] = {}
        self._durations: dict[str, Histogram] = {}

    def watch(
        self,
        *,
        jobs_by_state: Callable[[], Mapping[str, int]],
        job_states: Sequence[str],
        executors: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        """Export the database's counts at each scrape (call once per registry)."""
        self.exposed.register(
            DatabaseGauge(
                "runner_jobs",
                "Jobs in the database, by state (the same on every replica).",
                "state",
                job_states,
                jobs_by_state,
            )
        )
        if executors is not None:
            self.exposed.register(
                DatabaseGauge(
                    "runner_executors",
                    "Executors that sent a heartbeat, by state: live, or stale (quiet for "
                    "longer than the stall limit).",
                    "state",
                    ("live", "stale"),
                    executors,
                )
            )

    def ended(self, outcome: str, seconds: float | None) -> None:
        """An attempt ended ``outcome`` after ``seconds`` (None: it never started)."""
        if outcome not in OUTCOMES:
            return
        # Each outcome's series looked up once: ``labels`` locks and checks at every call,
        # and every job ends (issue 21).
        ends = self._ends
        if outcome not in ends:
            ends[outcome] = self.outcomes.labels(outcome)
        ends[outcome].inc()
        if seconds is not None:
            if outcome not in self._durations:
                self._durations[outcome] = self.job_seconds.labels(outcome)
            self._durations[outcome].observe(max(0.0, seconds))

    def step(self, job_id: str, step: int, status: str, at_s: float) -> None:
        """A step's report; a ``finished`` one is timed from the ``started`` this replica saw."""
        key = (job_id, step)
        with self._lock:
            if status == "started":
                if len(self._open_steps) >= MAX_OPEN_STEPS:
                    self._open_steps.pop(next(iter(self._open_steps)))
                self._open_steps[key] = at_s
                return
            began = self._open_steps.pop(key, None)
        if status == "finished" and began is not None:
            self.step_seconds.observe(max(0.0, at_s - began))


class ExecutorMetrics(_Registry):
    """What one executor counts; ``runner executor --metrics-listen`` serves it."""

    def __init__(self, *, running: Callable[[], int] | None = None) -> None:
        super().__init__()
        r = self.registry
        self.running = Gauge(
            "runner_executor_running_jobs", "Jobs this executor runs now.", registry=r
        )
        if running is not None:
            self.running.set_function(running)
        self.jobs = _counter(
            r,
            "runner_executor_jobs_total",
            "Jobs this executor ran to an end, by outcome.",
            "outcome",
            OUTCOMES,
        )
        self.container_starts = Counter(
            "runner_executor_container_starts_total",
            "Steps started in a container (cached and skipped steps start none).",
            registry=r,
        )
        self.step_seconds = Histogram(
            "runner_executor_step_duration_seconds",
            "Time from a step's start to its end on this executor.",
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.egress_refusals = Counter(
            "runner_executor_egress_refusals_total",
            "Connections a job's egress policy refused.",
            registry=r,
        )
        self._open_steps: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    def event(self, job_id: str, name: str, fields: Mapping[str, Any], at_s: float) -> None:
        """One engine event of a job (the job log calls this for each)."""
        if name == "step.egress_denied":
            self.egress_refusals.inc()
            return
        step = fields.get("step")
        if not isinstance(step, int):
            return
        key = (job_id, step)
        with self._lock:
            if name == "step.started":
                self._open_steps[key] = at_s
                began = None
            elif name == "step.finished":
                began = self._open_steps.pop(key, None)
            else:
                return
        if name == "step.started":
            self.container_starts.inc()
        elif began is not None:
            self.step_seconds.observe(max(0.0, at_s - began))

    def job_ended(self, outcome: str) -> None:
        if outcome in OUTCOMES:
            self.jobs.labels(outcome).inc()


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> Callable[[], None]:
    """Serve ``registry`` on ``http://HOST:PORT/metrics`` from a thread; returns its stop."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
