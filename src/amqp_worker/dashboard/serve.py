"""Serving the dashboard with uvicorn, as ``amqp-worker dashboard`` does."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import uvicorn

from .app import Dashboard

__all__ = ["serve"]


class _Server(uvicorn.Server):
    """uvicorn's server, but a SIGTERM/SIGINT stop exits 0, like ``amqp-worker run``.

    uvicorn re-raises the signal after its graceful shutdown, so the process
    would end "killed by SIGTERM" and a supervisor would report a crash.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(dashboard: Dashboard) -> None:
    """Serve ``dashboard`` on its host and port until SIGTERM or Ctrl-C; no access log."""
    options = dashboard.options
    config = uvicorn.Config(
        dashboard,
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    _Server(config).run()
