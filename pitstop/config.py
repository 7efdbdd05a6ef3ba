"""Environment configuration (``config/<env>.yaml``): typed models and the loader.

Relative paths in a config resolve against the environment's *state directory*
(``state_dir``, default ``.pitstop/<name>``; ``PITSTOP_STATE_DIR`` overrides it), so a demo or a
test never writes outside it. Secrets are never values in the file: fields ending in ``_env`` name
the environment variable that holds them.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from . import yamlfile
from .errors import ConfigError, Problem
from .maintenance.settings import CommandStrategyConfig, DeadmanConfig, HttpStrategyConfig
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

    @model_validator(mode="after")
    def _transport_fields(self) -> HostConfig:
        if self.transport == "local" and not self.root:
            raise ValueError("a local host needs `root`, the sandbox directory that stands for its filesystem")
        return self


Percent = Annotated[str, Field(pattern=r"^[0-9]{1,3}(\.[0-9]+)?%$")]


class FleetConfig(Strict):
    """How a host step fans out over many hosts (see pitstop/fanout.py and docs/fleet.md)."""

    max_concurrency: int = Field(32, ge=1, le=1024)
    max_errors: int | Percent | None = Field(None, description="failed hosts tolerated before no new host "
                                             "starts (count or percentage); unset: try every host")
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
    kms_key_id: str | None = Field(None, description="KMS key id/ARN when server_side_encryption is aws:kms")
    storage_class: str | None = None
    part_size: int | None = Field(None, ge=5 * 1024**2, le=5 * 1024**3,
                                  description="S3 multipart part size in bytes (default: derived from the DB size)")
    max_concurrency: int = Field(4, ge=1, le=32, description="S3 parts uploaded in parallel (memory ~ part x this)")
    retry_attempts: int = Field(6, ge=1, le=20, description="attempts per S3 request on transient errors")
    retry_max_wait: float = Field(20, gt=0, description="cap of the exponential backoff between attempts (s)")
    payload_signing: bool = Field(False, description="SigV4-sign each part's payload (botocore does it over "
                                  "plain HTTP; parts carry a signed CRC32 and the dump a verified SHA-256 anyway)")

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> StorageConfig:
        if self.kind == "s3" and not self.bucket:
            raise ValueError("S3 storage needs `bucket`")
        return self


class BackupConfig(Strict):
    """``backup:`` — dump format and retention of pre-backups (see docs/backup.md)."""

    format: Literal["custom", "directory"] = "custom"
    jobs: int = Field(2, ge=1, le=64, description="pg_dump/pg_restore -j for the directory format")
    compress: int = Field(6, ge=0, le=9, description="pg_dump -Z level (a step's `compress` overrides it)")
    staging_dir: str = Field("backup-staging", description="scratch space for the directory format")
    keep_monthly: int = Field(12, ge=1)
    keep_quarterly: int = Field(8, ge=1)
    keep_emergency: int = Field(10, ge=1)
    keep_custom: int = Field(5, ge=1)


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
    archive: bool = Field(False, description="copy purged rows (gzip CSV) to storage before deleting them")
    max_share: float = Field(0.5, gt=0, le=1, description="refuse to purge more than this share of the table")
    batch_size: int | None = Field(None, ge=1, description="initial batch size (default: the profile's)")
    profile: Name | None = Field(None, description="cleanup profile for this rule (default: cleanup.profile)")
    partitions: Literal["drop", "rows"] = Field(
        "drop", description="partitioned tables: drop partitions entirely past the cutoff, or delete rows only")

    @property
    def qualified(self) -> str:
        return f"{self.schema_}.{self.table}"


class CleanupProfile(Strict):
    """How hard a purge pushes: batch duration target, pacing and the ceilings that throttle it."""

    target_batch_ms: float = Field(100, gt=0, description="adapt the batch size to this duration per batch")
    initial_batch: int = Field(1000, ge=1)
    min_batch: int = Field(50, ge=1)
    max_batch: int = Field(50000, ge=1)
    pause_ms: float = Field(0, ge=0, description="minimum pause between batches")
    duty_cycle: float = Field(1.0, gt=0, le=1, description="share of wall time spent inside batches")
    max_pause_ms: float = Field(2000, ge=0, description="ceiling of the feedback-driven pause")
    lock_timeout_ms: int = Field(100, ge=1)
    statement_timeout_ms: int = Field(2000, ge=1)
    max_lock_retries: int = Field(100, ge=0, description="lock timeouts tolerated per target before failing")
    max_replica_lag_s: float | None = Field(10, gt=0, description="pause while a replica lags more than this")
    max_replica_lag_bytes: int | None = Field(None, gt=0)
    max_active_backends: int | None = Field(None, ge=1, description="pause while more app backends are active")
    max_app_waiters: float = Field(0.5, ge=0, description="mean app backends waiting (Lock/LWLock/IO) per sample "
                                                          "tolerated during a batch before slowing down")
    sample_ms: float = Field(10, gt=0, description="pg_stat_activity / pg_locks sampling interval")
    max_throttle_s: float = Field(600, gt=0, description="fail (resumably) after throttling this long in a row")


def _builtin_profiles() -> dict[str, CleanupProfile]:
    return {
        "gentle": CleanupProfile(target_batch_ms=25, initial_batch=200, min_batch=20, max_batch=5000,
                                 pause_ms=10, duty_cycle=0.15, lock_timeout_ms=50, max_app_waiters=0.2),
        "default": CleanupProfile(),
        "fast": CleanupProfile(target_batch_ms=200, initial_batch=5000, max_batch=200000, duty_cycle=1.0,
                               lock_timeout_ms=200, statement_timeout_ms=5000, max_app_waiters=4),
    }


class CleanupSettings(Strict):
    """Environment-wide cleanup settings. ``profiles`` adds or overrides gentle/default/fast."""

    profile: Name = "default"
    profiles: dict[Name, CleanupProfile] = Field(default_factory=_builtin_profiles)
    progress_schema: Identifier = "public"
    progress_table: Identifier = "pitstop_cleanup_progress"
    archive_prefix: str = Field("cleanup-archive", pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,200}$")
    reindex_bloat_threshold: float = Field(0.3, ge=0, le=1)
    reindex_min_bytes: int = Field(8 * 1024 * 1024, ge=0)

    @field_validator("profiles")
    @classmethod
    def _merge_builtins(cls, v: dict[str, CleanupProfile]) -> dict[str, CleanupProfile]:
        return {**_builtin_profiles(), **v}


class MaintenanceConfig(Strict):
    strategy: Literal["flag_file", "command", "http"] = "flag_file"
    flag_path: str = "/var/www/maintenance.flag"
    targets: str = Field("all", description="host group whose hosts get the flag")
    ttl_margin: Duration = Field("30m", validate_default=True)  # type: ignore[assignment]
    message: str = "Scheduled maintenance in progress."
    sudo: bool = Field(False, description="run maintenance commands and the dead-man watcher with sudo")
    command: CommandStrategyConfig | None = None
    http: HttpStrategyConfig | None = None
    deadman: DeadmanConfig = Field(default_factory=DeadmanConfig)

    @model_validator(mode="after")
    def _strategy_settings(self) -> MaintenanceConfig:
        if self.strategy in ("command", "http") and getattr(self, self.strategy) is None:
            raise ValueError(f"strategy {self.strategy!r} needs a `{self.strategy}:` section")
        return self


def _check_tz(v: str | None) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if v is not None:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r} (expected an IANA name such as Europe/Berlin)") from None
    return v


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


_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"


class ScheduleSpec(Strict):
    """One recurring window: ``rrule`` (RFC 5545, local wall time ``at``) or ``cron`` (5 fields)."""

    rrule: str | None = None
    cron: str | None = None
    at: str = Field("02:00", pattern=_HHMM)
    since: dt.date | None = Field(None, description="DTSTART date for rules with INTERVAL>1")
    timezone: Annotated[str | None, AfterValidator(_check_tz)] = None
    duration: Duration = Field("2h", validate_default=True)  # type: ignore[assignment]
    cutoff: Duration = Field("0s", validate_default=True)  # type: ignore[assignment]
    runbook: Name | None = None
    enabled: bool = True
    expected_downtime: Duration | None = None
    affects: list[str] = Field(default_factory=list)
    user_actions: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rule(self) -> ScheduleSpec:
        if bool(self.rrule) == bool(self.cron):
            raise ValueError("a schedule needs exactly one of `rrule` or `cron`")
        if self.cutoff >= self.duration:
            raise ValueError("`cutoff` must be shorter than `duration`")
        if self.cron:
            from cronsim import CronSim, CronSimError

            if len(self.cron.split()) != 5:
                raise ValueError("`cron` needs 5 fields (minute hour day-of-month month day-of-week)")
            try:
                CronSim(self.cron, dt.datetime(2000, 1, 1))
            except CronSimError as exc:
                raise ValueError(f"invalid cron {self.cron!r}: {exc}") from None
        else:
            from dateutil.rrule import rrulestr

            if "DTSTART" in self.rrule_body.upper():
                raise ValueError("leave DTSTART out of `rrule`; use `at` (and `since`)")
            try:
                rrulestr(self.rrule_body, dtstart=dt.datetime(2000, 1, 1), ignoretz=True)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"invalid rrule {self.rrule!r}: {exc}") from None
        return self

    @property
    def rrule_body(self) -> str:
        return (self.rrule or "").strip().removeprefix("RRULE:")

    @property
    def at_time(self) -> tuple[int, int]:
        hh, mm = self.at.split(":")
        return int(hh), int(mm)


class Blackout(Strict):
    """``{date: 2026-12-24, reason: ...}`` or ``{start: ..., end: ..., reason: ...}`` (end inclusive)."""

    day: dt.date | None = Field(None, alias="date")
    start: dt.datetime | dt.date | None = None
    end: dt.datetime | dt.date | None = None
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _bounds(self) -> Blackout:
        if bool(self.day) == bool(self.start or self.end):
            raise ValueError("a blackout needs `date`, or `start` and `end`")
        if self.day is None and (self.start is None or self.end is None):
            raise ValueError("a blackout range needs both `start` and `end`")
        return self

    @property
    def date(self) -> dt.date | None:
        return self.day


class SchedulesConfig(Strict):
    """``schedules:`` — named schedules (``monthly: {...}``) plus the reserved key ``blackouts``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    __pydantic_extra__: dict[str, ScheduleSpec] = Field(init=False)  # type: ignore[assignment]

    blackouts: list[Blackout] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> SchedulesConfig:
        import re

        for name in self.windows():
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", name):
                raise ValueError(f"invalid schedule name {name!r}")
        return self

    def windows(self) -> dict[str, ScheduleSpec]:
        return dict(self.__pydantic_extra__ or {})


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
    backup: BackupConfig = Field(default_factory=BackupConfig)
    ssh: SshSettings = Field(default_factory=SshSettings)
    hosts: dict[Name, HostConfig] = Field(default_factory=dict)
    groups: dict[Name, list[Name]] = Field(default_factory=dict)
    inventory: str | None = Field(None, description="Ansible inventory (YAML or INI) merged into hosts/groups")
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    retention: list[RetentionRule] = Field(default_factory=list)
    cleanup: CleanupSettings = Field(default_factory=CleanupSettings)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    schedules: SchedulesConfig = Field(default_factory=SchedulesConfig)

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
    if cfg.inventory:
        from .inventory import apply_inventory

        apply_inventory(cfg, path.parent, doc)
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
    problems += _cleanup_profiles(cfg, doc)
    from .input_guards import config_problems

    problems += config_problems(cfg, doc)
    return problems


def _cleanup_profiles(cfg: EnvironmentConfig, doc: yamlfile.YamlDoc) -> list[Problem]:
    known = cfg.cleanup.profiles
    names = ", ".join(sorted(known))
    out = []
    if cfg.cleanup.profile not in known:
        out.append(doc.problem(["cleanup", "profile"], f"unknown cleanup profile {cfg.cleanup.profile!r} ({names})"))
    for i, rule in enumerate(cfg.retention):
        if rule.profile and rule.profile not in known:
            out.append(doc.problem(["retention", i, "profile"], f"unknown cleanup profile {rule.profile!r} ({names})"))
    return out
