"""Redact secret values from every log record of this process, whichever library emits it.

Third-party DEBUG logs carry secrets pitstop never prints itself: botocore logs the signed
``Authorization`` header (the access key id), urllib3 logs request lines (an apprise webhook's token
sits in its URL path). Once a run's secrets are known (the ``*_env`` slots of its config), a log
record factory replaces any of them, and the sensitive parts of secret URLs and header values, with
``[REDACTED]`` before any handler (console, file, Prefect API) sees the record.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import shlex
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

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


MIN_FORM = 6  # an encoded form shorter than this is not matched on its own (too many false hits)


def _b64_forms(raw: bytes) -> set[str]:
    """Base64 of ``raw`` wherever it sits in a longer stream: each of the 3 byte alignments gives a run
    of characters that depends on the secret's bytes alone (the partial groups at either end do not)."""
    out = set()
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        whole = enc(raw).decode()
        out |= {whole, whole.rstrip("=")}
        for offset, skip in ((0, 0), (1, 2), (2, 3)):
            data = b"\0" * offset + raw
            full = len(data) // 3 * 3
            out.add(enc(data[:full]).decode()[skip:])
    return out


def encoded_forms(value: str) -> set[str]:
    """Every form in which ``value`` can reach an output: raw, JSON-escaped (ASCII and not), URL-encoded,
    shell-quoted, HTML-escaped, Python repr, base64 (standard and URL-safe, any alignment)."""
    out = {value}
    for ascii_only in (True, False):
        out.add(json.dumps(value, ensure_ascii=ascii_only)[1:-1])
        out.add(json.dumps(json.dumps(value, ensure_ascii=ascii_only))[3:-3])  # JSON inside JSON
    out |= {quote(value, safe=""), quote(value), quote_plus(value), html.escape(value), html.escape(value, False),
            repr(value)[1:-1], shlex.quote(value)}
    out |= _b64_forms(value.encode())
    return {f for f in out if len(f) >= MIN_FORM}


def secret_names(cfg: EnvironmentConfig) -> list[str]:
    from .input_guards import secret_slots

    return [var for _, var in secret_slots(cfg)]


def install(cfg: EnvironmentConfig) -> None:
    """Register the values of this config's secrets (read from the environment) for redaction."""
    values = set()
    for var in secret_names(cfg):
        if v := os.environ.get(var):
            for f in fragments(v):
                values |= encoded_forms(f) | {f}
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


def redact_value(value: Any, scrub: Any) -> Any:
    """``value`` (a JSON-like structure) with ``scrub`` applied to every string in it, keys included:
    secrets are removed from the raw values before anything is serialised."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {(scrub(k) if isinstance(k, str) else k): redact_value(v, scrub) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, scrub) for v in value]
    return value


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
