"""Queues declared by an older version: which 406 replies are accepted. No broker."""

from __future__ import annotations

import aiormq.exceptions as amqp_errors

from amqp_worker._rabbitmq.declarations import legacy_arguments, upgrade_policy
from amqp_worker._rabbitmq.topology import Topology

WANTED = Topology(name="app", queue_type="quorum").work_queue_arguments("emails")


def reply(arg: str, current: str) -> BaseException:
    return amqp_errors.ChannelPreconditionFailed(
        f"PRECONDITION_FAILED - inequivalent arg '{arg}' for queue 'emails' in vhost '/': "
        f"received the value '1000' of type 'signedint' but current is {current}"
    )


def test_a_quorum_queue_without_the_new_arguments_is_used_as_it_is() -> None:
    assert legacy_arguments(WANTED, reply("x-delivery-limit", "none")) == {"x-queue-type": "quorum"}
    assert legacy_arguments(WANTED, reply("x-overflow", "none")) == {"x-queue-type": "quorum"}


def test_other_conflicts_stay_errors() -> None:
    # A different limit than ours was set on purpose: not ours to override silently.
    assert legacy_arguments(WANTED, reply("x-delivery-limit", "the value '5'")) is None
    assert legacy_arguments(WANTED, reply("x-queue-type", "none")) is None
    classic = Topology(name="app").work_queue_arguments("emails")
    assert legacy_arguments(classic, reply("x-delivery-limit", "none")) is None


def test_the_policy_adds_what_the_queue_lacks() -> None:
    command = upgrade_policy("emails", WANTED)
    assert command.startswith("rabbitmqctl set_policy --apply-to quorum_queues amqp-worker-emails")
    assert "'^emails$'" in command
    assert '"delivery-limit":1000' in command
    assert '"dead-letter-routing-key":"app.failed.emails"' in command
    assert '"dead-letter-strategy":"at-least-once"' in command
