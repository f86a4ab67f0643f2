"""The dashboard's ASGI app: routes, the security rules every request passes, rendering.

Pages are server-rendered (Jinja2); one small script (static/dashboard.js)
refreshes the overview and draws its chart. Nothing is fetched from the
internet. Every state-changing request is a POST carrying the page's CSRF
token, refused in read-only mode, and refused when its Origin is another
site. No page ever holds a credential: the broker is shown as
:attr:`AMQPSettings.broker` (scheme, host, port, vhost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import aiormq.exceptions as amqp_errors
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from amqp_worker._core.failures import FailureReason
from amqp_worker._core.limits import Limits
from amqp_worker._rabbitmq.broker import Broker
from amqp_worker._rabbitmq.failed_jobs import RabbitFailedJobs
from amqp_worker._rabbitmq.inspection import vhost_of
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker.errors import BrokerError

from .auth import BasicAuth, SecurityHeaders
from .csrf import CsrfToken
from .filters import ago, num, when
from .history import History
from .inspector import Inspector, limits_json
from .management import ManagementAPI, ManagementUnavailable
from .search import FailedQuery, page_of
from .settings import DashboardSettings
from .snapshots import FailedReads

__all__ = ["Dashboard"]

logger = logging.getLogger("amqp_worker.dashboard")

HERE = Path(__file__).parent


def _amqp_credentials(settings: AMQPSettings) -> tuple[str, str] | None:
    parts = urlsplit(settings.urls[0])
    if parts.username is None:
        return None
    return unquote(parts.username), unquote(parts.password or "")


class Dashboard:
    """The dashboard of one worker name, as an ASGI app.

    Serve it with ``amqp-worker dashboard`` (uvicorn), or mount it in your own
    Starlette/FastAPI app: ``app.mount("/jobs", Dashboard(settings))``; then
    call :meth:`aclose` when your app shuts down (a mounted app's lifespan
    does not run). It connects on the first request.

    ``limits``, the handlers' rate and concurrency limits (``worker.limits``),
    fills the Limits page: the settings alone cannot tell which handlers have any.
    """

    def __init__(
        self,
        settings: AMQPSettings,
        options: DashboardSettings | None = None,
        *,
        limits: Mapping[str, Limits] | None = None,
    ) -> None:
        self.settings = settings
        self.options = options or DashboardSettings()
        self.limits = None if limits is None else dict(limits)
        self.csrf = CsrfToken()
        self.history = History(every_s=self.options.refresh_s)
        self._broker = Broker(settings)
        management = None
        if self.options.management_url is not None:
            management = ManagementAPI(
                self.options.management_url.get_secret_value(),
                vhost_of(settings),
                fallback=_amqp_credentials(settings),
            )
        self.inspector = Inspector(self._broker, management)
        self._reads = FailedReads()
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.filters.update(num=num, when=when, ago=ago)
        routes = [
            Route("/", self.overview_page, name="overview"),
            Route("/api/overview", self.overview_json, name="overview_json"),
            Route("/failed", self.failed_page, name="failed"),
            Route("/failed/job", self.failed_job_page, name="failed_job"),
            Route("/failed/action", self.failed_action, methods=["POST"], name="failed_action"),
            Route("/delayed", self.delayed_page, name="delayed"),
            Route("/schedules", self.schedules_page, name="schedules"),
            Route("/workers", self.workers_page, name="workers"),
            Route("/limits", self.limits_page, name="limits"),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        unreachable = dict.fromkeys(
            (BrokerError, ConnectionError, amqp_errors.AMQPError, TimeoutError), self._unavailable
        )
        self._starlette = Starlette(
            routes=routes,
            lifespan=self._lifespan,
            exception_handlers=unreachable,
        )
        app: ASGIApp = SecurityHeaders(self._starlette)
        credentials = self.options.credentials
        if credentials is not None:
            app = BasicAuth(app, credentials)
        self._app = app

    def __repr__(self) -> str:
        mode = "read-only" if self.options.read_only else "read-write"
        return f"<Dashboard {self.settings.broker} name={self.settings.name} {mode}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Mounted in another app, url_for would look in *its* routes; links are
            # built from ours, under the mount's root_path.
            root = scope.get("root_path", "")
            scope = {**scope, "router": self._starlette.router, "app_root_path": root}
        await self._app(scope, receive, send)

    @asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        yield
        await self.aclose()

    async def aclose(self) -> None:
        """Close the broker connections (and the management API client)."""
        await self.inspector.close()
        await self._broker.close()

    # -- rendering --------------------------------------------------------------

    def _render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        context.update(
            broker=self.settings.broker,
            name=self.settings.name,
            read_only=self.options.read_only,
            csrf=self.csrf.value,
            refresh_s=self.options.refresh_s,
            management=self.inspector.management is not None,
            notice=request.query_params.get("notice", "")[:300],
        )
        return self.templates.TemplateResponse(request, template, context, status_code=status)

    async def _unavailable(self, request: Request, exc: Exception) -> Response:
        """A broker that cannot answer is a 503 page saying so, never a traceback."""
        # Our errors never hold credentials; a client library's might: name its type only.
        reason = str(exc) if isinstance(exc, BrokerError) else type(exc).__name__
        logger.warning(
            "dashboard: %s %s: broker unavailable: %s", request.method, request.url.path, reason
        )
        if request.url.path.endswith("/api/overview"):
            return JSONResponse({"error": f"broker unavailable: {reason}"}, status_code=503)
        return self._render(request, "unavailable.html", status=503, reason=reason)

    # -- overview ---------------------------------------------------------------

    async def _overview_data(self) -> dict[str, Any]:
        overview = await self.inspector.overview()
        rows = overview.rows
        values: dict[str, float] = {
            "ready": float(sum(r.ready or 0 for r in rows)),
            "failed": float(sum(r.failed or 0 for r in rows)),
        }
        if overview.management:
            values["published"] = sum(r.publish_rate or 0.0 for r in rows)
            values["delivered"] = sum(r.deliver_rate or 0.0 for r in rows)
        self.history.add(time.time(), values)
        data = overview.as_json()
        data["totals"] = {"ready": int(values["ready"]), "failed": int(values["failed"])}
        data["history"] = self.history.series()
        data["refresh_s"] = self.options.refresh_s
        data["limits"] = limits_json(await self.inspector.limits(self.limits or {}))
        return data

    async def overview_page(self, request: Request) -> Response:
        return self._render(request, "overview.html", data=await self._overview_data())

    async def overview_json(self, _: Request) -> Response:
        return JSONResponse(await self._overview_data())

    # -- failed jobs ------------------------------------------------------------

    async def _failed(self) -> RabbitFailedJobs:
        return RabbitFailedJobs(self._broker, await self.inspector.job_queues())

    async def failed_page(self, request: Request) -> Response:
        query = FailedQuery.from_params(request.query_params)
        try:
            number = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            number = 1
        size = self.options.page_size
        failed = await self._failed()
        if query:
            matches = [r for r in await self._reads.all(failed) if query.matches(r)]
            page = page_of(matches, number, size, len(matches))
            self._reads.remember(list(page.items))
        else:
            # No search: read only as far as this page, never the whole queue.
            records = await failed.list(limit=number * size)
            total = await self.inspector.failed_total(failed.queues)
            page = page_of(records, number, size, total)
            self._reads.remember(list(page.items))
        return self._render(
            request,
            "failed.html",
            query=query,
            page=page,
            queues=list(failed.queues),
            reasons=[reason.value for reason in FailureReason],
            query_string=query.urlencoded(),
        )

    async def failed_job_page(self, request: Request) -> Response:
        job_id = request.query_params.get("id", "")
        queue = request.query_params.get("queue") or None
        record = await self._reads.find(await self._failed(), job_id, queue)
        if record is None:
            return self._render(
                request, "missing.html", status=404, job_id=job_id, queue=queue or ""
            )
        return self._render(
            request,
            "failed_job.html",
            record=record,
            body=record.body.decode("utf-8", "replace"),
            args=record.job.model_dump(mode="json")["args"] if record.job else None,
        )

    async def failed_action(self, request: Request) -> Response:
        form = await request.form()
        refused = self._refuse_change(request, form.get("csrf"))
        if refused is not None:
            return refused
        # One field names both, so each button works without JavaScript: "purge:matching".
        action, _, scope = str(form.get("op", "")).partition(":")
        if action not in ("retry", "purge") or scope not in ("one", "selected", "matching"):
            return PlainTextResponse("unknown action", status_code=400)
        query = FailedQuery.from_params({k: str(v) for k, v in form.items() if isinstance(v, str)})
        failed = await self._failed()
        if scope == "matching":
            ids = [r.id for r in await self._reads.all(failed, fresh=True) if query.matches(r)]
        else:
            ids = [str(v) for v in form.getlist("ids") if isinstance(v, str) and v]
        if not ids:
            return self._back(request, query, "Nothing selected: no job was changed.")
        confirmed = str(form.get("confirmed", ""))
        if (action == "purge" or scope == "matching") and confirmed != str(len(ids)):
            # State the count and ask again; a count that changed since is asked again too.
            changed = confirmed not in ("", str(len(ids)))
            return self._render(
                request,
                "confirm.html",
                action=action,
                scope=scope,
                ids=ids if scope != "matching" else [],
                count=len(ids),
                changed=changed,
                query=query,
            )
        self._reads.forget()
        if action == "retry":
            result = await failed.retry(ids)
            verb = "Retried"
        else:
            result = await failed.purge(ids)
            verb = "Purged"
        # An audit line per action: what, how many, chosen how, from where.
        client = request.client.host if request.client else "?"
        logger.info(
            "dashboard: %s %d job(s) (%s %s) for %s",
            verb.lower(),
            len(result.done),
            scope,
            query.describe() if scope == "matching" else "by id",
            client,
        )
        notice = f"{verb} {len(result.done)} job{'s' if len(result.done) != 1 else ''}."
        if result.not_found:
            notice += f" {len(result.not_found)} no longer there."
        if result.skipped:
            notice += f" {len(result.skipped)} not valid jobs, left in place."
        return self._back(request, query, notice)

    def _refuse_change(self, request: Request, token: object) -> Response | None:
        if self.options.read_only:
            return PlainTextResponse("read-only dashboard: nothing can be changed", 403)
        origin = Headers(scope=request.scope).get("origin")
        if origin is not None and urlsplit(origin).netloc != request.url.netloc:
            return PlainTextResponse("cross-site request refused", 403)
        if not self.csrf.check(token):
            return PlainTextResponse("CSRF token missing or wrong: reload the page", 403)
        return None

    def _back(self, request: Request, query: FailedQuery, notice: str) -> Response:
        params = {**query.params(), "notice": notice}
        return RedirectResponse(f"{request.url_for('failed')}?{urlencode(params)}", 303)

    # -- other pages ------------------------------------------------------------

    async def delayed_page(self, request: Request) -> Response:
        queue = request.query_params.get("queue", "")
        overview = await self.inspector.overview()
        jobs = await self.inspector.delayed_jobs() if queue else []
        shown = [job for job in jobs if job.queue == queue][:50]
        return self._render(
            request,
            "delayed.html",
            overview=overview,
            queue=queue,
            jobs=shown,
            total_for_queue=sum(1 for job in jobs if job.queue == queue),
        )

    async def schedules_page(self, request: Request) -> Response:
        return self._render(request, "schedules.html", status_data=await self.inspector.schedules())

    async def limits_page(self, request: Request) -> Response:
        statuses = await self.inspector.limits(self.limits or {})
        return self._render(request, "limits.html", known=self.limits is not None, rows=statuses)

    async def workers_page(self, request: Request) -> Response:
        overview = await self.inspector.overview()
        consumers = None
        error = ""
        try:
            consumers = await self.inspector.consumers()
        except ManagementUnavailable as exc:  # shown on the page, not raised
            error = str(exc)
        return self._render(
            request, "workers.html", overview=overview, consumers=consumers, error=error
        )
