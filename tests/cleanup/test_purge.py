"""The batched purge on a real PostgreSQL: exact accounting, filters, share refusal, no-PK tables,
archive contents and lock-timeout back-off."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import threading
import time

import psycopg
import pytest

from pitstop.cleanup.steps import RetentionParams, cleanup_retention
from pitstop.errors import GateRefused

from .conftest import EXPIRED, NOPK_TABLE, ROWS, events, fingerprint, rule

SMALL = {"profiles": {"tiny": {"initial_batch": 300, "min_batch": 100, "max_batch": 600, "target_batch_ms": 5}}}


def test_exact_accounting_and_newer_rows_untouched(ev, cleanup_ctx):
    ctx = cleanup_ctx([rule("ev", profile="tiny")], cleanup=SMALL)
    newer_before = fingerprint(ev, "ev", "created_at >= now() - interval '80 days'")
    out = cleanup_retention(ctx, RetentionParams())
    (r,) = out.data["cleanup"]
    assert r["strategy"] == "pk-range"
    assert (r["rows_before"], r["expired"], r["deleted"], r["rows_after"]) == (ROWS, EXPIRED, EXPIRED, ROWS - EXPIRED)
    assert ev.execute("SELECT count(*) FROM ev").fetchone()[0] == ROWS - EXPIRED
    assert ev.execute("SELECT count(*) FROM ev WHERE created_at < %s", [r["cutoff"]]).fetchone()[0] == 0
    assert fingerprint(ev, "ev", "created_at >= now() - interval '80 days'") == newer_before
    assert r["batches"] >= EXPIRED // 600  # really batched
    (purged,) = events(ctx, "cleanup.purged")
    assert purged["deleted"] == EXPIRED and purged["metrics_before"]["table_bytes"] > 0  # pg_stat counters lag
    # Progress is recorded as a finished episode with the same numbers.
    row = ev.execute("SELECT status, deleted, expired, cutoff FROM pitstop_cleanup_progress").fetchone()
    assert row[:3] == ("done", EXPIRED, EXPIRED)
    # Idempotent: a second run finds nothing more to delete.
    again = cleanup_retention(cleanup_ctx([rule("ev")], name="env2.yaml"), RetentionParams()).data["cleanup"][0]
    assert again["deleted"] == 0 and again["rows_after"] == ROWS - EXPIRED


def test_structured_filters_limit_the_purge(ev, cleanup_ctx):
    ctx = cleanup_ctx([rule("ev", where=[{"column": "kind", "op": "=", "value": "view"},
                                         {"column": "account", "op": "in", "value": [1, 2, 3, 4]}])])
    expect = ev.execute("SELECT count(*) FROM ev WHERE created_at < now() - interval '90 days' AND kind = 'view' "
                        "AND account IN (1, 2, 3, 4)").fetchone()[0]
    others = fingerprint(ev, "ev", "NOT (kind = 'view' AND account IN (1, 2, 3, 4))")
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert 0 < expect == r["deleted"]
    assert fingerprint(ev, "ev", "NOT (kind = 'view' AND account IN (1, 2, 3, 4))") == others


def test_refuses_a_rule_above_max_share_unless_allowed(ev, cleanup_ctx):
    before = fingerprint(ev, "ev")
    ctx = cleanup_ctx([rule("ev", max_share=0.2)])
    with pytest.raises(GateRefused, match="max_share"):
        cleanup_retention(ctx, RetentionParams())
    assert fingerprint(ev, "ev") == before
    (r,) = cleanup_retention(ctx, RetentionParams(allow_large_share=True)).data["cleanup"]
    assert r["deleted"] == EXPIRED


def test_table_without_primary_key_uses_ctid_ranges(conn, cleanup_ctx):
    conn.execute(NOPK_TABLE.replace("ROWS_N", "8000"))
    conn.execute("ANALYZE audit_log")
    ctx = cleanup_ctx([rule("audit_log", column="at", profile="tiny")], cleanup=SMALL)
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert r["strategy"] == "ctid-range" and r["deleted"] == 2000 and r["batches"] > 1
    left = conn.execute("SELECT count(*), min(at) > now() - interval '11 days' FROM audit_log").fetchone()
    assert left == (6000, True)


def test_archive_holds_exactly_the_purged_rows(ev, cleanup_ctx):
    ctx = cleanup_ctx([rule("ev", archive=True, profile="tiny")], cleanup=SMALL)
    expired = {r[0]: r for r in ev.execute("SELECT id::text, account::text, kind, payload, created_at::text "
                                           "FROM ev WHERE created_at < now() - interval '90 days'").fetchall()}
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    manifest_key = f"cleanup-archive/public.ev/episode-{r['episode']}/manifest.json"
    manifest = json.loads(ctx.storage.open(manifest_key).read())
    assert r["archive"]["rows"] == manifest["rows"] == EXPIRED
    assert r["archive"]["objects"] == len(manifest["objects"]) > 1
    seen = {}
    for obj in manifest["objects"]:
        data = ctx.storage.open(obj["key"]).read()
        assert hashlib.sha256(data).hexdigest() == obj["sha256"]
        rows = list(csv.reader(io.StringIO(gzip.decompress(data).decode())))
        assert rows[0] == ["id", "account", "kind", "payload", "created_at"]
        assert len(rows) - 1 == obj["rows"]
        for row in rows[1:]:
            seen[row[0]] = tuple(row)
    # CSV round-trip of the exact values (payload has a comma, quotes and a newline).
    assert seen.keys() == expired.keys()
    sample = next(iter(expired))
    assert seen[sample][:4] == expired[sample][:4]
    assert [e for e in events(ctx, "cleanup.purged")][0]["archive"]["sha256"] == r["archive"]["sha256"]


def test_backs_off_while_another_session_holds_a_conflicting_lock(ev, cleanup_ctx, pg_socket, seeded_db):
    slow = {"profiles": {"slow": {"initial_batch": 300, "min_batch": 300, "max_batch": 300, "pause_ms": 60,
                                  "lock_timeout_ms": 50}}}
    ctx = cleanup_ctx([rule("ev", profile="slow")], cleanup=slow)
    held: list[float] = []

    def hold_lock_mid_purge() -> None:
        with psycopg.connect(host=pg_socket, dbname=seeded_db, user="postgres") as locker:
            while True:  # wait until the purge has committed a few batches
                row = locker.execute("SELECT to_regclass('pitstop_cleanup_progress') IS NOT NULL").fetchone()
                if row[0] and locker.execute("SELECT coalesce(max(batches), 0) FROM pitstop_cleanup_progress"
                                             ).fetchone()[0] >= 2:
                    break
                locker.rollback()
                time.sleep(0.01)
            locker.commit()
            locker.execute("LOCK TABLE ev IN ACCESS EXCLUSIVE MODE")
            t0 = time.monotonic()
            time.sleep(1.0)
            locker.rollback()
            held.append(time.monotonic() - t0)

    thread = threading.Thread(target=hold_lock_mid_purge)
    thread.start()
    try:
        (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    finally:
        thread.join()
    assert held, "the lock was never taken"
    assert r["deleted"] == EXPIRED and r["rows_after"] == ROWS - EXPIRED
    assert r["lock_retries"] >= 2
    backoffs = events(ctx, "cleanup.backoff")
    assert backoffs and all(b["reason"] == "lock_timeout" for b in backoffs)


def test_a_batch_past_max_batch_ms_is_cut_and_retried_smaller(ev, cleanup_ctx):
    """A DELETE that runs past the profile's ceiling is cancelled by the server (the batch rolls back)
    and retried at a quarter of the size; the purge still deletes exactly the expired rows."""
    # The first 100 rows deleted cost 10 ms each (a row trigger driven by a sequence, which a rollback
    # does not undo): uncapped, the first batch would hold its transaction open for over a second.
    ev.execute("CREATE SEQUENCE slow_rows")
    ev.execute("CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
               "IF nextval('slow_rows') <= 100 THEN PERFORM pg_sleep(0.01); END IF; RETURN OLD; END $$")
    ev.execute("CREATE TRIGGER ev_slow BEFORE DELETE ON ev FOR EACH ROW EXECUTE FUNCTION slow_delete()")
    ev.commit()
    capped = {"profiles": {"capped": {"initial_batch": 400, "min_batch": 10, "max_batch": 400,
                                      "target_batch_ms": 40, "max_batch_ms": 150}}}
    ctx = cleanup_ctx([rule("ev", profile="capped")], cleanup=capped)
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert r["deleted"] == EXPIRED and r["rows_after"] == ROWS - EXPIRED
    assert ev.execute("SELECT count(*) FROM ev WHERE created_at < %s", [r["cutoff"]]).fetchone()[0] == 0
    backoffs = events(ctx, "cleanup.backoff")
    assert any(b["reason"] == "statement_timeout" for b in backoffs)
    # Cancelled batches count as transactions: the longest is a cut one (~150 ms), not the uncapped second.
    assert 150 <= r["longest_batch_ms"] < 900
