"""Notification channels behind one interface.

``console`` prints to the terminal, ``file`` appends JSON lines (the demo's stand-in for a chat
room or a mailing list), ``apprise`` sends to any apprise URL — email (``mailtos://``), Slack,
Microsoft Teams, Discord, PagerDuty, Opsgenie, JSON/form webhooks. The URL is a secret: it is read
from an environment variable (``url_env``) or a Prefect Secret block (``secret_block``) at send
time, is never logged, and every error message leaving a channel is scrubbed of it. A Secret block is read
by the ``read_secret`` its caller hands in (the CLI and the flows pass the Prefect adapter's): this
module never imports Prefect.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import BaseModel, Field

from ..config import ChannelConfig, EnvironmentConfig
from ..console import safe_console
from ..errors import ConfigError, ConnectorError
from ..fsmodes import private_dir, private_opener
from .receipts import Receipt, file_receipt, http_statuses, send_email

EMAIL_SCHEMES = ("mailto", "mailtos")
SecretReader = Callable[[str], str]  # a Prefect Secret block's name -> its value


class Attachment(BaseModel):
    name: str
    mimetype: str
    content: bytes


class Message(BaseModel):
    event: str
    run_id: str
    environment: str
    severity: str = "info"  # info | warning | failure | success
    subject: str
    body: str
    audience: str = "ops"
    notice_id: str | None = Field(None, description="idempotency key; receivers can de-duplicate on it")
    data: dict[str, object] = Field(default_factory=dict)
    attachments: list[Attachment] = Field(default_factory=list)


class Channel(abc.ABC):
    def __init__(self, name: str, cfg: ChannelConfig):
        self.name = name
        self.cfg = cfg

    @property
    def is_email(self) -> bool:
        return False

    @property
    def style(self) -> str:
        return self.cfg.style or ("full" if self.is_email or self.cfg.kind == "file" else "short")

    @property
    def wants_ics(self) -> bool:
        return self.is_email if self.cfg.attach_ics is None else self.cfg.attach_ics

    @abc.abstractmethod
    def send(self, message: Message) -> Receipt | None:
        """Deliver ``message``; the receiving side's answer (``None``: nothing to corroborate)."""

    def recipients(self) -> str:
        """Who receives this channel's messages, as an auditor can corroborate it (no secret: the caller
        redacts, and only the non-secret parts of a URL are named)."""
        return f"{self.cfg.kind} channel {self.name}"


class ConsoleChannel(Channel):
    console = safe_console(stderr=True)  # stdout stays clean for --json; a closed pipe never stops a run
    STYLE = {"info": "cyan", "warning": "yellow", "failure": "bold red", "success": "bold green"}

    def send(self, message: Message) -> Receipt | None:
        from rich.markup import escape

        style = self.STYLE.get(message.severity, "cyan")
        self.console.print(f"  [dim]notify[/dim] [{style}]{escape(message.subject)}[/{style}]")
        return None


class FileChannel(Channel):
    def __init__(self, name: str, cfg: ChannelConfig, path: Path):
        super().__init__(name, cfg)
        self.path = path

    def recipients(self) -> str:
        return f"file {self.path}"

    def send(self, message: Message) -> Receipt:
        doc = message.model_dump(exclude={"attachments"})
        doc["attachments"] = [{"name": a.name, "mimetype": a.mimetype, "size": len(a.content),
                               "sha256": hashlib.sha256(a.content).hexdigest()} for a in message.attachments]
        if not self.path.parent.exists():  # an existing directory is the operator's: left as it is
            private_dir(self.path.parent)
        line = json.dumps(doc, default=str) + "\n"
        with open(self.path, "a", encoding="utf-8", opener=private_opener) as fh:  # 0600, never through a link
            fh.write(line)
        return file_receipt(str(self.path), line)


def url_secrets(url: str) -> list[str]:
    """The parts of an apprise URL that must never be shown: the URL, password, tokens in the path."""
    out = [url]
    try:
        parts = urlsplit(url)
    except ValueError:
        return out
    if parts.password:
        out += [parts.password, unquote(parts.password)]
    for seg in parts.path.split("/") + [v for _, v in parse_qsl(parts.query)] + [parts.netloc]:
        if len(seg) >= 12:
            out.append(seg)
    return [s for s in out if len(s) >= 4]


