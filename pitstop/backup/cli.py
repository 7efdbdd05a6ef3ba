"""``pitstop backups list|prune`` and ``pitstop restore``: the backups after the run.

Registered on the main app by :func:`register` (one line in pitstop/cli.py).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from ..console import safe_console
from ..errors import BackupError, InputError, PitstopError

backups_app = typer.Typer(no_args_is_help=True, help="List and prune the pre-backups of an environment.")
out = safe_console()
err = safe_console(stderr=True)

EnvOpt = Annotated[str, typer.Option("--env", "-e", help="environment name (config/<env>.yaml) or a path")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _open(env: str) -> tuple[Any, Any]:
    from ..config import load_config
    from ..connectors.storage import open_storage

    cfg = load_config(env)
    return cfg, open_storage(cfg)


@backups_app.command("list")
def backups_list(env: EnvOpt, as_json: JsonOpt = False) -> None:
    """List an environment's backups, newest first, with kind, size and verification."""
    from .catalog import list_backups, plan_prune

    cfg, storage = _open(env)
    items = list_backups(storage, cfg.name)
    doomed = {b.run_id for b in plan_prune(items, cfg.backup)}
    rows = [dict(b.model_dump(), would_prune=b.run_id in doomed) for b in items]
    if as_json:
        _emit(rows)
        return
    from ..console import print_rows

    print_rows(out, f"backups of {cfg.name} ({storage.location('backups/')})",
               ["run_id", "kind", "started_at", "size", "format", "verified", "retention"],
               [[r["run_id"], r["kind"], str(r["started_at"]).replace("T", " ")[:19], f"{r['size'] / 1024**2:.1f} MiB",
                 r["format"], "yes" if r["verified"] else "NO", "prune" if r["would_prune"] else "keep"] for r in rows])


@backups_app.command("prune")
def backups_prune(env: EnvOpt, dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
                  as_json: JsonOpt = False) -> None:
    """Delete backups beyond backup.keep_monthly/quarterly/emergency/custom (never the newest verified)."""
    from .catalog import delete_backup, list_backups, plan_prune

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


def _provenance(cfg: Any, run: str, manifest: dict[str, Any], raw: bytes) -> str:
    from .restore_safety import check_provenance

    log = cfg.resolve(cfg.reports.dir) / run / "audit.jsonl"
    if not log.is_file():
        err.print(f"[yellow]note:[/yellow] no run folder for {run} here: the manifest in storage cannot be "
                  "checked against the run's audit log (the dump is still checked against the manifest)")
        return "none: no run folder here"
    return check_provenance(log, run, manifest, raw)


