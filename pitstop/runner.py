"""Glue between the CLI/flows and the engine: validate, lock the environment, build the context,
run (or resume), return the outcome."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .approval import Waiter
from .config import EnvironmentConfig, find_config, load_config
from .connectors.postgres import Database
from .context import FlowRunRef, RunContext, RunOptions, new_run_id
from .errors import ConfigError, InputError
from .executor import Executor, UnitRunner, direct
from .locks import EnvironmentLock
from .model import Status, Trigger
from .notify.channels import SecretReader, build_channels
from .notify.notifier import Notifier
from .runbook import Runbook, find_runbook, load_runbook

Listener = Callable[[dict[str, Any]], None]


@dataclass
class RunResult:
    run_id: str
    status: Status
    run_dir: Path

    def report(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "report.json").read_text())


def run_id_for_flow_run(env: str, runbook: str, flow_run_id: str, start: datetime) -> str:
    """The run id of a Prefect flow run: stable across its retries (so a retry resumes the run) and
    computable by whoever triggered it (so ``pitstop emergency`` can find the report)."""
    stamp = (start.astimezone(UTC) if start.tzinfo else start).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{Path(env).stem}-{Path(runbook).stem}-{flow_run_id[:8]}"


def parse_expected_downtime(text: str) -> timedelta:
    from .units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise InputError(f"--expected-downtime: {exc}") from None


# What the command in this process parsed and validated already (the CLI checks its input before the engine
# starts; the Prefect flow run it runs in-process gets file paths as parameters): see :func:`loaded_once`.
_LOADED: ContextVar[tuple[EnvironmentConfig, Runbook] | None] = ContextVar("pitstop_loaded", default=None)


@contextlib.contextmanager
def loaded_once(cfg: EnvironmentConfig, rb: Runbook) -> Iterator[None]:
    """Within this block, :func:`load` of the same config and runbook files returns these objects instead of
    parsing the files again: a command parses each file once (the scope is this context only)."""
    token = _LOADED.set((cfg, rb))
    try:
        yield
    finally:
        _LOADED.reset(token)


def load(env: str, runbook: str, cfg: EnvironmentConfig | None = None) -> tuple[EnvironmentConfig, Runbook]:
    """Validate config and runbook together; raises InputError (exit 2) before anything runs. ``cfg``: the
    environment's config, already loaded from ``env``."""
    known = _LOADED.get()
    if known is not None and _same_file(known[0].source, find_config(env)) \
            and _same_file(known[1].source, find_runbook(runbook)):
        return known
    cfg = cfg or load_config(env)
    rb = load_runbook(runbook, cfg)
    admit(cfg)
    return cfg, rb


def admit(cfg: EnvironmentConfig) -> None:
    """Every secret the run needs is set (ConfigError, exit 2, if not), and registered for redaction."""
    from .input_guards import secret_problems
    from .redact import install

    if problems := secret_problems(cfg):
        raise ConfigError(problems)
    install(cfg)  # third-party DEBUG logs never carry this run's secrets


