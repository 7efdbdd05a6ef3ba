"""The ``pitstop`` command line (typer + rich).

Exit codes: 0 success, 1 run failed, 2 bad input (nothing executed), 3 another run holds the lock,
4 not approved (rejected or no decision in time: nothing destructive ran; docs/approvals.md).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from .process_defaults import cli_process_defaults

# The command's own process (``python -m pitstop.cli``; the console script does it in pitstop/entry.py):
# pydantic plugins off, Prefect quiet and private, invoke deferred (see pitstop/process_defaults.py), before
# anything heavy is imported. Importing this module from another program sets nothing.
if __name__ == "__main__":
    cli_process_defaults()

import typer
from rich.markup import escape

from . import cli_approval, cli_deploy, cli_notices, cli_report
from .backup import cli as cli_backup
from .console import (
    emit_json,
    flush_std_streams,
    safe_console,
    stream_to_devnull,
    terminal_hangup_ignored,
    write_stdout,
)
from .errors import InputError, PitstopError
from .fleet import cli as cli_hosts
from .maintenance_mode import cli as cli_maintenance

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .prefect_server import LocalServer

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="pitstop — maintenance orchestrator and runbook engine (Prefect 3).")
app.add_typer(cli_report.report_app, name="report")  # list | show | verify
app.add_typer(cli_notices.app, name="notices")  # plan | send-due
app.add_typer(cli_notices.notify_app, name="notify")  # preview
app.add_typer(cli_hosts.hosts_app, name="hosts")  # list | trust | check
app.add_typer(cli_maintenance.maintenance_app, name="maintenance")  # status | off
cli_backup.register(app)  # backups list | prune, restore
cli_deploy.register(app)  # deploy
cli_approval.register(app)  # approve, reject


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        write_stdout(f"pitstop {version('pitstop')}\n")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print pitstop's version and exit")] = False) -> None:
    """pitstop — maintenance orchestrator and runbook engine (Prefect 3)."""

out = safe_console()
err = safe_console(stderr=True)

EnvOpt = Annotated[str, typer.Option("--env", "-e", help="environment name (config/<env>.yaml) or a path")]
RehearsalOpt = Annotated[bool, typer.Option("--rehearsal", help="a test of the runbook: customer audiences hear "
                                            "nothing; console, notifications and report say REHEARSAL")]
RunbookOpt = Annotated[str, typer.Option("--runbook", "-r", help="runbook name (runbooks/<name>.yaml) or a path")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]


class Engine(StrEnum):
    prefect = "prefect"
    local = "local"


# -- commands ---------------------------------------------------------------------------------------
@app.command()
def validate(env: EnvOpt, runbook: Annotated[str | None, typer.Option("--runbook", "-r")] = None,
             as_json: JsonOpt = False) -> None:
    """Validate a config (and a runbook against it). Exit 2 with file:line on problems."""
    from .config import load_config
    from .runbook import load_runbook

    try:
        cfg = load_config(env)
        rb = load_runbook(runbook, cfg) if runbook else None
        clients = None
        if rb is not None and any(step.uses.startswith("backup.") for stage in rb.stages for step in stage.steps):
            from .connectors.postgres import probe

            clients = probe(cfg)  # ClientTooOld (exit 2) when the server answers and no pg_dump is new enough
    except InputError as exc:
        if not as_json:
            raise
        emit_json({"ok": False, "problems": [{"file": p.file, "line": p.line, "at": p.where, "message": p.message}
                                             for p in exc.problems]})
        raise typer.Exit(2) from None
    if as_json:
        emit_json({"ok": True, "config": cfg.source, "runbook": rb.source if rb else None,
                   "pg_clients": clients.as_json() if clients else None})
    else:
        out.print(f"[green]✓[/green] {escape(str(cfg.source))} is valid" + (f"; {escape(str(rb.source))} is valid"
                                                                     if rb else ""), soft_wrap=True)
        if clients is not None:
            out.print(f"  client tools: {clients.note}", markup=False, soft_wrap=True)


@app.command()
def plan(env: EnvOpt, runbook: RunbookOpt, as_json: JsonOpt = False) -> None:
    """Show every step, its targets and its window placement. Changes nothing."""
    from .context import RunContext, RunOptions
    from .plan import build_plan, describe_changes, forecast_lines, with_forecast
    from .runner import load

    cfg, rb = load(env, runbook)
    with RunContext.scratch(cfg, rb, RunOptions(dry_run=True), "plan") as ctx:  # no run folder: not a run
        p = with_forecast(cfg, describe_changes(ctx, build_plan(cfg, rb)))
        from .need import decide

        decide(ctx, p)  # from facts: does any exclusive step have work? (docs/window.md)
    if as_json:
        emit_json(p.model_dump(mode="json"))
        return
    from .plan_view import print_plan

    print_plan(out, p, f"plan: {rb.name} on {cfg.name} (nothing is changed)")
    inside = [s.label for s in p.steps if s.phase.value == "window" and s.stage.value not in
              ("maintenance-on", "maintenance-off")]
    out.print(f"inside the window: {', '.join(inside) or 'only the maintenance switch'}")
    for line in forecast_lines(p):
        out.print(line)
    for line in decision_lines(p):
        out.print(line, markup=False)
    if p.approval is not None:
        from .approval import plan_line

        out.print(plan_line(p.approval), markup=False)


def decision_lines(p: Any) -> list[str]:
    """``pitstop plan``: window needed or not, and the backup rule, with their reasons."""
    d = p.decision
    if d is None:
        return []
    lines = [("window needed: " if d.window_needed else "no window needed: maintenance mode stays off — ")
             + d.window_why]
    lines += [f"  {s.label}: {s.work.answer.value} — {s.work.why}" for s in d.steps if s.exclusive]
    if d.backup_when != "always":
        lines.append(("backup needed: " if d.backup_needed else "no backup needed: ") + d.backup_why)
    return lines


def _run(env: str, runbook: str, trigger: str, reason: str, accept_unverified_backup: bool, engine: Engine,
         as_json: bool, run_id: str | None = None, wait_s: float = 0.0, override_blackout: bool = False,
         expected_downtime: str | None = None, rehearsal: bool = False, cfg: Any = None) -> None:
    """``cfg``: the environment's config when the command loaded it already (``demo``): each file is parsed once."""
    if engine == Engine.prefect and not as_json:  # the first line at once: Prefect's start is the slow part
        where = "the Prefect API at $PREFECT_API_URL" if os.environ.get("PREFECT_API_URL") else \
            "this state directory's local Prefect API server"
        err.print(f"[dim]{escape(Path(runbook).stem)} on {escape(Path(env).stem)} ({trigger}): checking config "
                  f"and runbook, then starting the flow run through {where}…[/dim]", soft_wrap=True)
    api = None
    if engine == Engine.prefect and not os.environ.get("PREFECT_API_URL"):
        from .config import load_config
        from .prefect_server import join

        cfg = cfg or load_config(env)  # bad config: exit 2 before any server starts
        api = join(cfg.state_path)  # returns at once: the server starts while the runbook loads, Prefect imports
    with _client_env(api):  # before Prefect is imported its client must talk to that server; undone after
        _run_with(env, runbook, trigger, reason, accept_unverified_backup, engine, as_json, run_id, wait_s,
                  override_blackout, expected_downtime, rehearsal, api, cfg)


