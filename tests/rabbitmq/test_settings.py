"""AMQPSettings: validation, environment, secrecy; the lists that must match its fields."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from amqp_worker._rabbitmq.settings import AMQPSettings, WorkerOptions
from amqp_worker.cli import loading
from amqp_worker.cli.common import Target
from amqp_worker.cli.run import run as run_command
from amqp_worker.errors import describe_validation_error


def test_defaults() -> None:
    s = AMQPSettings()
    assert s.name == "amqp_worker"
    assert s.queues == ("default",)
    assert s.max_concurrency == 25
    assert s.effective_prefetch == 50
    assert s.queue_type == "classic"


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_WORKER_URL", "amqps://u:p@rabbit.internal/prod")
    monkeypatch.setenv("AMQP_WORKER_QUEUES", "emails, reports")
    monkeypatch.setenv("AMQP_WORKER_MAX_CONCURRENCY", "4")
    s = AMQPSettings()
    assert s.queues == ("emails", "reports")
    assert s.max_concurrency == 4
    assert s.broker == "amqps://rabbit.internal:5671 vhost=prod"
    # explicit arguments win over the environment
    assert AMQPSettings(max_concurrency=7).max_concurrency == 7


def test_the_loop_stall_threshold_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert AMQPSettings().loop_stall_warn_s == 1.0
    monkeypatch.setenv("AMQP_WORKER_LOOP_STALL_WARN_S", "0.25")
    assert AMQPSettings().loop_stall_warn_s == 0.25
    monkeypatch.setenv("AMQP_WORKER_LOOP_STALL_WARN_S", "0")  # disabled
    assert AMQPSettings().loop_stall_warn_s == 0


def test_from_url() -> None:
    s = AMQPSettings.from_url("amqp://guest:guest@127.0.0.1:5673/%2F", prefetch=3)
    assert s.broker == "amqp://127.0.0.1:5673 vhost=/"
    assert s.effective_prefetch == 3


def test_settings_are_immutable() -> None:
    with pytest.raises(ValidationError):
        AMQPSettings().name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2@host/",
        "hunter2",
        "amqp://user:hunter2@/",
        "amqp://h:99999999/",
        "amqp://guest:1/hunter2@127.0.0.1:1/",  # a raw "/" in the password
        "amqp://guest:hunter2@127.0.0.1/v@host",
    ],
)
def test_bad_urls_are_refused_without_echoing_the_password(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        AMQPSettings(url=SecretStr(url))
    assert "hunter2" not in str(info.value)


def test_the_url_never_shows_in_a_repr() -> None:
    s = AMQPSettings.from_url("amqp://user:hunter2@host/")
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s)
    assert "hunter2" not in s.broker


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("queues", ()),
        ("queues", ("ok", "")),
        ("name", ""),
        ("max_concurrency", 0),
        ("delay_window_ms", 50),
        ("delay_window_ms", 5000),
        ("queue_type", "stream"),
        ("queue_prefix", "p" * 250),
        ("loop_stall_warn_s", -1),
        ("loop_stall_warn_s", float("nan")),
        ("nonsense", 1),
    ],
)
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        AMQPSettings(**{field: value})
    # The one line a ConfigurationError carries: "field: message", or for a check
    # across fields (a derived queue name too long), a message that names it.
    line = describe_validation_error(info.value, "settings")
    assert line.startswith(f"{field}: ") or (
        line.startswith("settings: ") and field in line.removeprefix("settings: ")
    ), line


def test_worker_options_are_the_settings_but_url() -> None:
    """WorkerOptions repeats AMQPSettings' fields by hand (a TypedDict cannot be derived)."""
    options = WorkerOptions.__required_keys__ | WorkerOptions.__optional_keys__
    assert options == set(AMQPSettings.model_fields) - {"url"}


def test_run_overrides_only_settings_with_its_own_options() -> None:
    """The AMQP-only options of ``run`` name settings, and options ``run`` has."""
    assert set(loading._OPTION_NAMES) <= set(AMQPSettings.model_fields)
    flags = {flag for param in run_command.params for flag in param.opts}
    assert set(loading._OPTION_NAMES.values()) <= flags
    # run passes its Target's options (no --timeout there) as overrides too.
    assert set(Target("amqp://h/", "n", "p").options()) <= set(loading._OPTION_NAMES)


CLUSTER = [
    "amqp://app:s3cr3t-pw@rabbit1:5672/prod",
    "amqp://app:s3cr3t-pw@rabbit2:5673/prod",
    "amqp://app:s3cr3t-pw@rabbit3/prod",
]


def test_a_comma_separated_url_is_a_list_of_cluster_nodes() -> None:
    settings = AMQPSettings(url=SecretStr(",".join(CLUSTER)))
    assert settings.urls == tuple(CLUSTER)
    assert settings.broker == (
        "amqp://rabbit1:5672 vhost=prod, amqp://rabbit2:5673 vhost=prod, "
        "amqp://rabbit3:5672 vhost=prod"
    )
    assert "s3cr3t" not in repr(settings)
    spaced = AMQPSettings(url=SecretStr(", ".join(CLUSTER)))
    assert spaced.urls == tuple(CLUSTER)


@pytest.mark.parametrize(
    ("entry", "what"),
    [
        ("amqp://app:s3cr3t-pw@rabbit2:5672/staging", "vhost"),
        ("amqp://other:s3cr3t-pw@rabbit2:5672/prod", "credentials"),
        ("amqp://app:other-s3cr3t@rabbit2:5672/prod", "credentials"),
        ("amqps://app:s3cr3t-pw@rabbit2:5671/prod", "scheme"),
        ("amqp://app:s3cr3t-pw@rabbit2:5672/prod?heartbeat=5", "options"),
    ],
)
def test_every_node_must_share_vhost_credentials_and_options(entry: str, what: str) -> None:
    url = ",".join([CLUSTER[0], entry, CLUSTER[2]])
    with pytest.raises(ValidationError) as info:
        AMQPSettings(url=SecretStr(url))
    message = str(info.value)
    assert "entry 2 (amqp" in message
    assert "rabbit2" in message
    assert f"different {what}" in message
    assert "s3cr3t" not in message


def test_a_bad_entry_of_a_list_is_named_by_its_place() -> None:
    url = ",".join([CLUSTER[0], "amqp://app:s3cr3t-pw@rabbit2:notaport/prod"])
    with pytest.raises(ValidationError) as info:
        AMQPSettings(url=SecretStr(url))
    assert "entry 2 of 2: has a malformed port" in str(info.value)
    assert "s3cr3t" not in str(info.value)


def test_the_list_comes_from_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_WORKER_URL", ",".join(CLUSTER))
    assert AMQPSettings().urls == tuple(CLUSTER)


def test_the_sync_publisher_takes_the_list_and_never_shows_a_password() -> None:
    from amqp_worker.sync import Publisher

    publisher = Publisher(",".join(CLUSTER))
    assert publisher.settings.urls == tuple(CLUSTER)
    assert "s3cr3t" not in repr(publisher)
    publisher.close()
