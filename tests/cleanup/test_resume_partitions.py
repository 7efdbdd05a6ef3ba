"""Resume after SIGKILL with the same cutoff, partition drop (+ archive), and dry run."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import psycopg

from pitstop.cleanup.steps import RetentionParams, cleanup_retention
from tests.conftest import ROOT, run_cli

from .conftest import EXPIRED, ROWS, events, fingerprint, rule

CRASH_SCRIPT = textwrap.dedent("""
    import sys
    from pitstop.config import load_config
    from pitstop.context import RunContext, RunOptions
    from pitstop.runbook import load_runbook
    from pitstop.cleanup.steps import RetentionParams, cleanup_retention

    cfg = load_config(sys.argv[1])
    ctx = RunContext.create(cfg, load_runbook("monthly", cfg), RunOptions(), run_id="crash-run")
    cleanup_retention(ctx, RetentionParams(profile="slow"))
""")
SLOW = {"profiles": {"slow": {"initial_batch": 100, "min_batch": 100, "max_batch": 100, "pause_ms": 20}}}


def test_resume_after_sigkill_keeps_cutoff_and_exact_accounting(ev, cleanup_ctx, make_env, tmp_path):
    newer = fingerprint(ev, "ev", "created_at >= now() - interval '80 days'")
    ctx = cleanup_ctx([rule("ev")], cleanup=SLOW)
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "env.yaml")], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deleted = 0
        while deleted < 1000:  # kill it mid-purge, after some batches committed
            assert proc.poll() is None, "the purge finished before it could be killed"
            time.sleep(0.02)
            if ev.execute("SELECT to_regclass('pitstop_cleanup_progress') IS NOT NULL").fetchone()[0]:
                deleted = ev.execute("SELECT coalesce(max(deleted), 0) FROM pitstop_cleanup_progress").fetchone()[0]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    status, cutoff, done_so_far = ev.execute("SELECT status, cutoff, deleted FROM pitstop_cleanup_progress").fetchone()
    assert status == "running" and EXPIRED > done_so_far >= 1000
    # The progress row is exact: committed deletes == recorded deletes.
    assert ev.execute("SELECT count(*) FROM ev").fetchone()[0] == ROWS - done_so_far
    # A row just younger than the fixed cutoff: a fresh cutoff would purge it, the resumed one must not.
    ev.execute("INSERT INTO ev (account, kind, created_at) VALUES (1, 'late', %s)", [cutoff + timedelta(seconds=0.5)])
    time.sleep(0.6)

    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert r["resumed"] and r["runs"] == ["crash-run", ctx.run_id]
    assert r["cutoff"] == cutoff.isoformat()
    assert r["deleted"] == EXPIRED and r["deleted_this_run"] == EXPIRED - done_so_far
    assert r["rows_after"] == ROWS + 1 - EXPIRED
    assert ev.execute("SELECT count(*) FROM ev WHERE kind = 'late'").fetchone()[0] == 1
    assert fingerprint(ev, "ev", "created_at >= now() - interval '80 days'") == newer
    assert events(ctx, "cleanup.resumed")[0]["already_deleted"] == done_so_far


PARTITIONED = """
CREATE TABLE metrics (id bigserial, host text NOT NULL, created_at timestamptz NOT NULL,
                      PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at);
CREATE TABLE metrics_old1 PARTITION OF metrics
    FOR VALUES FROM (now() - interval '400 days') TO (now() - interval '300 days');
CREATE TABLE metrics_old2 PARTITION OF metrics
    FOR VALUES FROM (now() - interval '300 days') TO (now() - interval '200 days');
CREATE TABLE metrics_mixed PARTITION OF metrics
    FOR VALUES FROM (now() - interval '200 days') TO (now() - interval '10 days');
CREATE TABLE metrics_new PARTITION OF metrics
    FOR VALUES FROM (now() - interval '10 days') TO (now() + interval '100 days');
