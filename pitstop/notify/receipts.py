"""What a receiving server said when it took a notification: the proof an auditor can corroborate.

* **email** — pitstop speaks SMTP itself (apprise parses the ``mailto(s)://`` URL and builds the MIME
  message): it sets the ``Message-ID`` header and keeps the server's reply to ``DATA`` ("250 2.0.0 Ok:
  queued as 4F2A1C"), which the mail server's own log names too;
* **webhooks and chat services** (any apprise plugin speaking HTTP) — the HTTP status of each request,
  read from urllib3's request record (its status only: the URL, which holds tokens, is never kept);
* **file** — the file's path and the SHA-256 of the line appended.
"""

from __future__ import annotations

import hashlib
import logging
import re
import smtplib
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import make_msgid
from typing import Any

from pydantic import BaseModel

from ..errors import ConnectorError


class Receipt(BaseModel):
    """The receiving side's answer to one delivery (no secret: the URL is never part of it)."""

    message_id: str | None = None  # email: the Message-ID header(s) pitstop set
    server_reply: str | None = None  # email: the SMTP reply to DATA, one per message
    http_status: list[int] | None = None  # webhooks/chat: the status of each HTTP request
    path: str | None = None  # file channel
    sha256: str | None = None  # file channel: SHA-256 of the line appended



# -- HTTP: the status urllib3 records for each request ----------------------------------------------------
_REQUEST = re.compile(r'^\w+://\S+ "\S+ .* HTTP/[\d.]+" (\d{3}) ')


class _Statuses(logging.Filter):
    """Takes the status of this thread's requests off urllib3's DEBUG records, and lets through only the
    records the logger would have passed anyway (so lowering its level for a send shows nothing more)."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level
        self.thread = threading.get_ident()
        self.statuses: list[int] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if threading.get_ident() == self.thread:
            args = record.args
            if isinstance(args, tuple) and len(args) == 8 and isinstance(args[6], int) and \
                    str(record.msg).startswith('%s://%s:%s "'):
                self.statuses.append(args[6])
            elif args is None and (m := _REQUEST.match(str(record.msg))):  # already formatted (and redacted)
                self.statuses.append(int(m.group(1)))
        return record.levelno >= self.level


_http_lock = threading.Lock()


@contextmanager
def http_statuses() -> Iterator[list[int]]:
    """The HTTP statuses of the requests made by this thread inside the block."""
    logger = logging.getLogger("urllib3.connectionpool")
    with _http_lock:  # one capture at a time changes the logger's level
        before = logger.level
        capture = _Statuses(logger.getEffectiveLevel())
        logger.addFilter(capture)
        logger.setLevel(logging.DEBUG)
    try:
        yield capture.statuses
    finally:
        with _http_lock:
            logger.removeFilter(capture)
            if not any(isinstance(f, _Statuses) for f in logger.filters):
                logger.setLevel(before)


# -- SMTP ---------------------------------------------------------------------------------------------------
_MSGID = re.compile(r"^Message-ID: .*$", re.MULTILINE | re.IGNORECASE)


def _with_message_id(raw: str, message_id: str) -> str:
    head, sep, body = raw.partition("\n\n")
    head = _MSGID.sub(lambda _: f"Message-ID: {message_id}", head, count=1)
    if message_id not in head:
        head += f"\nMessage-ID: {message_id}"
    return head + sep + body


def send_email(plugin: Any, title: str, body: str, attach: object, headers: dict[str, str], channel: str,
               notice_id: str | None) -> Receipt:
    """Send the message of an apprise email ``plugin`` over SMTP; the receipt holds the Message-ID header
    set here and the server's reply to DATA. Raises ``ConnectorError`` naming the server (never the URL)."""
    from apprise import NotifyFormat

    host, port = plugin.smtp_host, plugin.port
    where = f"SMTP server {host}:{port}"
    context = ssl.create_default_context()
    if not plugin.verify_certificate:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    mode = str(plugin.secure_mode)
    domain = (plugin.from_addr[1].rpartition("@")[2] or host or "pitstop.invalid").strip()
    ids, replies = [], []
    try:
        smtp = (smtplib.SMTP_SSL(host, port, timeout=plugin.socket_connect_timeout, context=context)
                if mode == "ssl" else smtplib.SMTP(host, port, timeout=plugin.socket_connect_timeout))
    except (OSError, smtplib.SMTPException) as exc:
        raise ConnectorError(f"notification channel {channel!r}: cannot reach the {where} ({type(exc).__name__}: "
                             f"{exc}); check the mail URL's host and port and that the server is up") from None
    try:
        with smtp:
            if mode == "starttls":
                smtp.starttls(context=context)
            if plugin.user and plugin.password:
                smtp.login(plugin.user, plugin.password)
            all_headers = {"X-Application": plugin.app_id, **plugin.headers, **headers}
            for em in type(plugin).prepare_emails(
                    subject=title, body=body, notify_format=NotifyFormat.TEXT, from_addr=plugin.from_addr,
                    to=plugin.targets, cc=plugin.cc, bcc=plugin.bcc, reply_to=plugin.reply_to,
                    smtp_host=plugin.smtp_host, attach=attach, headers=all_headers, names=plugin.names):
                idstring = hashlib.sha256((notice_id or title).encode()).hexdigest()[:12]
                message_id = make_msgid(idstring=f"pitstop.{idstring}", domain=domain)
                smtp.ehlo_or_helo_if_needed()
                code, resp = smtp.mail(plugin.from_addr[1])
                if code != 250:
                    raise smtplib.SMTPSenderRefused(code, resp, plugin.from_addr[1])
                for rcpt in em.to_addrs:
                    code, resp = smtp.rcpt(rcpt)
                    if code not in (250, 251):
                        raise smtplib.SMTPRecipientsRefused({rcpt: (code, resp)})
                code, resp = smtp.data(_with_message_id(em.body, message_id))
                if code != 250:
                    raise smtplib.SMTPDataError(code, resp)
                ids.append(message_id)
                replies.append(f"{code} {resp.decode(errors='replace')}".strip())
    except (OSError, smtplib.SMTPException) as exc:
        raise ConnectorError(f"notification channel {channel!r}: the {where} did not take the message "
                             f"({type(exc).__name__}: {exc})" + (f"; sent before it: {', '.join(ids)}" if ids else ""))\
            from None
    return Receipt(message_id=", ".join(ids), server_reply="; ".join(replies))


def file_receipt(path: str, line: str) -> Receipt:
    return Receipt(path=path, sha256=hashlib.sha256(line.encode()).hexdigest())
