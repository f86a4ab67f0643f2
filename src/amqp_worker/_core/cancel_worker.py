"""The cancel half of every worker: ``worker.cancel(...)`` and the state the start gate reads.

:class:`CancelWorker` is a base of :class:`~amqp_worker._core.running.JobRunner`
(so of every worker). It keeps this worker's :class:`~amqp_worker._core.cancels.CancelBook`
(the ids cancelled lately, the attempts running now) and leaves to the
transport how a cancel reaches the rest of the fleet (:meth:`~CancelWorker._send_cancels`):
RabbitMQ's cancellations stream, or nothing more in memory.
"""

from __future__ import annotations

import abc

from .cancels import CancelBook, check_job_ids

__all__ = ["CancelWorker"]


class CancelWorker(abc.ABC):
    """Cancels jobs by id, here at once and through the transport everywhere else."""

    #: Made by BaseWorker.__init__ (with the worker's cancel_ttl_s).
    _cancels: CancelBook

    async def cancel(self, job_id: str, *more_ids: str) -> None:
        """Cancel the jobs with these ids, wherever they are; see :meth:`amqp_worker.Worker.cancel`.

        (The semantics are written once, on the protocol in ``interfaces.py``.)
        """
        ids = check_job_ids((job_id, *more_ids))
        # Here first: a running attempt of this process is interrupted at once, and a
        # job parked by _send_cancels (in memory) finds its id in the book.
        for one in ids:
            self._cancels.add(one)
        await self._send_cancels(ids)

    @abc.abstractmethod
    async def _send_cancels(self, job_ids: list[str]) -> None:
        """Make the cancels of ``job_ids`` reach every worker, now and after restarts.

        Return once they are durable (on RabbitMQ: confirmed); raise if not.
        """