INSERT INTO metrics (host, created_at)
SELECT 'h' || g % 7, now() - make_interval(days => 395 - (g % 390), secs => 1) FROM generate_series(1, 3900) g;
"""


def _partition_setup(conn: psycopg.Connection) -> dict[str, int]:
    conn.execute(PARTITIONED)
    counts = {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]  # noqa: S608 - test constants
              for name in ("metrics_old1", "metrics_old2", "metrics_mixed", "metrics_new")}
    counts["mixed_expired"] = conn.execute("SELECT count(*) FROM metrics_mixed WHERE created_at < now() - "
                                           "interval '90 days'").fetchone()[0]
    return counts


def test_partitions_past_the_cutoff_are_detached_archived_and_dropped(conn, cleanup_ctx):
    counts = _partition_setup(conn)
    ctx = cleanup_ctx([rule("metrics", archive=True, max_share=0.9)])
    keep = fingerprint(conn, "metrics", "created_at >= now() - interval '89 days'")
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    dropped = {d["partition"]: d for d in r["partitions_dropped"]}
    assert set(dropped) == {"public.metrics_old1", "public.metrics_old2"}
    assert all(d["detached"] == "concurrently" for d in dropped.values())
    leaves = {row[0] for row in conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 'metrics\\_%%' "
                                             "AND relkind = 'r'").fetchall()}
    assert leaves == {"metrics_mixed", "metrics_new"}
    expired = counts["metrics_old1"] + counts["metrics_old2"] + counts["mixed_expired"]
    assert r["deleted"] == expired and r["rows_after"] == 3900 - expired
    assert fingerprint(conn, "metrics", "created_at >= now() - interval '89 days'") == keep
    arch = dropped["public.metrics_old1"]["archive"]
    rows = gzip.decompress(ctx.storage.open(arch["key"]).read()).decode().splitlines()
    assert rows[0] == "id,host,created_at" and len(rows) - 1 == arch["rows"] == counts["metrics_old1"]
    kinds = [e["partition"] for e in events(ctx, "cleanup.partition_dropped")]
    assert sorted(kinds) == ["public.metrics_old1", "public.metrics_old2"]


def test_dry_run_plan_shows_exact_rows_and_partitions_and_changes_nothing(conn, ev, make_env):
    counts = _partition_setup(conn)

    def mutate(cfg):
        cfg["retention"] = [rule("ev"), rule("metrics", max_share=0.9)]

    path = make_env(mutate)
    before = (fingerprint(conn, "ev"), fingerprint(conn, "metrics"))
    proc = run_cli("plan", "--env", str(path), "--runbook", "monthly", "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    plan = json.loads(proc.stdout)
    (step,) = [s for s in plan["steps"] if s["uses"] == "cleanup.retention"]
    text = "\n".join(step["would"])
    assert f"public.ev: purge {EXPIRED} of {ROWS} rows" in text
    assert f"drop partition public.metrics_old1 ({counts['metrics_old1']} rows, upper bound" in text
    assert "drop partition public.metrics_old2" in text and "metrics_mixed" not in text
    mixed = counts["metrics_old1"] + counts["metrics_old2"] + counts["mixed_expired"]
    assert f"public.metrics: purge {mixed} of 3900 rows" in text
    assert (fingerprint(conn, "ev"), fingerprint(conn, "metrics")) == before
    assert conn.execute("SELECT to_regclass('pitstop_cleanup_progress')").fetchone()[0] is None


class Crash(Exception):
    pass


def test_a_crash_between_detach_and_drop_is_finished_by_the_rerun(conn, cleanup_ctx, monkeypatch):
    from pitstop.cleanup import partitions

    counts = _partition_setup(conn)
    keep = fingerprint(conn, "metrics", "created_at >= now() - interval '89 days'")
    ctx = cleanup_ctx([rule("metrics", max_share=0.9)])

    def crash(*args, **kwargs):
        raise Crash("killed between detach and drop")

    with monkeypatch.context() as m:
        m.setattr(partitions, "_drop", crash)
        try:
            cleanup_retention(ctx, RetentionParams())
        except Crash:
            pass
    assert conn.execute("SELECT relispartition FROM pg_class WHERE relname = 'metrics_old1'").fetchone() == (False,)
    (r,) = cleanup_retention(cleanup_ctx([rule("metrics", max_share=0.9)], name="env2.yaml"),
                             RetentionParams()).data["cleanup"]
    assert r["resumed"] and not r["partitions_refused"]
    assert {d["partition"] for d in r["partitions_dropped"]} == {"public.metrics_old1", "public.metrics_old2"}
    expired = counts["metrics_old1"] + counts["metrics_old2"] + counts["mixed_expired"]
    assert r["deleted"] == expired and r["rows_after"] == 3900 - expired
    assert fingerprint(conn, "metrics", "created_at >= now() - interval '89 days'") == keep
    assert conn.execute("SELECT to_regclass('metrics_old1'), to_regclass('metrics_old2')").fetchone() == (None, None)


def _leave_pending(conn, dbname, pg_socket, leaf):
    """A DETACH ... CONCURRENTLY cancelled while a reader holds the parent: the leaf stays detach-pending."""
    import psycopg

    with psycopg.connect(host=pg_socket, dbname=dbname, user="postgres") as holder, \
            psycopg.connect(host=pg_socket, dbname=dbname, user="postgres", autocommit=True) as other:
        holder.execute("SELECT count(*) FROM metrics")
        other.execute("SET statement_timeout = '300ms'")
        try:
            other.execute(f"ALTER TABLE metrics DETACH PARTITION {leaf} CONCURRENTLY")
        except psycopg.errors.QueryCanceled:
            pass
        holder.rollback()
    return conn.execute("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = %s::regclass", [leaf]).fetchone()


def test_a_detach_pending_leaf_is_finalized(conn, cleanup_ctx, pg_socket):
    counts = _partition_setup(conn)
    assert _leave_pending(conn, conn.info.dbname, pg_socket, "metrics_old1") == (True,)
    (r,) = cleanup_retention(cleanup_ctx([rule("metrics", max_share=0.9, partitions="drop_only")]),
                             RetentionParams()).data["cleanup"]
    modes = {d["partition"]: d["detached"] for d in r["partitions_dropped"]}
    assert modes == {"public.metrics_old1": "finalize", "public.metrics_old2": "concurrently"}
    assert r["deleted"] == counts["metrics_old1"] + counts["metrics_old2"]
    assert conn.execute("SELECT to_regclass('metrics_old1'), to_regclass('metrics_old2')").fetchone() == (None, None)


def test_a_young_leaf_left_detach_pending_is_not_finalized(conn, cleanup_ctx, pg_socket):
    counts = _partition_setup(conn)
    assert _leave_pending(conn, conn.info.dbname, pg_socket, "metrics_new") == (True,)
    new_rows = fingerprint(conn, "metrics_new")
    (r,) = cleanup_retention(cleanup_ctx([rule("metrics", max_share=0.9, partitions="drop_only")]),
                             RetentionParams()).data["cleanup"]
    # PostgreSQL allows one pending detach per parent: the expired leaves are detached the plain way
    modes = {d["partition"]: d["detached"] for d in r["partitions_dropped"]}
    assert modes == {"public.metrics_old1": "plain", "public.metrics_old2": "plain"}
    assert r["deleted"] == counts["metrics_old1"] + counts["metrics_old2"]
    assert fingerprint(conn, "metrics_new") == new_rows  # someone else's pending detach: left as it is
    assert conn.execute("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'metrics_new'::regclass"
                        ).fetchone() == (True,)
