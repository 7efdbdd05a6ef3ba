"""Resumable progress, kept in the target database next to the data it describes.

One row per *episode* of a rule (``status = 'running'`` until it finishes). The cutoff, the row
count before and the expired count are fixed when the episode starts; every batch updates the
counters and its cursor **in the same transaction as its DELETE**, so after a crash (even SIGKILL)
the row says exactly what was committed. A rerun of any run finds the running episode of the same
rule (same table, column, filters and retention) and continues it with the same cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from ..config import CleanupSettings

DDL = """
CREATE TABLE IF NOT EXISTS {t} (
    id          bigserial PRIMARY KEY,
    rule_key    text NOT NULL,
    rule_table  text NOT NULL,
    status      text NOT NULL DEFAULT 'running',
    cutoff      timestamptz NOT NULL,
    rows_before bigint NOT NULL,
    expired     bigint NOT NULL,
    deleted     bigint NOT NULL DEFAULT 0,
    batches     integer NOT NULL DEFAULT 0,
    runs        text[] NOT NULL DEFAULT '{{}}',
    state       jsonb NOT NULL DEFAULT '{{}}',
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS {ix} ON {t} (rule_key) WHERE status = 'running';
"""


@dataclass
class Episode:
    id: int
    cutoff: datetime
    rows_before: int
    expired: int
    deleted: int
    batches: int
    runs: list[str]
    state: dict[str, Any] = field(default_factory=dict)
    malformed: str | None = None  # set when the row is not one pitstop could have written

    @property
    def resumed(self) -> bool:
        return len(self.runs) > 1

    def _target(self, target: str) -> dict[str, Any]:
        entry = self.state.get("targets", {}).get(target, {})
        return entry if isinstance(entry, dict) else {}

    def cursor(self, target: str) -> int | None:
        """The walk's position: an integer key or block number; anything else is ignored (walk from the start)."""
        value = self._target(target).get("cursor")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def target_done(self, target: str) -> bool:
        return self._target(target).get("done") is True


def _malformed(runs: Any, state: Any) -> str | None:
    if not isinstance(state, dict):
        return "state is not an object"
    if not isinstance(state.get("targets", {}), dict):
        return "state.targets is not an object"
    if not isinstance(runs, list) or not runs or not all(isinstance(r, str) for r in runs):
        return "runs is not a list of run ids"
    return None


class Progress:
    def __init__(self, settings: CleanupSettings):
        self.table = sql.Identifier(settings.progress_schema, settings.progress_table)
        self.index = sql.Identifier(f"{settings.progress_table}_running")

    def ensure(self, conn: Any) -> None:
        conn.execute(sql.SQL(DDL).format(t=self.table, ix=self.index))
        conn.commit()

    def exists(self, conn: Any) -> bool:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [self.table.as_string(conn)]).fetchone()[0]

    def running(self, conn: Any, key: str) -> Episode | None:
        if not self.exists(conn):
            return None
        row = conn.execute(sql.SQL("SELECT id, cutoff, rows_before, expired, deleted, batches, runs, state "
                                   "FROM {} WHERE rule_key = %s AND status = 'running'").format(self.table),
                           [key]).fetchone()
        if row is None:
            return None
        ep = Episode(*row)
        ep.malformed = _malformed(ep.runs, ep.state)
        if ep.malformed:
            ep.state, ep.runs = {}, ep.runs if isinstance(ep.runs, list) and ep.runs else ["?"]
        return ep

    def start(self, conn: Any, key: str, table: str, run_id: str, cutoff: datetime, rows_before: int,
              expired: int) -> Episode:
        row = conn.execute(sql.SQL("INSERT INTO {} (rule_key, rule_table, cutoff, rows_before, expired, runs) "
                                   "VALUES (%s, %s, %s, %s, %s, ARRAY[%s]) RETURNING id").format(self.table),
                           [key, table, cutoff, rows_before, expired, run_id]).fetchone()
        conn.commit()
        return Episode(row[0], cutoff, rows_before, expired, 0, 0, [run_id])

    def join(self, conn: Any, ep: Episode, run_id: str) -> None:
        if run_id not in ep.runs:
            ep.runs.append(run_id)
            conn.execute(sql.SQL("UPDATE {} SET runs = array_append(runs, %s), updated_at = now() "
                                 "WHERE id = %s").format(self.table), [run_id, ep.id])
        conn.commit()

    def advance(self, conn: Any, ep: Episode, target: str, cursor: Any, deleted: int, done: bool = False,
                batch: bool = True, **extra: Any) -> None:
        """Record a batch. Call inside the batch's transaction, after its DELETE."""
        entry = {"cursor": cursor, "done": done, **extra}
        conn.execute(sql.SQL("UPDATE {} SET deleted = deleted + %s, batches = batches + %s, updated_at = now(), "
                             "state = jsonb_set(jsonb_set(state, '{{targets}}', coalesce(state->'targets', '{{}}')), "
                             "ARRAY['targets', %s], coalesce(state->'targets'->%s, '{{}}') || %s) "
                             "WHERE id = %s").format(self.table),
                     [deleted, int(batch), target, target, Jsonb(entry), ep.id])
        ep.deleted += deleted
        ep.batches += int(batch)
        ep.state.setdefault("targets", {}).setdefault(target, {}).update(entry)

    def add_chunk(self, conn: Any, ep: Episode, key: str, meta: dict[str, Any]) -> None:
        """Record an archived chunk, in the batch's transaction (so only committed chunks are listed)."""
        conn.execute(sql.SQL("UPDATE {} SET state = state || jsonb_build_object('chunks', "
                             "coalesce(state->'chunks', '{{}}') || jsonb_build_object(%s::text, %s::jsonb)) "
                             "WHERE id = %s").format(self.table), [key, Jsonb(meta), ep.id])
        ep.state.setdefault("chunks", {})[key] = meta

    def note(self, conn: Any, ep: Episode, key: str, value: Any) -> None:
        """Record a fact (e.g. a detached partition) in the episode's state, in the caller's transaction."""
        conn.execute(sql.SQL("UPDATE {} SET state = jsonb_set(state, ARRAY[%s], %s), updated_at = now() "
                             "WHERE id = %s").format(self.table), [key, Jsonb(value), ep.id])
        ep.state[key] = value

    def finish(self, conn: Any, ep: Episode, status: str = "done") -> None:
        conn.execute(sql.SQL("UPDATE {} SET status = %s, finished_at = now(), updated_at = now() "
                             "WHERE id = %s").format(self.table), [status, ep.id])
        conn.commit()

    def abandon(self, conn: Any, key: str) -> int:
        if not self.exists(conn):
            return 0
        n = conn.execute(sql.SQL("UPDATE {} SET status = 'abandoned', finished_at = now() "
                                 "WHERE rule_key = %s AND status = 'running'").format(self.table), [key]).rowcount
        conn.commit()
        return n
