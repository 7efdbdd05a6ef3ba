"""``pitstop maintenance``: see and lift maintenance mode by hand, for the on-call engineer.

When a run dies and its safety net could not lift maintenance ("maintenance mode could NOT be
lifted — act now"), on-call needs one command, not a hunt for flag files and timers:

* ``status`` asks the configured strategy on every target host (flag file, status command or
  endpoint) whether maintenance is on, for which run and until when. Changes nothing.
* ``off`` lifts it on every target host where it is on, through the same strategy a run uses.
  It needs a ``--reason`` and records who lifted it, why and where in a folder of its own
  (``<reports dir>/<time>-<env>-maintenance-off-<id>/``: ``audit.jsonl``, hash-chained like a run's, and
  ``record.json``, both sealed in ``manifest.json``). It refuses while a run holds
  the environment (that run is still working behind the maintenance page) unless ``--force``.
  A dead-man watcher left on a host finds its marker gone and exits without acting.
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from ..console import safe_console
from ..errors import InputError, PitstopError

maintenance_app = typer.Typer(no_args_is_help=True,
                              help="Maintenance mode by hand: see where it is on, lift it when a run could not.")
out = safe_console()
err = safe_console(stderr=True)

EnvOpt = Annotated[str, typer.Option("--env", "-e", help="environment name (config/<env>.yaml) or a path")]
GroupOpt = Annotated[str | None, typer.Option("--group", "-g",
                                              help="host group or host (default: maintenance.targets)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]


def _runbook(name: str) -> Any:
    """What a hand command records as its runbook: its own name, no stages (it runs no runbook)."""
    from ..runbook import Runbook

    return Runbook(name=name, kind="custom", stages=[])


def _context(cfg: Any, name: str, reason: str = "") -> Any:
    """``maintenance off`` by hand is recorded like a run: a run folder with its own audit log and report."""
    from ..context import RunContext, RunOptions

    return RunContext.create(cfg, _runbook(name), RunOptions(reason=reason))


def _select(env: str, group: str | None) -> tuple[Any, list[str]]:
    from ..fleet.cli import select_hosts

    return select_hosts(env, group, default=lambda cfg: cfg.maintenance.targets)


def _status(ctx: Any, names: list[str]) -> list[dict[str, Any]]:
    from concurrent.futures import ThreadPoolExecutor

    from . import strategy_for

    strategy = strategy_for(ctx.cfg.maintenance)

    def one(host: str) -> dict[str, Any]:
        try:
            return strategy.status(ctx, host).model_dump()
        except Exception as exc:  # noqa: BLE001 - reported per host
            return {"host": host, "strategy": strategy.name, "on": None, "detail": ctx.redact(str(exc))}

    with ThreadPoolExecutor(max_workers=max(1, min(ctx.cfg.fleet.max_concurrency, len(names)))) as pool:
        return list(pool.map(one, names))


def _table(title: str, rows: list[dict[str, Any]], extra: str | None = None) -> Table:
    t = Table(title=title)
    for col in ("host", "maintenance", "run", "expires", "detail", *([extra] if extra else [])):
        t.add_column(col, overflow="fold")
    for r in rows:
        state = {True: "[bold red]ON[/bold red]", False: "[green]off[/green]", None: "[yellow]unknown[/yellow]"}
        t.add_row(r["host"], state[r["on"]], r.get("run_id") or "", r.get("expires_at") or "", r.get("detail") or "",
                  *([r.get(extra) or ""] if extra else []))
    return t


@maintenance_app.command("status")
def maintenance_status(env: EnvOpt, group: GroupOpt = None, as_json: JsonOpt = False) -> None:
    """Whether maintenance is on for each target host, for which run and until when. Changes nothing.

    Exit 0; 1 when a host could not be asked."""
    cfg, names = _select(env, group)
    from ..context import RunContext, RunOptions

    with RunContext.scratch(cfg, _runbook("maintenance-status"), RunOptions(), "maintenance-status") as ctx:
        rows = _status(ctx, names)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
    else:
        on = sum(1 for r in rows if r["on"])
        out.print(_table(f"maintenance on {cfg.name}: {on} of {len(rows)} host(s) on", rows))
    if unknown := [(r["host"], str(r.get("detail") or "")) for r in rows if r["on"] is None]:
        from rich.markup import escape

        from ..cli_errors import hosts_failed

        err.print(f"[bold red]error:[/bold red] {escape(hosts_failed(unknown, 'asked'))}", soft_wrap=True)
        raise typer.Exit(1)


def _seal(ctx: Any, operator: str, reason: str, rows: list[dict[str, Any]]) -> None:
    """``record.json`` (who, why, what each host showed and what was done) next to the audit log,
    both sealed in ``manifest.json`` as a run's report is (``pitstop report verify`` checks it)."""
    from ..report.writer import seal

    record = {"kind": "maintenance.manual_off", "environment": ctx.cfg.name, "operator": operator,
              "reason": ctx.redact(reason), "hosts": rows}
    (ctx.run_dir / "record.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    seal(ctx.run_dir)


def _active_run(cfg: Any) -> tuple[str | None, str | None]:
    """(run id holding the environment, or None; why it could not be checked, or None)."""
    from ..connectors.postgres import Database
    from ..locks import current_holder

    try:
        return current_holder(Database(cfg), cfg.name), None
    except Exception as exc:  # noqa: BLE001 - the database may be what is down
        return None, f"{type(exc).__name__}: {exc}"


@maintenance_app.command("off")
def maintenance_off(
    env: EnvOpt,
    reason: Annotated[str, typer.Option("--reason", "-r", help="why (recorded in the audit log)")],
    group: GroupOpt = None,
    force: Annotated[bool, typer.Option("--force", help="even while a run holds the environment")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Lift maintenance on every target host where it is on; record who, why and where.

    Exit 0 when maintenance is off everywhere afterwards, 1 when a host still has it (or could not
    be reached), 2 on bad input."""
    from . import strategy_for

    if not reason.strip():
        raise InputError("--reason must say why maintenance is lifted by hand")
    cfg, names = _select(env, group)
    holder, unchecked = _active_run(cfg)
    if holder and not force:
        raise PitstopError(f"run {holder} holds environment {cfg.name!r} and may still be working behind the "
                           "maintenance page; let it finish, or use --force")
    if unchecked:
        err.print(f"[yellow]could not check for a running run ({unchecked}); going on[/yellow]")
    ctx = _context(cfg, "maintenance-off", reason=reason)
    strategy = strategy_for(cfg.maintenance)
    operator = getpass.getuser()
    try:
        ctx.event("maintenance.manual_off", operator=operator, reason=ctx.redact(reason), hosts=names,
                  active_run=holder, forced=bool(holder and force))
        rows = []
        for row in _status(ctx, names):
            if row["on"] is not False:  # on, or unknown: try to lift it either way
                try:
                    strategy.off(ctx, row["host"])
                    row["action"] = "lifted" if row["on"] else "off command sent"
                except Exception as exc:  # noqa: BLE001 - reported per host
                    row["action"] = f"FAILED: {ctx.redact(str(exc))}"
            else:
                row["action"] = "was off"
            ctx.event("maintenance.off", host=row["host"], strategy=strategy.name, manual=True,
                      action=row["action"], was_run=row.get("run_id"))
            rows.append(row)
        after = {r["host"]: r["on"] for r in _status(ctx, names)}
        for row in rows:
            row["on"] = after[row["host"]]
        ctx.event("maintenance.manual_off_done", still_on=[h for h, on in after.items() if on is not False])
    finally:
        ctx.close()
    _seal(ctx, operator, reason, rows)
    left = [r["host"] for r in rows if r["on"] is not False]
    if as_json:
        sys.stdout.write(json.dumps({"hosts": rows, "still_on": left, "audit_log": str(ctx.run_dir / "audit.jsonl")},
                                    indent=2, default=str) + "\n")
    else:
        out.print(_table(f"maintenance off on {cfg.name} by {operator}", rows, extra="action"))
        out.print(f"recorded in {ctx.run_dir / 'audit.jsonl'}")
        if left:
            err.print(f"[bold red]maintenance is still on (or unknown) on {len(left)} host(s): "
                      f"{', '.join(left)}[/bold red]")
            if unknown := [(r["host"], str(r.get("detail") or "")) for r in rows if r["on"] is None]:
                from rich.markup import escape

                from ..cli_errors import hosts_failed

                err.print(f"[bold red]error:[/bold red] {escape(hosts_failed(unknown, 'asked'))}", soft_wrap=True)
    if left:
        raise typer.Exit(1)
