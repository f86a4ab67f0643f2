"""docker-compose.yml cannot run here (no Docker engine), so check what can be checked without it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker.cli.loading import load_worker

ROOT = Path(__file__).parents[2]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_the_worker_runs_the_example_daemon_with_metrics_and_health() -> None:
    services = compose()["services"]
    assert set(services) >= {"rabbitmq", "worker"}
    worker = services["worker"]
    assert worker["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    words = shlex.split(shlex.split(worker["command"])[-1])
    run = words[words.index("run") :]
    target = run[1]
    assert load_worker(target).handlers  # the module:attr exists and has handlers
    assert run[run.index("--metrics-port") + 1] == "9100"
    assert run[run.index("--health-port") + 1] == "8080"
    assert {"9100:9100", "8080:8080"} <= set(worker["ports"])


def test_the_worker_environment_is_valid_settings() -> None:
    env = compose()["services"]["worker"]["environment"]
    fields = {key.removeprefix("AMQP_WORKER_").lower(): value for key, value in env.items()}
    settings = AMQPSettings(**{k: v for k, v in fields.items() if k in AMQPSettings.model_fields})
    assert settings.broker == "amqp://rabbitmq:5672 vhost=/"
    assert settings.queues == ("emails",)