def _execute(cfg: EnvironmentConfig, rb: Runbook, options: RunOptions, run_id: str, unit_runner: UnitRunner,
             listener: Listener | list[Listener] | None, wait_s: float, resume_events: list[dict[str, Any]] | None,
             approval_waiter: Waiter | None = None, flow_run: FlowRunRef | None = None,
             read_secret: SecretReader | None = None) -> RunResult:
    from .window import check_blackout

    skip = None if resume_events is not None else check_blackout(cfg, options.trigger.value,
                                                                  options.override_blackout, options.reason)
    db = Database(cfg)
    if any(step.uses.startswith("backup.") for stage in rb.stages for step in stage.steps):
        db.clients()  # ClientTooOld (exit 2): no pg_dump new enough for this server, before anything changes
    lock = EnvironmentLock(db, cfg.name, run_id)
    lock.acquire(wait_s=wait_s)  # RunLocked (exit 3) before anything of this run exists
    try:
        from .abandoned import alert_abandoned, refuse_beside_open_window, scan

        abandoned = scan(cfg)
        alert_abandoned(cfg, abandoned, read_secret)  # runs SIGKILLed earlier could not alert: now, once (lock held)
        if resume_events is None:
            refuse_beside_open_window(cfg, abandoned)  # exit 3: a dead run's maintenance page is still up
        ctx = RunContext.create(cfg, rb, options, run_id=run_id)
        ctx.holds_environment_lock = True
        ctx.flow_run = flow_run
        listeners = listener if isinstance(listener, list) else [] if listener is None else [listener]
        if listeners:
            from .console import ConsoleView, guard_log_consoles

            guard_log_consoles()  # Prefect's rich log handler on stderr: a closed pipe must not end the run
        for one in listeners:
            if isinstance(one, ConsoleView):
                one.attach(ctx.audit)  # a console switched off is noted once in the log
            ctx.audit.subscribe(one)
        ctx.notifier = Notifier(ctx, build_channels(cfg, read_secret))
        if resume_events is None:  # advance-notice lead-time policy: refuse, or record a warning
            from .notify.notices import lead_time_gate

            lead_time_gate(ctx, channels=ctx.notifier.channels)
        completed: dict[str, dict[str, Any]] | None = None
        if resume_events is not None:
            from .resume import completed_steps, rehydrate

            completed = completed_steps(resume_events)
            rehydrate(ctx, resume_events)
        executor = Executor(ctx, unit_runner, completed=completed)
        executor.skip_reason = skip
        executor.gate.waiter = approval_waiter  # None: the decision file in the run folder (pitstop approve)
        status = executor.run()
        return RunResult(run_id=ctx.run_id, status=status, run_dir=ctx.run_dir)
    finally:
        lock.release()


def execute(env: str, runbook: str, *, trigger: str = Trigger.MANUAL.value, reason: str = "",
            accept_unverified_backup: bool = False, run_id: str | None = None, unit_runner: UnitRunner = direct,
            listener: Listener | list[Listener] | None = None, wait_s: float = 0.0, override_blackout: bool = False,
            expected_downtime: str | None = None, rehearsal: bool = False,
            approval_waiter: Waiter | None = None, flow_run: FlowRunRef | None = None,
            read_secret: SecretReader | None = None) -> RunResult:
    """Run a runbook. With a ``run_id`` whose folder already exists, resume that run instead.

    ``expected_downtime`` (e.g. ``20m``) overrides the runbook's announced downtime for this run. What the
    engine running it provides comes in as parameters (the engine never imports Prefect): ``unit_runner``,
    ``approval_waiter``, ``flow_run`` (its identity and the report's artifact publisher) and ``read_secret``
    (the notification channels' Prefect Secret blocks)."""
    cfg, rb = load(env, runbook)
    given = parse_expected_downtime(expected_downtime) if expected_downtime else None
    if run_id and (cfg.resolve(cfg.reports.dir) / run_id / "audit.jsonl").is_file():
        return resume(env, run_id, unit_runner=unit_runner, listener=listener, wait_s=wait_s, flow_run=flow_run,
                      approval_waiter=approval_waiter, loaded=(cfg, rb), read_secret=read_secret)
    if given is not None:
        rb = rb.model_copy(update={"expected_downtime": given})
    options = RunOptions(trigger=Trigger(trigger), reason=reason, accept_unverified_backup=accept_unverified_backup,
                         override_blackout=override_blackout, expected_downtime=given, rehearsal=rehearsal)
    run_id = run_id or new_run_id(cfg.name, rb.name)
    return _execute(cfg, rb, options, run_id, unit_runner, listener, wait_s, None, approval_waiter, flow_run,
                    read_secret)


