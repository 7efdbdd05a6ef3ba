"""``pitstop backups list|prune`` and ``pitstop restore``: the backups after the run.

Registered on the main app by :func:`register` (one line in pitstop/cli.py).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from .console import safe_console
from .errors import BackupError, InputError

backups_app = typer.Typer(no_args_is_help=True, help="List and prune the pre-backups of an environment.")
out = safe_console()
err = safe_console(stderr=True)

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
    from .console import print_rows

    print_rows(out, f"backups of {cfg.name} ({storage.location('backups/')})",
               ["run_id", "kind", "started_at", "size", "format", "verified", "retention"],
               [[r["run_id"], r["kind"], str(r["started_at"]).replace("T", " ")[:19], f"{r['size'] / 1024**2:.1f} MiB",
                 r["format"], "yes" if r["verified"] else "NO", "prune" if r["would_prune"] else "keep"] for r in rows])


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


PROTECTED_DATABASES = ("template0", "template1", "postgres")


def _prepare_target(server: Any, dbname: str, *, source: tuple[str, str], replace: bool) -> bool:
    """Create ``dbname`` for a restore; True when this command created it (and may drop it again).

    Refused: the template and maintenance databases (every later CREATE DATABASE would inherit the
    restored rows), the environment's own database, and any existing database unless ``--replace``."""
    from psycopg import sql  # here, not at the top: every CLI command would pay psycopg's import

    if dbname in PROTECTED_DATABASES:
        raise InputError(f"refusing to restore into {dbname!r}: template and maintenance databases are never "
                         "restore targets (name a new database with --into)")
    if (server.describe(dbname), dbname) == source:
        raise InputError(f"refusing to restore into {dbname!r}: it is the environment's own database "
                         "(name a new database with --into)")
    with server.connect("postgres", autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists and not replace:
            raise InputError(f"database {dbname!r} already exists: restore into a new database, or pass "
                             "--replace --reason '...' to drop and recreate it")
        if exists:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return True


def _cross_check_manifest(cfg: Any, run: str, manifest: dict[str, Any]) -> None:
    """The manifest sits in storage next to the dump: whoever can swap one can rewrite the other. The run's
    hash-chained audit log recorded the dump's size and SHA-256 when it was taken; they must agree."""
    from .audit import read_events, verify_chain

    log = cfg.resolve(cfg.reports.dir) / run / "audit.jsonl"
    if not log.is_file():
        err.print(f"[yellow]note:[/yellow] no run folder for {run} here: the manifest's checksum cannot be "
                  "cross-checked against the run's audit log")
        return
    if broken := verify_chain(log):
        raise BackupError(f"the audit log of run {run} is not intact ({broken}): its backup is not trusted")
    created = [e["data"] for e in read_events(log) if e["kind"] == "backup.created"]
    if created and (created[-1].get("sha256"), created[-1].get("size")) != (manifest.get("sha256"),
                                                                            manifest.get("size")):
        raise BackupError(f"the backup manifest of run {run} in storage does not match what the run recorded "
                          f"(SHA-256 {str(created[-1].get('sha256'))[:16]}…, {created[-1].get('size')} bytes): "
                          "the dump or its manifest was replaced; nothing was restored")


def _drop_created(server: Any, dbname: str) -> None:
    from psycopg import sql

    try:
        with server.connect("postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
    except Exception as exc:  # noqa: BLE001 - the restore's own error is the one to report
        err.print(f"[yellow]warning:[/yellow] could not drop the half-restored database {dbname!r}: {exc}")


def restore_cmd(env: EnvOpt,
                run: Annotated[str, typer.Option("--run", help="run id whose backup to restore")],
                into: Annotated[str, typer.Option("--into", help="new database name on the configured server, "
                                                  "or a conninfo/URI naming the database")],
                keep_owner: Annotated[bool, typer.Option(help="restore ownership and privileges too (the roles "
                                                         "must exist on the target server)")] = False,
                replace: Annotated[bool, typer.Option("--replace", help="drop and recreate an existing target "
                                                      "database (needs --reason)")] = False,
                reason: Annotated[str | None, typer.Option("--reason", help="why an existing database is "
                                                           "replaced")] = None,
                as_json: JsonOpt = False) -> None:
    """Restore a run's backup into a new database, with progress; compares row counts at the end.

    The dump's size and SHA-256 are checked against its manifest before pg_restore reads it. A restore
    that fails drops the database it created."""
    from .backups import PgServer, load_manifest, restore
    from .connectors.postgres import Database
    from .ids import check_run_id
    from .steps.backup import count_rows

    check_run_id(run, "--run")
    if replace and not (reason and reason.strip()):
        raise InputError("--replace needs --reason '...': it drops an existing database")
    cfg, storage = _open(env)
    try:
        manifest = load_manifest(storage, cfg.name, run)
    except BackupError as exc:
        raise InputError(str(exc)) from None
    _cross_check_manifest(cfg, run, manifest)
    db = Database(cfg)
    if "=" in into or "://" in into:
        server, dbname = PgServer.from_dsn(into, db)
    else:
        server, dbname = PgServer.configured(db), into
    source = PgServer.configured(db)
    created = _prepare_target(server, dbname, source=(source.describe(db.dbname), db.dbname), replace=replace)
    if replace:
        err.print(f"replacing database {dbname!r} ({reason})")
    staging = cfg.resolve(cfg.backup.staging_dir)
    try:
        if as_json:
            restore(server, storage, manifest, dbname, bcfg=cfg.backup, staging=staging, no_owner=not keep_owner)
        else:
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

            with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=True) as bar:
                task = bar.add_task(f"restoring {run}", total=manifest["size"])
                restore(server, storage, manifest, dbname, bcfg=cfg.backup, staging=staging,
                        no_owner=not keep_owner, progress=lambda n: bar.advance(task, n))
        with server.connect(dbname) as conn:
            counts = count_rows(conn)
    except BaseException:
        if created:
            _drop_created(server, dbname)
        raise
    expected = manifest.get("row_counts", {})
    diffs = sorted(t for t in set(expected) | set(counts) if expected.get(t) != counts.get(t))
    result = {"run_id": run, "database": dbname, "target": server.describe(dbname), "created": created,
              "replaced": replace, "reason": reason, "owner": "kept" if keep_owner else "the restoring role",
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
