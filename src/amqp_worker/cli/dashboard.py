"""``amqp-worker dashboard``: serve the web dashboard (extra ``amqp-worker[web]``)."""

from __future__ import annotations

import click

from .common import CLIError, ExitCode, Target, connection_options, queue_option
from .limits import LIMITS_NEED
from .loading import load_amqp_worker

__all__ = ["dashboard"]


@click.command()
@click.option(
    "--host",
    metavar="ADDRESS",
    help="Address to bind. Anything but loopback needs --auth. "
    "[env: AMQP_WORKER_DASHBOARD_HOST; default: 127.0.0.1]",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="TCP port. [env: AMQP_WORKER_DASHBOARD_PORT; default: 8181]",
)
@click.option(
    "--auth",
    metavar="USER:PASSWORD",
    help="HTTP basic auth for every page. [env: AMQP_WORKER_DASHBOARD_AUTH; "
    "prefer the env var: options show in `ps`]",
)
@click.option(
    "--read-only",
    is_flag=True,
    default=None,
    help="Show everything, change nothing: no retry or purge. "
    "[env: AMQP_WORKER_DASHBOARD_READ_ONLY]",
)
@click.option(
    "--management-url",
    metavar="URL",
    help="RabbitMQ management API (e.g. http://127.0.0.1:15672/) for rates, in-progress "
    "counts, consumer details and queue discovery. [env: AMQP_WORKER_DASHBOARD_MANAGEMENT_URL]",
)
@click.option(
    "--refresh",
    "refresh_s",
    type=click.FloatRange(min=0.2),
    metavar="SECONDS",
    help="How often the overview refreshes. [env: AMQP_WORKER_DASHBOARD_REFRESH_S; default: 2]",
)
@click.option(
    "--app",
    "app_spec",
    metavar="MODULE:ATTR",
    help="The AMQPWorker whose handlers' rate and concurrency limits the Limits page shows "
    "(imported like `run` does; its settings are not used).",
)
@queue_option("Show this job queue (the management API adds the ones it finds).")
@connection_options
def dashboard(
    host: str | None,
    port: int | None,
    auth: str | None,
    read_only: bool | None,
    management_url: str | None,
    refresh_s: float | None,
    app_spec: str | None,
    queues: tuple[str, ...],
    target: Target,
) -> ExitCode:
    """Serve the web dashboard: queues, delayed, failed jobs, schedules, workers and limits.

    Failed jobs can be searched, retried and purged (one, selected, or all
    matching a search) unless --read-only. The Limits page needs --app, the
    worker whose handlers have limits. Binds 127.0.0.1 by default.
    Needs the web extra: pip install 'amqp-worker[web]'.
    """
    try:
        from amqp_worker.dashboard import Dashboard, DashboardSettings
        from amqp_worker.dashboard.serve import serve
    except ImportError as exc:
        raise CLIError(
            f"the dashboard needs the web extra ({exc.name} is missing): "
            "pip install 'amqp-worker[web]'",
            ExitCode.CONFIG,
        ) from None
    target.secrets.add(auth and f"http://{auth}@x/")
    target.secrets.add(management_url)
    options = DashboardSettings.build(
        host=host,
        port=port,
        auth=auth,
        read_only=read_only,
        management_url=management_url,
        refresh_s=refresh_s,
    )
    settings = target.settings(queues)
    limits = None
    if app_spec is not None:
        worker = load_amqp_worker(app_spec, LIMITS_NEED)
        target.secrets.add(worker.settings.url.get_secret_value())
        limits = worker.limits
        if worker.settings.name != settings.name:
            click.echo(
                f"warning: {app_spec} is named {worker.settings.name!r}, the dashboard "
                f"{settings.name!r}: the Limits page shows the dashboard's name",
                err=True,
            )
    app = Dashboard(settings, options, limits=limits)
    mode = ", read-only" if options.read_only else ""
    click.echo(
        f"amqp-worker dashboard on http://{options.host}:{options.port}/ "
        f"({settings.broker}, name={settings.name}{mode})",
        err=True,
    )
    serve(app)
    return ExitCode.OK
