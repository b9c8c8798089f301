"""How steps are confined, as data: isolation level, hardening, network plan, job limits.

A ``SandboxPolicy`` is decided once per job (flags and settings locally; the
coordinator's namespace policy and the executor's own settings on an
executor) and travels in ``JobServices``. The step loop turns it into a
``StepSandbox`` for each container; only ``runner.execute.docker_runtime``
turns that into Docker calls, and the fake runtime records it.
"""

from runner.sandbox.policy import (
    DROPPED_CAPABILITIES,
    Hardening,
    HostPort,
    Isolation,
    NetworkPolicy,
    SandboxPolicy,
    StepSandbox,
)

__all__ = [
    "DROPPED_CAPABILITIES",
    "Hardening",
    "HostPort",
    "Isolation",
    "NetworkPolicy",
    "SandboxPolicy",
    "StepSandbox",
]
