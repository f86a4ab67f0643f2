"""A worker module that fails while it is imported, for the CLI's import-error test."""

from __future__ import annotations

RATIO = 1 / 0
