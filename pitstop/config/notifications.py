"""Notification channels, audiences, advance notices and the status feed (``notifications``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from ..units import Duration
from .base import Name, Strict, _check_tz


class ChannelConfig(Strict):
    """A delivery channel (see docs/notifications.md). Apprise URLs are secrets: they come from an
    environment variable (``url_env``) or a Prefect Secret block (``secret_block``), never config."""

    kind: Literal["console", "file", "apprise"]
    path: str | None = None
    url_env: str | None = Field(None, description="environment variable holding the apprise URL (a secret)")
    secret_block: str | None = Field(None, description="Prefect Secret block holding the apprise URL")
    audiences: list[str] = Field(default_factory=lambda: ["ops"])
    style: Literal["short", "full"] | None = Field(None, description="default: full for email/file, else short")
    attach_ics: bool | None = Field(None, description="attach an .ics invite to advance notices (default: email)")

    @model_validator(mode="after")
    def _fields(self) -> ChannelConfig:
        if self.kind == "file" and not self.path:
            raise ValueError("a file channel needs `path`")
        if self.kind == "apprise" and not (self.url_env or self.secret_block):
            raise ValueError("an apprise channel needs `url_env` or `secret_block` "
                             "(the URL is a secret and never in config)")
        return self


class AudienceConfig(Strict):
    timezone: Annotated[str | None, AfterValidator(_check_tz)] = None
    events: list[str] = Field(default_factory=lambda: ["*"], description="event patterns (fnmatch), e.g. notice.*")
    emergency: bool = Field(False, description="receives emergency notices whatever `events` says")
    internal: bool | None = Field(None, description="sees internal detail (step names, errors, hosts); default: "
                                  "only the `ops` audience. Others get plain-language messages")


class NoticesConfig(Strict):
    offsets: list[Duration] = Field(default_factory=lambda: ["7d", "48h", "24h"],  # type: ignore[arg-type,list-item]
                                    validate_default=True)
    required: Duration | None = Field("48h", validate_default=True,  # type: ignore[assignment]
                                      description="lead time a scheduled run needs (a sent notice this early)")
    policy: Literal["refuse", "warn"] = "warn"
    tolerance: Duration = Field("2h", validate_default=True,  # type: ignore[assignment]
                                description="a required notice still counts when sent this late (hourly send-due)")
    delivery: Literal["at-least-once", "at-most-once"] = "at-least-once"
    claim_lease: Duration = Field("10m", validate_default=True)  # type: ignore[assignment]
    history_runs: int = Field(10, ge=1)
    history_min_runs: int = Field(3, ge=1)
    affects: list[str] = Field(default_factory=list)
    user_actions: list[str] = Field(default_factory=lambda: [
        "Save your work and log out before the window starts.",
        "Keep a paper record of offline sales and enter them afterwards.",
        "Download any report you need during the window beforehand."])
    contact: str = ""
    title: str = Field("", description="the platform's name in notices (default: the environment name)")
    overrun_grace: Duration = Field("1m", validate_default=True,  # type: ignore[assignment]
                                    description="window.extended once the window is open this long past expected")


class FeedConfig(Strict):
    path: str = "status"
    publish: bool = Field(False, description="also copy status.json/status.html to storage under status/")
    horizon: Duration = Field("60d", validate_default=True)  # type: ignore[assignment]
    keep_completed: int = Field(20, ge=0)


class NotificationsConfig(Strict):
    channels: dict[Name, ChannelConfig] = Field(default_factory=dict)
    audiences: dict[Name, AudienceConfig] = Field(default_factory=dict)
    templates: dict[str, str] = Field(default_factory=dict, description="template key -> Jinja2 source")
    template_dir: str | None = None
    notices: NoticesConfig = Field(default_factory=NoticesConfig)
    feed: FeedConfig = Field(default_factory=FeedConfig)
    attempts: int = Field(3, ge=1, le=10)
    wait_max: float = Field(2.0, ge=0)

    @model_validator(mode="after")
    def _known_audiences(self) -> NotificationsConfig:
        for name, ch in self.channels.items():
            unknown = [a for a in ch.audiences if a != "ops" and a not in self.audiences]
            if unknown:
                raise ValueError(f"channel {name!r} names undefined audience(s) {', '.join(unknown)} "
                                 "(define them under notifications.audiences)")
        return self
