"""``pitstop report list|show|verify``: what auditors use to read and check run reports.

A run is named by its folder, a ``file://`` URL of it, or its run id with ``--env`` (the run folder
under ``reports.dir``, or else the copy in the environment's storage under ``reports/<env>/<run_id>/``).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlparse

import typer
from rich.markup import escape

from .console import safe_console
from .errors import InputError

report_app = typer.Typer(no_args_is_help=True, help="Read and verify run reports.")
out = safe_console()
err = safe_console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]
EnvOpt = Annotated[str | None, typer.Option("--env", "-e", help="environment (to look a run id up)")]
COLUMNS = ("run_id", "runbook", "trigger", "status", "started_at", "finished_at")


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _from_storage(env: str, run: str, into: Path) -> Path | None:
    from .config import load_config
    from .connectors.storage import open_storage

    cfg = load_config(env)
    storage = open_storage(cfg)
    prefix = f"reports/{cfg.name}/{run}/"
    keys = storage.list(prefix)
    if not keys:
        return None
    for key in keys:
        target = into / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        with storage.open(key) as src:
            target.write_bytes(src.read())
    return into


def resolve_run(env: str | None, run: str, scratch: Path | None = None) -> Path:
    """The run folder named by a path, a ``file://`` URL or a run id (with ``--env``)."""
    if env and not run.startswith("file://"):
        from .ids import check_run_id

        check_run_id(run, "with --env, the run")  # an id under the reports directory, never a path out of it
    if run.startswith("file://"):
        run = unquote(urlparse(run).path)
    p = Path(run)
    if p.is_dir():
        return p
    if env:
        from .config import load_config

        cfg = load_config(env)
        cand = cfg.resolve(cfg.reports.dir) / run
        if cand.is_dir():
            return cand
        if scratch is not None and "/" not in run:
            found = _from_storage(env, run, scratch)
            if found is not None:
                return found
    raise InputError(f"no run folder {run!r}" + ("" if env else " (pass --env to look a run id up)"))


@report_app.command("list")
def report_list(env: Annotated[str, typer.Option("--env", "-e", help="environment name or config path")],
                as_json: JsonOpt = False) -> None:
    """List the runs of an environment, newest first."""
    from .config import load_config

    cfg = load_config(env)
    root = cfg.resolve(cfg.reports.dir)
    rows = []
    for d in sorted(root.glob("*/report.json"), reverse=True):
        try:
            r = json.loads(d.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        resumed = any(isinstance(x, dict) and x.get("kind") == "run.resumed" for x in r.get("deviations") or [])
        rows.append({k: r.get(k) for k in COLUMNS} | {"run_dir": str(d.parent), "resumed": resumed,
                                                      "rehearsal": bool(r.get("rehearsal"))})
    rows = _with_open_runs(cfg, rows)
    if as_json:
        _emit_json(rows)
        return
    from .console import print_rows

    print_rows(out, f"runs of {cfg.name}", list(COLUMNS),
               [[_cell(r, c) for c in COLUMNS] for r in rows])


def _cell(r: dict[str, Any], c: str) -> str:
    v = r.get(c)
    if c in ("started_at", "finished_at") and v:
        return str(v).replace("T", " ")[:19]
    if c == "status":
        marks = [m for m, on in (("resumed", r.get("resumed")), ("rehearsal", r.get("rehearsal"))) if on]
        return f"{v} ({', '.join(marks)})" if marks else str(v)
    return "" if v is None else str(v)


def _with_open_runs(cfg: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs whose last attempt never finished have no (or an older) report: list them with what the
    environment lock says — ``running`` while their run id holds it, ``abandoned`` when it is free or
    held by another run (the process died; the next run or resume alerts about it), ``unfinished``
    when the database cannot be asked."""
    from .abandoned import scan

    open_runs = {a.run_id: a for a in scan(cfg)}
    if not open_runs:
        return rows
    try:
        from .connectors.postgres import Database
        from .locks import current_holder

        holder: str | None = current_holder(Database(cfg), cfg.name)
        known = True
    except Exception:  # noqa: BLE001 - listing must work without the database
        holder, known = None, False
    by_id = {r["run_id"]: r for r in rows}
    for run_id, a in open_runs.items():
        status = "running" if holder == run_id else ("abandoned" if known else "unfinished")
        row = by_id.get(run_id)
        if row is None:
            row = by_id[run_id] = {"run_id": run_id, "runbook": a.runbook, "trigger": a.trigger,
                                   "started_at": a.started_at, "finished_at": None, "run_dir": str(a.run_dir)}
        row["status"] = status
    return sorted(by_id.values(), key=lambda r: str(r["run_id"]), reverse=True)


@report_app.command("show")
def report_show(run: Annotated[str, typer.Argument(help="run id, run folder or file:// URL")], env: EnvOpt = None,
                as_json: JsonOpt = False,
                html: Annotated[bool, typer.Option("--html", help="print the path of report.html")] = False) -> None:
    """Print a run's report (Markdown; JSON with --json)."""
    with tempfile.TemporaryDirectory(prefix="pitstop-report-") as tmp:
        d = resolve_run(env, run, Path(tmp))
        if not (d / "report.json").is_file():
            from .report.verify import unfinished

            raise InputError(unfinished(d) or f"{d} has no report (report.json is missing)")
        if html:
            out.print(str(d / "report.html"))
        elif as_json:
            sys.stdout.write((d / "report.json").read_text())
        else:
            from rich.markdown import Markdown

            out.print(Markdown((d / "report.md").read_text()))


@report_app.command("verify")
def report_verify(run: Annotated[str, typer.Argument(help="run folder, file:// URL, or run id with --env")],
                  env: EnvOpt = None, as_json: JsonOpt = False) -> None:
    """Recompute the audit hash chain and the manifest; exit 1 naming the first bad event or file."""
    from .report.verify import unfinished, verify_run_dir

    anchors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pitstop-verify-") as tmp:
        d = resolve_run(env, run, Path(tmp))
        if (pending := unfinished(d)) is not None:
            if as_json:
                _emit_json({"run": run, "ok": False, "unfinished": True, "problem": pending})
            else:
                err.print(f"[bold yellow]UNFINISHED[/bold yellow]: {escape(pending)}")
            raise typer.Exit(1)
        problem = verify_run_dir(d)
        if env and problem is None and not str(d).startswith(tmp):  # a storage copy is no anchor of itself
            from .config import load_config
            from .connectors.storage import open_storage
            from .report.anchor import check_storage

            cfg = load_config(env)
            where, problem = check_storage(open_storage(cfg), cfg.name, d)
            anchors.append(where)
    if as_json:
        _emit_json({"run": run, "ok": problem is None, "problem": problem, "anchors_checked": anchors})
    elif problem:
        err.print(f"[bold red]TAMPERED[/bold red]: {escape(problem)}")
    else:
        out.print("[green]✓[/green] audit chain and manifest intact"
                  + (f"; chain head matches the anchor at {anchors[0]}" if anchors else
                     " (pass --env to check the anchor published in storage too)"), soft_wrap=True)
    if problem:
        raise typer.Exit(1)
