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
    use_json = uses_json(fmt)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter(redactor) if use_json else TextFormatter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log would duplicate ours, without tier, target or attempts.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("uvicorn.error").propagate = True


def uses_json(fmt: str) -> bool:
    """JSON lines unless text was asked for, or ``auto`` on a terminal."""
    return fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())


FLUSH_S = 0.1
MAX_BUFFERED = 512


class AccessLog:
    """One line per request.

    In JSON mode the line is serialised straight into a buffer that ``run``
    flushes ten times a second, skipping the logging machinery (record, lock,
    formatter, a write per line), which the profile showed at ~25 µs a request.
    Only the request id is client-controlled, so only it passes the redactor.
    In text mode (a terminal) lines go through logging as usual.
    """

    def __init__(self, enabled: bool, json_lines: bool = False, redactor: Redactor | None = None) -> None:
        self._logger = logging.getLogger(ACCESS)
        self._enabled = enabled
        self._json = json_lines
        self._redactor = redactor or Redactor()
        self._buffer: list[bytes] = []
        self.stopping = False

    def emit(self, **fields: Any) -> None:
        if not self.on:
            return
        if not self._json:
            self._logger.info("request", extra={"fields": fields})
            return
        rid = fields.get("request_id")
        if isinstance(rid, str):
            fields["request_id"] = self._redactor.text(rid)
        line = {"ts": round(time.time(), 3), "level": "info", "logger": ACCESS, "msg": "request", **fields}
        self._buffer.append(orjson.dumps(line))
        if len(self._buffer) >= MAX_BUFFERED:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        lines, self._buffer = self._buffer, []
        try:
            sys.stderr.write(b"\n".join(lines).decode() + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr closed (shutdown): access lines are best effort, never worth a crash

    async def run(self) -> None:
        """Flush the buffer every ``FLUSH_S`` until stopped (a daemon task)."""
        import asyncio

        try:
            while not self.stopping:
                await asyncio.sleep(FLUSH_S)
                self.flush()
        finally:
            self.flush()

    @property
    def on(self) -> bool:
        return self._enabled and self._logger.isEnabledFor(logging.INFO)
