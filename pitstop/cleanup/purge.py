"""The batched, adaptive, resumable purge of one retention rule.

Each batch is one short transaction with ``lock_timeout`` and ``statement_timeout`` (SET LOCAL via
``set_config``) that deletes one *range*: a primary-key range ``[lo, hi)`` whose upper end is found
by an index-only walk of ``n`` keys (tables with a single-column integer key), or a ctid block
range ``[(b,0), (b+n,0))`` (TID range scan, tables without one). Bounded ranges keep the work of a
batch bounded even where few rows match. The same transaction advances the progress row, so the
count of deleted rows survives any crash exactly. A final *sweep* deletes rows that moved or
appeared behind the cursor (``ctid = ANY(... LIMIT n FOR UPDATE SKIP LOCKED)``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg import errors as pg_errors
from psycopg import sql

from ..config import CleanupProfile, RetentionRule
from ..context import RunContext
from ..errors import GateRefused, StepFailed
from . import archive, bounds, fkeys, metrics, partitions
from .outcome import manifest, result
from .pacing import Controller, Monitor, Throttle
from .progress import Episode, Progress
from .rules import TableFacts, condition, count, fix_cutoff, ident, rule_key, table_facts

MAX_LOCK_EVENTS = 20


@dataclass
class PurgeOptions:
    profile_name: str
    profile: CleanupProfile
    allow_large_share: bool = False
    restart: bool = False
    initial_batch: int | None = None
    sleep: Callable[[float], None] = time.sleep


@dataclass
class Stats:
    deleted: int = 0
    batches: int = 0
    lock_retries: int = 0
    statement_timeouts: int = 0
    longest_txn_ms: float = 0.0
    txn_ms: list[float] = field(default_factory=list)
    paused_s: float = 0.0

    def record(self, ms: float, deleted: int) -> None:
        self.deleted += deleted
        self.batches += 1
        self.txn_ms.append(ms)
        self.longest_txn_ms = max(self.longest_txn_ms, ms)

    def aborted(self, ms: float) -> None:
        """A batch rolled back (lock or statement timeout) was a transaction too: it counts for the longest."""
        self.longest_txn_ms = max(self.longest_txn_ms, ms)


class RulePurge:
    def __init__(self, ctx: RunContext, rule: RetentionRule, opts: PurgeOptions):
        self.ctx, self.rule, self.opts, self.p = ctx, rule, opts, opts.profile
        self.progress = Progress(ctx.cfg.cleanup)
        self.stats = Stats()
        self.ctl = Controller(self.p, size=opts.initial_batch or rule.batch_size or 0)
        self.throttle = Throttle(self.p, sleep=opts.sleep)
        self.conn: Any = None
        self.ep: Episode | None = None
        self.monitor: Monitor | None = None
        self.dropped: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.foreign_keys: list[dict[str, Any]] = []
        self.fresh_cutoff: Any = None

    @property
    def safe_cutoff(self) -> Any:
        """The cutoff partitions are judged by: the episode's, never later than one computed now."""
        assert self.ep is not None
        if self.fresh_cutoff is None:
            return self.ep.cutoff
        return min(self.ep.cutoff, self.fresh_cutoff)

    # -- orchestration ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Purge the rule; a lost connection (``pg_terminate_backend``, failover ...) reconnects and
        resumes the episode (pitstop.pgretry): every batch committed its progress with its DELETE."""
        from ..pgretry import call

        return call(self.ctx, f"purge {self.rule.qualified}", self._attempt)

    _base_deleted: int | None = None  # the episode's count when this run first joined it

    def _attempt(self) -> dict[str, Any]:
        rule = self.rule
        with self.ctx.db.connect() as conn:
            self.conn = conn
            self.progress.ensure(conn)
            key = rule_key(rule)
            if self.opts.restart and self._base_deleted is None and self.progress.abandon(conn, key):
                self.ctx.event("cleanup.restarted", table=rule.qualified)
            facts = table_facts(conn, rule.schema_, rule.table)
            conn.commit()
            ep = self.ep = self._episode(key)
            before = metrics.table_stats(conn, rule.schema_, rule.table)
            t0 = time.monotonic()
            with Monitor(self.ctx.db.connect, conn.info.backend_pid, self.p.sample_ms) as mon:
                self.monitor = mon
                targets = self._targets(facts)
                for target in targets:
                    if not ep.target_done(target.qualified):
                        self._walk(target)
                for target in targets:
                    self._sweep(target)
            elapsed = time.monotonic() - t0
            stored = manifest(self)
            self.progress.finish(conn, ep)
            rows_after = count(conn, rule.schema_, rule.table)
            after = metrics.table_stats(conn, rule.schema_, rule.table)
        return result(self, ep, mon, elapsed, rows_after, before, after, stored, facts)

    def _episode(self, key: str) -> Episode:
        conn, rule = self.conn, self.rule
        ep = self.progress.running(conn, key)
        if ep is None:
            cutoff = fix_cutoff(conn, rule)
            total = count(conn, rule.schema_, rule.table)
            expired = count(conn, rule.schema_, rule.table, rule, cutoff)
            conn.commit()
            self._check_share(total, expired)
            ep = self.progress.start(conn, key, rule.qualified, self.ctx.run_id, cutoff, total, expired)
            self.ctx.event("cleanup.started", table=rule.qualified, cutoff=cutoff.isoformat(), rows_before=total,
                           expired=expired, profile=self.opts.profile_name, episode=ep.id)
        else:
            fresh = fix_cutoff(conn, rule)
            conn.commit()
            if ep.cutoff > fresh:
                raise StepFailed(f"{rule.qualified}: the running cleanup episode {ep.id} in the progress table has "
                                 f"cutoff {ep.cutoff.isoformat()}, later than now - {rule.older_than} "
                                 f"({fresh.isoformat()}): a progress row pitstop did not write; nothing was "
                                 "deleted (inspect the row, then rerun with restart: true)")
            if ep.malformed:
                raise StepFailed(f"{rule.qualified}: the running cleanup episode {ep.id} in the progress table is "
                                 f"malformed ({ep.malformed}): a progress row pitstop did not write; nothing was "
                                 "deleted (inspect the row, then rerun with restart: true)")
            # the recorded counts are hints: the share is judged on the live table too
            total, expired = count(conn, rule.schema_, rule.table), count(conn, rule.schema_, rule.table, rule,
                                                                          ep.cutoff)
            conn.commit()
            self._check_share(ep.rows_before, ep.expired)
            self._check_share(total, expired)
            self.progress.join(conn, ep, self.ctx.run_id)
            self.ctx.event("cleanup.resumed", table=rule.qualified, cutoff=ep.cutoff.isoformat(),
                           already_deleted=ep.deleted, episode=ep.id, first_run=ep.runs[0])
        if self._base_deleted is None:
            self._base_deleted = ep.deleted
        self.fresh_cutoff = fix_cutoff(conn, rule)
        conn.commit()
        return ep

    def _check_share(self, total: int, expired: int) -> None:
        share = expired / total if total else 0.0
        if share > self.rule.max_share and not self.opts.allow_large_share:
            raise GateRefused(f"retention rule on {self.rule.qualified} would delete {expired} of {total} rows "
                              f"({share:.0%} > max_share {self.rule.max_share:.0%}); refusing "
                              "(set allow_large_share: true on the step to proceed)")

    def _targets(self, facts: TableFacts) -> list[TableFacts]:
        mode = self.rule.partitions
        if facts.kind != "p" and mode == "drop_only":
            self.warn(f"{facts.qualified} is not partitioned and the rule says partitions: drop_only: nothing is "
                      "deleted (use partitions: drop or rows to purge it by rows)")
            return []
        self._check_foreign_keys(facts)
        if facts.kind != "p":
            return [facts]
        if mode in ("drop", "drop_only"):
            self.dropped = partitions.drop_expired(self, facts)
            facts = table_facts(self.conn, facts.schema, facts.name)
            self.conn.commit()
        if mode == "drop_only":
            return []  # the "keep N months" policy: rows of a partition that stays are never deleted
        targets = []
        for part in facts.partitions:
            if part.kind != "r":
                self.warn(f"partition {part.qualified} is not an ordinary table (relkind {part.kind}): not purged")
            else:
                targets.append(table_facts(self.conn, part.schema, part.name))
        self.conn.commit()
        return targets

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.ctx.event("cleanup.warning", table=self.rule.qualified, reason=message)

    def _check_foreign_keys(self, facts: TableFacts) -> None:
        """Keys into the table: a RESTRICT / NO ACTION key that would block refuses the purge before anything
        is deleted; CASCADE / SET NULL effects are counted for the report."""
        assert self.ep is not None
        only = None
        if self.rule.partitions == "drop_only":
            only = [lf.node.oid for lf in bounds.expired_leaves(self.conn, facts.oid, facts.kind, self.rule.column,
                                                                bool(self.rule.where), self.safe_cutoff)]
        found = fkeys.effects(self.conn, facts.oid, self.rule, self.ep.cutoff, only)
        self.conn.commit()
        if found:
            self.foreign_keys = [e.as_dict() for e in found]
            self.ctx.event("cleanup.foreign_keys", table=facts.qualified, keys=self.foreign_keys)
        if blocked := fkeys.blocked_message(facts.qualified, found):
            raise StepFailed(blocked)

    def empty_leaf(self, schema: str, name: str) -> None:
        """Delete every row of a qualifying leaf by batches (before its detach: keys into it act row by row)."""
        target = table_facts(self.conn, schema, name)
        self.conn.commit()
        if self.ep is not None and not self.ep.target_done(target.qualified):
            self._walk(target)
        self._sweep(target)

    def fk_failure(self, where: str, exc: Any) -> StepFailed:
        return StepFailed(fkeys.violation_message(where, exc, self.ep.deleted if self.ep else 0))

    # -- one batch ----------------------------------------------------------------------------------
    def _batch(self, target: TableFacts, work: Callable[[Any], tuple[int, Any, bool]]) -> bool:
        """Run ``work(cur) -> (deleted, cursor, done)`` in one bounded transaction; False to retry."""
        assert self.ep is not None
        self.throttle.wait(self.conn)
        t0 = time.monotonic()
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                # synchronous_commit off: the batch releases its row locks without waiting for its WAL
                # flush. A server crash can only forget the last batches (rows come back, their progress
                # with them, in the same transaction): the resume deletes them again, nothing is lost.
                cur.execute("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true), "
                            "set_config('synchronous_commit', 'off', true)",
                            [f"{self.p.lock_timeout_ms}ms", f"{self._statement_timeout_ms()}ms"])
                deleted, cursor, done = work(cur)
                self.progress.advance(self.conn, self.ep, target.qualified, cursor, deleted, done)
        except pg_errors.LockNotAvailable:
            self.stats.aborted((time.monotonic() - t0) * 1000)
            self._backoff(target, "lock_timeout")
            return False
        except pg_errors.QueryCanceled:
            self.stats.aborted((time.monotonic() - t0) * 1000)
            self._backoff(target, "statement_timeout")
            return False
        except pg_errors.ForeignKeyViolation as exc:
            raise self.fk_failure(target.qualified, exc) from None
        ms = (time.monotonic() - t0) * 1000
        self.stats.record(ms, deleted)
        self._consecutive = 0
        assert self.monitor is not None
        pause = self.ctl.observe(ms, self.monitor.take())
        if pause > 0:
            self.stats.paused_s += pause / 1000
            self.opts.sleep(pause / 1000)
        return True

    _consecutive = 0

    def _statement_timeout_ms(self) -> int:
        ceiling = self.p.max_batch_ms
        return self.p.statement_timeout_ms if ceiling is None else min(self.p.statement_timeout_ms, ceiling)

    def _backoff(self, target: TableFacts, why: str) -> None:
        self._consecutive += 1
        if why == "lock_timeout":
            self.stats.lock_retries += 1
            self.ctl.shrink(0.5)
        else:
            self.stats.statement_timeouts += 1
            self.ctl.shrink(0.25)
        if self.stats.lock_retries + self.stats.statement_timeouts <= MAX_LOCK_EVENTS:
            self.ctx.event("cleanup.backoff", table=target.qualified, reason=why, attempt=self._consecutive)
        if self._consecutive > self.p.max_lock_retries:
            raise StepFailed(f"{target.qualified}: gave up after {self._consecutive} consecutive {why}s; "
                             "progress is saved, rerun to resume")
        delay = min(2.0, 0.02 * 2 ** min(self._consecutive, 7)) * (0.5 + random.random())  # noqa: S311
        self.stats.paused_s += delay
        self.opts.sleep(delay)

    def _delete(self, cur: Any, target: TableFacts, where: sql.Composable, args: list[Any]) -> int:
        """DELETE the rows of one range; with ``archive``, COPY (DELETE ... RETURNING *) to storage first."""
        assert self.ep is not None
        cond, cargs = condition(self.rule, self.ep.cutoff)
        stmt = sql.SQL("DELETE FROM {} WHERE ").format(ident(target.schema, target.name)) + where + \
            sql.SQL(" AND ") + cond
        if not self.rule.archive:
            cur.execute(stmt, [*args, *cargs])
            return int(cur.rowcount)
        data, n = archive.copy_to_gzip(cur, stmt + sql.SQL(" RETURNING *"), [*args, *cargs])
        if n:
            key = f"{self._archive_base()}/{target.qualified}/{self.ep.batches + 1:07d}.csv.gz"
            stored = self.ctx.storage.put_bytes(key, data)
            meta = {"rows": n, "sha256": stored.sha256, "size": stored.size}
            self.progress.add_chunk(self.conn, self.ep, key, meta)
        return n

    # -- walks --------------------------------------------------------------------------------------
    def _walk(self, target: TableFacts) -> None:
        if target.pk:
            self._walk_keys(target)
        else:
            self._walk_blocks(target)

    def _walk_keys(self, t: TableFacts) -> None:
        assert self.ep is not None
        tbl, pk = ident(t.schema, t.name), sql.Identifier(t.pk or "")
        cond, cargs = condition(self.rule, self.ep.cutoff)
        lo_hi = self.conn.execute(sql.SQL("SELECT min({pk}), max({pk}) FROM {t} WHERE ").format(pk=pk, t=tbl) + cond,
                                  cargs).fetchone()
        self.conn.commit()
        if lo_hi[0] is None:
            self._mark_done(t)
            return
        lo, top = max(int(lo_hi[0]), int(self.ep.cursor(t.qualified) or lo_hi[0])), int(lo_hi[1])
        bound = sql.SQL("SELECT {pk} FROM {t} WHERE {pk} >= %s ORDER BY {pk} OFFSET %s LIMIT 1").format(pk=pk, t=tbl)
        where = sql.SQL("{pk} >= %s AND {pk} < %s").format(pk=pk)
        while lo <= top:
            n = self.ctl.units()

            def work(cur: Any, lo: int = lo, n: int = n) -> tuple[int, Any, bool]:
                row = cur.execute(bound, [lo, n]).fetchone()
                hi = top + 1 if row is None else min(int(row[0]), top + 1)
                return self._delete(cur, t, where, [lo, hi]), hi, hi > top

            if self._batch(t, work):
                lo = self._position(t)

    def _walk_blocks(self, t: TableFacts) -> None:
        assert self.ep is not None
        nblocks, per_block = self.conn.execute(
            "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int, "
            "greatest(1, c.reltuples / greatest(c.relpages, 1)) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            [t.schema, t.name]).fetchone()
        self.conn.commit()
        self.ctl.scale = float(per_block)
        b = int(self.ep.cursor(t.qualified) or 0)
        where = sql.SQL("ctid >= %s::tid AND ctid < %s::tid")
        if b >= nblocks:
            self._mark_done(t)
        while b < nblocks:
            n = self.ctl.units()

            def work(cur: Any, b: int = b, n: int = n) -> tuple[int, Any, bool]:
                hi = min(b + n, int(nblocks))
                return self._delete(cur, t, where, [f"({b},0)", f"({hi},0)"]), hi, hi >= nblocks

            if self._batch(t, work):
                b = self._position(t)
        self.ctl.scale = 1.0

    def _sweep(self, t: TableFacts) -> None:
        """Rows behind the cursor (updated into earlier pages, inserted late): delete until none match.

        Finding them is a scan (the planner's statistics still count the rows just purged, so it may
        read the whole table): it runs as a plain read that locks nothing, outside the bounded batch.
        Only the DELETE of the ctids found, re-checking the rule, runs as a batch under
        ``max_batch_ms``; a row updated meanwhile has a new ctid and is found again next round."""
        assert self.ep is not None
        tbl = ident(t.schema, t.name)
        cond, cargs = condition(self.rule, self.ep.cutoff)
        find = sql.SQL("SELECT ctid::text FROM {} WHERE ").format(tbl) + cond + sql.SQL(" LIMIT %s")
        where = sql.SQL("ctid = ANY(%s::tid[])")
        while True:
            ctids = [r[0] for r in self.conn.execute(find, [*cargs, max(self.ctl.size, 1)]).fetchall()]
            self.conn.commit()
            if not ctids:
                return
            while ctids:  # a timed-out batch backs off, shrinks and retries a smaller chunk
                chunk = ctids[: max(self.ctl.size, 1)]

                def work(cur: Any, chunk: list[str] = chunk) -> tuple[int, Any, bool]:
                    return self._delete(cur, t, where, [chunk]), self.ep.cursor(t.qualified) if self.ep else None, True

                if self._batch(t, work):
                    ctids = ctids[len(chunk):]

    def _position(self, t: TableFacts) -> int:
        assert self.ep is not None
        cursor = self.ep.cursor(t.qualified)  # just recorded by the batch
        assert cursor is not None
        return cursor

    def _mark_done(self, t: TableFacts) -> None:
        assert self.ep is not None
        with self.conn.transaction():
            self.progress.advance(self.conn, self.ep, t.qualified, self.ep.cursor(t.qualified), 0, True, batch=False)

    # -- archive and result -------------------------------------------------------------------------
    def _archive_base(self) -> str:
        assert self.ep is not None
        return archive.prefix(self.ctx.cfg.cleanup.archive_prefix, self.rule.qualified, self.ep.id)
