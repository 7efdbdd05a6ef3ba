"""Environment configuration (``config/<env>.yaml``): typed models and the loader.

Relative paths in a config resolve against the environment's *state directory*
(``state_dir``, default ``.pitstop/<name>``; ``PITSTOP_STATE_DIR`` overrides it), so a demo or a
test never writes outside it. Secrets are never values in the file: fields ending in ``_env`` name
the environment variable that holds them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import yamlfile
from .errors import ConfigError, Problem
from .units import Duration

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


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


class HostConfig(Strict):
    """One host. ``transport: local`` runs commands on this machine inside ``root`` (a sandbox
    directory standing for the host's filesystem); ``ssh`` connects with paramiko."""

    transport: Literal["local", "ssh"] = "ssh"
    address: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    user: str | None = None
    root: str | None = None
    sudo: bool | None = None
    vars: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _transport_fields(self) -> HostConfig:
        if self.transport == "local" and not self.root:
            raise ValueError("a local host needs `root`, the sandbox directory that stands for its filesystem")
        return self


class DatabaseConfig(Strict):
    """The platform's PostgreSQL. ``embedded: true`` starts a private server from the pgserver wheel."""

    embedded: bool = False
    data_dir: str = "pgdata"
    host: str | None = None
    port: int = Field(5432, ge=1, le=65535)
    dbname: str = "postgres"
    user: str = "postgres"
    password_env: str | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    pg_bin_dir: str | None = None
    connect_timeout: int = Field(10, ge=1)
    verify_server: str | None = Field(None, description="conninfo of another server to restore-verify backups on")

    @model_validator(mode="after")
    def _where(self) -> DatabaseConfig:
        if not self.embedded and not self.host:
            raise ValueError("set `host` (or `embedded: true` for the built-in demo server)")
        return self


class StorageConfig(Strict):
    kind: Literal["local", "s3"] = "local"
    path: str = "storage"
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_env: str | None = None
    secret_key_env: str | None = None
    server_side_encryption: Literal["AES256", "aws:kms"] | None = None
    storage_class: str | None = None

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> StorageConfig:
        if self.kind == "s3" and not self.bucket:
            raise ValueError("S3 storage needs `bucket`")
        return self


class Filter(Strict):
    """A structured condition of a retention rule: no free SQL text from config."""

    column: Identifier
    op: Literal["=", "!=", "<", "<=", ">", ">=", "is_null", "is_not_null", "in"]
    value: str | int | float | bool | list[str | int | float] | None = None


class RetentionRule(Strict):
    table: Identifier
    schema_: Identifier = Field("public", alias="schema")
    column: Identifier = Field(description="timestamp column compared with now() - older_than")
    older_than: Duration
    where: list[Filter] = Field(default_factory=list)
    archive: bool = False
    max_share: float = Field(0.5, gt=0, le=1, description="refuse to purge more than this share of the table")
    batch_size: int = Field(5000, ge=1)

    @property
    def qualified(self) -> str:
        return f"{self.schema_}.{self.table}"


class MaintenanceConfig(Strict):
    strategy: Literal["flag_file", "command", "http"] = "flag_file"
    flag_path: str = "/var/www/maintenance.flag"
    targets: str = Field("all", description="host group whose hosts get the flag")
    ttl_margin: Duration = Field("30m", validate_default=True)  # type: ignore[assignment]
    message: str = "Scheduled maintenance in progress."


class ChannelConfig(Strict):
    kind: Literal["console", "file", "apprise"]
    path: str | None = None
    url_env: str | None = Field(None, description="environment variable holding the apprise URL (a secret)")
    audiences: list[str] = Field(default_factory=lambda: ["ops"])

    @model_validator(mode="after")
    def _fields(self) -> ChannelConfig:
        if self.kind == "file" and not self.path:
            raise ValueError("a file channel needs `path`")
        if self.kind == "apprise" and not self.url_env:
            raise ValueError("an apprise channel needs `url_env` (the URL is a secret and never in config)")
        return self


class NotificationsConfig(Strict):
    channels: dict[Name, ChannelConfig] = Field(default_factory=dict)


class ReportsConfig(Strict):
    dir: str = "runs"


class WindowConfig(Strict):
    expected_downtime: Duration = Field("30m", validate_default=True)  # type: ignore[assignment]
    impact: str = "The platform is unavailable during the window."


class EnvironmentConfig(Strict):
    name: Name
    description: str = ""
    timezone: str = "UTC"
    state_dir: str | None = None
    database: DatabaseConfig
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ssh: SshSettings = Field(default_factory=SshSettings)
    hosts: dict[Name, HostConfig] = Field(default_factory=dict)
    groups: dict[Name, list[Name]] = Field(default_factory=dict)
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    retention: list[RetentionRule] = Field(default_factory=list)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)

    # Set by the loader, not by the file.
    source: str = Field("", exclude=True)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r} (expected an IANA name such as Europe/Berlin)") from None
        return v

    # -- helpers ---------------------------------------------------------------------------------
    def group_names(self) -> list[str]:
        return ["all", *self.groups]

    def group_hosts(self, group: str) -> list[str]:
        if group == "all":
            return list(self.hosts)
        if group in self.groups:
            return list(self.groups[group])
        if group in self.hosts:
            return [group]
        raise ValueError(f"unknown host group {group!r} (known: {', '.join(self.group_names())})")

    @property
    def state_path(self) -> Path:
        override = os.environ.get("PITSTOP_STATE_DIR")
        base = Path(override) if override else Path(self.state_dir or f".pitstop/{self.name}")
        return base.expanduser().resolve()

    def resolve(self, path: str) -> Path:
        """A config path made absolute: relative paths live under the state directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.state_path / p


def find_config(env: str, search: list[Path] | None = None) -> Path:
    """``env`` is a path to a YAML file or the name of ``config/<env>.yaml``."""
    candidate = Path(env)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return candidate
    for base in search or default_search_dirs("config"):
        p = base / f"{env}.yaml"
        if p.is_file():
            return p
    return Path("config") / f"{env}.yaml"


def default_search_dirs(sub: str) -> list[Path]:
    """Where named configs and runbooks are looked up: ./<sub>, then the project's own."""
    project = Path(__file__).resolve().parent.parent / sub
    return [Path.cwd() / sub, project]


def load_config(env: str) -> EnvironmentConfig:
    path = find_config(env)
    doc = yamlfile.load(path, ConfigError)
    cfg = yamlfile.validate(doc, EnvironmentConfig, ConfigError)
    problems = _cross_check(cfg, doc)
    if problems:
        raise ConfigError(problems)
    cfg.source = str(path)
    return cfg


def _cross_check(cfg: EnvironmentConfig, doc: yamlfile.YamlDoc) -> list[Problem]:
    """Checks that span several sections (groups name hosts, maintenance targets a group)."""
    problems = []
    for group, members in cfg.groups.items():
        for i, member in enumerate(members):
            if member not in cfg.hosts:
                known = ", ".join(cfg.hosts) or "none"
                problems.append(doc.problem(["groups", group, i], f"unknown host {member!r} (hosts: {known})"))
    target = cfg.maintenance.targets
    if target != "all" and target not in cfg.groups and target not in cfg.hosts:
        problems.append(doc.problem(["maintenance", "targets"],
                                    f"unknown host group {target!r} (known: {', '.join(cfg.group_names())})"))
    return problems
