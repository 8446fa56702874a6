"""Logs that never carry credentials, in a structured (JSON lines) form.

Our own code logs token ids and prefixes only; this filter is the second line of defence
for what libraries log (a request line with ``?token=``, a header dump, an exception
message quoting a bearer token). It rewrites the record's message once, before any
handler formats it, so every handler it is installed on writes the redacted text.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from tidings.auth import TOKEN_PREFIX

REDACTED = "[redacted]"

_PATTERNS = [
    # Authorization / Proxy-Authorization / Cookie headers, as text or as a dict repr.
    re.compile(
        r"(?i)((?:proxy-)?authorization|cookie|set-cookie|x-api-key)(['\"]?\s*[:=,]\s*['\"]?)"
        r"[^'\"\r\n,}]+"
    ),
    # Bearer/Basic credentials wherever they appear.
    re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+"),
    # Our tokens, even without their header.
    re.compile(rf"(){re.escape(TOKEN_PREFIX)}[A-Za-z0-9_-]+()"),
    # password=…, token=…, secret=… in query strings, forms and reprs.
    re.compile(
        r"(?i)\b(password|passwd|token|access_token|api_key|secret|auth_token)"
        r"(['\"]?\s*[:=]\s*['\"]?)[^\s&'\",}]+"
    ),
]

# Attributes every LogRecord has; anything else was passed with ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return text


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactingFilter(logging.Filter):
    """Replaces credentials in a record's message and ``extra`` strings by ``[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logged as it is, never raised here
            return True
        if redact(message) != message:
            # Redact the parts, keeping the arguments' shape: formatters such as uvicorn's
            # access log unpack ``record.args`` themselves.
            if isinstance(record.msg, str):
                record.msg = redact(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(_redact_value(a) for a in record.args)
            elif isinstance(record.args, dict):
                record.args = {k: _redact_value(v) for k, v in record.args.items()}
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["error"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


_FILTER = RedactingFilter()
SERVER_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "tidings")


def install_redaction(logger_names: Iterable[str] = SERVER_LOGGERS) -> None:
    """Put the filter on every handler of these loggers (a logger's own filters do not see
    records propagated from its children; its handlers do)."""
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


def json_logging(level: int = logging.INFO) -> logging.Handler:
    """Structured, redacted logs on stderr for ``tidings serve``; returns the handler."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_FILTER)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
