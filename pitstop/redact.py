"""Secrets never reach an output: the run's redactor, every encoded form of a secret, and log records.

A run's secrets are the values of the ``*_env`` variables its config names. :class:`Redactor` replaces
them, in every form a tool or serialiser can give them (:func:`encoded_forms`: JSON, URL, shell, libpq,
HTML, repr, base64 at any alignment, Unicode normalisations), in raw values *before* they are serialised
(:func:`redact_value`, used by the audit log; redacting JSON text instead missed a secret holding ``"``,
``\\`` or non-ASCII). Secrets shorter than ``MIN_SECRET`` (4) characters are refused before a run and
never redacted; encoded forms shorter than ``MIN_FORM`` (6) are not matched alone; an output cut inside
a secret keeps at most ``EDGE_MIN - 1`` (5) of its characters at the cut.

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
import re
import shlex
import threading
import unicodedata
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

if TYPE_CHECKING:
    from .config import EnvironmentConfig

MASK = "[REDACTED]"
MIN_SECRET = 4  # a secret shorter than this is refused before a run (input_guards) and never redacted
MIN_FRAGMENT = 8  # shorter URL parts (ports, "hook", "api") are not secrets on their own
MIN_FORM = 6  # an encoded form shorter than this is not matched on its own (too many false hits)
EDGE_MIN = 6  # a text cut inside a secret keeps at most EDGE_MIN - 1 of its characters at the cut

_secrets: set[str] = set()
_lock = threading.Lock()
_base_factory = logging.getLogRecordFactory()


def fragments(value: str) -> set[str]:
    """The value itself plus the parts that are secret on their own: URL credentials (as written and
    decoded), path segments and query values; the words of ``Bearer <token>``; each line of a
    multi-line value (a tool printing its last line shows only that part)."""
    out = {value}
    out.update(w for w in value.split() if len(w) >= MIN_FRAGMENT)
    out.update(line.strip() for line in value.splitlines() if len(line.strip()) >= MIN_SECRET)
    if "://" in value:
        try:
            u = urlsplit(value)
            password, username = u.password, u.username
        except ValueError:
            return {f for f in out if f}
        for part, least in ((password, MIN_SECRET), (username, MIN_FRAGMENT)):
            if part:
                out.update(x for x in (part, unquote(part)) if len(x) >= least)
        out.update(unquote(s) for s in u.path.split("/") if len(s) >= MIN_FRAGMENT)
        out.update(s for s in u.path.split("/") if len(s) >= MIN_FRAGMENT)
        out.update(v for _, v in parse_qsl(u.query) if len(v) >= MIN_FRAGMENT)
        out.update(v.split("=", 1)[-1] for v in u.query.split("&") if len(v.split("=", 1)[-1]) >= MIN_FRAGMENT)
        if u.scheme.lower() in ("mailto", "mailtos"):  # the addresses of an email URL are its recipients, which
            out -= _addresses(u, {username, password})  # the record of a delivery names: no secret of their own
    return {f for f in out if f}


_ADDRESS = re.compile(r"[^@\s/:,;]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def _addresses(u: Any, credentials: set[str | None]) -> set[str]:
    """The recipient and sender addresses of a ``mailto(s)://`` URL (path and ``to``/``cc``/``bcc``/``from``/
    ``reply``), except one that is also the account's user name or password."""
    values = [unquote(s) for s in u.path.split("/")]
    values += [v for k, v in parse_qsl(u.query) if k.lower() in ("to", "cc", "bcc", "from", "reply")]
    found = {a for v in values for a in re.split(r"[,;\s]+", v) if _ADDRESS.fullmatch(a)}
    return found - {c for c in credentials if c} - {unquote(c) for c in credentials if c}


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


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def encoded_forms(value: str) -> set[str]:
    """Every form in which ``value`` can reach an output: raw (and its NFC/NFD normalisations), JSON-escaped
    (ASCII and not, and JSON inside JSON), URL-encoded (quote with and without '/', quote_plus, lower-case
    hex), shell-quoted, libpq-conninfo-quoted, HTML-escaped, Python repr of str and of its UTF-8 bytes,
    base64 (standard and URL-safe, padded or not, at any byte alignment inside a longer stream)."""
    out = set()
    for v in {value, unicodedata.normalize("NFC", value), unicodedata.normalize("NFD", value)}:
        out.add(v)
        for ascii_only in (True, False):
            out.add(json.dumps(v, ensure_ascii=ascii_only)[1:-1])
            out.add(json.dumps(json.dumps(v, ensure_ascii=ascii_only))[3:-3])  # JSON inside JSON
        quoted = {quote(v, safe=""), quote(v), quote_plus(v)}
        out |= quoted | {_lower_hex(q) for q in quoted}
        out |= {html.escape(v), html.escape(v, False), repr(v)[1:-1], repr(v.encode())[2:-1], shlex.quote(v),
                v.replace("\\", "\\\\").replace("'", "\\'")}
        out |= _b64_forms(v.encode())
    return {f for f in out if len(f) >= MIN_FORM or f == value}


def secret_values(cfg: EnvironmentConfig) -> list[str]:
    """Values of every environment variable the config names as a secret (``*_env`` fields) that are long
    enough to be redacted (``MIN_SECRET``)."""
    names: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k.endswith("_env") and isinstance(v, str):
                    names.append(v)
                else:
                    walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(cfg.model_dump(by_alias=True))
    return [os.environ[n] for n in names if len(os.environ.get(n) or "") >= MIN_SECRET]


class Redactor:
    """Replaces a run's secrets, in every encoded form that can reach an output, with ``***``.

    Secrets shorter than ``MIN_SECRET`` are left alone (redacting "ab" would shred every output; runs refuse
    them). A text that starts with the end of a secret form, or ends with its beginning (an output cut at a
    fixed length inside a secret), has that part masked too when it is at least ``EDGE_MIN`` long."""

    def __init__(self, secrets: list[str], mask: str = "***"):
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) < MIN_SECRET:
                continue
            for f in fragments(secret) | {secret}:
                forms |= encoded_forms(f) | {f}
        self.mask = mask
        self.secrets = sorted(forms, key=len, reverse=True)
        self._heads = {f[:k] for f in self.secrets for k in range(EDGE_MIN, len(f))}
        self._tails = {f[-k:] for f in self.secrets for k in range(EDGE_MIN, len(f))}
        self._longest = max((len(f) for f in self.secrets), default=0)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, self.mask)
        if self._tails:
            for k in range(min(self._longest, len(text)), EDGE_MIN - 1, -1):
                if text[:k] in self._tails:
                    text = self.mask + text[k:]
                    break
            for k in range(min(self._longest, len(text)), EDGE_MIN - 1, -1):
                if text[-k:] in self._heads:
                    text = text[:-k] + self.mask
                    break
        return text


def secret_names(cfg: EnvironmentConfig) -> list[str]:
    from .config.guards import secret_slots

    return [var for _, var in secret_slots(cfg)]


def install(cfg: EnvironmentConfig) -> None:
    """Register the values of this config's secrets (read from the environment) for redaction."""
    values = set()
    for var in secret_names(cfg):
        if len(v := os.environ.get(var) or "") >= MIN_SECRET:
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
