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


def _from_storage(cfg: Any, run: str, scratch: Path) -> Path | None:
    """Download the storage copy of run ``run`` into ``scratch/<run>``; None if storage holds none.
    A stored name that would land outside that folder (``..``, an absolute path) is refused."""
    from .connectors.storage import open_storage

    storage = open_storage(cfg)
    prefix = f"reports/{cfg.name}/{run}/"
    keys = storage.list(prefix)
    if not keys:
        return None
    into = scratch / run
    for key in keys:
        rel = Path(key[len(prefix):])
        if rel.is_absolute() or not rel.parts or any(part in ("", ".", "..") for part in rel.parts):
            raise InputError(f"storage object {key!r} of run {run} is not a file of a run folder (refused)")
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with storage.open(key) as src:
            target.write_bytes(src.read())
    return into


def resolve_run(env: str | None, run: str, scratch: Path | None = None) -> Path:
    """The run folder named by a path, a ``file://`` URL, or a run id with ``--env``.

    With ``--env`` a run is an id (checked: never a path), looked up only under the environment's
    reports directory (a folder resolving outside it, through a link, is refused), or else in storage."""
    if run.startswith("file://"):
        p = Path(unquote(urlparse(run).path))
        if p.is_dir():
            return p
        raise InputError(f"no run folder {str(p)!r}")
    if not env:
        if Path(run).is_dir():
            return Path(run)
        raise InputError(f"no run folder {run!r} (pass --env to look a run id up)")
    from .config import load_config
    from .ids import check_run_id

    check_run_id(run, "with --env, the run")  # an id under the reports directory, never a path out of it
    cfg = load_config(env)
    root = cfg.resolve(cfg.reports.dir)
    cand = root / run
    if cand.is_symlink() or (cand.exists() and root.resolve() not in cand.resolve().parents):
        raise InputError(f"run {run!r} of {cfg.name} is a link or resolves outside {root} (refused)")
    if cand.is_dir():
        return cand
    if scratch is not None:
        found = _from_storage(cfg, run, scratch)
        if found is not None:
            return found
    raise InputError(f"no run {run!r} in {root} or in the storage of {cfg.name}")


@report_app.command("list")
def report_list(env: Annotated[str, typer.Option("--env", "-e", help="environment name or config path")],
                as_json: JsonOpt = False) -> None:
    """List every run folder of an environment with its state, newest first (a run without a report too:
    running, abandoned, unfinished; marks: resumed, rehearsal, no manifest)."""
    from .config import load_config
    from .report.listing import OPEN, list_runs, settle_open

    cfg = load_config(env)
    rows = list_runs(cfg.resolve(cfg.reports.dir))
    if any(r.status == OPEN for r in rows):
        holder, known = _lock_holder(cfg)
        settle_open(rows, holder, known)
    if as_json:
        _emit_json([r.to_json() for r in rows])
        return
    from .console import print_rows

    print_rows(out, f"runs of {cfg.name}", list(COLUMNS), [[_cell(r.to_json(), c) for c in COLUMNS] for r in rows])


def _cell(r: dict[str, Any], c: str) -> str:
    v = r.get(c)
    if c in ("started_at", "finished_at") and v:
        return str(v).replace("T", " ")[:19]
    if c == "status":
        return f"{v} ({', '.join(r['marks'])})" if r.get("marks") else str(v)
    return "" if v is None else str(v)


def _lock_holder(cfg: Any) -> tuple[str | None, bool]:
    """The run holding the environment lock now, and whether the database could be asked."""
    try:
        from .connectors.postgres import Database
        from .locks import current_holder

        return current_holder(Database(cfg), cfg.name), True
    except Exception:  # noqa: BLE001 - listing must work without the database
        return None, False


def _no_report(d: Path, env: str | None) -> InputError:
    from .report.verify import finished_unsealed, unfinished

    return InputError(unfinished(d, env) or finished_unsealed(d) or f"{d} has no report (report.json is missing)")


@report_app.command("show")
def report_show(run: Annotated[str, typer.Argument(help="run id, run folder or file:// URL")], env: EnvOpt = None,
                as_json: JsonOpt = False,
                html: Annotated[bool, typer.Option("--html", help="print the path of report.html")] = False) -> None:
    """Print a run's report (Markdown; JSON with --json). An unfinished run has none yet: the command
    that finishes it is printed instead (exit 2)."""
    with tempfile.TemporaryDirectory(prefix="pitstop-report-") as tmp:
        d = resolve_run(env, run, Path(tmp))
        if not (d / "report.json").is_file():
            raise _no_report(d, env)
        if html:
            out.print(str(d / "report.html"), soft_wrap=True, markup=False)
        elif as_json:
            sys.stdout.write((d / "report.json").read_text())
        else:
            from rich.markdown import Markdown

            out.print(Markdown((d / "report.md").read_text()))


