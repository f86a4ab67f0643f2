"""Typed enqueue: a handler's name and args model as one reference that mypy checks.

``@worker.handler("send_email")`` on ``async def send_email(args: Email)``
returns a :class:`TypedHandler`: still callable like the function, and with
``perform(args)``, ``perform_in(args, delay)`` and ``perform_at(args, when)``
whose ``args`` is typed as ``Email``. A publish-only service, which must not
import the consumer's code, declares the same reference from the name and the
model alone, ``JobRef("send_email", Email, queue="emails")``, and performs it
through a worker: ``await send_email.perform(Email(...), worker=publisher)``,
or ``send_email.bind(publisher).perform(Email(...))``.

The args travel as the model's JSON-mode dump, so the handler validates back
exactly what was validated on the way out. ``perform(Job(...))`` stays for
untyped use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from pydantic import BaseModel

from .defaults import DEFAULT_QUEUE
from .job import Job, validate_name
from .results import JobHandle

__all__ = ["BoundJobRef", "HandlerDecorator", "JobRef", "Performer", "TypedHandler"]

ArgsT = TypeVar("ArgsT", bound=BaseModel)
P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


class Performer(Protocol):
    """What a typed reference performs through: any :class:`~amqp_worker.Worker` is one.

    Only the three enqueue calls, so this module needs nothing of the Worker
    protocol (which imports it).
    """

    async def perform(self, job: Job) -> JobHandle: ...

    async def perform_at(self, job: Job, when: datetime) -> JobHandle: ...

    async def perform_in(self, job: Job, delay: timedelta | float) -> JobHandle: ...


class JobRef(Generic[ArgsT]):
    """A handler by name with its args model: enough to enqueue its jobs, type-checked.

    Needs neither the handler's code nor its dependencies, only the model.
    """

    __slots__ = ("args_model", "handler", "queue")

    def __init__(
        self, handler: str, args_model: type[ArgsT], *, queue: str = DEFAULT_QUEUE
    ) -> None:
        if not (isinstance(args_model, type) and issubclass(args_model, BaseModel)):
            raise TypeError(f"args_model must be a pydantic model class, not {args_model!r}")
        self.handler = validate_name(handler)
        self.args_model = args_model
        self.queue = validate_name(queue)

    def __repr__(self) -> str:
        return f"<JobRef {self.handler}({self.args_model.__name__}) queue={self.queue}>"

    def job(self, args: ArgsT, *, queue: str | None = None) -> Job:
        """The :class:`Job` that runs the handler with ``args`` on ``queue`` (default: the ref's).

        Raises ``TypeError`` when ``args`` is not an instance of the model (for
        callers mypy does not check).
        """
        if not isinstance(args, self.args_model):
            raise TypeError(
                f"{self.handler} takes {self.args_model.__name__} args, not {type(args).__name__}"
            )
        return Job(
            queue=queue or self.queue,
            handler=self.handler,
            args=args.model_dump(mode="json"),
        )

    def bind(self, worker: Performer) -> BoundJobRef[ArgsT]:
        """This reference, performing through ``worker``."""
        return BoundJobRef(self, worker)

    async def perform(
        self, args: ArgsT, *, worker: Performer, queue: str | None = None
    ) -> JobHandle:
        """Enqueue the handler with ``args`` through ``worker``; return the job id."""
        return await worker.perform(self.job(args, queue=queue))

    async def perform_in(
        self,
        args: ArgsT,
        delay: timedelta | float,
        *,
        worker: Performer,
        queue: str | None = None,
    ) -> JobHandle:
        """Enqueue it to run ``delay`` after now (seconds if a number); return the job id."""
        return await worker.perform_in(self.job(args, queue=queue), delay)

    async def perform_at(
        self, args: ArgsT, when: datetime, *, worker: Performer, queue: str | None = None
    ) -> JobHandle:
        """Enqueue it to run at ``when`` (timezone-aware); return the job id."""
        return await worker.perform_at(self.job(args, queue=queue), when)


class BoundJobRef(Generic[ArgsT]):
    """A :class:`JobRef` with the worker it performs through."""

    __slots__ = ("ref", "worker")

    def __init__(self, ref: JobRef[ArgsT], worker: Performer) -> None:
        self.ref = ref
        self.worker = worker

    def __repr__(self) -> str:
        return (
            f"<BoundJobRef {self.ref.handler}({self.ref.args_model.__name__}) via {self.worker!r}>"
        )

    def job(self, args: ArgsT, *, queue: str | None = None) -> Job:
        """:meth:`JobRef.job`: the :class:`Job` to put in a chain or a group, type-checked."""
        return self.ref.job(args, queue=queue)

    async def perform(self, args: ArgsT, *, queue: str | None = None) -> JobHandle:
        """:meth:`JobRef.perform` through the bound worker."""
        return await self.ref.perform(args, worker=self.worker, queue=queue)

    async def perform_in(
        self, args: ArgsT, delay: timedelta | float, *, queue: str | None = None
    ) -> JobHandle:
        """:meth:`JobRef.perform_in` through the bound worker."""
        return await self.ref.perform_in(args, delay, worker=self.worker, queue=queue)

    async def perform_at(
        self, args: ArgsT, when: datetime, *, queue: str | None = None
    ) -> JobHandle:
        """:meth:`JobRef.perform_at` through the bound worker."""
        return await self.ref.perform_at(args, when, worker=self.worker, queue=queue)


class TypedHandler(BoundJobRef[ArgsT], Generic[ArgsT, P, R]):
    """A registered handler with a model-typed first parameter, as ``@worker.handler`` returns it.

    Calling it calls the function (tests call handlers directly); ``perform*``
    enqueue it on the worker it was registered on.
    """

    __slots__ = ("__dict__", "func")

    def __init__(
        self, func: Callable[Concatenate[ArgsT, P], R], ref: JobRef[ArgsT], worker: Performer
    ) -> None:
        super().__init__(ref, worker)
        self.func = func
        functools.update_wrapper(self, func)  # __name__, __doc__, __wrapped__ for inspect

    def __repr__(self) -> str:
        return f"<TypedHandler {self.ref.handler}({self.ref.args_model.__name__})>"

    def __call__(self, args: ArgsT, /, *more: P.args, **options: P.kwargs) -> R:
        return self.func(args, *more, **options)


class HandlerDecorator:
    """What ``worker.handler(name)`` returns: see :meth:`amqp_worker.Worker.handler`."""

    __slots__ = ("_name", "_queue", "_register", "_worker")

    def __init__(
        self,
        worker: Performer,
        name: str,
        queue: str,
        register: Callable[[Callable[..., Any]], type[BaseModel] | None],
    ) -> None:
        self._worker = worker
        self._name = name
        self._queue = queue
        self._register = register

    @overload
    def __call__(self, func: Callable[Concatenate[ArgsT, P], R]) -> TypedHandler[ArgsT, P, R]: ...

    @overload
    def __call__(self, func: F) -> F: ...

    def __call__(self, func: Callable[..., Any]) -> Any:
        model = self._register(func)
        if model is None:
            return func
        return TypedHandler(func, JobRef(self._name, model, queue=self._queue), self._worker)


def unwrap(handler: Any) -> Any:
    """The function behind a :class:`TypedHandler` (registering one again registers it)."""
    return handler.func if isinstance(handler, TypedHandler) else handler
