"""Structured logs: one JSON object per line on stderr for every `scimjit*` logger.

Fields every line has: `ts` (RFC 3339 UTC), `level`, `logger`, `msg`. Whatever a caller passes in
`extra={...}` (or, cheaper, as one dict in `extra={"fields": {...}}`) is added as top-level fields (the request log adds `request_id`, `method`, `route`, `status`,
`duration_ms`, `token`; the outbox worker adds `event_id`, `application`, ...). Messages and extra values
are masked with `scimjit.redact`, so a token pasted into an error message never reaches the log.

`configure()` is called once per server process (each uvicorn worker builds its own app, see
`scimjit.http.app.app_from_env`), by `scimjit worker` and `scimjit sweep`.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

import orjson

from scimjit.redact import mask, scrub

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Kept cheap: it runs once per request. Values of extra fields are scrubbed by type, fastest cases
    first (the request log's are strings and numbers)."""

    def format(self, record: logging.LogRecord) -> str:
        attributes = record.__dict__
        fields = attributes.get("fields")
        if (
            type(fields) is not dict
        ):  # not the cheap `extra={"fields": {...}}`: other `extra=` keys are fields
            fields = {key: attributes[key] for key in attributes.keys() - _STANDARD if key[0] != "_"}
        line = _line(record.created, record.levelname, record.name, record.getMessage(), fields)
        if record.exc_info:
            line["exc"] = mask(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


def _line(
    created: float, level: str, logger: str, msg: str, fields: Mapping[str, Any], clean: bool = True
) -> dict[str, Any]:
    """A line's object: `ts`, `level`, `logger`, `msg`, then the fields, masked unless the caller says they
    are clean already (for `JsonFormatter` and `info_fields` alike). msecs as LogRecord computes them: whole
    milliseconds, never rounded up to 1000."""
    line: dict[str, Any] = {
        "ts": f"{_second(int(created))}.{int((created - int(created)) * 1000):03d}Z",
        "level": level.lower(),
        "logger": logger,
        "msg": mask(msg),
    }
    if clean:
        for key, value in fields.items():
            line[key] = _clean(value)
    else:
        line.update(fields)
    return line


@functools.lru_cache(maxsize=4)
def _second(epoch_second: int) -> str:
    """RFC 3339 UTC up to the second: the same for every line of that second, so formatted once."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_second))


def _clean(value: Any) -> Any:
    kind = type(value)
    if isinstance(value, str):  # a subclass too: the request id is a `store.audit.RequestId`
        return mask(value)
    if value is None or kind is int or kind is float or kind is bool:
        return value
    return scrub(value)


_HANDLER_FLAG = "_scimjit_handler"


def info_fields(logger: logging.Logger, msg: str, fields: Mapping[str, Any], *, clean: bool = True) -> None:
    """`logger.info(msg, extra={"fields": fields})`, for a line written on every request (the request log).
    `clean=False`: the caller has masked every text a client could choose (`redact.mask`) and the rest are
    numbers, None and texts of its own, so the direct path writes them as they are (the logging module's path
    masks them again, which changes nothing: a masked text has nothing left to mask).

    When the line would go to `configure`'s JSON handler and nowhere else (no handler or filter of its own on
    `logger`, none on the `scimjit` logger but that handler, which filters nothing), it is formatted by
    `_line` and written to that handler's stream under its lock, as `StreamHandler.emit` would: the same
    bytes without a LogRecord and the logging module's dispatch, which cost a fifth of a `GET /Users/{id}`
    (in-process: 228 -> 180 µs with the log off). Any other set-up (a handler an operator or a test added, a
    filter, another formatter) takes the logging module's own path, as does a failed write, so its error
    handling is logging's."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _sole_handler(logger)
    if handler is not None:
        line = orjson.dumps(_line(time.time(), "INFO", logger.name, msg, fields, clean), default=str).decode()
        handler.acquire()
        try:
            stream = handler.stream
            stream.write(line + handler.terminator)
            stream.flush()
            return
        except Exception:  # noqa: S110 - written again below, where logging reports the failure
            pass
        finally:
            handler.release()
    # makeRecord + handle is what `info` does, without its look up the stack for the caller's file and line
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 0, msg, (), None, extra={"fields": fields}
    )
    logger.handle(record)


def _sole_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """`configure`'s handler, when it is the only place an INFO record of `logger` (a `scimjit.*` child)
    would be handled; None otherwise."""
    parent = logger.parent
    if (
        logger.handlers
        or logger.filters
        or not logger.propagate
        or parent is None
        or parent.name != "scimjit"
    ):
        return None
    handlers = parent.handlers
    if len(handlers) != 1 or parent.filters or parent.propagate:
        return None
    handler = handlers[0]
    if (
        not getattr(handler, _HANDLER_FLAG, False)
        or handler.filters
        or handler.level > logging.INFO
        or type(handler.formatter) is not JsonFormatter
    ):
        return None
    return handler  # type: ignore[return-value]


def configure(level: str = "info", *, stream: Any = None) -> None:
    """Send `scimjit*` loggers to `stream` (stderr) as JSON lines. Idempotent: calling again replaces the
    handler rather than duplicating lines."""
    logger = logging.getLogger("scimjit")
    for handler in list(logger.handlers):
        if getattr(handler, _HANDLER_FLAG, False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_FLAG, True)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    # The JSON lines never show a record's thread, process or task names: do not look them up for every
    # record (a quarter of a LogRecord's cost, on every request's log line).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):  # Python 3.12+
        logging.logAsyncioTasks = False