def resume(env: str, run_id: str, *, unit_runner: UnitRunner = direct,
           listener: Listener | list[Listener] | None = None,
           wait_s: float = 0.0, approval_waiter: Waiter | None = None, flow_run: FlowRunRef | None = None,
           loaded: tuple[EnvironmentConfig, Runbook | None] | None = None,
           prior: tuple[dict[str, Any], list[dict[str, Any]]] | None = None,
           read_secret: SecretReader | None = None) -> RunResult:
    """Resume a crashed run (its process died before ``run.finished``): skip every step its audit log
    records as completed, with every option of the first attempt as that attempt's first event recorded them.

    Refused (bad input, exit 2, nothing appended or sent): a run id that is not one, a run whose audit
    chain is broken (what it says cannot be trusted to skip or gate anything), and a run that finished
    (succeeded, failed or skipped: its report is written and sealed, everyone was told how it ended).

    ``loaded`` (the config, and a runbook already loaded from the same file) and ``prior`` (what
    :func:`resumable` returned) spare parsing them again: a command reads each file once."""
    cfg, known = loaded if loaded is not None else (load_config(env), None)
    started, events = prior if prior is not None else resumable(cfg, run_id)
    source = started.get("runbook_source") or started["runbook"]
    rb = known if known is not None and _same_file(known.source, find_runbook(source)) else load_runbook(source, cfg)
    admit(cfg)
    options = recorded_options(run_id, started)
    if finished_at(events) is not None:
        # killed after the run finished but before its report was sealed (resumable() refuses a sealed one):
        # write the report, nothing else (no step, no notification runs again)
        from .report.writer import write_report

        last = finished_at(events) or {}
        ctx = RunContext.create(cfg, rb, options, run_id=run_id)
        ctx.flow_run = flow_run  # the report's artifacts go to the flow run, as the run's own would have
        try:
            ctx.event("run.resumed", run_id=run_id, environment=cfg.name, runbook=rb.name, report_only=True,
                      reason="the run had finished but was killed before its report was sealed: report written now",
                      options=options.to_record())
            write_report(ctx)
        finally:
            ctx.close()
        return RunResult(run_id=run_id, status=Status(last["data"].get("status")), run_dir=ctx.run_dir)
    if options.expected_downtime is not None:
        rb = rb.model_copy(update={"expected_downtime": options.expected_downtime})
    return _execute(cfg, rb, options, run_id, unit_runner, listener, wait_s, events, approval_waiter, flow_run,
                    read_secret)


def _same_file(a: str, b: Path) -> bool:
    try:
        return bool(a) and Path(a).resolve() == b.resolve()
    except OSError:
        return False


def recorded_options(run_id: str, started: dict[str, Any]) -> RunOptions:
    """The first attempt's options, validated; InputError if the record does not hold valid ones."""
    from pydantic import ValidationError

    try:
        return RunOptions.from_record(started)
    except (ValidationError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"run {run_id} cannot be resumed: the options in its first event are not valid "
                         f"({str(exc).splitlines()[0]})") from None


def finished_at(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``run.finished`` event that ends the run's last attempt, or None (the attempt died before it).

    A report-only ``run.resumed`` (written for a run killed between ``run.finished`` and its seal) is not an
    attempt: the run stays finished."""
    from .resume import attempt_events

    last = next((e for e in reversed(attempt_events(events)) if e["kind"] in ("run.started", "run.resumed",
                                                                               "run.finished")), None)
    return last if last is not None and last["kind"] == "run.finished" else None


def resumable(cfg: EnvironmentConfig, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first event's data and all events of a run that may be resumed; InputError (exit 2) if not."""
    from .audit import is_empty, read_chain
    from .ids import check_run_id

    check_run_id(run_id)
    run_dir = cfg.resolve(cfg.reports.dir) / run_id
    if not (run_dir / "audit.jsonl").is_file():
        raise InputError(f"no run {run_id!r} under {run_dir.parent}")
    if is_empty(run_dir / "audit.jsonl"):
        raise InputError(f"run {run_id} cannot be resumed: it never started (its audit.jsonl is empty: nothing ran); "
                         f"start a new run with `pitstop run`")
    events, broken = read_chain(run_dir / "audit.jsonl")  # read and parsed once: checked, then used
    if broken:
        raise InputError(f"run {run_id} cannot be resumed: its audit log is not intact ({broken}); "
                         f"`pitstop report verify {run_dir}` says more")
    started = next(e for e in events if e["kind"] == "run.started")["data"]
    last = next((e for e in reversed(events) if e["kind"] in ("run.started", "run.resumed", "run.finished")), None)
    last = finished_at(events)
    if last is not None and (run_dir / "manifest.json").is_file():
        status = last["data"].get("status")
        again = "" if status in ("succeeded", "skipped") else \
            f"; to try again, start a new run: pitstop run --env {cfg.source} --runbook {started.get('runbook')}"
        raise InputError(f"run {run_id} already finished ({status} at {last['ts']}): there is nothing to resume; "
                         f"its report is {run_dir / 'report.html'}{again}")
    recorded_options(run_id, started)
    return started, events
