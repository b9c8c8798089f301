"""Secrets: the masked value type, encryption, the layered store."""

from runner.secrets.value import MASK, Secret

__all__ = ["MASK", "Secret"]
