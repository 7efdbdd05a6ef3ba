"""data_snapshot / data_parity on the real database: rows before - purged = rows after, and the
checksum of immutable rows (paid orders)."""

from __future__ import annotations

from pitstop.backup.state import BackupState
from pitstop.model import CheckStatus

from .conftest import run

PAID = {"table": "orders", "where": [{"column": "status", "op": "=", "value": "paid"}], "order_by": ["id"]}


def _purge(ctx, conn, table: str, where: str, record: bool = True) -> int:
    n = conn.execute(f"DELETE FROM {table} WHERE {where}").rowcount
    if record:  # what cleanup.retention records for every rule it applies
        ctx.event("cleanup.purged", table=f"public.{table}", deleted=n)
    return n


def test_parity_passes_when_only_rule_purges_happened(ctx, db_conn, seeded_db):
    snap = run(ctx, "data_snapshot", {"tables": ["events", "sessions", "orders"], "immutable": [PAID]})
    assert snap.status == CheckStatus.PASS
    assert snap.evidence["counts"] == {"public.events": 6000, "public.sessions": 2000, "public.orders": 1000}
    with db_conn(seeded_db) as conn:
        purged = _purge(ctx, conn, "sessions", "expires_at < now() - interval '30 days'")
        conn.execute("DELETE FROM orders WHERE status = 'pending' AND id < 50")  # not immutable, but not purged
    assert purged == 400
    r = run(ctx, "data_parity", {"tables": ["events", "sessions"]})
    assert r.status == CheckStatus.PASS, r.observed
    t = r.evidence["tables"]["public.sessions"]
    assert (t["before"], t["purged"], t["expected"], t["after"]) == (2000, 400, 1600, 1600)
    assert r.evidence["immutable"]["public.orders WHERE status = paid"]["unchanged"] is True
    # The after-state is in the audit log too, for the report's before/after metrics.
    labels = [e["data"]["label"] for e in ctx.audit.events if e["kind"] == "data.snapshot"]
    assert labels == ["before", "after"]


def test_parity_names_exactly_what_differed(ctx, db_conn, seeded_db):
    run(ctx, "data_snapshot", {"tables": ["events", "sessions", "orders"], "immutable": [PAID]})
    with db_conn(seeded_db) as conn:
        _purge(ctx, conn, "sessions", "expires_at < now() - interval '30 days'")
        _purge(ctx, conn, "events", "id <= 5", record=False)  # gone without a rule: must be caught
        conn.execute("UPDATE orders SET amount_cents = amount_cents + 1 WHERE id = 3")  # id 3 is paid
    r = run(ctx, "data_parity", {})
    assert r.status == CheckStatus.FAIL
    diffs = r.evidence["differences"]
    assert "public.events: expected 6000 rows (6000 before - 0 purged), found 5995 (-5)" in diffs
    assert any(d.startswith("public.orders WHERE status = paid: checksum changed") for d in diffs)
    assert not any("public.sessions" in d for d in diffs)
    paid = r.evidence["immutable"]["public.orders WHERE status = paid"]
    assert paid["sha256_before"] != paid["sha256_after"] and paid["rows_before"] == paid["rows_after"]


def test_parity_tolerance_and_backup_manifest_fallback(ctx, db_conn, seeded_db):
    # No snapshot: "before" comes from this run's backup manifest row counts.
    ctx.state.of(BackupState).backup = {"row_counts": {"public.users": 200, "public.sessions": 2000}, "verified": True}
    with db_conn(seeded_db) as conn:
        conn.execute("INSERT INTO users (email) VALUES ('late-signup@demo.example')")
    r = run(ctx, "data_parity", {"tables": ["users", "sessions"]})
    assert r.status == CheckStatus.FAIL and r.evidence["source"] == "backup manifest row counts"
    assert r.evidence["tables"]["public.users"]["difference"] == 1
    tolerant = run(ctx, "data_parity", {"tables": ["users", "sessions"], "tolerance": {"users": 5}})
    assert tolerant.status == CheckStatus.PASS


def test_parity_without_any_before_record_fails(ctx):
    r = run(ctx, "data_parity", {})
    assert r.status == CheckStatus.FAIL and r.observed == "no 'before' record"
