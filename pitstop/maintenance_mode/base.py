"""The interface every maintenance-mode strategy implements, and the record a run leaves behind.

A strategy turns maintenance on/off on one target host (or the endpoint that host stands for) and
reports its status. If it can tell the dead-man's switch how to lift maintenance on its own
(a marker file that names the run, plus an optional argv), it returns a :class:`DeadmanTarget`.
"""

from __future__ import annotations

import abc
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from ..config import MaintenanceConfig
    from ..context import RunContext


class MaintenanceRecord(BaseModel):
    """What this run wrote when it turned maintenance on (the flag file's JSON content)."""

    run_id: str
    since: str
    expires_at: str
    ttl_seconds: int
    message: str

    @classmethod
    def new(cls, run_id: str, ttl: timedelta, message: str) -> MaintenanceRecord:
        now = datetime.now(UTC).replace(microsecond=0)
        return cls(run_id=run_id, since=now.isoformat(), expires_at=(now + ttl).isoformat(),
                   ttl_seconds=max(1, int(ttl.total_seconds())), message=message)

    @property
    def token(self) -> str:
        """What the marker (this record as JSON) holds only while this expiry is current: the dead-man
        watcher armed for it lifts maintenance only if the marker still holds it."""
        return f'"expires_at":"{self.expires_at}"'

    def placeholders(self, host: str = "", address: str = "") -> dict[str, str]:
        return {"{run_id}": self.run_id, "{since}": self.since, "{expires_at}": self.expires_at,
                "{ttl_seconds}": str(self.ttl_seconds), "{message}": self.message, "{host}": host,
                "{address}": address or host}


class MaintenanceStatus(BaseModel):
    host: str
    strategy: str
    on: bool
    run_id: str | None = None
    expires_at: str | None = None
    detail: str = ""


class DeadmanTarget(BaseModel):
    """How a host lifts maintenance by itself: if ``marker`` (a host path) still names the run,
    run ``off_argv`` (if any), then remove ``marker``."""

    marker: str
    off_argv: list[str] = Field(default_factory=list)


def substitute(value: Any, values: dict[str, str]) -> Any:
    """Replace placeholders in strings (recursively in lists and dicts). Plain text replacement:
    no format mini-language, no evaluation; a string that is exactly ``{ttl_seconds}`` becomes an int."""
    if isinstance(value, str):
        if value == "{ttl_seconds}":
            return int(values["{ttl_seconds}"])
        for key, val in values.items():
            value = value.replace(key, val)
        return value
    if isinstance(value, list):
        return [substitute(v, values) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, values) for k, v in value.items()}
    return value


class Strategy(abc.ABC):
    name: str

    def __init__(self, cfg: MaintenanceConfig):
        self.cfg = cfg

    def renew(self, ctx: RunContext, host: str, record: MaintenanceRecord) -> None:  # noqa: B027 - optional
        """The run renewed its dead-man (``record`` has the new expiry): make the host's marker say
        so. The default has no marker; a strategy that keeps one on the host rewrites it."""

    @abc.abstractmethod
    def on(self, ctx: RunContext, host: str, record: MaintenanceRecord) -> bool:
        """Turn maintenance on; True if something changed."""

    @abc.abstractmethod
    def off(self, ctx: RunContext, host: str) -> bool:
        """Turn maintenance off; True if something changed."""

    @abc.abstractmethod
    def status(self, ctx: RunContext, host: str) -> MaintenanceStatus: ...

    def deadman_target(self, ctx: RunContext, host: str) -> DeadmanTarget | None:
        """Where the dead-man's switch acts on this host; None when the strategy cannot use one."""
        return None

    @abc.abstractmethod
    def describe(self, ctx: RunContext, host: str, turning_on: bool) -> list[str]:
        """What on/off would do (read-only), for the plan."""