@contextlib.contextmanager
def _client_env(api: LocalServer | None) -> Iterator[None]:
    """The local server's address and auth for this command only: a command run in-process (tests, a
    Python caller) must not leave them in ``os.environ`` for what it starts next."""
    if api is None:
        yield
        return
    added = api.client_env()
    saved = {key: os.environ.get(key) for key in added}
    os.environ.update(added)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_with(env: str, runbook: str, trigger: str, reason: str, accept_unverified_backup: bool, engine: Engine,
              as_json: bool, run_id: str | None, wait_s: float, override_blackout: bool,
              expected_downtime: str | None, rehearsal: bool, api: LocalServer | None, cfg: Any) -> None:
    try:
        from .runner import load, loaded_once, parse_expected_downtime

        cfg, rb = load(env, runbook, cfg=cfg)  # bad input exits 2 before anything runs
        if expected_downtime:
            parse_expected_downtime(expected_downtime)
        if accept_unverified_backup and not reason.strip():
            raise InputError("--accept-unverified-backup needs --reason explaining why")
    except InputError:
        if api is not None and api.started:
            api.stop_if_unused()  # a server started for a command that ends here does not wait to be idle
        raise
    # the engine (and the flow run in this process) takes the files parsed above instead of parsing them again
    with terminal_hangup_ignored(), loaded_once(cfg, rb):  # the terminal going away never stops a run
        run_dir = _run_engine(env, runbook, trigger, reason, accept_unverified_backup, engine, as_json, run_id,
                              wait_s, override_blackout, expected_downtime, rehearsal, api)
    _finish_run(run_dir, as_json, env)


