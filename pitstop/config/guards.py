"""Checks that span a whole config, run by the loader with every load (``pitstop validate`` too): rules
that would delete everything and schedules that never occur, each pointing at the file and line of the
offending key; and where a config names its secrets (``secret_slots``: the ``*_env`` keys a run needs,
checked before a run by :mod:`pitstop.input_guards` and registered for redaction by :mod:`pitstop.redact`).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .. import yamlfile
    from ..errors import Problem
    from .environment import EnvironmentConfig

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
