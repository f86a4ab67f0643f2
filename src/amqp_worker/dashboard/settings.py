"""``DashboardSettings``: how the dashboard is served and who may change things.

The broker side (URL, name, queues) is the same :class:`~amqp_worker.AMQPSettings`
every other command uses; this holds only what is the dashboard's own. Values
come from arguments, then ``AMQP_WORKER_DASHBOARD_*`` environment variables,
then defaults. The password of ``auth`` and any in ``management_url`` are
secrets: never in a repr, a page or a log line.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from amqp_worker.errors import ConfigurationError, describe_validation_error

__all__ = ["DashboardSettings", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DashboardSettings(BaseSettings):
    """The dashboard's own settings; immutable once built."""

    model_config = SettingsConfigDict(
        env_prefix="AMQP_WORKER_DASHBOARD_",
        frozen=True,
        extra="forbid",
        validate_default=True,
        # A bad auth value is a password: errors never echo what was given.
        hide_input_in_errors=True,
    )

    host: str = Field(default="127.0.0.1", description="Address to bind; loopback by default.")
    port: int = Field(default=8181, ge=0, le=65535, description="TCP port to bind.")
    auth: SecretStr | None = Field(
        default=None,
        description="user:password for HTTP basic auth; required when host is not loopback.",
    )
    read_only: bool = Field(default=False, description="Show everything, change nothing.")
    management_url: SecretStr | None = Field(
        default=None,
        description=(
            "RabbitMQ management HTTP API, e.g. http://127.0.0.1:15672/; for consumer details "
            "and rates. Credentials in it, else the AMQP URL's, are used."
        ),
    )
    refresh_s: float = Field(default=2.0, gt=0, description="How often pages refresh.")
    page_size: int = Field(default=50, ge=1, le=1000, description="Failed jobs per page.")

    @field_validator("auth")
    @classmethod
    def _check_auth(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        user, sep, password = value.get_secret_value().partition(":")
        if not sep or not user or not password:
            # Never echo the value: it is a password.
            raise ValueError("must be user:password, both non-empty")
        return value

    @field_validator("management_url")
    @classmethod
    def _check_management_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _auth_off_loopback(self) -> Self:
        if self.auth is None and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host} is reachable from other machines: set auth "
                "(--auth user:password or AMQP_WORKER_DASHBOARD_AUTH) to bind it"
            )
        return self

    @classmethod
    def build(cls, **given: Any) -> Self:
        """Settings from the values given (None: not given), the environment and defaults.

        Raises :class:`~amqp_worker.errors.ConfigurationError` naming each bad field.
        """
        try:
            return cls(**{key: value for key, value in given.items() if value is not None})
        except ValidationError as exc:
            raise ConfigurationError(describe_validation_error(exc, "dashboard settings")) from None

    @property
    def credentials(self) -> tuple[str, str] | None:
        """``(user, password)`` of ``auth``, or None when the dashboard is open."""
        if self.auth is None:
            return None
        user, _, password = self.auth.get_secret_value().partition(":")
        return user, password
