"""Data checks: prove that maintenance removed exactly what its rules said and nothing else.

``data_snapshot`` (preflight) records, in the audit log, the row count of every critical table, a
SHA-256 over the ordered rows of each *immutable* table (e.g. paid orders) and table metrics (size,
live and dead tuples). ``data_parity`` (post-verification) checks, per table::

    rows before - rows purged by this run's rules (audit ``cleanup.purged``) == rows after

and that every immutable checksum is unchanged. "Rows before" come from this run's snapshot event,
or, without one, from the backup manifest's row counts. Everything is read from the audit log of the
run, so the report shows exactly the numbers the verdict was made on.
"""

from __future__ import annotations

import hashlib
from typing import Any

from psycopg import IsolationLevel, sql
from pydantic import BaseModel, ConfigDict, Field

from ..backup.state import BackupState
from ..config import Filter
from ..context import RunContext
from ..model import CheckResult, CheckStatus
from ..pgretry import retry_pg
from ..registry import Target
from . import check, verdict

TABLE = r"^([A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,62}$"
IDENT = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


class ImmutableTable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    table: str = Field(pattern=TABLE)
    where: list[Filter] = Field(default_factory=list, description="which rows must never change")
    order_by: list[str] = Field(default_factory=lambda: ["id"], min_length=1)
    columns: list[str] | None = Field(None, description="columns hashed (default: the whole row)")

    @property
    def key(self) -> str:
        cond = " AND ".join(f"{f.column} {f.op} {f.value}" if f.value is not None else f"{f.column} {f.op}"
                            for f in self.where)
        return qualify(self.table) + (f" WHERE {cond}" if cond else "")


class SnapshotParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tables: list[str] | None = Field(None, description="critical tables (default: the retention tables)")
    immutable: list[ImmutableTable] = Field(default_factory=list)


class ParityParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tables: list[str] | None = Field(None, description="default: the tables of this run's snapshot")
    tolerance: dict[str, int] = Field(default_factory=dict, description="allowed row drift per table "
                                                                         "(tables with live writes)")


def qualify(table: str) -> str:
    return table if "." in table else f"public.{table}"


def _ident(table: str) -> sql.Identifier:
    schema, _, name = qualify(table).partition(".")
    return sql.Identifier(schema, name)


def _where(filters: list[Filter]) -> tuple[sql.Composable, list[Any]]:
    if not filters:
        return sql.SQL(""), []
    parts: list[sql.Composable] = []
    args: list[Any] = []
    for f in filters:
        col = sql.Identifier(f.column)
        if f.op == "is_null":
            parts.append(sql.SQL("{} IS NULL").format(col))
        elif f.op == "is_not_null":
            parts.append(sql.SQL("{} IS NOT NULL").format(col))
        elif f.op == "in":
            parts.append(sql.SQL("{} = ANY(%s)").format(col))
            args.append(f.value if isinstance(f.value, list) else [f.value])
        else:
            parts.append(sql.SQL("{} {} %s").format(col, sql.SQL(OPS[f.op])))
            args.append(f.value)
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), args


def count_rows(conn: Any, tables: list[str]) -> dict[str, int]:
    out = {}
    for t in tables:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_ident(t))).fetchone()
        out[qualify(t)] = int(row[0])
    return out


def checksum(conn: Any, spec: ImmutableTable) -> dict[str, Any]:
    """SHA-256 over the text form of the selected rows in ``order_by`` order, streamed (any size)."""
    cols = (sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in spec.columns)
            if spec.columns else sql.SQL("t.*"))
    where, args = _where(spec.where)
    order = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in spec.order_by)
    q = (sql.SQL("SELECT ROW({})::text FROM {} t").format(cols, _ident(spec.table)) + where
         + sql.SQL(" ORDER BY {}").format(order))
    digest, rows = hashlib.sha256(), 0
    with conn.cursor(name="pitstop_checksum") as cur:
        cur.itersize = 5000
        cur.execute(q, args)
        for (text,) in cur:
            digest.update(text.encode() + b"\n")
            rows += 1
    return {"rows": rows, "sha256": digest.hexdigest()}


METRICS = """
SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid), s.n_live_tup, s.n_dead_tup
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(%s)
"""


def table_metrics(conn: Any, tables: list[str]) -> dict[str, dict[str, int | None]]:
    rows = conn.execute(METRICS, [[qualify(t) for t in tables]]).fetchall()
    return {r[0]: {"bytes": int(r[1]), "live_tuples": r[2], "dead_tuples": r[3]} for r in rows}


