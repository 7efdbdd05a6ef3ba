"""Foreign keys into purged tables: CASCADE, SET NULL, RESTRICT / NO ACTION, on plain and partitioned tables.

Expected survivors are computed in SQL from the seeded rows before the purge, never from pitstop's figures.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from pitstop.cleanup.steps import RetentionParams, cleanup_retention, plan_retention
from pitstop.errors import StepFailed
from tests.conftest import run_cli

from .conftest import events, fingerprint, rule

TINY = {"profiles": {"tiny": {"initial_batch": 20, "min_batch": 10, "max_batch": 20}}}

# 400 parents, the even ids 200 days old (expired at 90d), the odd ids 5 days old.
FKS = """
CREATE TABLE parent (id bigint PRIMARY KEY, created_at timestamptz NOT NULL);
INSERT INTO parent SELECT g, now() - make_interval(days => CASE WHEN g % 2 = 0 THEN 200 ELSE 5 END)
  FROM generate_series(1, 400) g;
CREATE TABLE child_cascade (id int, parent_id bigint REFERENCES parent ON DELETE CASCADE);
CREATE TABLE child_null (id int, parent_id bigint REFERENCES parent ON DELETE SET NULL);
INSERT INTO child_cascade SELECT g, g FROM generate_series(1, 400) g;
INSERT INTO child_null SELECT g, g FROM generate_series(1, 400) g;
"""
EXPIRED_PARENTS = "created_at < now() - interval '90 days'"


def test_cascade_and_set_null_keys_follow_the_purge_and_are_counted(conn: psycopg.Connection,
                                                                     cleanup_ctx: Any) -> None:
    conn.execute(FKS)
    cascade_keep = fingerprint(conn, "child_cascade", "parent_id % 2 = 1")
    ctx = cleanup_ctx([rule("parent", max_share=0.9)])
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert r["deleted"] == 200
    assert fingerprint(conn, "child_cascade") == cascade_keep
    assert conn.execute("SELECT count(*) FROM child_null WHERE parent_id IS NULL").fetchone()[0] == 200
    keys = {k["constraint"]: k for k in r["foreign_keys"]}
    assert keys["child_cascade_parent_id_fkey"] == {"constraint": "child_cascade_parent_id_fkey",
                                                    "table": "public.child_cascade", "on_delete": "CASCADE",
                                                    "rows": 200, "blocks": False}
    assert keys["child_null_parent_id_fkey"]["on_delete"] == "SET NULL" and keys["child_null_parent_id_fkey"]["rows"] \
        == 200
    assert events(ctx, "cleanup.foreign_keys")[0]["keys"] == r["foreign_keys"]


@pytest.mark.parametrize("action", ["RESTRICT", "NO ACTION"])
def test_a_blocking_key_refuses_the_purge_before_anything_is_deleted(conn: psycopg.Connection, cleanup_ctx: Any,
                                                                     action: str) -> None:
    # The blocker references the *last* expired parent: batch by batch, 199 rows would go before it fails.
    conn.execute(FKS + f"CREATE TABLE child_block (id int, parent_id bigint REFERENCES parent ON DELETE {action});"
                 "INSERT INTO child_block VALUES (1, 400), (2, 399);")
    before = {t: fingerprint(conn, t) for t in ("parent", "child_cascade", "child_null", "child_block")}
    ctx = cleanup_ctx([rule("parent", max_share=0.9, profile="tiny")], cleanup=TINY)
    with pytest.raises(StepFailed) as err:
        cleanup_retention(ctx, RetentionParams())
    assert {t: fingerprint(conn, t) for t in before} == before
    msg = str(err.value)
    assert "1 row(s) of public.child_block through foreign key child_block_parent_id_fkey" in msg
    assert f"ON DELETE {action}" in msg and "Nothing was deleted" in msg


def test_plan_counts_blocking_cascading_and_nulled_rows(conn: psycopg.Connection, cleanup_ctx: Any) -> None:
    conn.execute(FKS + "CREATE TABLE child_block (id int, parent_id bigint REFERENCES parent ON DELETE RESTRICT);"
                 "INSERT INTO child_block VALUES (1, 400), (2, 398), (3, 1);")
    lines = "\n".join(plan_retention(cleanup_ctx([rule("parent", max_share=0.9)]), RetentionParams()))
    assert "referenced by public.child_block (child_block_parent_id_fkey): ON DELETE RESTRICT — BLOCKED: 2 " \
           "referencing row(s)" in lines
    assert "referenced by public.child_cascade (child_cascade_parent_id_fkey): ON DELETE CASCADE: 200 referencing " \
           "row(s) would be deleted too" in lines
    assert "public.child_null (child_null_parent_id_fkey): ON DELETE SET NULL: 200 referencing row(s) would be set " \
           "to NULL" in lines


def test_plan_names_the_keys_through_the_cli(conn: psycopg.Connection, make_env: Any) -> None:
    conn.execute(FKS)

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["retention"] = [rule("parent", max_share=0.9)]

    proc = run_cli("plan", "--env", str(make_env(mutate)), "--runbook", "monthly", "--json")
    assert proc.returncode == 0, proc.stderr
    (step,) = [s for s in json.loads(proc.stdout)["steps"] if s["uses"] == "cleanup.retention"]
    assert any("public.child_cascade" in w and "200 referencing row(s) would be deleted too" in w
               for w in step["would"])


def test_a_violation_at_run_time_rolls_its_batch_back_and_names_the_key(conn: psycopg.Connection,
                                                                         cleanup_ctx: Any) -> None:
    # A referencing row that appears while the purge runs (here: inserted by a trigger as parent 300 goes).
    conn.execute(FKS + """
        CREATE TABLE child_late (id int, parent_id bigint REFERENCES parent ON DELETE NO ACTION);
        CREATE FUNCTION late() RETURNS trigger LANGUAGE plpgsql AS
          $$ BEGIN INSERT INTO child_late VALUES (1, OLD.id); RETURN OLD; END $$;
        CREATE TRIGGER late BEFORE DELETE ON parent FOR EACH ROW WHEN (OLD.id = 300) EXECUTE FUNCTION late();""")
    ctx = cleanup_ctx([rule("parent", max_share=0.9, profile="tiny")], cleanup=TINY)
    with pytest.raises(StepFailed, match=r"child_late \(foreign key child_late_parent_id_fkey.*rolled back whole"):
        cleanup_retention(ctx, RetentionParams())
    deleted = conn.execute("SELECT deleted FROM pitstop_cleanup_progress").fetchone()[0]
    gone = 200 - conn.execute(f"SELECT count(*) FROM parent WHERE {EXPIRED_PARENTS}").fetchone()[0]  # noqa: S608
    assert 0 < deleted == gone < 200  # earlier batches stay deleted and counted, the failing one rolled back
    assert conn.execute("SELECT count(*) FROM parent WHERE id = 300").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM child_late").fetchone()[0] == 0
    assert conn.execute(f"SELECT count(*) FROM parent WHERE NOT ({EXPIRED_PARENTS})").fetchone()[0] == 200  # noqa: S608


# -- keys into a partitioned table: PostgreSQL refuses to DETACH a partition that rows still reference --------
PARTED = """
CREATE TABLE bookings (id bigint, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at))
  PARTITION BY RANGE (created_at);
