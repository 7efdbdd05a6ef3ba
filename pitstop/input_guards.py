"""Input guards: secrets that must be resolvable before a run starts, and the guards of Prefect flow
parameters, which come from whoever can reach the Prefect API (``flow_parameters``).

``secret_problems`` runs only before a run (``runner.load``), because a CI machine validating files has
no secrets; the checks of a config's contents that run with every load (``pitstop validate`` too) live
with the loader (:mod:`pitstop.config.guards`). Every problem points at the file and line of the
offending key; secret *values* are never read into a message, only the variable's name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import yamlfile
from .config.environment import default_search_dirs
from .config.guards import secret_slots
from .errors import ConfigError, InputError, Problem
from .model import Trigger
from .redact import MIN_SECRET

if TYPE_CHECKING:
    from .config import EnvironmentConfig


def secret_problems(cfg: EnvironmentConfig) -> list[Problem]:
    """Every ``*_env`` slot the run will need names a variable that is set (names only, never values) and
    holds at least ``MIN_SECRET`` characters: a shorter value is no secret, and redacting it from every
    output would shred them, so it would be printed as is."""
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