def _run_engine(env: str, runbook: str, trigger: str, reason: str, accept_unverified_backup: bool, engine: Engine,
                as_json: bool, run_id: str | None, wait_s: float, override_blackout: bool,
                expected_downtime: str | None, rehearsal: bool, api: LocalServer | None = None) -> Path:
    if engine == Engine.prefect:
        from .prefect_adapter.inprocess import run_in_process

        if api is not None:
            waited = api.wait_ready()
            if not as_json:
                how = "started" if api.started else "running"
                err.print(f"[dim]Prefect API: local server ({how}, pid {api.record.pid}) ready"
                          + (f" after {waited:.1f} s more" if waited >= 0.1 else "") + "[/dim]", soft_wrap=True)
        res = run_in_process(api is not None, env=env, runbook=runbook, trigger=trigger, reason=reason,
                             accept_unverified_backup=accept_unverified_backup, run_id=run_id, wait_s=wait_s,
                             override_blackout=override_blackout, expected_downtime=expected_downtime,
                             console=not as_json, rehearsal=rehearsal)
        run_dir = Path(res["run_dir"])
    else:
        from .cli_prefect import read_secret_block
        from .console import ConsoleView
        from .runner import execute

        result = execute(env, runbook, trigger=trigger, reason=reason, run_id=run_id, wait_s=wait_s,
                         override_blackout=override_blackout, expected_downtime=expected_downtime,
                         rehearsal=rehearsal, accept_unverified_backup=accept_unverified_backup,
                         listener=None if as_json else ConsoleView(out), read_secret=read_secret_block)
        run_dir = result.run_dir
    return run_dir