HeadOpt = Annotated[str | None, typer.Option("--head", help="a chain head published elsewhere, as N:HASH (or the "
                                             "ops message's 'event N, hash H'): event N must have that hash")]
RequireOpt = Annotated[bool, typer.Option("--require-anchor", help="exit 1 unless at least one anchor outside "
                                          "the run folder was checked and matched")]


@report_app.command("verify")
def report_verify(run: Annotated[str, typer.Argument(help="run folder, file:// URL, or run id with --env")],
                  env: EnvOpt = None, head: HeadOpt = None, require_anchor: RequireOpt = False,
                  as_json: JsonOpt = False) -> None:
    """Recompute the audit hash chain and the manifest, then compare the chain head with every anchor
    published outside the run folder that can be reached (storage, the Prefect artifact, --head).
    Exit 1 naming the first bad event, file or anchor; an unfinished run (no manifest yet) is said so."""
    from .report.anchor import parse_head
    from .report.verify import unfinished, verify_run_dir

    given = parse_head(head) if head is not None else None
    if head is not None and given is None:
        raise InputError(f"--head {head!r}: expected N:HASH (event number, 64 hex digits)")
    with tempfile.TemporaryDirectory(prefix="pitstop-verify-") as tmp:
        d = resolve_run(env, run, Path(tmp))
        if (pending := unfinished(d, env)) is not None:
            if as_json:
                _emit_json({"run": run, "ok": False, "unfinished": True, "problem": pending, "anchors": []})
            else:
                err.print(f"[bold yellow]UNFINISHED[/bold yellow]: {escape(pending)}",
                          soft_wrap=True)
            raise typer.Exit(1)
        problem = verify_run_dir(d)
        anchors = _anchors(d, env, given) if problem is None else []
    problem = problem or next((a.detail for a in anchors if a.tampered), None)
    matched = [a for a in anchors if a.status == "matched"]
    if problem is None and require_anchor and not matched:
        problem = "no anchor outside the run folder was checked and matched (--require-anchor)"
    if as_json:
        _emit_json({"run": run, "ok": problem is None, "unfinished": False, "problem": problem,
                    "anchors": [a.to_json() for a in anchors],
                    "anchors_checked": [a.where for a in anchors if a.status in ("matched", "MISMATCH")]})
    else:
        _print_verdict(problem, anchors, env)
    if problem:
        raise typer.Exit(1)


def _anchors(d: Path, env: str | None, given: tuple[int, str] | None) -> list[Any]:
    import os

    from .report.anchor import check_head, check_prefect, check_storage

    found = []
    if env:
        from .config import load_config
        from .connectors.storage import open_storage

        cfg = load_config(env)
        found.append(check_storage(open_storage(cfg), cfg.name, d))
        if os.environ.get("PREFECT_API_URL"):
            from .cli_prefect import markdown_artifacts

            found.append(check_prefect(d, cfg.name, os.environ["PREFECT_API_URL"], markdown_artifacts))
    if given is not None:
        found.append(check_head(d, "given head", "--head", *given))
    return found


def _print_verdict(problem: str | None, anchors: list[Any], env: str | None) -> None:
    if problem:
        err.print(f"[bold red]TAMPERED[/bold red]: {escape(problem)}", soft_wrap=True)
    else:
        out.print("[green]✓[/green] audit chain and manifest intact", soft_wrap=True)
    for a in anchors:
        mark = {"matched": "[green]matched[/green]", "MISMATCH": "[bold red]MISMATCH[/bold red]"}.get(
            a.status, f"[yellow]{a.status}[/yellow] (not checked)")
        detail = f": {escape(a.detail)}" if a.detail and a.status != "MISMATCH" else ""
        (err if a.tampered else out).print(f"  anchor {a.anchor} at {escape(a.where)}: {mark}{detail}", soft_wrap=True)
    if not anchors and not problem:
        out.print("  no anchor outside the run folder was checked"
                  + ("" if env else " (pass --env to check the one published in storage)"), soft_wrap=True)
