"""Logging to stderr in a journald-friendly one-line format (or JSON lines).

Under systemd (``$JOURNAL_STREAM`` set) each line starts with an sd-daemon priority
prefix such as ``<3>`` so journald records the level and adds its own timestamp; on a
terminal the line carries the time instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from ccwatch.redact import RedactingFilter

# sd-daemon(3) priorities for Python's levels.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    def __init__(self, under_journald: bool) -> None:
        super().__init__()
        self.under_journald = under_journald

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\n", " | ")
        if record.exc_info and record.levelno >= logging.ERROR:
            message += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        if self.under_journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{record.name}: {message}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        return f"{stamp} {record.levelname:<7} {record.name}: {message}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.levelno >= logging.ERROR:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "info", log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            JournalFormatter(under_journald=bool(os.environ.get("JOURNAL_STREAM")))
        )
    handler.addFilter(RedactingFilter())  # secrets never reach a log line (seed 002)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party chatter stays out of the operator's log unless asked for.
    for noisy in ("aiohttp.access", "apscheduler", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
