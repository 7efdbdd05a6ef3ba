"""``pitstop backups list|prune`` and ``pitstop restore``: the backups after the run.

Registered on the main app by :func:`register` (one line in pitstop/cli.py).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from .errors import BackupError

backups_app = typer.Typer(no_args_is_help=True, help="List and prune the pre-backups of an environment.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

EnvOpt = Annotated[str, typer.Option("--env", "-e", help="environment name (config/<env>.yaml) or a path")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _open(env: str) -> tuple[Any, Any]:
    from .config import load_config
    from .connectors.storage import open_storage

    cfg = load_config(env)
    return cfg, open_storage(cfg)


@backups_app.command("list")
def backups_list(env: EnvOpt, as_json: JsonOpt = False) -> None:
    """List an environment's backups, newest first, with kind, size and verification."""
    from .backups import list_backups, plan_prune

    cfg, storage = _open(env)
    items = list_backups(storage, cfg.name)
    doomed = {b.run_id for b in plan_prune(items, cfg.backup)}
    rows = [dict(b.model_dump(), would_prune=b.run_id in doomed) for b in items]
    if as_json:
        _emit(rows)
        return
    from rich.table import Table

    t = Table(title=f"backups of {cfg.name} ({storage.location('backups/')})")
    for col in ("run_id", "kind", "started_at", "size", "format", "verified", "retention"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["run_id"], r["kind"], r["started_at"], f"{r['size'] / 1024**2:.1f} MiB", r["format"],
                  "[green]yes[/green]" if r["verified"] else "[red]no[/red]",
                  "[yellow]prune[/yellow]" if r["would_prune"] else "keep")
    out.print(t)


@backups_app.command("prune")
def backups_prune(env: EnvOpt, dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
                  as_json: JsonOpt = False) -> None:
    """Delete backups beyond backup.keep_monthly/quarterly/emergency/custom (never the newest verified)."""
    from .backups import delete_backup, list_backups, plan_prune

    cfg, storage = _open(env)
    doomed = plan_prune(list_backups(storage, cfg.name), cfg.backup)
    if not dry_run:
        for b in doomed:
            delete_backup(storage, cfg.name, b.run_id)
    if as_json:
        _emit({"pruned": [b.run_id for b in doomed], "dry_run": dry_run})
    else:
        verb = "would prune" if dry_run else "pruned"
        out.print(f"{verb} {len(doomed)} backup(s)" + "".join(f"\n  {b.run_id} ({b.kind})" for b in doomed))


def _prepare_target(server: Any, dbname: str) -> bool:
    """Create ``dbname`` if missing; refuse a database that already holds tables. True if created."""
    from psycopg import sql  # here, not at the top: every CLI command would pay psycopg's import

    from .steps.backup import COUNT_TABLES

    with server.connect("postgres", autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            return True
    with server.connect(dbname) as conn:
        if conn.execute(COUNT_TABLES).fetchone():
            raise BackupError(f"database {dbname!r} already exists and has tables: restore into a new "
                              "database (pitstop never overwrites one)")
    return False


def restore_cmd(env: EnvOpt,
                run: Annotated[str, typer.Option("--run", help="run id whose backup to restore")],
                into: Annotated[str, typer.Option("--into", help="new database name on the configured server, "
                                                  "or a conninfo/URI naming the database")],
                keep_owner: Annotated[bool, typer.Option(help="restore ownership and privileges too")] = False,
                as_json: JsonOpt = False) -> None:
    """Restore a run's backup into a new database, with progress; compares row counts at the end."""
    from .backups import PgServer, load_manifest, restore
    from .connectors.postgres import Database
    from .steps.backup import count_rows

    cfg, storage = _open(env)
    manifest = load_manifest(storage, cfg.name, run)
    db = Database(cfg)
    if "=" in into or "://" in into:
        server, dbname = PgServer.from_dsn(into, db)
    else:
        server, dbname = PgServer.configured(db), into
    created = _prepare_target(server, dbname)
    staging = cfg.resolve(cfg.backup.staging_dir)
    if as_json:
        restore(server, storage, manifest, dbname, bcfg=cfg.backup, staging=staging, no_owner=not keep_owner)
    else:
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=err) as bar:
            task = bar.add_task(f"restoring {run}", total=manifest["size"])
            restore(server, storage, manifest, dbname, bcfg=cfg.backup, staging=staging, no_owner=not keep_owner,
                    progress=lambda n: bar.advance(task, n))
    with server.connect(dbname) as conn:
        counts = count_rows(conn)
    expected = manifest.get("row_counts", {})
    diffs = sorted(t for t in set(expected) | set(counts) if expected.get(t) != counts.get(t))
    result = {"run_id": run, "database": dbname, "target": server.describe(dbname), "created": created,
              "tables": len(counts), "rows": sum(counts.values()), "row_counts": counts, "differences": diffs,
              "sha256": manifest["sha256"]}
    if as_json:
        _emit(result)
    else:
        out.print(f"[green]✓[/green] restored {result['rows']} rows in {result['tables']} tables into "
                  f"{result['target']}" + (f" — [red]row counts differ in {', '.join(diffs)}[/red]" if diffs else
                                           "; row counts match the manifest"))
    if diffs:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(backups_app, name="backups")
    app.command("restore")(restore_cmd)
