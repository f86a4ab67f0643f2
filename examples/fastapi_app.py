"""A FastAPI app that enqueues jobs from its request handlers, publish-only.

    pip install fastapi uvicorn
    AMQP_WORKER_URL=amqp://guest:guest@127.0.0.1:5672/ uvicorn examples.fastapi_app:app
    curl -X POST localhost:8000/signups -H 'content-type: application/json' \\
         -d '{"email": "ada@example.com", "name": "Ada"}'

The worker is made in the app's lifespan, never started (the app only
publishes), and stopped at shutdown, which closes its connection. Run
``amqp-worker run examples.daemon:worker`` (or any worker with these
handlers) to process the jobs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from amqp_worker import AMQPWorker, BrokerError, Job

logger = logging.getLogger("examples.fastapi_app")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Settings from AMQP_WORKER_*; the first perform connects and declares the queue.
    app.state.jobs = AMQPWorker(connection_name="signup-api")
    try:
        yield
    finally:
        await app.state.jobs.stop()


app = FastAPI(lifespan=lifespan)


def jobs(request: Request) -> AMQPWorker:
    worker: AMQPWorker = request.app.state.jobs
    return worker


Jobs = Annotated[AMQPWorker, Depends(jobs)]


@app.exception_handler(BrokerError)
async def broker_unavailable(request: Request, exc: BrokerError) -> JSONResponse:
    # The job was not confirmed, so say so; the message never holds credentials.
    logger.warning("could not enqueue: %s", exc)
    return JSONResponse({"detail": "job queue unavailable, try again"}, status_code=503)


Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)]


class Signup(BaseModel):
    email: Email
    name: str = Field(min_length=1, max_length=100)


class Reminder(BaseModel):
    email: Email
    in_s: float = Field(gt=0, le=7 * 24 * 3600)


class Accepted(BaseModel):
    job_id: str


@app.post("/signups", status_code=202)
async def signup(body: Signup, worker: Jobs) -> Accepted:
    job_id = await worker.perform(
        Job(queue="emails", handler="send_welcome", args=body.model_dump())
    )
    return Accepted(job_id=job_id)


@app.post("/reminders", status_code=202)
async def reminder(body: Reminder, worker: Jobs) -> Accepted:
    job_id = await worker.perform_in(
        Job(queue="emails", handler="send_reminder", args={"email": body.email}), body.in_s
    )
    return Accepted(job_id=job_id)
