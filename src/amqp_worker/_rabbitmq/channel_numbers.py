"""Channel numbers that go round, so a number is never reused at once.

Fix: aiormq frees a channel's number as soon as the broker's ``Channel.Close``
arrives, before its own ``Channel.CloseOk`` is written, and gives a new
channel the highest free number. A channel opened at that moment (an errand
channel after a 404, a stream reader after a cancel) could take the number
of the one just closed, and its ``Channel.Open`` could reach RabbitMQ before
the ``CloseOk``: RabbitMQ then closes the whole connection (504
CHANNEL_ERROR "second 'channel.open' seen" on 3.10; on 4.x a ``channel.close``
where a ``channel.open`` was expected), and every job in flight on it comes
back and runs again. Seen in CI's workflow runs. Numbers handed out here go
round ``1..channel_max``: a number comes back only after every other one
has been used, long after its close was written.
"""

from __future__ import annotations

import weakref
from collections.abc import Container

from aio_pika.abc import AbstractChannel

__all__ = ["DEFAULT_CHANNEL_MAX", "ChannelNumbers"]

#: RabbitMQ's default ``channel_max``, used when the connection did not say.
DEFAULT_CHANNEL_MAX = 2047


class ChannelNumbers:
    """The next channel number of one worker's connection (see the module docstring)."""

    def __init__(self) -> None:
        self._last = 0
        # Robust channels keep their number across a reconnect: while one waits to be
        # reopened, its number is not free on the new connection yet.
        self._robust: weakref.WeakSet[AbstractChannel] = weakref.WeakSet()

    def keep(self, channel: AbstractChannel) -> None:
        """Remember ``channel`` (robust): its number stays taken until it is closed for good."""
        self._robust.add(channel)

    def next(self, in_use: Container[int], channel_max: int | None) -> int | None:
        """A number neither in ``in_use`` nor kept by a robust channel; None if all are taken."""
        highest = channel_max or DEFAULT_CHANNEL_MAX
        kept = {channel.number for channel in self._robust if not channel.is_closed}
        for _ in range(highest):
            self._last = self._last % highest + 1
            if self._last not in in_use and self._last not in kept:
                return self._last
        return None