CREATE TABLE bookings_old PARTITION OF bookings FOR VALUES FROM (MINVALUE) TO (now() - interval '300 days');
CREATE TABLE bookings_mid PARTITION OF bookings FOR VALUES FROM (now() - interval '300 days')
  TO (now() - interval '30 days');
CREATE TABLE bookings_new PARTITION OF bookings FOR VALUES FROM (now() - interval '30 days') TO (MAXVALUE);
INSERT INTO bookings SELECT g, now() - make_interval(days => g % 400, secs => 7) FROM generate_series(1, 2000) g;
CREATE TABLE notes (id int, booking_id bigint, booking_at timestamptz,
  FOREIGN KEY (booking_id, booking_at) REFERENCES bookings ON DELETE {action});
INSERT INTO notes SELECT g, id, created_at FROM (SELECT row_number() OVER () g, id, created_at FROM bookings
  WHERE id % 10 = 0) s;
"""


@pytest.mark.parametrize("mode", ["drop", "drop_only"])
def test_a_referenced_partition_is_emptied_with_its_cascade_then_dropped(conn: psycopg.Connection, cleanup_ctx: Any,
                                                                         mode: str) -> None:
    conn.execute(PARTED.format(action="CASCADE"))
    gone_if = "created_at < now() - interval '300 days'" if mode == "drop_only" else \
        "created_at < now() - interval '90 days'"
    keep = fingerprint(conn, "bookings", f"NOT ({gone_if})")
    notes_keep = fingerprint(conn, "notes", f"NOT ({gone_if.replace('created_at', 'booking_at')})")
    cascaded = conn.execute(f"SELECT count(*) FROM notes WHERE {gone_if.replace('created_at', 'booking_at')}"  # noqa: S608
                            ).fetchone()[0]
    ctx = cleanup_ctx([rule("bookings", max_share=0.9, partitions=mode)])
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert [d["partition"] for d in r["partitions_dropped"]] == ["public.bookings_old"]
    assert not r["partitions_refused"]
    assert [e["partition"] for e in events(ctx, "cleanup.partition_emptied")] == ["public.bookings_old"]
    assert conn.execute("SELECT to_regclass('bookings_old')").fetchone()[0] is None
    assert fingerprint(conn, "bookings") == keep
    assert fingerprint(conn, "notes") == notes_keep
    if mode == "drop_only":
        (key,) = r["foreign_keys"]
        assert key["rows"] == cascaded > 0 and key["on_delete"] == "CASCADE"


def test_drop_only_refuses_when_a_restrict_key_points_into_a_leaf_that_goes(conn: psycopg.Connection,
                                                                            cleanup_ctx: Any) -> None:
    conn.execute(PARTED.format(action="RESTRICT"))
    before = (fingerprint(conn, "bookings"), fingerprint(conn, "notes"))
    ctx = cleanup_ctx([rule("bookings", max_share=0.9, partitions="drop_only")])
    with pytest.raises(StepFailed, match=r"of public\.notes through foreign key notes_booking_id_booking_at_fkey"):
        cleanup_retention(ctx, RetentionParams())
    assert (fingerprint(conn, "bookings"), fingerprint(conn, "notes")) == before
    assert conn.execute("SELECT to_regclass('bookings_old')").fetchone()[0] is not None
