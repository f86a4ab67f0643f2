"""Handlers: inspecting them at ``register`` time and calling them per job.

A handler is ``def handler(args)`` or ``async def handler(args)``.

- If its first parameter is annotated with a pydantic ``BaseModel`` subclass,
  each job's args are validated into that model before the call; a failure is
  :class:`~amqp_worker.errors.InvalidArgs`, a permanent failure of that job.
  Otherwise the handler gets a fresh ``dict`` of the args.
- If it declares a ``job`` parameter, it also receives the :class:`Job`
  envelope (id, attempt, ...) as that keyword argument.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import InvalidArgs, InvalidHandler
from .job import Job, validate_name

__all__ = ["Handler", "HandlerSpec"]

#: What ``register`` accepts: a callable taking the args (a dict or a model).
Handler = Callable[..., Any]


def _is_async(func: Callable[..., Any]) -> bool:
    # Covers plain coroutine functions, functools.partial of them, and objects
    # whose __call__ is a coroutine function.
    target: Any = func
    while isinstance(target, functools.partial):
        target = target.func
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - we want the method, not callable()
    )


def _args_model(first: inspect.Parameter) -> type[BaseModel] | None:
    annotation = first.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler and what ``register`` learned about its signature."""

    name: str
    func: Callable[..., Any]
    is_async: bool
    args_model: type[BaseModel] | None
    wants_job: bool

    @classmethod
    def inspect(cls, name: str, func: object) -> HandlerSpec:
        """Check ``name`` and ``func``; raise :class:`InvalidHandler` if either is unusable."""
        if not isinstance(name, str):
            raise InvalidHandler(f"handler name must be a str, got {type(name).__name__}")
        try:
            validate_name(name)
        except ValueError as exc:
            raise InvalidHandler(f"handler name {name!r} {exc}") from None
        if not callable(func):
            raise InvalidHandler(f"handler {name!r} must be callable, got {type(func).__name__}")
        try:
            # eval_str resolves `from __future__ import annotations` strings, so a
            # typed-args model is found however the handler's module is written.
            signature = inspect.signature(func, eval_str=True)
        except (TypeError, ValueError) as exc:
            raise InvalidHandler(f"cannot read the signature of handler {name!r}: {exc}") from exc
        except Exception as exc:
            raise InvalidHandler(
                f"cannot resolve the annotations of handler {name!r} ({exc}); "
                "define the args model at module level"
            ) from exc
        params = list(signature.parameters.values())
        positional = [
            p
            for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if not positional:
            raise InvalidHandler(
                f"handler {name!r} must accept the job's args as its first parameter"
            )
        first = positional[0]
        required = [
            p
            for p in params
            if p is not first
            and p.name != "job"
            and p.default is p.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if required:
            names = ", ".join(p.name for p in required)
            raise InvalidHandler(
                f"handler {name!r} has required parameters the worker cannot fill: {names}"
            )
        wants_job = "job" in signature.parameters and first.name != "job"
        return cls(
            name=name,
            func=func,
            is_async=_is_async(func),
            args_model=_args_model(first),
            wants_job=wants_job,
        )

    def parse_args(self, job: Job) -> Any:
        """Return what the handler receives: its model, or a fresh dict of the args."""
        if self.args_model is None:
            return dict(job.args)
        try:
            return self.args_model.model_validate(job.args)
        except ValidationError as exc:
            raise InvalidArgs(
                f"args of job {job.id} do not fit {self.args_model.__name__} "
                f"of handler {self.name!r}: {exc}"
            ) from exc

    def call(self, job: Job, args: Any, executor: Executor | None) -> Awaitable[Any]:
        """Start one call of the handler; sync handlers run on ``executor``, never the loop."""
        kwargs: dict[str, Any] = {"job": job} if self.wants_job else {}
        if self.is_async:
            result: Awaitable[Any] = self.func(args, **kwargs)
            return result
        # Copy the context so contextvars (tracing, logging) reach the thread.
        context = contextvars.copy_context()
        call = functools.partial(context.run, self.func, args, **kwargs)
        return asyncio.get_running_loop().run_in_executor(executor, call)
