"""The ``pitstop`` command line (typer + rich).

Exit codes: 0 success, 1 run failed, 2 bad input (nothing executed), 3 another run holds the lock.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

# Quiet, private defaults for Prefect before it is imported anywhere: no analytics, no chatter.
for _k, _v in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
               "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
               "PREFECT_LOGGING_LOG_PRINTS": "false"}.items():
    os.environ.setdefault(_k, _v)

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from .errors import InputError, PitstopError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="pitstop — maintenance orchestrator and runbook engine (Prefect 3).")
report_app = typer.Typer(no_args_is_help=True, help="Read and verify run reports.")
app.add_typer(report_app, name="report")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

EnvOpt = Annotated[str, typer.Option("--env", "-e", help="environment name (config/<env>.yaml) or a path")]
RunbookOpt = Annotated[str, typer.Option("--runbook", "-r", help="runbook name (runbooks/<name>.yaml) or a path")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]


class Engine(StrEnum):
    prefect = "prefect"
    local = "local"


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# -- commands ---------------------------------------------------------------------------------------
@app.command()
def validate(env: EnvOpt, runbook: Annotated[str | None, typer.Option("--runbook", "-r")] = None,
             as_json: JsonOpt = False) -> None:
    """Validate a config (and a runbook against it). Exit 2 with file:line on problems."""
    from .config import load_config
    from .runbook import load_runbook

    cfg = load_config(env)
    rb = load_runbook(runbook, cfg) if runbook else None
    if as_json:
        _emit_json({"ok": True, "config": cfg.source, "runbook": rb.source if rb else None})
    else:
        out.print(f"[green]✓[/green] {cfg.source} is valid" + (f"; {rb.source} is valid" if rb else ""))


@app.command()
def plan(env: EnvOpt, runbook: RunbookOpt, as_json: JsonOpt = False) -> None:
    """Show every step, its targets and its window placement. Changes nothing."""
    from .context import RunContext, RunOptions
    from .plan import build_plan, describe_changes
    from .runner import load

    cfg, rb = load(env, runbook)
    ctx = RunContext.create(cfg, rb, RunOptions(dry_run=True), run_id="plan")
    try:
        p = describe_changes(ctx, build_plan(cfg, rb))
    finally:
        ctx.close()
        _discard_plan_dir(ctx.run_dir)
    if as_json:
        _emit_json(p.model_dump(mode="json"))
        return
    from rich.table import Table

    t = Table(title=f"plan: {rb.name} on {cfg.name} (nothing is changed)")
    for col in ("phase", "stage", "step", "placement", "targets", "would"):
        t.add_column(col, overflow="fold")
    for s in p.steps:
        t.add_row(s.phase.value, s.stage.value, f"{s.label}\n[dim]{s.uses}[/dim]" + (" [red]destructive[/red]"
                  if s.destructive else ""), f"{s.placement.value}\n[dim]{s.why}[/dim]",
                  ", ".join(s.hosts) or s.target.value, "\n".join(s.would))
    out.print(t)
    inside = [s.label for s in p.steps if s.phase.value == "window" and s.stage.value not in
              ("maintenance-on", "maintenance-off")]
    out.print(f"inside the window: {', '.join(inside) or 'only the maintenance switch'}")


def _discard_plan_dir(run_dir: Path) -> None:
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)


def _run(env: str, runbook: str, trigger: str, reason: str, accept_unverified_backup: bool, engine: Engine,
         as_json: bool) -> None:
    from .runner import load

    load(env, runbook)  # validate first: bad input exits 2 before Prefect or anything else starts
    if accept_unverified_backup and not reason.strip():
        raise InputError("--accept-unverified-backup needs --reason explaining why")
    if engine == Engine.prefect:
        from flows.maintenance import maintenance

        res = maintenance(env=env, runbook=runbook, trigger=trigger, reason=reason,
                          accept_unverified_backup=accept_unverified_backup, console=not as_json)
        run_dir = Path(res["run_dir"])
    else:
        from .console import ConsoleView
        from .runner import execute

        result = execute(env, runbook, trigger=trigger, reason=reason,
                         accept_unverified_backup=accept_unverified_backup,
                         listener=None if as_json else ConsoleView(out))
        run_dir = result.run_dir
    report = json.loads((run_dir / "report.json").read_text())
    if as_json:
        _emit_json({"run_id": report["run_id"], "status": report["status"], "run_dir": str(run_dir),
                    "report": str(run_dir / "report.json")})
    else:
        from .console import print_summary

        print_summary(out, report, str(run_dir))
    if report["status"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def run(env: EnvOpt, runbook: RunbookOpt,
        trigger: Annotated[str, typer.Option(help="scheduled | manual")] = "manual",
        reason: Annotated[str, typer.Option(help="why this run (recorded in the report)")] = "",
        accept_unverified_backup: Annotated[bool, typer.Option(
            help="let destructive steps run without a verified backup (needs --reason)")] = False,
        engine: Annotated[Engine, typer.Option(help="prefect (a flow run) or local (no Prefect)")] = Engine.prefect,
        as_json: JsonOpt = False) -> None:
    """Run a runbook as a Prefect flow (ephemeral Prefect API unless PREFECT_API_URL is set)."""
    if trigger not in ("scheduled", "manual"):
        raise InputError(f"--trigger must be scheduled or manual (got {trigger!r}); use `pitstop emergency`")
    _run(env, runbook, trigger, reason, accept_unverified_backup, engine, as_json)


@app.command()
def emergency(env: EnvOpt, runbook: RunbookOpt,
              reason: Annotated[str, typer.Option(help="the cause; required, goes into every notice and the report")] = "",
              accept_unverified_backup: Annotated[bool, typer.Option()] = False,
              engine: Annotated[Engine, typer.Option()] = Engine.prefect, as_json: JsonOpt = False) -> None:
    """Start an emergency run now. Refuses without --reason."""
    if not reason.strip():
        raise InputError("an emergency run needs --reason \"...\" (it is sent to everyone and goes in the report)")
    _run(env, runbook, "emergency", reason, accept_unverified_backup, engine, as_json)


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
    _run(cfg.source, "monthly", "manual", "", False, engine, as_json)


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
        _emit_json(doc)


# -- reports ----------------------------------------------------------------------------------------
def _run_dir(env: str | None, run: str) -> Path:
    p = Path(run)
    if p.is_dir():
        return p
    if env:
        from .config import load_config

        cfg = load_config(env)
        cand = cfg.resolve(cfg.reports.dir) / run
        if cand.is_dir():
            return cand
    raise InputError(f"no run folder {run!r}" + ("" if env else " (pass --env to look a run id up)"))


@report_app.command("list")
def report_list(env: EnvOpt, as_json: JsonOpt = False) -> None:
    """List the runs of an environment, newest first."""
    from .config import load_config

    cfg = load_config(env)
    root = cfg.resolve(cfg.reports.dir)
    rows = []
    for d in sorted(root.glob("*/report.json"), reverse=True):
        r = json.loads(d.read_text())
        rows.append({k: r.get(k) for k in ("run_id", "runbook", "trigger", "status", "started_at")})
    if as_json:
        _emit_json(rows)
        return
    from rich.table import Table

    t = Table(title=f"runs of {cfg.name}")
    for col in ("run_id", "runbook", "trigger", "status", "started_at"):
        t.add_column(col)
    for r in rows:
        t.add_row(*(str(r[c]) for c in ("run_id", "runbook", "trigger", "status", "started_at")))
    out.print(t)


@report_app.command("show")
def report_show(run: Annotated[str, typer.Argument(help="run id or run folder")],
                env: Annotated[str | None, typer.Option("--env", "-e")] = None, as_json: JsonOpt = False) -> None:
    """Print a run's report (Markdown, or JSON with --json)."""
    d = _run_dir(env, run)
    if as_json:
        sys.stdout.write((d / "report.json").read_text())
    else:
        from rich.markdown import Markdown

        out.print(Markdown((d / "report.md").read_text()))


@report_app.command("verify")
def report_verify(run: Annotated[str, typer.Argument(help="run folder (or run id with --env)")],
                  env: Annotated[str | None, typer.Option("--env", "-e")] = None) -> None:
    """Recompute the audit hash chain and the manifest; exit 1 naming the first bad event or file."""
    from .report.verify import verify_run_dir

    problem = verify_run_dir(_run_dir(env, run))
    if problem:
        err.print(f"[bold red]TAMPERED[/bold red]: {problem}")
        raise typer.Exit(1)
    out.print("[green]✓[/green] audit chain and manifest intact")


def main() -> None:
    try:
        app(standalone_mode=False)
    except InputError as exc:
        err.print("[bold red]error:[/bold red] invalid input — nothing was executed")
        for p in exc.problems:
            err.print(f"  {p}", markup=False)
        sys.exit(2)
    except PitstopError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", markup=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
        raise


if __name__ == "__main__":
    main()
