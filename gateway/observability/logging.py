"""Logging: JSON lines in production, readable text on a terminal.

Access lines are built only when the level lets them through, so a quiet
gateway pays nothing for them. Prompts, completions and keys are never passed
to a logger in the first place.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from gateway.redaction import Redactor

ACCESS = "gateway.access"


class JSONFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return self.redactor.text(orjson.dumps(line).decode())


class TextFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = getattr(record, "fields", None)
        extra = " ".join(f"{k}={v}" for k, v in fields.items()) if fields else ""
        text = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()} {extra}".rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return self.redactor.text(text)


def configure(level: str, fmt: str, redactor: Redactor | None = None) -> None:
    """Set up the root logger once at start-up (the CLI owns the process).

    Every line passes the redactor last, so no secret the config holds, nor
    anything shaped like a key, reaches the log, tracebacks included.
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter(redactor) if use_json else TextFormatter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log would duplicate ours, without tier, target or attempts.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("uvicorn.error").propagate = True


class AccessLog:
    def __init__(self, enabled: bool) -> None:
        self._logger = logging.getLogger(ACCESS)
        self._enabled = enabled

    def emit(self, **fields: Any) -> None:
        if self._enabled and self._logger.isEnabledFor(logging.INFO):
            self._logger.info("request", extra={"fields": fields})

    @property
    def on(self) -> bool:
        return self._enabled and self._logger.isEnabledFor(logging.INFO)
