"""Secrets: the masked value type, encryption, the layered store.

``open_store`` is imported lazily so that importing ``runner.secrets.value``
does not pull in the database drivers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.secrets.value import MASK, Secret

if TYPE_CHECKING:
    from runner.config import Settings
    from runner.secrets.store import SqlSecretStore

__all__ = ["MASK", "Secret", "open_store"]


def open_store(settings: Settings) -> SqlSecretStore:
    """Open the secret store of ``settings`` (see ``runner.secrets.opening``)."""
    from runner.secrets.opening import open_store as _open_store

    return _open_store(settings)
