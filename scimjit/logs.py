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
from typing import Any

import orjson

from scimjit.redact import mask, scrub

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Kept cheap: it runs once per request. Values of extra fields are scrubbed by type, fastest cases
    first (the request log's are strings and numbers)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": f"{_second(int(record.created))}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        attributes = record.__dict__
        fields = attributes.get("fields")
        if type(fields) is dict:  # the fast path: `extra={"fields": {...}}` (the request log uses it)
            for key, value in fields.items():
                line[key] = _clean(value)
        else:  # other `extra=` keys are logged as fields too
            for key in attributes.keys() - _STANDARD:
                if key[0] != "_":
                    line[key] = _clean(attributes[key])
        if record.exc_info:
            line["exc"] = mask(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


@functools.lru_cache(maxsize=4)
def _second(epoch_second: int) -> str:
    """RFC 3339 UTC up to the second: the same for every line of that second, so formatted once."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_second))


def _clean(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return mask(value)
    if value is None or kind is int or kind is float or kind is bool:
        return value
    return scrub(value)


_HANDLER_FLAG = "_scimjit_handler"


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
