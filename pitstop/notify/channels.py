"""Notification channels behind one interface.

``console`` prints to the terminal, ``file`` appends JSON lines (the demo's stand-in for a chat
room), ``apprise`` sends to any apprise URL (email, Slack, Teams, PagerDuty, webhooks) read from an
environment variable so the URL's credentials never sit in config.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field
from rich.console import Console

from ..config import ChannelConfig, EnvironmentConfig
from ..errors import ConfigError, ConnectorError


class Message(BaseModel):
    event: str
    run_id: str
    environment: str
    severity: str = "info"  # info | warning | failure | success
    subject: str
    body: str
    data: dict[str, object] = Field(default_factory=dict)


class Channel(abc.ABC):
    def __init__(self, name: str, cfg: ChannelConfig):
        self.name = name
        self.cfg = cfg

    @abc.abstractmethod
    def send(self, message: Message) -> None: ...


class ConsoleChannel(Channel):
    console = Console(stderr=False, highlight=False)
    STYLE = {"info": "cyan", "warning": "yellow", "failure": "bold red", "success": "bold green"}

    def send(self, message: Message) -> None:
        style = self.STYLE.get(message.severity, "cyan")
        self.console.print(f"  [dim]notify[/dim] [{style}]{message.subject}[/{style}]")


class FileChannel(Channel):
    def __init__(self, name: str, cfg: ChannelConfig, path: Path):
        super().__init__(name, cfg)
        self.path = path

    def send(self, message: Message) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(message.model_dump(), default=str) + "\n")


class AppriseChannel(Channel):
    def send(self, message: Message) -> None:
        import apprise

        assert self.cfg.url_env
        url = os.environ.get(self.cfg.url_env)
        if not url:
            raise ConfigError(f"notification channel {self.name!r}: ${self.cfg.url_env} is not set")
        ap = apprise.Apprise()
        if not ap.add(url):
            raise ConfigError(f"notification channel {self.name!r}: ${self.cfg.url_env} is not a valid apprise URL")
        if not ap.notify(title=message.subject, body=message.body):
            raise ConnectorError(f"notification channel {self.name!r}: delivery failed")


ChannelFactory = Callable[[str, ChannelConfig, EnvironmentConfig], Channel]
CHANNELS: dict[str, ChannelFactory] = {
    "console": lambda name, cfg, env: ConsoleChannel(name, cfg),
    "file": lambda name, cfg, env: FileChannel(name, cfg, env.resolve(cfg.path or "notifications.jsonl")),
    "apprise": lambda name, cfg, env: AppriseChannel(name, cfg),
}


def build_channels(env: EnvironmentConfig) -> list[Channel]:
    return [CHANNELS[c.kind](name, c, env) for name, c in env.notifications.channels.items()]
