"""The web dashboard: queues, delayed, failed jobs, schedules, workers and limits, over AMQP.

Needs the ``web`` extra (``pip install 'amqp-worker[web]'``: Starlette,
Jinja2, uvicorn, httpx). Run it with ``amqp-worker dashboard``, or mount
:class:`Dashboard` in your own ASGI app. See docs/dashboard.md.
"""

from __future__ import annotations

from .app import Dashboard
from .settings import DashboardSettings

__all__ = ["Dashboard", "DashboardSettings"]
