"""Configuration models of the maintenance-mode strategies (``maintenance:`` in config/<env>.yaml).

Kept apart from :mod:`pitstop.config` so each strategy's settings live next to the strategy.
Secrets are never values here: HTTP headers name the environment variable holding their value
(``value_env``), so the value never reaches the config, logs, reports or flow parameters.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..units import Duration

HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CommandStrategyConfig(_Strict):
    """``strategy: command``: argument lists run on every target host (never a shell string).

    ``{run_id}``, ``{ttl_seconds}``, ``{expires_at}`` and ``{message}`` inside an argument are
    replaced by their values (as a whole argument or part of one; the result stays one argument)."""

    on: list[str] = Field(min_length=1)
    off: list[str] = Field(min_length=1)
    status: list[str] | None = Field(None, description="exit code in status_on_exit means maintenance is on")
    status_on_exit: list[int] = Field(default_factory=lambda: [0])
    marker_path: str = Field("/var/tmp/pitstop-maintenance.json",  # noqa: S108 - written atomically by rename
                             description="file recording which run turned maintenance on (read by the dead-man)")
    timeout: float = Field(60, gt=0)


class HttpHeader(_Strict):
    name: str = Field(pattern=HEADER_NAME)
    value_env: str = Field(pattern=ENV_NAME, description="environment variable holding the header value (a secret)")


class HttpCall(_Strict):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str = Field(pattern=r"^https?://", description="may contain {host} and {address}")
    json_body: dict[str, Any] | None = Field(None, alias="json",
                                             description="JSON body; string values may use placeholders")
    expect_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])


class HttpStrategyConfig(_Strict):
    """``strategy: http``: the platform's admin endpoint. Calls with the same URL are made once per
    run even when several target hosts share it."""

    on: HttpCall
    off: HttpCall
    status: HttpCall | None = None
    status_on: list[int] = Field(default_factory=lambda: [200], description="status codes meaning 'on'")
    status_json_field: str | None = Field(None, description="if set: the status body's field that is true when on")
    headers: list[HttpHeader] = Field(default_factory=list)
    timeout: float = Field(10, gt=0)
    verify_tls: bool = True
    ca_file: str | None = None
    attempts: int = Field(3, ge=1, le=10, description="tries on connection errors and 5xx")


class DeadmanConfig(_Strict):
    """The dead-man's switch: an expiry armed on each host when maintenance goes on."""

    enabled: bool = True
    method: Literal["auto", "systemd", "setsid"] = "auto"
    ttl: Duration | None = Field(None, description="default: the window's expected downtime + ttl_margin")
    renew: bool = Field(True, description="while the run is alive, re-arm every TTL/2 so a long window is not "
                                          "cut short (a run that dies stops renewing)")
    max_hold: Duration | None = Field(None, description="renewals never keep maintenance on longer than this "
                                                        "after it went on (default: 3 x the TTL)")

    @field_validator("ttl", "max_hold")
    @classmethod
    def _positive(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v.total_seconds() < 1:
            raise ValueError("must be at least 1s")
        return v
