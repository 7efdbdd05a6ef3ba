"""Input guards that span a whole config: rules that would delete everything, schedules that never
occur, and secrets that must be resolvable before a run starts.

``config_problems`` runs with every config load (``pitstop validate`` too); ``secret_problems`` runs
only before a run (``runner.load``), because a CI machine validating files has no secrets. Every
problem points at the file and line of the offending key; secret *values* are never read into a
message, only the variable's name.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING

from . import yamlfile
from .errors import ConfigError, Problem

if TYPE_CHECKING:
    from .config import EnvironmentConfig

SCHEDULE_HORIZON_YEARS = 10  # a schedule with no occurrence in this many years is a typo (Feb 30)


def config_problems(cfg: EnvironmentConfig, doc: yamlfile.YamlDoc) -> list[Problem]:
    return _retention_problems(cfg, doc) + _schedule_problems(cfg, doc)


def _retention_problems(cfg: EnvironmentConfig, doc: yamlfile.YamlDoc) -> list[Problem]:
    """``older_than: 0s`` without a filter matches every row up to now: refuse it outright."""
    out = []
    for i, rule in enumerate(cfg.retention):
        if rule.older_than.total_seconds() <= 0 and not rule.where:
            out.append(doc.problem(["retention", i, "older_than"],
                                   f"retention rule for {rule.qualified} would delete every row "
                                   "(older_than must be positive, or add a `where` filter)"))
    return out


def _schedule_problems(cfg: EnvironmentConfig, doc: yamlfile.YamlDoc) -> list[Problem]:
    from dateutil.rrule import rrulestr

    out = []
    start = dt.datetime(2000, 1, 1)
    for name, spec in cfg.schedules.windows().items():
        if not spec.rrule:
            continue
        rule = rrulestr(spec.rrule_body, dtstart=dt.datetime.combine(spec.since or start.date(), dt.time()),
                        ignoretz=True)
        base = dt.datetime.now().replace(microsecond=0)
        horizon = base.replace(year=base.year + SCHEDULE_HORIZON_YEARS, day=min(base.day, 28))
        following = rule.after(base)
        if following is None or following > horizon:
            out.append(doc.problem(["schedules", name, "rrule"],
                                   f"schedule {name!r} never occurs in the next {SCHEDULE_HORIZON_YEARS} years "
                                   f"(rrule {spec.rrule!r})"))
    return out


def secret_slots(cfg: EnvironmentConfig) -> list[tuple[list[str | int], str]]:
    slots: list[tuple[list[str | int], str]] = []
    if cfg.database.password_env:
        slots.append((["database", "password_env"], cfg.database.password_env))
    if cfg.storage.kind == "s3":
        for key in ("access_key_env", "secret_key_env"):
            if getattr(cfg.storage, key):
                slots.append((["storage", key], getattr(cfg.storage, key)))
    for name, ch in cfg.notifications.channels.items():
        if ch.url_env and not ch.secret_block:
            slots.append((["notifications", "channels", name, "url_env"], ch.url_env))
    http = cfg.maintenance.http if cfg.maintenance.strategy == "http" else None
    if http is not None:
        for j, header in enumerate(http.headers):
            slots.append((["maintenance", "http", "headers", j, "value_env"], header.value_env))
    return slots


def secret_problems(cfg: EnvironmentConfig) -> list[Problem]:
    """Every ``*_env`` slot the run will need names a variable that is set (names only, never values)."""
    missing = [(loc, var) for loc, var in secret_slots(cfg) if not os.environ.get(var)]
    if not missing:
        return []
    doc = yamlfile.load(Path(cfg.source), ConfigError)
    return [doc.problem(loc, f"secret ${var} is not set in the environment (needed before the run starts)")
            for loc, var in missing]


def flow_parameters(*, env: str, runbook: str, run_id: str | None, reason: str, accept_unverified_backup: bool,
                    deployment_parameters: dict[str, object] | None) -> None:
    """The flow entry point's guards, as strict as the CLI's: an InputError before anything runs.

    * ``run_id``: a run id, never a path (``../../outside`` once wrote a run folder outside reports);
    * ``env`` / ``runbook``: a name (``config/<name>.yaml``, ``runbooks/<name>.yaml``); a path only when
      it is the very value the deployment was created with (``pitstop deploy`` writes a path for a
      config outside ``config/``), so a Prefect UI or API user cannot point a run at any YAML file;
    * ``accept_unverified_backup`` needs a reason, as on the CLI.
    """
    import re

    from .ids import check_run_id

    if run_id is not None:
        check_run_id(run_id, "run_id")
    name = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
    for key, value in (("env", env), ("runbook", runbook)):
        if name.fullmatch(value) and not value.endswith((".yaml", ".yml")):
            continue
        if deployment_parameters is None:
            continue  # called in-process (pitstop run --engine prefect): the CLI validated its arguments
        if deployment_parameters.get(key) != value:
            raise ConfigError(f"flow parameter {key}={value!r} is not a name and not the deployment's own "
                              f"{key}: pass an environment/runbook name (paths are refused)")
    if accept_unverified_backup and not reason.strip():
        raise ConfigError("accept_unverified_backup needs a reason explaining why")
