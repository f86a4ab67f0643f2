"""Logging for the daemon: a plain one-liner per record, or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["EXTRA_FIELDS", "JsonFormatter", "configure", "emit", "log_format", "quiet_dial_errors"]

LogFormat = Literal["text", "json"]

#: ``extra`` fields amqp-worker attaches to job log records. JSON lines carry these, and any
#: other ``extra`` field a record has, when set.
EXTRA_FIELDS = ("job_id", "handler", "queue", "attempt", "outcome", "duration_s", "reason")

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_format: LogFormat | None = None


def log_format() -> LogFormat | None:
    """The format :func:`configure` set up, or None if it was not called."""
    return _format


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message, the job fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field, value in record.__dict__.items():
            if field not in _STANDARD and not field.startswith("_") and value is not None:
                entry.setdefault(field, value)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["traceback"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


def _not_a_dial_error(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("error when creating transport")


def quiet_dial_errors() -> None:
    """Drop aiormq's ERROR record for each failed connection attempt.

    amqp-worker retries and reports the outcome once (``cannot connect ...``,
    ``connection ... lost; reconnecting``), so these would only repeat it,
    once per attempt.
    """
    dial_logger = logging.getLogger("aiormq.connection")
    if _not_a_dial_error not in dial_logger.filters:
        dial_logger.addFilter(_not_a_dial_error)


class _ChildTag(logging.Filter):
    """Adds ``child`` (the supervisor's slot number) to every record of a child process."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.child = self.index
        record.pid = record.process
        return True


def configure(level: str, fmt: LogFormat, *, child: int | None = None) -> None:
    """Send every log record at ``level`` or above to stderr, in ``fmt``.

    In a child process of ``run --processes`` (``child`` is its slot), every
    line says which child and pid wrote it: ``[child 1 pid 4242]`` in text,
    ``child`` (and the JSON line's own fields) in JSON.
    """
    global _format
    handler = logging.StreamHandler(sys.stderr)
    text = TEXT_FORMAT
    if child is not None:
        handler.addFilter(_ChildTag(child))
        text = TEXT_FORMAT.replace("%(name)s", "[child %(child)s pid %(process)d] %(name)s")
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aio-pika and aiormq are chatty at INFO about reconnects amqp-worker reports itself.
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    _format = fmt


def emit(message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Write ``message`` to stderr whatever the log level: plain, or as a JSON line."""
    if _format == "json":
        entry: dict[str, Any] = {
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": logging.getLevelName(level),
            "logger": "amqp_worker.cli",
            "message": message,
            **fields,
        }
        line = json.dumps(entry, default=str, ensure_ascii=False)
    else:
        line = message
    print(line, file=sys.stderr, flush=True)
