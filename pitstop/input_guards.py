"""Input guards that span a whole config: rules that would delete everything, schedules that never
occur, and secrets that must be resolvable before a run starts; and the guards of Prefect flow
parameters, which come from whoever can reach the Prefect API (``flow_parameters``).

``config_problems`` runs with every config load (``pitstop validate`` too); ``secret_problems`` runs
only before a run (``runner.load``), because a CI machine validating files has no secrets. Every
problem points at the file and line of the offending key; secret *values* are never read into a
message, only the variable's name.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import yamlfile
from .errors import ConfigError, InputError, Problem
from .model import Trigger

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
    """Every ``*_env`` slot the run will need names a variable that is set (names only, never values) and
    holds at least ``MIN_SECRET`` characters: a shorter value is no secret, and redacting it from every
    output would shred them, so it would be printed as is."""
    from .redact import MIN_SECRET

    problems: list[tuple[list[str | int], str]] = []
    for loc, var in secret_slots(cfg):
        value = os.environ.get(var)
        if not value:
            problems.append((loc, f"secret ${var} is not set in the environment (needed before the run starts)"))
        elif len(value) < MIN_SECRET:
            problems.append((loc, f"secret ${var} is shorter than {MIN_SECRET} characters: too short to be a "
                                  "secret or to be redacted from logs and reports"))
    if not problems:
        return []
    doc = yamlfile.load(Path(cfg.source), ConfigError)
    return [doc.problem(loc, message) for loc, message in problems]


# -- flow parameters ----------------------------------------------------------------------------------
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
MAX_WAIT_S = 24 * 3600
OVERRIDE_TRIGGERS = ("emergency",)


@dataclass(frozen=True)
class FlowInputs:
    """What a flow run may load: absolute paths of the config and runbook files its parameters name."""

    env: str
    runbook: str


def flow_parameters(*, env: str, runbook: str, run_id: str | None, reason: str, accept_unverified_backup: bool,
                    deployment_parameters: dict[str, object] | None, trigger: str = "manual",
                    override_blackout: bool = False, expected_downtime: str | None = None,
                    wait_s: float = 0.0) -> FlowInputs:
    """The flow entry point's guards, as strict as the CLI's: an InputError before anything runs.

    ``deployment_parameters`` are the *deployment's own* parameters as stored on the Prefect API (not the
    flow run's, which whoever started the run chose), or ``None`` when the flow is called in-process by
    the CLI (``pitstop run --engine prefect``), whose arguments come from the operator's shell.

    * ``run_id``: a run id, never a path (``../../outside`` once wrote a run folder outside reports);
    * ``env`` / ``runbook``: a name, resolved only in the configured directories (``./config`` then the
      project's ``config/``; ``./runbooks`` then ``runbooks/``); a path only when it is the value the
      deployment was created with (``pitstop deploy`` writes the path of a config outside ``config/``) or,
      for a runbook, a file directly in a runbooks directory or beside the deployed config file (whoever can
      write there can rewrite the config anyway) that is not writable by others;
    * ``trigger`` is one of scheduled/manual/emergency; an emergency, ``accept_unverified_backup`` and
      ``override_blackout`` need a reason, as on the CLI; ``expected_downtime`` parses; ``wait_s`` is
      0..24 h.
    """
    from .ids import check_run_id

    if run_id is not None:
        check_run_id(run_id, "run_id")
    if trigger not in {t.value for t in Trigger}:
        raise InputError(f"flow parameter trigger={trigger!r} must be scheduled, manual or emergency")
    needs_reason = [what for what, on in (("an emergency run", trigger in OVERRIDE_TRIGGERS),
                                          ("accept_unverified_backup", accept_unverified_backup),
                                          ("override_blackout", override_blackout)) if on]
    if needs_reason and not reason.strip():
        raise InputError(f"{' and '.join(needs_reason)} needs a reason explaining why (flow parameter `reason`)")
    if expected_downtime is not None:
        from .units import parse_duration

        try:
            parse_duration(expected_downtime)
        except ValueError as exc:
            raise InputError(f"flow parameter expected_downtime: {exc}") from None
    if not (0 <= wait_s <= MAX_WAIT_S):  # also refuses NaN
        raise InputError(f"flow parameter wait_s must be between 0 and {MAX_WAIT_S} seconds (got {wait_s!r})")
    env_path = _flow_file("env", env, "config", deployment_parameters, [])
    beside = [env_path.parent, env_path.parent / "runbooks"]
    rb_path = _flow_file("runbook", runbook, "runbooks", deployment_parameters, beside)
    return FlowInputs(env=str(env_path), runbook=str(rb_path))


def flow_env(env: str, deployment_parameters: dict[str, object] | None) -> str:
    """The notices flow's guard: ``env`` is a name or the deployment's own path (see flow_parameters)."""
    return str(_flow_file("env", env, "config", deployment_parameters, []))


def _flow_file(key: str, value: str, sub: str, deployed: dict[str, object] | None, beside: list[Path]) -> Path:
    from .config.environment import default_search_dirs

    dirs = default_search_dirs(sub)
    if NAME.fullmatch(value) and not value.endswith((".yaml", ".yml")):
        for base in dirs:
            if (base / f"{value}.yaml").is_file():
                return (base / f"{value}.yaml").resolve()
        raise InputError(f"flow parameter {key}={value!r}: no {sub}/{value}.yaml in "
                         + ", ".join(str(d) for d in dirs))
    path = Path(value).expanduser()
    if deployed is None:  # in-process: the CLI's own argument (any path the operator's shell can name)
        return path.resolve()
    own = deployed.get(key)
    if isinstance(own, str) and own and Path(own).expanduser().resolve() == path.resolve():
        return path.resolve()
    real = path.resolve()
    trusted = [d.resolve() for d in [*dirs, *beside] if d.is_dir()]
    if (key == "runbook" and real.suffix in (".yaml", ".yml") and real.is_file() and real.parent in trusted
            and not real.parent.stat().st_mode & 0o022):
        return real
    where = ", ".join(str(d) for d in (trusted if key == "runbook" else dirs))
    raise InputError(f"flow parameter {key}={value!r} is not a name and not the deployment's own {key}: pass "
                     f"a name (resolved in {where})" + (" or a runbook file in one of those directories"
                                                        if key == "runbook" else "") + "; other paths are refused")