@retry_pg("check.data_state")  # read-only: a lost connection is retried with a new one
def _read_state(ctx: RunContext, tables: list[str], immutable: list[ImmutableTable]) -> dict[str, Any]:
    """Counts, checksums and metrics in one REPEATABLE READ, READ ONLY snapshot."""
    with ctx.db.connect() as conn:
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        try:
            counts = count_rows(conn, tables)
            sums = {spec.key: {**checksum(conn, spec), "spec": spec.model_dump(mode="json")} for spec in immutable}
            metrics = table_metrics(conn, tables + [spec.table for spec in immutable])
        finally:
            conn.rollback()
    return {"counts": counts, "checksums": sums, "metrics": metrics}


@check("data_snapshot", params=SnapshotParams, target=Target.DATABASE)
def data_snapshot(ctx: RunContext, params: SnapshotParams) -> CheckResult:
    """Record row counts, immutable-table checksums and table metrics before anything changes."""
    tables = [qualify(t) for t in (params.tables or [r.qualified for r in ctx.cfg.retention])]
    state = _read_state(ctx, tables, params.immutable)
    ctx.event("data.snapshot", label="before", **state)
    return CheckResult(name="data_snapshot", status=CheckStatus.PASS,
                       observed=f"{len(tables)} table(s) counted, {len(params.immutable)} checksum(s)",
                       expected="recorded",
                       evidence={"counts": state["counts"],
                                 "checksums": {k: v["sha256"] for k, v in state["checksums"].items()}})


def _before(ctx: RunContext) -> tuple[dict[str, Any] | None, str]:
    snaps = [e["data"] for e in ctx.audit.events if e["kind"] == "data.snapshot" and e["data"].get("label") == "before"]
    if snaps:
        return snaps[-1], "data.snapshot event"
    backup = ctx.state.of(BackupState).backup or {}
    if backup.get("row_counts"):
        return {"counts": backup["row_counts"], "checksums": {}}, "backup manifest row counts"
    return None, ""


def _purged(ctx: RunContext) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in ctx.audit.events:
        if e["kind"] == "cleanup.purged":
            t = qualify(e["data"]["table"])
            d = e["data"]  # a resumed purge also reports rows deleted by the earlier, interrupted run
            out[t] = out.get(t, 0) + int(d.get("deleted_this_run", d.get("deleted")) or 0)
    return out


def _compare_counts(before: dict[str, int], purged: dict[str, int], after: dict[str, int],
                    tolerance: dict[str, int], source: str) -> tuple[dict[str, Any], list[str]]:
    tables, diffs = {}, []
    for t, now in after.items():
        if t not in before:
            tables[t] = {"before": None, "purged": purged.get(t, 0), "after": now, "source": source}
            diffs.append(f"{t}: no 'before' count recorded")
            continue
        expected = before[t] - purged.get(t, 0)
        drift = now - expected
        ok = abs(drift) <= tolerance.get(t, 0)
        tables[t] = {"before": before[t], "purged": purged.get(t, 0), "expected": expected, "after": now,
                     "difference": drift, "ok": ok}
        if not ok:
            diffs.append(f"{t}: expected {expected} rows ({before[t]} before - {purged.get(t, 0)} purged), "
                         f"found {now} ({drift:+d})")
    return tables, diffs


@check("data_parity", params=ParityParams, target=Target.DATABASE)
def data_parity(ctx: RunContext, params: ParityParams) -> CheckResult:
    """Rows before minus rows purged equals rows after, per table; immutable checksums unchanged."""
    snap, source = _before(ctx)
    if snap is None:
        return CheckResult(name="data_parity", status=CheckStatus.FAIL, observed="no 'before' record",
                           expected="a data.snapshot in preflight or a backup manifest from this run",
                           evidence={"differences": ["nothing to compare against"]})
    tolerance = {qualify(k): v for k, v in params.tolerance.items()}
    tables = [qualify(t) for t in (params.tables or list(snap["counts"]))]
    specs = [ImmutableTable.model_validate(c["spec"]) for c in snap.get("checksums", {}).values()]
    after = _read_state(ctx, tables, specs)
    ctx.event("data.snapshot", label="after", **after)
    per_table, diffs = _compare_counts({qualify(k): v for k, v in snap["counts"].items()}, _purged(ctx),
                                       after["counts"], tolerance, source)
    immutable = {}
    for key, was in snap.get("checksums", {}).items():
        now = after["checksums"][key]
        same = now["sha256"] == was["sha256"]
        immutable[key] = {"rows_before": was["rows"], "rows_after": now["rows"], "sha256_before": was["sha256"],
                          "sha256_after": now["sha256"], "unchanged": same}
        if not same:
            diffs.append(f"{key}: checksum changed ({was['rows']} rows before, {now['rows']} after)")
    observed = "; ".join(diffs) if diffs else (f"{len(per_table)} table(s) match, "
                                               f"{len(immutable)} immutable checksum(s) unchanged")
    return CheckResult(name="data_parity", status=verdict(not diffs), observed=observed,
                       expected="rows before - purged = rows after; immutable rows unchanged",
                       evidence={"source": source, "tables": per_table, "immutable": immutable,
                                 "differences": diffs or None})
