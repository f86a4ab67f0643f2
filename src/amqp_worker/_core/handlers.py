"""Handlers: inspecting them at ``register`` time and calling them per job.

A handler is ``def handler(args)`` or ``async def handler(args)``.

- If its first parameter is annotated with a pydantic ``BaseModel`` subclass,
  each job's args are validated into that model before the call; a failure is
  :class:`~amqp_worker.errors.InvalidArgs`, a permanent failure of that job.
  Otherwise the handler gets a fresh ``dict`` of the args.
- If it declares a ``job`` parameter, it also receives the :class:`Job`
  envelope (id, attempt, ...) as that keyword argument.
- If it declares a ``cancelled`` parameter, it receives a
  :class:`threading.Event` that is set once its job is cancelled
  (``worker.cancel``): how a sync handler, which cannot be interrupted, learns of it.
- Registered with ``result=True``, its return value is kept as the job's
  result, serialised by its return annotation when it has one.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, PydanticSchemaGenerationError, TypeAdapter, ValidationError

from amqp_worker.errors import InvalidArgs, InvalidHandler, JobTimeout

from .controls import check_max_age
from .handler_threads import HandlerThreads
from .job import Job, validate_name
from .limits import Limits
from .retry import RetryPolicy

__all__ = ["Handler", "HandlerSpec", "check_timeout"]

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


def _result_adapter(name: str, signature: inspect.Signature) -> TypeAdapter[Any] | None:
    """A serialiser for the handler's return annotation; None if it has none (or ``Any``)."""
    annotation = signature.return_annotation
    if annotation is signature.empty or annotation is Any:
        return None
    try:
        return TypeAdapter(annotation)
    except PydanticSchemaGenerationError as exc:
        raise InvalidHandler(
            f"handler {name!r} keeps its result, but its return annotation {annotation!r} "
            f"cannot be serialised to JSON: {exc}"
        ) from None


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler and what ``register`` learned about its signature."""

    name: str
    func: Callable[..., Any]
    is_async: bool
    args_model: type[BaseModel] | None
    wants_job: bool
    wants_cancelled: bool = False
    """Whether it declares ``cancelled``: it gets its attempt's cancel signal (a threading.Event)."""
    retry: RetryPolicy | None = None
    """This handler's retry policy; None uses the worker's."""
    timeout_s: float | None = None
    """This handler's timeout; None uses the worker's, ``math.inf`` means none."""
    result: bool = False
    """Whether the worker keeps this handler's return value as the job's result."""
    result_adapter: TypeAdapter[Any] | None = None
    """Serialises the return value by the handler's return annotation (None: none given)."""
    max_age_s: float | None = None
    """Each attempt must start within this many seconds of being due, or it expires."""
    limits: Limits | None = None
    """Its fleet-wide rate and concurrency limits; None for none."""

    @classmethod
    def inspect(
        cls,
        name: str,
        func: object,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = None,
        result: bool = False,
        max_age_s: float | None = None,
        limits: Limits | None = None,
    ) -> HandlerSpec:
        """Check ``name`` and ``func``; raise :class:`InvalidHandler` if either is unusable."""
        if not isinstance(result, bool):
            raise InvalidHandler(f"result must be True or False, got {result!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidHandler(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        try:
            check_timeout(timeout_s)
            max_age_s = check_max_age(max_age_s)
        except (TypeError, ValueError) as exc:
            raise InvalidHandler(f"handler {name!r}: {exc}") from None
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
            and p.name not in ("job", "cancelled")
            and p.default is p.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if required:
            names = ", ".join(p.name for p in required)
            raise InvalidHandler(
                f"handler {name!r} has required parameters the worker cannot fill: {names}"
            )
        wants_job = "job" in signature.parameters and first.name != "job"
        wants_cancelled = "cancelled" in signature.parameters and first.name != "cancelled"
        return cls(
            name=name,
            func=func,
            is_async=_is_async(func),
            args_model=_args_model(first),
            wants_job=wants_job,
            wants_cancelled=wants_cancelled,
            retry=retry,
            timeout_s=timeout_s,
            result=result,
            result_adapter=_result_adapter(name, signature) if result else None,
            max_age_s=max_age_s,
            limits=limits,
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

    async def run(
        self,
        job: Job,
        args: Any,
        threads: HandlerThreads | None,
        timeout_s: float | None,
        cancelled: threading.Event | None = None,
    ) -> tuple[Any, asyncio.Future[Any] | None]:
        """Run the handler once, within ``timeout_s`` (None: no limit): (its return value, None).

        Raises what the handler raised, or :class:`JobTimeout`. Sync handlers
        run on ``threads`` (the loop's default executor if None), never on the loop. A thread cannot be interrupted:
        when a sync handler times out, this returns ``(None, its still-running future)``,
        and the caller keeps the job's slot until that future is done. ``cancelled``
        is the attempt's cancel signal, for a handler that declares that parameter.
        """
        kwargs: dict[str, Any] = {"job": job} if self.wants_job else {}
        if self.wants_cancelled:
            kwargs["cancelled"] = cancelled if cancelled is not None else threading.Event()
        if self.is_async:
            if timeout_s is None:
                return await self.func(args, **kwargs), None
            try:
                async with asyncio.timeout(timeout_s) as window:
                    value = await self.func(args, **kwargs)
            except TimeoutError:
                if window.expired():
                    raise self._timed_out(timeout_s) from None
                raise
            return value, None
        # Copy the context so contextvars (tracing, logging) reach the thread.
        context = contextvars.copy_context()
        call = functools.partial(context.run, self.func, args, **kwargs)
        if threads is not None:
            future = threads.run(call)
        else:
            future = asyncio.get_running_loop().run_in_executor(None, call)
        if timeout_s is None:
            return await future, None
        done, _ = await asyncio.wait({future}, timeout=timeout_s)
        if not done:
            return None, future  # still running: the caller reports the timeout and waits
        return future.result(), None  # re-raises the handler's exception, if any

    def _timed_out(self, timeout_s: float | None) -> JobTimeout:
        return JobTimeout(f"handler {self.name!r} did not finish within {timeout_s}s")

    def timeout_error(self, timeout_s: float | None) -> JobTimeout:
        """The error that reports a sync handler still running after ``timeout_s``."""
        return self._timed_out(timeout_s)


def check_timeout(timeout_s: float | None) -> float | None:
    """Validate a ``timeout_s`` option: None, a positive number, or ``math.inf``."""
    if timeout_s is None:
        return None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
        raise TypeError(f"timeout_s must be a number of seconds, got {timeout_s!r}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    return float(timeout_s)