def _finish_run(run_dir: Path, as_json: bool, env: str = "ENV") -> None:
    try:
        report = json.loads((run_dir / "report.json").read_text())
    except (OSError, ValueError) as exc:  # a full disk: the audit log is the record
        from .report.missing import no_report

        info = no_report(run_dir, exc, env)
        if as_json:
            emit_json(info)
        else:
            err.print(f"[bold red]error:[/bold red] {escape(info['message'])}", soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        emit_json({"run_id": report["run_id"], "status": report["status"], "run_dir": str(run_dir),
                   "report": str(run_dir / "report.json")})
    else:
        from .console import print_summary

        print_summary(out, report, str(run_dir))
    if report["status"] == "not-approved":
        raise typer.Exit(4)
    if report["status"] not in ("succeeded", "skipped"):
        raise typer.Exit(1)


WaitOpt = Annotated[float, typer.Option("--wait", help="queue: wait up to this many seconds for a running "
                                        "run of the same environment to finish (default: refuse, exit 3)")]


@app.command()
def run(env: EnvOpt, runbook: RunbookOpt,
        trigger: Annotated[str, typer.Option(help="scheduled | manual")] = "manual",
        reason: Annotated[str, typer.Option(help="why this run (recorded in the report)")] = "",
        accept_unverified_backup: Annotated[bool, typer.Option(
            help="let destructive steps run without a verified backup (needs --reason)")] = False,
        engine: Annotated[Engine, typer.Option(help="prefect (a flow run) or local (no Prefect)")] = Engine.prefect,
        wait: WaitOpt = 0.0, rehearsal: RehearsalOpt = False, as_json: JsonOpt = False) -> None:
    """Run a runbook as a Prefect flow (ephemeral Prefect API unless PREFECT_API_URL is set)."""
    if trigger not in ("scheduled", "manual"):
        raise InputError(f"--trigger must be scheduled or manual (got {trigger!r}); use `pitstop emergency`")
    _run(env, runbook, trigger, reason, accept_unverified_backup, engine, as_json, wait_s=wait, rehearsal=rehearsal)


@app.command()
def emergency(env: EnvOpt, runbook: RunbookOpt,
              reason: Annotated[str, typer.Option(help="the cause; required, goes into every notice and report")] = "",
              accept_unverified_backup: Annotated[bool, typer.Option()] = False,
              engine: Annotated[Engine, typer.Option()] = Engine.prefect, wait: WaitOpt = 0.0,
              override_blackout: Annotated[bool, typer.Option(help="run even inside a blackout period")] = False,
              expected_downtime: Annotated[str | None, typer.Option(help="announced downtime, e.g. 20m")] = None,
              no_wait: Annotated[bool, typer.Option("--no-wait", help="with a deployment: print the flow run and "
                                                    "return at once")] = False,
              rehearsal: RehearsalOpt = False, as_json: JsonOpt = False) -> None:
    """Start an emergency run now. Refuses without --reason.

    With PREFECT_API_URL set and the environment deployed (`pitstop deploy`), the run goes through
    the `<env>-emergency` deployment (`run_deployment`) and a worker executes it; otherwise it runs here.
    """
    if not reason.strip():
        raise InputError("an emergency run needs --reason \"...\" (it is sent to everyone and goes in the report)")
    if engine == Engine.prefect and not rehearsal:
        from .cli_prefect import find_deployment
        from .runner import load

        cfg, _ = load(env, runbook)
        name = find_deployment(cfg)
        if name:
            run_dir = cli_deploy.emergency_via_deployment(name, cfg, runbook, reason, accept_unverified_backup,
                                                          override_blackout, expected_downtime, wait=not no_wait)
            if run_dir is not None:
                _finish_run(run_dir, as_json, env)
            return
    _run(env, runbook, "emergency", reason, accept_unverified_backup, engine, as_json, wait_s=wait,
         override_blackout=override_blackout, expected_downtime=expected_downtime, rehearsal=rehearsal)


@app.command()
def resume(run_id: Annotated[str, typer.Argument(help="the run to resume")], env: EnvOpt,
           engine: Annotated[Engine, typer.Option()] = Engine.prefect, wait: WaitOpt = 0.0,
           as_json: JsonOpt = False) -> None:
    """Finish a crashed run: every step its audit log records as done is skipped. A finished run is refused."""
    from .runner import load_config, recorded_options, resumable

    cfg = load_config(env)
    started, events = resumable(cfg, run_id)  # exit 2: not a run, a broken audit chain, or already finished
    opts = recorded_options(run_id, started)  # the runner restores all of them again from the same record
    if engine == Engine.local:  # config, runbook and audit log are each read once (a flow run reads its own)
        from .cli_prefect import read_secret_block
        from .console import ConsoleView
        from .runner import resume as resume_run

        with terminal_hangup_ignored():
            result = resume_run(env, run_id, listener=None if as_json else ConsoleView(out), wait_s=wait,
                                loaded=(cfg, None), prior=(started, events), read_secret=read_secret_block)
        _finish_run(result.run_dir, as_json)
        return
    _run(env, started.get("runbook_source") or started["runbook"], opts.trigger.value, opts.reason,
         opts.accept_unverified_backup, engine, as_json, run_id=run_id, wait_s=wait)


@app.command()
def demo(reset: Annotated[bool, typer.Option(help="drop and reseed the demo database first")] = False,
         engine: Annotated[Engine, typer.Option()] = Engine.prefect, as_json: JsonOpt = False) -> None:
    """Set up the embedded demo environment (idempotent) and run the monthly runbook on it."""
    from .config import load_config
    from .demo import setup

    cfg = load_config("demo")
    if not as_json:
        out.print(f"[bold]setting up the demo environment[/bold] in {cfg.state_path}")
    info = setup(cfg, reset=reset)
    if not as_json:
        db = info["database"]
        assert isinstance(db, dict)
        out.print("  embedded PostgreSQL ready: " + ", ".join(f"{t} {n} rows" for t, n in db.items()))
        out.print(f"  local hosts: {', '.join(info['hosts'])}")  # type: ignore[arg-type]
    # The demo's blackouts illustrate the feature; they must not make the demo itself refuse to run on
    # those days (the override is recorded in the report like any other).
    from .window import blackout_now

    reason = "pitstop demo on the embedded environment" if blackout_now(cfg) else ""
    _run(cfg.source, "monthly", "manual", reason, False, engine, as_json, override_blackout=bool(reason), cfg=cfg)


@app.command()
def schema(kind: Annotated[str, typer.Argument(help="config | runbook")] = "runbook",
           out_dir: Annotated[Path | None, typer.Option("--out", help="write <kind>.schema.json here")] = None) -> None:
    """Print (or write) the JSON Schema of config or runbook files, for editors."""
    from .schema import config_schema, runbook_schema

    if kind not in ("config", "runbook"):
        raise InputError(f"schema kind must be config or runbook (got {kind!r})")
    doc = config_schema() if kind == "config" else runbook_schema()
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{kind}.schema.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        err.print(f"wrote {path}")
    else:
        emit_json(doc)


def main() -> None:
    from . import yamlfile
    from .fsmodes import private_umask

    yamlfile.on_load(lambda kind, path: err.print(f"{kind}: {path}", style="dim", markup=False, soft_wrap=True))
    try:
        with private_umask():  # every file of this command: run folders, reports, dumps, archives
            rc = app(standalone_mode=False)  # click returns typer.Exit codes instead of raising here
        sys.exit(rc if isinstance(rc, int) else 0)
    except InputError as exc:
        err.print("[bold red]error:[/bold red] invalid input — nothing was executed")
        for p in exc.problems:
            err.print(f"  {p}", markup=False)
        sys.exit(2)
    except PitstopError as exc:
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and the like
        base, usage = _click_errors()
        if isinstance(exc, base):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(2 if isinstance(exc, usage) else exc.exit_code)  # type: ignore[attr-defined]
        if isinstance(exc, OSError) and _stdout_gone(exc):
            # a command that wrote its output with a bare sys.stdout.write to a reader that went away
            # (`pitstop report list --json | head -1`): no traceback, the usual exit status of EPIPE
            err.print(f"[dim]stdout closed ({errno.errorcode.get(exc.errno or 0, 'error')}): output cut[/dim]")
            sys.exit(1)
        from .cli_errors import debug_traceback, describe

        if tb := debug_traceback(exc):
            err.print(tb, markup=False, highlight=False)
        err.print(f"[bold red]error:[/bold red] {escape(describe(exc))}", soft_wrap=True)
        sys.exit(1)
    finally:
        flush_std_streams()  # no "Exception ignored ... BrokenPipeError" at exit, no status 120


def _stdout_gone(exc: OSError) -> bool:
    """True if ``exc`` is stdout's reader going away: a broken pipe, or stdout cannot take what is buffered
    for it (a full disk, a terminal gone). Then stdout is pointed at /dev/null."""
    try:
        sys.stdout.flush()
        gone = isinstance(exc, BrokenPipeError)
    except (OSError, ValueError):
        gone = True
    if gone:
        stream_to_devnull(sys.stdout)
    return gone


def _click_errors() -> tuple[type[Exception], type[Exception]]:
    """``(ClickException, UsageError)`` of the click that typer parses with: typer 0.2x carries its own
    copy (``typer._click``), older typer uses the click package; ``typer.BadParameter`` derives from both
    classes in either case."""
    mro = typer.BadParameter.__mro__
    return (next(c for c in mro if c.__name__ == "ClickException"), next(c for c in mro if c.__name__ == "UsageError"))


if __name__ == "__main__":
    main()
