"""Whether a cleanup step has work, from the catalog and the rows themselves (read-only, cheap).

``cleanup.retention``: an unfinished episode to resume, leaf partitions wholly past the cutoff to
detach and drop, or at least one expired row (``EXISTS``, never a full count).
``database.vacuum_analyze``: expired rows still to purge, dead tuples, rows changed since the last
ANALYZE, or an index above the reindex threshold.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from ..config import CleanupSettings, RetentionRule
from ..work import HasWork, combine
from . import bounds, metrics
from .progress import Progress
from .rules import condition, fix_cutoff, ident, rule_key, table_facts
from .vacuum import split


def expired_rows(conn: Any, rule: RetentionRule) -> bool:
    cond, args = condition(rule, fix_cutoff(conn, rule))
    q = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {})").format(ident(rule.schema_, rule.table), cond)
    return bool(conn.execute(q, args).fetchone()[0])


def rule_work(conn: Any, progress: Progress, rule: RetentionRule, restart: bool) -> HasWork:
    episode = None if restart else progress.running(conn, rule_key(rule))
    if episode is not None:
        return HasWork.yes(f"unfinished purge episode {episode.id} to resume")
    facts = table_facts(conn, rule.schema_, rule.table)
    if facts.kind == "p" and rule.partitions in ("drop", "drop_only"):
        going = bounds.expired_leaves(conn, facts.oid, facts.kind, rule.column, bool(rule.where),
                                      fix_cutoff(conn, rule))
        if going:
            return HasWork.yes(f"{len(going)} partition(s) to detach and drop")
    if rule.partitions == "drop_only":
        return HasWork.no("no partition wholly past the cutoff (drop_only deletes no row)")
    if expired_rows(conn, rule):
        return HasWork.yes(f"rows with {rule.column} older than {rule.older_than}")
    return HasWork.no("no expired row")


def retention_work(db: Any, settings: CleanupSettings, rules: list[RetentionRule], restart: bool) -> HasWork:
    progress = Progress(settings)
    with db.connect() as conn:
        conn.read_only = True
        parts = [(r.qualified, rule_work(conn, progress, r, restart)) for r in rules]
        conn.rollback()
    return combine(parts)


STATS = ("SELECT n_dead_tup, n_mod_since_analyze FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s")


def vacuum_work(db: Any, names: list[str], rules: list[RetentionRule], reindex: bool, threshold: float,
                floor: int) -> HasWork:
    parts: list[tuple[str, HasWork]] = []
    with db.connect() as conn:
        conn.read_only = True
        for name in names:
            schema, table = split(name)
            rule = next((r for r in rules if r.qualified == f"{schema}.{table}"), None)
            if rule is not None and rule.partitions != "drop_only" and expired_rows(conn, rule):
                parts.append((name, HasWork.yes("expired rows are purged before it")))
                continue
            row = conn.execute(STATS, [schema, table]).fetchone()
            if row is None:
                parts.append((name, HasWork.unknown("no statistics for the table")))
            elif row[0] or row[1]:
                parts.append((name, HasWork.yes(f"{row[0]} dead tuple(s), {row[1]} row(s) changed since ANALYZE")))
            else:
                bloated = [ix["index"] for ix in metrics.index_stats(conn, schema, table) if reindex and ix["valid"]
                           and ix["bloat_estimate"] is not None and ix["bloat_estimate"] > threshold
                           and ix["bytes"] >= floor]
                parts.append((name, HasWork.yes(f"reindex {', '.join(bloated)}") if bloated
                              else HasWork.no("no dead tuple, statistics current")))
        conn.rollback()
    return combine(parts)
