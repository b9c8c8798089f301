"""runner: run Sourcegraph-style batch specs in containers, with layered secrets."""

__version__ = "0.1.0"
