"""The dashboard mounted inside your own FastAPI app, read-only, under /jobs.

    pip install 'amqp-worker[web]' fastapi uvicorn
    AMQP_WORKER_URL=amqp://guest:guest@127.0.0.1:5672/ AMQP_WORKER_QUEUES=emails \\
        uvicorn examples.dashboard_mounted:app
    open http://127.0.0.1:8000/jobs/

Settings come from the AMQP_WORKER_* variables (AMQP_WORKER_DASHBOARD_* for
the dashboard's own). A mounted app's lifespan does not run, so the app's own
lifespan closes the dashboard's connection. Put your authentication in front
of /jobs, or set AMQP_WORKER_DASHBOARD_AUTH=user:password.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from amqp_worker import AMQPSettings
from amqp_worker.dashboard import Dashboard, DashboardSettings

jobs = Dashboard(AMQPSettings(), DashboardSettings(read_only=True))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await jobs.aclose()


app = FastAPI(lifespan=lifespan)
app.mount("/jobs", jobs)


@app.get("/")
async def home() -> dict[str, str]:
    return {"dashboard": "/jobs/"}
