"""Environment configuration (``config/<env>.yaml``): typed models and the loader.

Relative paths in a config resolve against the environment's *state directory*
(``state_dir``, default ``.pitstop/<name>``; ``PITSTOP_STATE_DIR`` overrides it), so a demo or a
test never writes outside it. Secrets are never values in the file: fields ending in ``_env`` name
the environment variable that holds them.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator

from .. import yamlfile
from ..errors import ConfigError, Problem
from ..units import Duration
from .approval import ApprovalConfig
from .base import Name, Strict
from .data import BackupConfig, CleanupSettings, DatabaseConfig, RetentionRule, StorageConfig
from .guards import config_problems
from .hosts import FleetConfig, HostConfig, MaintenanceConfig, SshSettings
from .inventory import apply_inventory
from .notifications import NotificationsConfig
from .schedules import SchedulesConfig


class ReportsConfig(Strict):
    dir: str = "runs"
    url: str | None = Field(None, pattern=r"^https?://[^\s]+$", description="where the reports directory is served "
                            "(https://reports.internal/shop): the Prefect report artifact links to <url>/<run id>/"
                            "report.html; unset: a file:// link on the machine that ran the run")


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
    approval: ApprovalConfig | None = Field(None, description="every runbook of this environment waits for a named "
                                            "approver (docs/approvals.md); a runbook's own `approval:` replaces it")

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
    project = Path(__file__).resolve().parents[2] / sub
    return [Path.cwd() / sub, project]


def shadowed(name: str, sub: str, found: Path) -> Path | None:
    """The file of the same name that ``found`` hides in a later search directory (``./config/prod.yaml``
    hides the project's ``config/prod.yaml``), if any and if it differs."""
    if Path(name).suffix in (".yaml", ".yml") or "/" in name:
        return None
    later = [d / f"{name}.yaml" for d in default_search_dirs(sub)]
    hidden = [p for p in later if p.is_file() and p.resolve() != found.resolve()]
    if not hidden or found.resolve() not in [p.resolve() for p in later if p.is_file()]:
        return None
    first = next(p for p in later if p.is_file())
    return hidden[0] if first.resolve() == found.resolve() else None


def load_config(env: str) -> EnvironmentConfig:
    """Find, parse and validate an environment config; its absolute path (and the file it shadows, if any) is
    announced before anything else (the CLI's first line; the flows' first log line)."""
    path = find_config(env)
    yamlfile.announce("config", path, shadowed(env, "config", path))
    doc = yamlfile.load(path, ConfigError)
    cfg = yamlfile.validate(doc, EnvironmentConfig, ConfigError)
    if cfg.inventory:
        apply_inventory(cfg, path.parent, doc)
    problems = _cross_check(cfg, doc)
    if problems:
        raise ConfigError(problems)
    cfg.source = str(path)
    # like every other path of a config: relative to the state directory, never to the working directory
    cfg.ssh.known_hosts = [str(cfg.resolve(p)) for p in cfg.ssh.known_hosts]
    if cfg.ssh.identity_file:
        cfg.ssh.identity_file = str(cfg.resolve(cfg.ssh.identity_file))
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
    if cfg.approval is not None:
        if cfg.approval.skip:
            problems.append(doc.problem(["approval", "skip"], "only an emergency runbook may skip approval "
                                                              "(`approval: {skip: true, reason: ...}` in the runbook)"))
        if cfg.approval.audience not in {"ops", *cfg.notifications.audiences}:
            known = ", ".join(sorted({"ops", *cfg.notifications.audiences}))
            problems.append(doc.problem(["approval", "audience"], f"unknown audience {cfg.approval.audience!r} "
                                                                  f"(known: {known})"))
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
