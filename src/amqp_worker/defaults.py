"""Defaults shared by both workers, the settings and the CLI: each written once, here."""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_CONCURRENCY", "DEFAULT_STOP_TIMEOUT_S"]

#: How many handlers run at once unless told otherwise.
DEFAULT_MAX_CONCURRENCY = 25

#: How long ``stop()`` waits for running handlers unless told otherwise, in seconds.
DEFAULT_STOP_TIMEOUT_S = 30.0
