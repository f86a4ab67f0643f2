"""``AMQPSettings``: the immutable configuration of an :class:`~amqp_worker.AMQPWorker`.

Values come, highest priority first, from explicit arguments, then
``AMQP_WORKER_*`` environment variables (``AMQP_WORKER_URL``,
``AMQP_WORKER_QUEUES=emails,reports``, ...), then defaults. The broker URL is
a secret: it never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Self, TypedDict
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from amqp_worker._core.defaults import (
    DEFAULT_CANCEL_TTL_S,
    DEFAULT_CANCELS_MAX_BYTES,
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_LOOP_STALL_WARN_S,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_NAME,
    DEFAULT_QUEUE,
    DEFAULT_RESULT_TTL_S,
    DEFAULT_RESULTS_MAX_BYTES,
    DEFAULT_STOP_TIMEOUT_S,
    DEFAULT_UNIQUE_FOR_S,
)
from amqp_worker._core.job import MAX_PRIORITY, validate_name
from amqp_worker._core.unique import MAX_UNIQUE_FOR_S
from amqp_worker.errors import ConfigurationError, describe_validation_error

from .redact import describe_url, split_urls
from .topology import DelayPlan, QueueType, Topology

__all__ = ["AMQPSettings", "WorkerOptions", "build_settings"]


#: The most partition queues per job queue (each is a quorum queue).
MAX_PARTITIONS = 256


class AMQPSettings(BaseSettings):
    """Everything an ``AMQPWorker`` needs to know; immutable once built."""

    model_config = SettingsConfigDict(
        env_prefix="AMQP_WORKER_",
        frozen=True,
        extra="forbid",
        validate_default=True,
    )

    url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@localhost:5672/"),
        description=(
            "amqp:// or amqps:// URL, or a comma-separated list of the nodes of one cluster; "
            "the path is the vhost, the query holds TLS options."
        ),
    )
    name: str = Field(
        default=DEFAULT_NAME, description="Namespace of the exchanges and internal queues."
    )
    queues: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(DEFAULT_QUEUE,), description="Job queues this process consumes."
    )
    max_concurrency: int = Field(
        default=DEFAULT_MAX_CONCURRENCY, ge=1, description="Handlers running at once."
    )
    prefetch: int | None = Field(
        default=None, ge=1, description="Unacked deliveries per consumer; 2 x max_concurrency."
    )
    queue_prefix: str = Field(default="", description="Prepended to every Job.queue.")
    connection_name: str | None = Field(
        default=None, description="Shown in the RabbitMQ management UI."
    )
    queue_type: QueueType = Field(default="classic", description="classic or quorum.")
    delay_window_ms: int = Field(
        default=1000,
        ge=DelayPlan.MIN_WINDOW_MS,
        le=DelayPlan.MAX_WINDOW_MS,
        description="Longest a worker holds a delayed job before it is due.",
    )
    delay_prefetch: int = Field(
        default=1000, ge=1, description="Delayed jobs a worker may hold at once."
    )
    publish_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest perform() waits for a connection and the broker's confirm.",
    )
    heartbeat_s: int = Field(default=60, ge=0, description="AMQP heartbeat; 0 disables.")
    reconnect_interval_s: float = Field(default=1.0, gt=0, description="Wait between reconnects.")
    consumer_timeout_s: float | None = Field(
        default=1800.0,
        gt=0,
        description=(
            "The broker's consumer_timeout (RabbitMQ's default is 30 min); AMQP cannot read it, "
            "so say it here. start() warns about handler timeouts longer than this."
        ),
    )
    max_message_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES,
        ge=1,
        description=(
            "Largest job body (JSON) perform() sends and a worker decodes; larger "
            "deliveries are parked as too_large."
        ),
    )
    max_deliveries: int = Field(
        default=5,
        ge=1,
        description=(
            "Times a job may be handed out without finishing (its worker died) before it is "
            "parked with reason crashed."
        ),
    )
    delivery_limit: int = Field(
        default=DEFAULT_DELIVERY_LIMIT,
        ge=1,
        description=(
            "x-delivery-limit of quorum work, due and quarantine queues: past it RabbitMQ "
            "dead-letters a job into the failed queue (the broker's safety net)."
        ),
    )
    max_priority: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PRIORITY,
        description=(
            "Classic work queues are declared with x-max-priority set to this, so "
            "Job.priority orders them (docs/controls.md); None: no priority queues. "
            "RabbitMQ cannot add it to an existing queue."
        ),
    )
    partitions: int = Field(
        default=0,
        ge=0,
        le=MAX_PARTITIONS,
        description=(
            "Partition queues per job queue, for jobs with a partition_key (one at a time "
            "per key, in order); 0: none. Every publisher and worker must agree."
        ),
    )
    shutdown_timeout_s: float = Field(
        default=DEFAULT_STOP_TIMEOUT_S,
        ge=0,
        description="How long stop() waits for running handlers by default.",
    )
    result_ttl_s: float = Field(
        default=DEFAULT_RESULT_TTL_S,
        ge=1,
        allow_inf_nan=False,
        description=(
            "How long job results (handlers registered with result=True) and finished "
            "groups stay readable: the x-max-age of the results stream."
        ),
    )
    unique_for_s: float = Field(
        default=DEFAULT_UNIQUE_FOR_S,
        gt=0,
        le=MAX_UNIQUE_FOR_S,
        allow_inf_nan=False,
        description=(
            "How long a unique_key lock lasts at most (seconds from the enqueue) for jobs "
            "without their own unique_for_s; at most 30 days (docs/controls.md)."
        ),
    )
    results_max_bytes: int = Field(
        default=DEFAULT_RESULTS_MAX_BYTES,
        ge=1024 * 1024,
        description=(
            "The most the results stream holds on the broker (x-max-length-bytes): "
            "past it the oldest results go before their TTL."
        ),
    )
    cancel_ttl_s: float = Field(
        default=DEFAULT_CANCEL_TTL_S,
        ge=1,
        allow_inf_nan=False,
        description=(
            "How long a cancel (worker.cancel) holds: the x-max-age of the cancellations "
            "stream, and how long workers remember a cancelled id."
        ),
    )
    cancels_max_bytes: int = Field(
        default=DEFAULT_CANCELS_MAX_BYTES,
        ge=1024 * 1024,
        description=(
            "The most the cancellations stream holds on the broker (x-max-length-bytes): "
            "past it the oldest cancels go before cancel_ttl_s."
        ),
    )
    loop_stall_warn_s: float = Field(
        default=DEFAULT_LOOP_STALL_WARN_S,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Log a WARNING (naming the async handler) when the event loop is blocked this "
            "long; 0 disables. Keep it well below heartbeat_s."
        ),
    )

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> Self:
        """Settings for ``url``; other fields from ``overrides``, the environment, or defaults."""
        return cls(url=SecretStr(url), **overrides)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: SecretStr) -> SecretStr:
        urls = split_urls(value.get_secret_value())
        if not urls:
            raise ValueError("is empty")
        for number, url in enumerate(urls, 1):
            where = f"entry {number} of {len(urls)}: " if len(urls) > 1 else ""
            try:
                _check_one_url(url)
            except ValueError as exc:
                raise ValueError(f"{where}{exc}") from None
        first = urlsplit(urls[0])
        for number, url in enumerate(urls[1:], 2):
            parts = urlsplit(url)
            for what, mine, theirs in (
                ("scheme", parts.scheme, first.scheme),
                ("vhost", parts.path, first.path),
                ("credentials", (parts.username, parts.password), (first.username, first.password)),
                ("options (the query string)", parts.query, first.query),
            ):
                if mine != theirs:
                    # Name the entry by its place and host, never by its text: it holds a password.
                    raise ValueError(
                        f"entry {number} ({describe_url(url)}) names different {what} than "
                        "entry 1: every URL of the list must be a node of one cluster, with "
                        "the same vhost, credentials and options"
                    )
        return value

    @field_validator("queues", mode="before")
    @classmethod
    def _split_queues(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(q.strip() for q in value.split(",") if q.strip())
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return validate_name(value)

    @field_validator("queues")
    @classmethod
    def _check_queues(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one queue")
        for queue in value:
            validate_name(queue)
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _check_derived_names(self) -> Self:
        topology = self.topology
        for queue in self.queues:
            topology.failed_queue(queue)
            topology.due_queue(queue)
            topology.quarantine_queue(queue)
        return self

    @property
    def topology(self) -> Topology:
        """The names and arguments these settings imply."""
        return Topology(
            name=self.name,
            queue_prefix=self.queue_prefix,
            queue_type=self.queue_type,
            delay=DelayPlan(self.delay_window_ms),
            delivery_limit=self.delivery_limit,
            max_priority=self.max_priority,
        )

    @property
    def effective_prefetch(self) -> int:
        """``prefetch``, or twice ``max_concurrency`` so a free slot never waits on the network."""
        return self.prefetch or 2 * self.max_concurrency

    @property
    def urls(self) -> tuple[str, ...]:
        """The node URLs of ``url`` (one, or each of a comma-separated list); secrets."""
        return tuple(split_urls(self.url.get_secret_value()))

    @property
    def broker(self) -> str:
        """Where the broker is, for logs: scheme, host, port and vhost, never credentials."""
        return describe_url(self.url.get_secret_value())


def _check_one_url(url: str) -> None:
    """Raise ``ValueError`` saying what is wrong with one node URL, without echoing it."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        # Say what is wrong without echoing the URL, which may hold a password.
        raise ValueError(f"must start with amqp:// or amqps://, not {parts.scheme or '?'}://")
    if not parts.hostname:
        raise ValueError("has no host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError("has a malformed port") from None
    if "@" in parts.path or "@" in parts.query:
        # "amqp://user:pa/ss@host/" splits at the "/" and would dial "user": the
        # password (or vhost) holds a raw "@" or "/" that must be %-escaped.
        raise ValueError(
            "has an '@' after the host: %-escape '/' and '@' in the password and vhost (%2F, %40)"
        )


class WorkerOptions(TypedDict, total=False):
    """Keyword options of :class:`~amqp_worker.AMQPWorker`: every :class:`AMQPSettings` field but ``url``.

    A test keeps the two in step.
    """

    name: str
    queues: Sequence[str]
    max_concurrency: int
    prefetch: int | None
    queue_prefix: str
    connection_name: str | None
    queue_type: QueueType
    delay_window_ms: int
    delay_prefetch: int
    publish_timeout_s: float
    heartbeat_s: int
    reconnect_interval_s: float
    consumer_timeout_s: float | None
    max_message_bytes: int
    max_deliveries: int
    delivery_limit: int
    max_priority: int | None
    partitions: int
    shutdown_timeout_s: float
    result_ttl_s: float
    unique_for_s: float
    results_max_bytes: int
    cancel_ttl_s: float
    cancels_max_bytes: int
    loop_stall_warn_s: float


def build_settings(
    url: str | None, settings: AMQPSettings | None, options: WorkerOptions
) -> AMQPSettings:
    """Settings from ``url``, then ``options``, then ``settings``, then the environment.

    Raises :class:`~amqp_worker.errors.ConfigurationError` naming each bad field.
    """
    fields: dict[str, Any] = dict(settings) if settings is not None else {}
    fields.update(options)
    if url is not None:
        fields["url"] = SecretStr(url)
    try:
        return AMQPSettings(**fields)
    except ValidationError as exc:
        raise ConfigurationError(
            f"invalid AMQPWorker settings: {describe_validation_error(exc, 'settings')}"
        ) from None
