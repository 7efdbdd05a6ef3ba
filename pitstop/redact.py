"""Redact secret values from every log record of this process, whichever library emits it.

Third-party DEBUG logs carry secrets pitstop never prints itself: botocore logs the signed
``Authorization`` header (the access key id), urllib3 logs request lines (an apprise webhook's token
sits in its URL path). Once a run's secrets are known (the ``*_env`` slots of its config), a log
record factory replaces any of them, and the sensitive parts of secret URLs and header values, with
``[REDACTED]`` before any handler (console, file, Prefect API) sees the record.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:
    from .config import EnvironmentConfig

MASK = "[REDACTED]"
MIN_FRAGMENT = 8  # shorter URL parts (ports, "hook", "api") are not secrets on their own

_secrets: set[str] = set()
_lock = threading.Lock()
_base_factory = logging.getLogRecordFactory()


def fragments(value: str) -> set[str]:
    """The value itself plus the parts that are secret on their own (URL credentials, path
    segments and query values; the token of ``Bearer <token>``)."""
    out = {value}
    out.update(w for w in value.split() if len(w) >= MIN_FRAGMENT)
    if "://" in value:
        try:
            u = urlsplit(value)
        except ValueError:
            return out
        out.update(p for p in (u.password, u.username) if p and len(p) >= MIN_FRAGMENT)
        out.update(unquote(s) for s in u.path.split("/") if len(s) >= MIN_FRAGMENT)
        out.update(s for s in u.path.split("/") if len(s) >= MIN_FRAGMENT)
        out.update(v for _, v in parse_qsl(u.query) if len(v) >= MIN_FRAGMENT)
    return {f for f in out if f}


def secret_names(cfg: EnvironmentConfig) -> list[str]:
    from .input_guards import secret_slots

    return [var for _, var in secret_slots(cfg)]


def install(cfg: EnvironmentConfig) -> None:
    """Register the values of this config's secrets (read from the environment) for redaction."""
    values = set()
    for var in secret_names(cfg):
        if v := os.environ.get(var):
            values |= fragments(v)
    if not values:
        return
    with _lock:
        _secrets.update(values)
        if logging.getLogRecordFactory() is not _factory:
            logging.setLogRecordFactory(_factory)


def redact(text: str) -> str:
    for s in sorted(_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, MASK)
    return text


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    if not _secrets:
        return record
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record is the handler's problem, not ours
        return record
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    return record