def restore_cmd(env: EnvOpt,
                run: Annotated[str, typer.Option("--run", help="run id whose backup to restore")],
                into: Annotated[str, typer.Option("--into", help="new database name on the configured server, "
                                                  "or a conninfo/URI naming the database")],
                keep_owner: Annotated[bool, typer.Option(help="restore ownership and privileges too (the roles "
                                                         "must exist on the target server); default: "
                                                         "--no-owner --no-privileges, everything belongs to the "
                                                         "restoring role")] = False,
                replace: Annotated[bool, typer.Option("--replace", help="replace an existing target database "
                                                      "once the restore has passed (needs --reason)")] = False,
                reason: Annotated[str | None, typer.Option("--reason", help="why an existing database is "
                                                           "replaced (recorded)")] = None,
                as_json: JsonOpt = False) -> None:
    """Restore a run's backup into a new database, with progress; compares it with the manifest at the end.

    The dump's size and SHA-256 are checked against its manifest (and the manifest against the run's audit
    log) before pg_restore reads it. A restore that fails drops the database it created, and only that."""
    import psycopg

    from ..audit import now_iso
    from ..connectors.postgres import Database
    from ..ids import check_run_id
    from .catalog import load_manifest
    from .contents import Contents, compare, read_restored
    from .restore import PgServer, restore
    from .restore_safety import Attempt, journal, refuse_target

    check_run_id(run, "--run")
    if replace and not (reason and reason.strip()):
        raise InputError("--replace needs --reason '...': it replaces an existing database")
    if reason and not replace:
        raise InputError("--reason goes with --replace (it records why an existing database is replaced)")
    cfg, storage = _open(env)
    if not storage.list(f"backups/{cfg.name}/{run}/"):
        raise InputError(f"no backup of run {run!r} in {storage.location(f'backups/{cfg.name}/')} "
                         "(see `pitstop backups list`)")
    manifest, raw = load_manifest(storage, cfg.name, run)
    checked = _provenance(cfg, run, manifest, raw)
    db = Database(cfg)
    if "=" in into or "://" in into:
        server, dbname = PgServer.from_dsn(into, db)
    else:
        server, dbname = PgServer.configured(db), into
    refuse_target(server, dbname, PgServer.configured(db), db.dbname)
    attempt = Attempt(server, dbname, replace)
    attempt.create()
    record = {"environment": cfg.name, "run_id": run, "target": server.describe(dbname), "replace": replace,
              "reason": reason, "sha256": manifest.get("sha256"), "provenance": checked,
              "owner": "kept" if keep_owner else "the restoring role"}
    if attempt.existed:
        err.print(f"restoring into new database {attempt.work!r}; {dbname!r} is replaced only once it passed "
                  f"({reason})")
    staging = cfg.resolve(cfg.backup.staging_dir)
    try:
        if as_json:
            restore(server, storage, manifest, attempt.work, bcfg=cfg.backup, staging=staging,
                    no_owner=not keep_owner)
        else:
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

            with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=True) as bar:
                task = bar.add_task(f"restoring {run}", total=manifest["size"])
                restore(server, storage, manifest, attempt.work, bcfg=cfg.backup, staging=staging,
                        no_owner=not keep_owner, progress=lambda n: bar.advance(task, n))
        with server.connect(attempt.work) as conn:
            restored = read_restored(conn)
        diffs = compare(Contents.from_manifest(manifest), restored)
        if diffs:
            raise BackupError(f"the restored database differs from the manifest in {len(diffs)} place(s): "
                              + "; ".join(f"{k} (manifest {v['manifest']}, restored {v['restored']})"
                                          for k, v in list(diffs.items())[:5]))
        comment = (f"restored by pitstop from run {run} of {cfg.name} (dump SHA-256 {manifest.get('sha256')}) "
                   f"at {now_iso()}" + (f"; replaced the previous database: {reason}" if attempt.existed else ""))
        attempt.finish(comment)
    except BaseException as exc:
        outcome = attempt.abandon()
        try:
            journal(cfg.resolve("restores.jsonl"), {**record, "outcome": "failed", "error": str(exc)[:500],
                                                    "cleanup": outcome})
        except OSError as jexc:  # the restore's own error is the one to report
            err.print(f"[yellow]warning:[/yellow] could not record the failed restore: {jexc}")
        if isinstance(exc, PitstopError | psycopg.Error | OSError):
            raise BackupError(f"{str(exc).strip()} — {outcome}") from None
        raise
    counts = restored.row_counts
    journal(cfg.resolve("restores.jsonl"), {**record, "outcome": "restored", "replaced": attempt.existed,
                                            "tables": len(counts), "rows": sum(counts.values())})
    result = {"run_id": run, "database": dbname, "target": server.describe(dbname), "created": True,
              "replaced": attempt.existed, "reason": reason, "owner": record["owner"], "provenance": checked,
              "tables": len(counts), "rows": sum(counts.values()), "row_counts": counts,
              "sequences": len(restored.sequences), "large_objects": restored.large_objects,
              "differences": [], "sha256": manifest["sha256"], "notes": attempt.notes,
              "journal": str(cfg.resolve("restores.jsonl"))}
    if as_json:
        _emit(result)
    else:
        out.print(f"[green]✓[/green] restored {result['rows']} rows in {result['tables']} tables into "
                  f"{result['target']}; rows, sequences and large objects match the manifest"
                  + (f" (replaced the previous database: {reason})" if attempt.existed else ""))
        for note in attempt.notes:
            err.print(f"[yellow]note:[/yellow] {note}")


def register(app: typer.Typer) -> None:
    app.add_typer(backups_app, name="backups")
    app.command("restore")(restore_cmd)
