"""Structured logs: one JSON object per line on stderr for every `scimjit*` logger.

Fields every line has: `ts` (RFC 3339 UTC), `level`, `logger`, `msg`. Whatever a caller passes in
`extra={...}` is added as top-level fields (the request log adds `request_id`, `method`, `route`, `status`,
`duration_ms`, `token`; the outbox worker adds `event_id`, `application`, ...). Messages and extra values
are masked with `scimjit.redact`, so a token pasted into an error message never reaches the log.

`configure()` is called once per server process (each uvicorn worker builds its own app, see
`scimjit.http.app.app_from_env`), by `scimjit worker` and `scimjit sweep`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from scimjit.redact import mask, scrub

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = scrub(value)
        if record.exc_info:
            line["exc"] = mask(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


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
