"""Database cleanup steps: ``cleanup.retention`` (batched, adaptive, resumable purge),
``database.vacuum_analyze`` (VACUUM (ANALYZE), REINDEX CONCURRENTLY of bloated indexes, invalid
indexes) and ``database.vacuum_full`` (VACUUM FULL / CLUSTER, exclusive: inside the window).

The machinery lives in :mod:`pitstop.cleanup`; this module only registers the verbs and their
read-only planners.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..config import EnvironmentConfig, Name, RetentionRule
from ..context import RunContext
from ..model import StepOutcome
from ..pgretry import call
from ..plugin import Event, Plugin, PluginState
from ..registry import Placement, Target, has_work, planner, step
from ..work import HasWork
from . import bounds, fkeys, metrics, vacuum, work
from .pacing import resolve_profile
from .progress import Progress
from .purge import PurgeOptions, RulePurge
from .report import cleanup_section
from .rules import count, fix_cutoff, rule_key, table_facts

TableName = Annotated[str, Field(pattern=r"^([^\W\d][\w $-]{0,62}\.)?[^\W\d][\w $-]{0,62}$")]
IndexName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]


class RetentionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tables: list[TableName] | None = Field(None, description="limit to these rule tables (default: all rules)")
    profile: Name | None = Field(None, description="cleanup profile for every rule (default: each rule's own)")
    allow_large_share: bool = Field(False, description="allow a rule to purge more than its max_share")
    restart: bool = Field(False, description="abandon an unfinished purge instead of resuming it")


class VacuumParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tables: list[TableName] | None = Field(None, description="default: tables purged in this run, else all rules")
    reindex: bool = Field(True, description="REINDEX CONCURRENTLY indexes whose bloat estimate exceeds the threshold")
    bloat_threshold: float | None = Field(None, ge=0, le=1, description="default: cleanup.reindex_bloat_threshold")
    min_index_bytes: int | None = Field(None, ge=0, description="default: cleanup.reindex_min_bytes")
    lock_timeout_ms: int = Field(2000, ge=1)


class VacuumFullParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tables: list[TableName] = Field(min_length=1, description="tables to rewrite (always explicit)")
    mode: Literal["full", "cluster"] = "full"
    index: IndexName | None = Field(None, description="CLUSTER ... USING this index")


def _rules(ctx: RunContext, tables: list[str] | None) -> list[RetentionRule]:
    return [r for r in ctx.cfg.retention if tables is None or r.table in tables or r.qualified in tables]


def warn_superuser(ctx: RunContext, conn: Any) -> bool:
    su = bool(conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0])
    conn.commit()
    if su:
        ctx.event("cleanup.superuser", user=ctx.cfg.database.user,
                  reason="cleanup runs as a superuser; use a role that owns the purged tables (docs/cleanup.md)")
    return su


def _needs_rules(cfg: EnvironmentConfig) -> str | None:
    return None if cfg.retention else "has no `retention` rules"


@step("cleanup.retention", params=RetentionParams, placement=Placement.OUTSIDE, target=Target.DATABASE,
      destructive=True, needs_config=_needs_rules)
def cleanup_retention(ctx: RunContext, params: RetentionParams) -> StepOutcome:
    """Purge rows past retention in adaptive, resumable batches (partitions are dropped whole)."""
    def superuser() -> bool:
        with ctx.db.connect() as conn:
            return warn_superuser(ctx, conn)

    call(ctx, "cleanup.role", superuser)
    results = []
    for rule in _rules(ctx, params.tables):
        name, profile = resolve_profile(ctx.cfg, params.profile, rule.profile)
        opts = PurgeOptions(profile_name=name, profile=profile, allow_large_share=params.allow_large_share,
                            restart=params.restart)
        result = RulePurge(ctx, rule, opts).run()
        ctx.event("cleanup.purged", **result)
        results.append(result)
    ctx.state.of(CleanupState).purged.extend(results)
    total = sum(r["deleted_this_run"] for r in results)
    summary = ", ".join(f"{r['table']}: {r['deleted_this_run']} rows"
                        + (f" ({len(r['partitions_dropped'])} partitions dropped)" if r["partitions_dropped"] else "")
                        + (f" — REFUSED to drop {len(r['partitions_refused'])} partition(s): "
                           + "; ".join(f"{x['partition']}: {x['reason']}" for x in r["partitions_refused"])
                           if r["partitions_refused"] else "")
                        + (f" — WARNING: {'; '.join(r['warnings'])}" if r["warnings"] else "")
                        + (" (resumed)" if r["resumed"] else "") for r in results)
    return StepOutcome(changed=total > 0, summary=summary or "no rules", data={"cleanup": results})


@planner("cleanup.retention")
def plan_retention(ctx: RunContext, params: RetentionParams) -> list[str]:
    lines = []
    progress = Progress(ctx.cfg.cleanup)
    with ctx.db.connect() as conn:
        conn.read_only = True
        for rule in _rules(ctx, params.tables):
            name, _ = resolve_profile(ctx.cfg, params.profile, rule.profile)
            episode = None if params.restart else progress.running(conn, rule_key(rule))
            fresh = fix_cutoff(conn, rule)
            untrusted = episode is not None and (episode.malformed or episode.cutoff > fresh)
            cutoff = episode.cutoff if episode and not untrusted else fresh
            total = count(conn, rule.schema_, rule.table)
            expired = count(conn, rule.schema_, rule.table, rule, cutoff)
            share = expired / total if total else 0.0
            line = (f"{rule.qualified}: purge {expired} of {total} rows with {rule.column} before "
                    f"{cutoff:%Y-%m-%d %H:%M %Z} ({share:.0%}; profile {name}; partitions: {rule.partitions}")
            line += f"; resumes episode {episode.id}, {episode.deleted} already deleted)" if episode else ")"
            if untrusted:
                line += (" — REFUSED: the running episode in the progress table was not written by pitstop "
                         "(malformed, or its cutoff is later than now - older_than); the run fails and deletes "
                         "nothing until it is inspected and the step reruns with restart: true")
            if episode and episode.rows_before > 0:  # a resumed episode is judged on its recorded counts too
                share = max(share, episode.expired / episode.rows_before)
            if share > rule.max_share and not params.allow_large_share:
                line += f" — REFUSED: above max_share {rule.max_share:.0%}"
            lines.append(line)
            lines += _partition_lines(conn, rule, cutoff, expired)
        conn.rollback()
    return lines


def _partition_lines(conn: Any, rule: RetentionRule, cutoff: Any, expired: int) -> list[str]:
    """Which leaves go (with their rows and the bound that lets them go), and what foreign keys do."""
    facts = table_facts(conn, rule.schema_, rule.table)
    if facts.kind != "p" and rule.partitions == "drop_only":
        return [f"  drop_only: {rule.qualified} is not partitioned: nothing is deleted (0 rows)"]
    lines, only = [], None
    if facts.kind == "p" and rule.partitions in ("drop", "drop_only"):
        going = bounds.expired_leaves(conn, facts.oid, facts.kind, rule.column, bool(rule.where), cutoff)
        keys = fkeys.keys_into(conn, fkeys.tree_oids(conn, facts.oid))
        dropped_rows = 0
        for leaf in going:
            rows = count(conn, leaf.node.schema, leaf.node.name)
            dropped_rows += rows
            lineage = [facts.oid, *(n.oid for n in leaf.ancestors)]
            referenced = fkeys.leaf_is_referenced(conn, keys, leaf.node.oid, lineage, leaf.node.schema, leaf.node.name)
            lines.append(f"  drop partition {leaf.qualified} ({rows} rows, upper bound "
                         f"{bounds.binding_upper(conn, leaf)}" + ("; referenced: emptied row by row first" if
                                                                  referenced else "")
                         + ("; archived first)" if rule.archive else ")"))
        if rule.partitions == "drop_only":
            only = [lf.node.oid for lf in going]
            lines.append(f"  drop_only: {len(going)} partition(s), {dropped_rows} row(s) go; {expired - dropped_rows} "
                         "expired row(s) in partitions that stay are kept")
    lines += [e.line() for e in fkeys.effects(conn, facts.oid, rule, cutoff, only)]
    return lines


@step("database.vacuum_analyze", params=VacuumParams, placement=Placement.OUTSIDE, target=Target.DATABASE)
def vacuum_analyze(ctx: RunContext, params: VacuumParams) -> StepOutcome:
    """VACUUM (ANALYZE) the touched tables; REINDEX CONCURRENTLY bloated indexes; report invalid ones."""
    names = _vacuum_targets(ctx, params.tables)
    vacuumed = vacuum.vacuum_tables(ctx, names, params.lock_timeout_ms)
    reindexed = []
    if params.reindex:
        s = ctx.cfg.cleanup
        reindexed = vacuum.reindex_bloated(
            ctx, names, s.reindex_bloat_threshold if params.bloat_threshold is None else params.bloat_threshold,
            s.reindex_min_bytes if params.min_index_bytes is None else params.min_index_bytes, params.lock_timeout_ms)
    invalid = vacuum.report_invalid(ctx)
    summary = f"{len(vacuumed)} tables vacuumed and analyzed, {len(reindexed)} indexes rebuilt"
    if invalid:
        summary += f", {len(invalid)} INVALID indexes: {', '.join(invalid)}"
    return StepOutcome(changed=True, summary=summary,
                       data={"vacuum": vacuumed, "reindexed": reindexed, "invalid_indexes": invalid})


def _vacuum_targets(ctx: RunContext, tables: list[str] | None) -> list[str]:
    if tables:
        return tables
    touched = [r["table"] for r in ctx.state.of(CleanupState).purged]
    return list(dict.fromkeys(touched)) or [r.qualified for r in ctx.cfg.retention]


@planner("database.vacuum_analyze")
def plan_vacuum(ctx: RunContext, params: VacuumParams) -> list[str]:
    names = params.tables or [r.qualified for r in ctx.cfg.retention]
    lines = [f"VACUUM (ANALYZE) {t}" for t in names]
    s = ctx.cfg.cleanup
    with ctx.db.connect() as conn:
        conn.read_only = True
        for name in names:
            schema, table = vacuum.split(name)
            for ix in metrics.index_stats(conn, schema, table):
                bloat = ix["bloat_estimate"]
                threshold = s.reindex_bloat_threshold if params.bloat_threshold is None else params.bloat_threshold
                floor = s.reindex_min_bytes if params.min_index_bytes is None else params.min_index_bytes
                if params.reindex and ix["valid"] and bloat is not None and bloat > threshold and ix["bytes"] >= floor:
                    lines.append(f"REINDEX INDEX CONCURRENTLY {ix['index']} (bloat estimate {bloat:.0%})")
        lines += [f"invalid index (reported): {ix}" for ix in metrics.invalid_indexes(conn)]
    return lines


@step("database.vacuum_full", params=VacuumFullParams, placement=Placement.INSIDE, target=Target.DATABASE)
def vacuum_full(ctx: RunContext, params: VacuumFullParams) -> StepOutcome:
    """VACUUM FULL or CLUSTER the listed tables (ACCESS EXCLUSIVE: runs inside the window)."""
    done = vacuum.vacuum_full(ctx, list(params.tables), params.mode, params.index)
    saved = sum(d["before"]["table_bytes"] + d["before"]["index_bytes"] - d["after"]["table_bytes"]
                - d["after"]["index_bytes"] for d in done)
    return StepOutcome(changed=True, summary=f"{params.mode} on {len(done)} tables, {saved} bytes reclaimed",
                       data={"rewritten": done})


@planner("database.vacuum_full")
def plan_vacuum_full(ctx: RunContext, params: VacuumFullParams) -> list[str]:
    verb = "CLUSTER" if params.mode == "cluster" else "VACUUM (FULL, ANALYZE)"
    return [f"{verb} {t} (ACCESS EXCLUSIVE for the whole rewrite)" for t in params.tables]


class CleanupState(PluginState):
    purged: list[dict[str, Any]] = Field(default_factory=list)  # every rule's ``cleanup.purged`` record

    def rebuild(self, events: list[Event]) -> None:
        """The purges an earlier attempt finished (a resumed run vacuums the tables they touched)."""
        self.purged += [e["data"] for e in events if e["kind"] == "cleanup.purged"]


class CleanupPlugin(Plugin):
    state = CleanupState
    report_sections = {"cleanup": cleanup_section}


PLUGIN = CleanupPlugin("cleanup")


@has_work("cleanup.retention")
def retention_work(ctx: RunContext, params: RetentionParams) -> HasWork:
    return work.retention_work(ctx.db, ctx.cfg.cleanup, _rules(ctx, params.tables), params.restart)


@has_work("database.vacuum_analyze")
def vacuum_work(ctx: RunContext, params: VacuumParams) -> HasWork:
    s = ctx.cfg.cleanup
    return work.vacuum_work(ctx.db, params.tables or [r.qualified for r in ctx.cfg.retention], ctx.cfg.retention,
                            params.reindex, s.reindex_bloat_threshold if params.bloat_threshold is None
                            else params.bloat_threshold,
                            s.reindex_min_bytes if params.min_index_bytes is None else params.min_index_bytes)


@has_work("database.vacuum_full")
def vacuum_full_work(ctx: RunContext, params: VacuumFullParams) -> HasWork:
    return HasWork.yes(f"rewrites {len(params.tables)} table(s) under ACCESS EXCLUSIVE")
