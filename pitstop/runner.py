"""Glue between the CLI/flows and the engine: validate, build the context, run, return the outcome."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import EnvironmentConfig, load_config
from .context import RunContext, RunOptions
from .executor import Executor, UnitRunner, direct
from .model import Status, Trigger
from .notify.notifier import Notifier
from .runbook import Runbook, load_runbook


@dataclass
class RunResult:
    run_id: str
    status: Status
    run_dir: Path

    def report(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "report.json").read_text())


def load(env: str, runbook: str) -> tuple[EnvironmentConfig, Runbook]:
    """Validate config and runbook together; raises InputError (exit 2) before anything runs."""
    cfg = load_config(env)
    return cfg, load_runbook(runbook, cfg)


def execute(env: str, runbook: str, *, trigger: str = Trigger.MANUAL.value, reason: str = "",
            accept_unverified_backup: bool = False, run_id: str | None = None,
            unit_runner: UnitRunner = direct, listener: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    cfg, rb = load(env, runbook)
    options = RunOptions(trigger=Trigger(trigger), reason=reason, accept_unverified_backup=accept_unverified_backup)
    ctx = RunContext.create(cfg, rb, options, run_id=run_id)
    if listener is not None:
        ctx.audit.subscribe(listener)
    ctx.notifier = Notifier(ctx)
    status = Executor(ctx, unit_runner).run()
    return RunResult(run_id=ctx.run_id, status=status, run_dir=ctx.run_dir)
