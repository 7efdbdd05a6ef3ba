"""Hosts, SSH settings, fan-out and maintenance mode (``hosts``, ``groups``, ``ssh``, ``fleet``, ``maintenance``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ..maintenance_mode.settings import CommandStrategyConfig, DeadmanConfig, HttpStrategyConfig
from ..units import Duration
from .base import Percent, Strict


class SshSettings(Strict):
    known_hosts: list[str] = Field(default_factory=lambda: ["~/.ssh/known_hosts"])
    identity_file: str | None = None
    user: str | None = None
    port: int = Field(22, ge=1, le=65535)
    connect_timeout: float = Field(10, gt=0)
    command_timeout: float = Field(300, gt=0)
    keepalive: int = Field(30, ge=0)
    jump_host: str | None = None
    sudo: bool = False
    use_ssh_config: bool = True
    ssh_config: str = Field("~/.ssh/config", description="OpenSSH client config read when use_ssh_config")
    agent: bool = Field(True, description="also try keys from the SSH agent ($SSH_AUTH_SOCK)")
    connect_retries: int = Field(4, ge=1, le=20, description="attempts for transient connect errors")


class HostConfig(Strict):
    """One host. ``transport: local`` runs commands on this machine inside ``root`` (a sandbox
    directory standing for the host's filesystem); ``ssh`` connects with paramiko."""

    transport: Literal["local", "ssh"] = "ssh"
    address: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    user: str | None = None
    root: str | None = None
    sudo: bool | None = None
    identity_file: str | None = None
    jump_host: str | None = None
    vars: dict[str, str | int | float | bool] = Field(default_factory=dict)
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)  # field -> "config" | "inventory <path>"

    @property
    def sources(self) -> dict[str, str]:
        """Where each set field came from (``hosts list`` shows it)."""
        return self._sources or {f: "config" for f in self.model_fields_set}

    @model_validator(mode="after")
    def _transport_fields(self) -> HostConfig:
        if self.transport == "local" and not self.root:
            raise ValueError("a local host needs `root`, the sandbox directory that stands for its filesystem")
        return self




class FleetConfig(Strict):
    """How a host step fans out over many hosts (see pitstop/fleet/fanout.py and docs/fleet.md)."""

    max_concurrency: int = Field(32, ge=1, le=1024)
    max_errors: int | Percent | None = Field(None, description="failed hosts (count or percentage) after which "
                                             "no new host starts; any failure still fails the step; unset: try "
                                             "every host")
    serial: int | Percent | list[int | Percent] | None = Field(None, description="rolling batch sizes")
    canary: bool = Field(False, description="run the first host alone first; stop if it fails")
    progress: bool = Field(True, description="live progress bar when stderr is a terminal")

    @field_validator("serial")
    @classmethod
    def _serial(cls, v: object) -> object:
        items = v if isinstance(v, list) else [v]
        if any(isinstance(i, int) and i < 1 for i in items) or (isinstance(v, list) and not v):
            raise ValueError("batch sizes must be at least 1 (or a percentage such as 10%)")
        return v


class MaintenanceConfig(Strict):
    strategy: Literal["flag_file", "command", "http"] = "flag_file"
    flag_path: str = "/var/www/maintenance.flag"
    targets: str = Field("all", description="host group whose hosts get the flag")
    ttl_margin: Duration = Field("30m", validate_default=True)  # type: ignore[assignment]
    message: str = "Scheduled maintenance in progress."
    sudo: bool = Field(False, description="run maintenance commands, the flag or marker file and the dead-man "
                       "watcher with sudo")
    command: CommandStrategyConfig | None = None
    http: HttpStrategyConfig | None = None
    deadman: DeadmanConfig = Field(default_factory=DeadmanConfig)

    @model_validator(mode="after")
    def _strategy_settings(self) -> MaintenanceConfig:
        if self.strategy in ("command", "http") and getattr(self, self.strategy) is None:
            raise ValueError(f"strategy {self.strategy!r} needs a `{self.strategy}:` section")
        if self.strategy == "http" and self.http is not None and self.deadman.enabled:
            on = self.http.on.model_dump_json()
            if "{ttl_seconds}" not in on and "{expires_at}" not in on:
                raise ValueError("with strategy http the dead-man's switch is the endpoint's own expiry: send "
                                 "{ttl_seconds} or {expires_at} in http.on (url, body or json), or set "
                                 "deadman.enabled: false to run without one")
        return self