class _Scrub(logging.Filter):
    """Scrubs secrets out of apprise's log records before any handler sees them."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.scrub(record.getMessage()), None
        return True


@contextmanager
def _scrubbed_apprise_logs(secrets: list[str]) -> Iterator[_Scrub]:
    logger = logging.getLogger("apprise")
    scrub = _Scrub(secrets)
    logger.addFilter(scrub)
    try:
        yield scrub
    finally:
        logger.removeFilter(scrub)


class AppriseChannel(Channel):
    def __init__(self, name: str, cfg: ChannelConfig, resolve_url: Callable[[], str] | None = None,
                 read_secret: SecretReader | None = None):
        super().__init__(name, cfg)
        self._resolve = resolve_url
        self._read_secret = read_secret
        self._url: str | None = None

    def recipients(self) -> str:
        """``email to a@x, b@y (cc/bcc c@z) via SMTP smtp.example.com:587`` (every address the server is given);
        ``json via hooks.example.com`` for other services (their paths and queries hold tokens)."""
        from urllib.parse import urlsplit

        try:
            url = self.url()
            u = urlsplit(url)
        except (ConfigError, ValueError):
            return f"apprise channel {self.name}"
        if u.scheme.lower() not in EMAIL_SCHEMES:
            return f"{u.scheme} via {u.hostname or '?'}"
        try:
            import apprise

            with _scrubbed_apprise_logs(url_secrets(url)):
                plugin = apprise.Apprise.instantiate(url)
            to = [t[1] for t in getattr(plugin, "targets", [])]
            cc = sorted(getattr(plugin, "cc", ())) + sorted(getattr(plugin, "bcc", ()))
            where = f"{getattr(plugin, 'smtp_host', u.hostname)}:{getattr(plugin, 'port', u.port)}"
        except Exception:  # noqa: BLE001 - not a URL apprise takes: the delivery fails and says so
            return f"email via {u.hostname or '?'}"
        return f"email to {', '.join(to) or '?'}" + (f" (cc/bcc {', '.join(cc)})" if cc else "") + f" via SMTP {where}"

    def url(self) -> str:
        """The secret URL, resolved on first use (env var, then Prefect Secret block)."""
        if self._url is None:
            self._url = self._resolve() if self._resolve else resolve_secret_url(self.name, self.cfg, self._read_secret)
        return self._url

    @property
    def is_email(self) -> bool:
        scheme_of = self.cfg.url_env and os.environ.get(self.cfg.url_env, "")
        if not scheme_of and self.cfg.secret_block:
            try:
                scheme_of = self.url()
            except ConfigError:
                return False
        return (scheme_of or "").split("://", 1)[0].lower() in EMAIL_SCHEMES

    def send(self, message: Message) -> Receipt:
        import apprise

        url = self.url()
        with _scrubbed_apprise_logs(url_secrets(url)) as scrub, apprise.LogCapture(level=logging.WARNING) as logs:
            plugin = apprise.Apprise.instantiate(url)
            if plugin is None:
                raise ConfigError(f"notification channel {self.name!r}: the configured URL is not a valid apprise URL")
            extra = {"X-Pitstop-Notice-Id": message.notice_id} if message.notice_id else {}
            with tempfile.TemporaryDirectory(prefix="pitstop-attach-") as tmp:
                attach = self._attachments(message, Path(tmp))
                if url.split("://", 1)[0].lower() in EMAIL_SCHEMES and hasattr(type(plugin), "prepare_emails"):
                    # SMTP spoken here: the Message-ID we set and the reply to DATA are the receipt
                    return send_email(plugin, message.subject, message.body, attach, extra, self.name,
                                      message.notice_id)
                headers = getattr(plugin, "headers", None)  # webhook plugins take extra headers
                if isinstance(headers, dict):
                    headers.update(extra)
                ap = apprise.Apprise()
                ap.add(plugin)
                with http_statuses() as statuses:
                    ok = ap.notify(title=message.subject, body=message.body,
                                   body_format=apprise.NotifyFormat.TEXT, attach=attach)
            if not ok:
                tail = scrub.scrub(logs.getvalue().strip().splitlines()[-1]) if logs.getvalue().strip() else ""
                raise ConnectorError(f"notification channel {self.name!r}: delivery failed" + (f" ({tail})"
                                                                                             if tail else ""))
            return Receipt(http_status=list(statuses) or None)

    @staticmethod
    def _attachments(message: Message, tmp: Path) -> object:
        if not message.attachments:
            return None
        import apprise

        attach = apprise.AppriseAttachment()
        for a in message.attachments:
            p = tmp / a.name
            p.write_bytes(a.content)
            attach.add(str(p))
        return attach


def resolve_secret_url(name: str, cfg: ChannelConfig, read_secret: SecretReader | None = None) -> str:
    """The channel's apprise URL: from ``$url_env``, else the Prefect Secret block read by ``read_secret``."""
    if cfg.url_env:
        url = os.environ.get(cfg.url_env)
        if url:
            return url
        if not cfg.secret_block:
            raise ConfigError(f"notification channel {name!r}: ${cfg.url_env} is not set")
    if cfg.secret_block:
        if read_secret is None:
            raise ConfigError(f"notification channel {name!r}: Prefect Secret block {cfg.secret_block!r} "
                              "could not be read (no Prefect secret reader was given)")
        try:
            value = read_secret(cfg.secret_block)
        except Exception as exc:  # noqa: BLE001 - no URL is in this message
            raise ConfigError(f"notification channel {name!r}: Prefect Secret block {cfg.secret_block!r} "
                              f"could not be read ({type(exc).__name__})") from None
        return str(value)
    raise ConfigError(f"notification channel {name!r}: no URL source configured")


ChannelFactory = Callable[[str, ChannelConfig, EnvironmentConfig, "SecretReader | None"], Channel]
CHANNELS: dict[str, ChannelFactory] = {
    "console": lambda name, cfg, env, read_secret: ConsoleChannel(name, cfg),
    "file": lambda name, cfg, env, read_secret: FileChannel(name, cfg, env.resolve(cfg.path or "notifications.jsonl")),
    "apprise": lambda name, cfg, env, read_secret: AppriseChannel(name, cfg, read_secret=read_secret),
}


def build_channels(env: EnvironmentConfig, read_secret: SecretReader | None = None) -> list[Channel]:
    """The environment's channels; ``read_secret`` reads the Prefect Secret blocks they name (None: a channel
    whose URL is in a Secret block fails with a ConfigError when it is used)."""
    return [CHANNELS[c.kind](name, c, env, read_secret) for name, c in env.notifications.channels.items()]
