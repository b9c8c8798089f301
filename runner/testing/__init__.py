"""In-package fakes for every seam, for runner's tests and for code built on runner.

Each behaves as its real counterpart does (a contract suite runs the same
cases on both) and needs no Docker engine, database server or network:

- ``FakeClock``: a ``runner.clock.Clock`` whose time moves only when told or slept on.
- ``FakeRuntime`` / ``FakeStepRun``: a ``ContainerRuntime`` that plays steps with a handler.
- ``MemoryStepCache``: a ``StepCache`` in memory.
- ``FakeSecretStore``: a secret store in memory.
- ``FakeUserDirectory``: users and orgs in memory.
- ``MemoryJobStore`` / ``MemoryTokenStore`` / ``InProcessExecutorApi``: the job
  queue in memory, and an executor's API calling a coordinator in-process.

Nothing in ``runner`` outside this package imports it.
"""

from runner.testing.cache import MemoryStepCache
from runner.testing.clock import FakeClock
from runner.testing.queue import InProcessExecutorApi, MemoryJobStore, MemoryTokenStore
from runner.testing.runtime import FakeRuntime, FakeStepRun, StepHandler, succeed
from runner.testing.secrets import FakeSecretStore
from runner.testing.users import FakeUserDirectory

__all__ = [
    "FakeClock",
    "FakeRuntime",
    "FakeSecretStore",
    "FakeStepRun",
    "FakeUserDirectory",
    "InProcessExecutorApi",
    "MemoryJobStore",
    "MemoryStepCache",
    "MemoryTokenStore",
    "StepHandler",
    "succeed",
]
