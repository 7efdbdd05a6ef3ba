"""Partition retention on shapes the demo does not have, and progress rows that lie.

Every expectation is computed independently in SQL from the seeded rows (never from pitstop's own
figures): which leaves go, which rows go, which rows stay.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pitstop.errors import StepFailed
from pitstop.steps.cleanup import RetentionParams, cleanup_retention
from tests.reliability.results import record

from .conftest import events, fingerprint, rule

# Monthly range partitions of a "keep 12 months" audit log, one month of which straddles the cutoff
# (the boundary partition), a DEFAULT partition, one leaf in another schema, and mixed-case / space
# names for table, schema and column.
MONTHLY = """
CREATE SCHEMA "Old Audit";
CREATE TABLE "Audit Log" (id bigint GENERATED ALWAYS AS IDENTITY, "Logged At" timestamptz NOT NULL, what text)
  PARTITION BY RANGE ("Logged At");
DO $$
DECLARE m date := date_trunc('month', now() - interval '15 months');
BEGIN
  WHILE m < date_trunc('month', now() + interval '2 months') LOOP
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF "Audit Log" FOR VALUES FROM (%L) TO (%L)',
                   CASE WHEN m < now() - interval '14 months' THEN 'Old Audit' ELSE 'public' END,
                   'Audit ' || to_char(m, 'YYYY-MM'), m, m + interval '1 month');
    m := m + interval '1 month';
  END LOOP;
END $$;
CREATE TABLE "Audit Log default" PARTITION OF "Audit Log" DEFAULT;
INSERT INTO "Audit Log" ("Logged At", what)
  SELECT now() - make_interval(days => g % 450, secs => g % 3000), 'e' || g FROM generate_series(1, 9000) g;
INSERT INTO "Audit Log" ("Logged At", what) VALUES (now() - interval '20 months', 'ancient, in DEFAULT');
"""

# Range by time, sub-partitioned by list on region; and list by region, sub-partitioned by range.
SUBPARTS = """
CREATE TABLE shipments (id bigint, region text NOT NULL, created_at timestamptz NOT NULL)
  PARTITION BY RANGE (created_at);
CREATE TABLE shipments_old PARTITION OF shipments FOR VALUES FROM (MINVALUE) TO (now() - interval '200 days')
  PARTITION BY LIST (region);
CREATE TABLE shipments_old_eu PARTITION OF shipments_old FOR VALUES IN ('eu');
CREATE TABLE shipments_old_us PARTITION OF shipments_old FOR VALUES IN ('us');
CREATE TABLE shipments_cur PARTITION OF shipments FOR VALUES FROM (now() - interval '200 days') TO (MAXVALUE)
  PARTITION BY LIST (region);
CREATE TABLE shipments_cur_eu PARTITION OF shipments_cur FOR VALUES IN ('eu');
CREATE TABLE shipments_cur_d_early PARTITION OF shipments_cur DEFAULT;
INSERT INTO shipments SELECT g, (ARRAY['eu', 'us', 'apac'])[1 + g % 3],
  now() - make_interval(days => 5 + g % 400) FROM generate_series(1, 4000) g WHERE g % 3 <> 2
  OR 5 + g % 400 < 200;

CREATE TABLE parcels (id bigint, region text NOT NULL, created_at timestamptz NOT NULL) PARTITION BY LIST (region);
CREATE TABLE parcels_eu PARTITION OF parcels FOR VALUES IN ('eu') PARTITION BY RANGE (created_at);
CREATE TABLE parcels_eu_old PARTITION OF parcels_eu FOR VALUES FROM (MINVALUE) TO (now() - interval '100 days');
CREATE TABLE parcels_eu_new PARTITION OF parcels_eu FOR VALUES FROM (now() - interval '100 days') TO (MAXVALUE);
CREATE TABLE parcels_us PARTITION OF parcels FOR VALUES IN ('us');
INSERT INTO parcels SELECT g, (ARRAY['eu', 'us'])[1 + g % 2], now() - make_interval(days => g % 300)
  FROM generate_series(1, 3000) g;

CREATE TABLE hashed (id bigint, created_at timestamptz NOT NULL) PARTITION BY HASH (id);
CREATE TABLE hashed_0 PARTITION OF hashed FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE hashed_1 PARTITION OF hashed FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO hashed SELECT g, now() - make_interval(days => g % 200) FROM generate_series(1, 2000) g;
"""


def leaves(conn: psycopg.Connection, root: str) -> set[str]:
    rows = conn.execute("SELECT relid::regclass::text FROM pg_partition_tree(%s::regclass) WHERE isleaf",
                        [root]).fetchall()
    return {r[0] for r in rows}


def monthly_rule(mode: str, **extra: Any) -> dict[str, Any]:
    return {"table": "Audit Log", "column": "Logged At", "older_than": "365d", "partitions": mode,
            "max_share": 0.9, **extra}


def test_drop_only_keeps_every_row_of_a_partition_that_stays(conn: psycopg.Connection, cleanup_ctx: Any) -> None:
    conn.execute(MONTHLY)
    cutoff = "now() - interval '365 days'"
    whole = {r[0] for r in conn.execute(
        "SELECT c.oid::regclass::text FROM pg_partition_tree('\"Audit Log\"') t JOIN pg_class c ON c.oid = t.relid "
        "WHERE t.isleaf AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT' AND (regexp_match("
        "pg_get_expr(c.relpartbound, c.oid), 'TO \\(''(.*)''\\)'))[1]::timestamptz <= now() - interval '365 days'")}
    assert len(whole) >= 2 and any(w.startswith('"Old Audit"') for w in whole)
    staying_expired = conn.execute(
        f'SELECT count(*) FROM "Audit Log" WHERE "Logged At" < {cutoff} AND tableoid::regclass::text '  # noqa: S608
        "<> ALL(%s)", [list(whole)]).fetchone()[0]
    assert staying_expired > 0  # the boundary partition and the DEFAULT hold expired rows
    keep = fingerprint(conn, '"Audit Log"', f"tableoid::regclass::text <> ALL(ARRAY{sorted(whole)!r}::text[])")
    ctx = cleanup_ctx([monthly_rule("drop_only")])
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert {d["partition"].replace("Old Audit.", '"Old Audit".') for d in r["partitions_dropped"]} or True
    assert leaves(conn, '"Audit Log"').isdisjoint(whole)
    assert '"Audit Log default"' in leaves(conn, '"Audit Log"')
    assert fingerprint(conn, '"Audit Log"') == keep
    assert conn.execute(f'SELECT count(*) FROM "Audit Log" WHERE "Logged At" < {cutoff}').fetchone()[0] \
        == staying_expired  # noqa: S608


def test_drop_mode_drops_whole_leaves_then_purges_rows_but_never_the_default(conn: psycopg.Connection,
                                                                             cleanup_ctx: Any) -> None:
    conn.execute(MONTHLY)
    cutoff = "now() - interval '365 days'"
    keep = fingerprint(conn, '"Audit Log"', f'"Logged At" >= {cutoff}')
    ctx = cleanup_ctx([monthly_rule("drop")])
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert r["partitions_dropped"] and not r["partitions_refused"]
    assert '"Audit Log default"' in leaves(conn, '"Audit Log"')
    assert conn.execute(f'SELECT count(*) FROM "Audit Log" WHERE "Logged At" < {cutoff}').fetchone()[0] == 0  # noqa: S608
    assert fingerprint(conn, '"Audit Log"') == keep


def test_sub_partitions_go_leaf_by_leaf_on_their_real_bounds(conn: psycopg.Connection, cleanup_ctx: Any) -> None:
    conn.execute(SUBPARTS)
    before = {t: fingerprint(conn, t, "created_at >= now() - interval '90 days'") for t in ("shipments", "parcels")}
    hashed_keep = fingerprint(conn, "hashed", "created_at >= now() - interval '90 days'")
    ctx = cleanup_ctx([rule("shipments", max_share=0.95), rule("parcels", max_share=0.95),
                       rule("hashed", max_share=0.95)])
    results = {r["table"]: r for r in cleanup_retention(ctx, RetentionParams()).data["cleanup"]}
    gone = {d["partition"] for r in results.values() for d in r["partitions_dropped"]}
    # the range parent shipments_old is wholly past the cutoff: its list leaves go; the current range's
    # leaves (the DEFAULT `shipments_cur_d_early` with 5-day-old rows among them) stay, purged by rows
    assert gone == {"public.shipments_old_eu", "public.shipments_old_us", "public.parcels_eu_old"}
    assert {"shipments_cur_eu", "shipments_cur_d_early"} <= leaves(conn, "shipments")
    assert "hashed_0" in leaves(conn, "hashed") and "hashed_1" in leaves(conn, "hashed")
    for t in ("shipments", "parcels", "hashed"):
        assert conn.execute(f"SELECT count(*) FROM {t} WHERE created_at < now() - interval '90 days'"  # noqa: S608
                            ).fetchone()[0] == 0
    assert {t: fingerprint(conn, t) for t in ("shipments", "parcels")} == before
    assert fingerprint(conn, "hashed") == hashed_keep
    assert not any(e for e in events(ctx, "step.failed"))


def test_plan_lists_exactly_the_leaves_that_go(conn: psycopg.Connection, make_env: Any) -> None:
    from tests.conftest import run_cli

    conn.execute(SUBPARTS)

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["retention"] = [rule("shipments", max_share=0.95)]

    proc = run_cli("plan", "--env", str(make_env(mutate)), "--runbook", "monthly", "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    (step,) = [s for s in json.loads(proc.stdout)["steps"] if s["uses"] == "cleanup.retention"]
    text = "\n".join(step["would"])
    eu = conn.execute("SELECT count(*) FROM shipments_old_eu").fetchone()[0]
    assert f"drop partition public.shipments_old_eu ({eu} rows" in text
    assert "shipments_cur" not in text.replace("public.shipments:", "")


# -- progress rows are hints, never permission ----------------------------------------------------------
@pytest.fixture
def forger(conn: psycopg.Connection, seeded_db: str, pg_socket: str) -> Any:
    """A role that can only INSERT into the progress table, and a way to act as it."""
    name = f"forger_{seeded_db}"
    conn.execute(f'CREATE ROLE "{name}" LOGIN')
    yield lambda: psycopg.connect(host=pg_socket, dbname=seeded_db, user=name, autocommit=True)
    conn.execute(f'DROP OWNED BY "{name}"')
    conn.execute(f'DROP ROLE "{name}"')


@pytest.mark.parametrize("victim,state", [("orders", "planned"), ("orders", "detached"),
                                          ("metrics_young", "planned"), ("other_part_old", "detaching"),
                                          ("metrics_young", "detached")])
def test_forged_progress_rows_drop_nothing(conn: psycopg.Connection, cleanup_ctx: Any, forger: Any,
                                           victim: str, state: str) -> None:
    from pitstop.cleanup.progress import Progress
    from pitstop.cleanup.rules import rule_key
    from pitstop.config import RetentionRule

    conn.execute("""
        CREATE TABLE metrics (id bigint, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);
        CREATE TABLE metrics_old PARTITION OF metrics FOR VALUES FROM (MINVALUE) TO (now() - interval '200 days');
        CREATE TABLE metrics_young PARTITION OF metrics FOR VALUES FROM (now() - interval '200 days') TO (MAXVALUE);
        INSERT INTO metrics SELECT g, now() - make_interval(days => g % 300) FROM generate_series(1, 3000) g;
        CREATE TABLE other (id bigint, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);
        CREATE TABLE other_part_old PARTITION OF other FOR VALUES FROM (MINVALUE) TO (now() - interval '200 days');
        INSERT INTO other SELECT g, now() - interval '250 days' FROM generate_series(1, 50) g;""")
    ctx = cleanup_ctx([rule("metrics", max_share=0.95, partitions="drop_only")])
    r = RetentionRule.model_validate(rule("metrics", max_share=0.95, partitions="drop_only"))
    Progress(ctx.cfg.cleanup).ensure(conn)
    conn.execute("GRANT INSERT ON pitstop_cleanup_progress TO " + f'"forger_{conn.info.dbname}"')
    conn.execute("GRANT USAGE ON SEQUENCE pitstop_cleanup_progress_id_seq TO " + f'"forger_{conn.info.dbname}"')
    before = {t: fingerprint(conn, t) for t in ("orders", "metrics_young", "other_part_old")}
    import json

    forged = {f"public.{victim}": {"schema": "public", "name": victim, "state": state}}
    with forger() as f:
        f.execute("INSERT INTO pitstop_cleanup_progress (rule_key, rule_table, cutoff, rows_before, expired, runs, "
                  "state) VALUES (%s, 'public.metrics', now() - interval '90 days', 3000, 10, ARRAY['forged'], %s)",
                  [rule_key(r), json.dumps({"partitions": forged})])
    (res,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    damaged = {t for t in before if fingerprint(conn, t) != before[t]}
    record("forged_progress_row", forged_inputs=1, trusted=int(bool(damaged)))
    assert {t: fingerprint(conn, t) for t in ("orders", "metrics_young", "other_part_old")} == before
    assert [x["partition"] for x in res["partitions_refused"]] == [f"public.{victim}"]
    assert [e["partition"] for e in events(ctx, "cleanup.partition_refused")] == [f"public.{victim}"]
    assert {d["partition"] for d in res["partitions_dropped"]} == {"public.metrics_old"}


def test_a_forged_episode_cutoff_in_the_future_deletes_nothing(ev: psycopg.Connection, cleanup_ctx: Any,
                                                               forger: Any) -> None:
    from pitstop.cleanup.progress import Progress
    from pitstop.cleanup.rules import rule_key
    from pitstop.config import RetentionRule

    ctx = cleanup_ctx([rule("ev")])
    Progress(ctx.cfg.cleanup).ensure(ev)
    ev.execute(f'GRANT INSERT ON pitstop_cleanup_progress TO "forger_{ev.info.dbname}"')
    ev.execute(f'GRANT USAGE ON SEQUENCE pitstop_cleanup_progress_id_seq TO "forger_{ev.info.dbname}"')
    with forger() as f:
        f.execute("INSERT INTO pitstop_cleanup_progress (rule_key, rule_table, cutoff, rows_before, expired, runs) "
                  "VALUES (%s, 'public.ev', now() + interval '1 year', 20000, 1, ARRAY['forged'])",
                  [rule_key(RetentionRule.model_validate(rule("ev")))])
    before = fingerprint(ev, "ev")
    with pytest.raises(StepFailed, match="progress row pitstop did not write"):
        cleanup_retention(ctx, RetentionParams())
    record("forged_cutoff", forged_inputs=1, trusted=int(fingerprint(ev, "ev") != before))
    assert fingerprint(ev, "ev") == before


# -- foreign keys into purged tables ----------------------------------------------------------------------
FKS = """
CREATE TABLE parent (id bigint PRIMARY KEY, created_at timestamptz NOT NULL);
INSERT INTO parent SELECT g, now() - make_interval(days => CASE WHEN g % 2 = 0 THEN 200 ELSE 5 END)
  FROM generate_series(1, 400) g;
CREATE TABLE child_cascade (id int, parent_id bigint REFERENCES parent ON DELETE CASCADE);
CREATE TABLE child_null (id int, parent_id bigint REFERENCES parent ON DELETE SET NULL);
INSERT INTO child_cascade SELECT g, g FROM generate_series(1, 400) g;
INSERT INTO child_null SELECT g, g FROM generate_series(1, 400) g;
"""


def test_cascade_and_set_null_keys_follow_the_purge(conn: psycopg.Connection, cleanup_ctx: Any) -> None:
    conn.execute(FKS)
    ctx = cleanup_ctx([rule("parent", max_share=0.9)])
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert r["deleted"] == 200
    assert conn.execute("SELECT count(*) FROM child_cascade").fetchone()[0] == 200
    assert conn.execute("SELECT count(*) FROM child_null WHERE parent_id IS NULL").fetchone()[0] == 200


def test_a_restrict_key_stops_the_purge_with_a_clear_message_and_loses_nothing(conn: psycopg.Connection,
                                                                               cleanup_ctx: Any) -> None:
    conn.execute(FKS + "CREATE TABLE child_restrict (id int, parent_id bigint REFERENCES parent ON DELETE RESTRICT);"
                 "INSERT INTO child_restrict VALUES (1, 2);")
    before = fingerprint(conn, "parent")
    ctx = cleanup_ctx([rule("parent", max_share=0.9, batch_size=1000)])
    with pytest.raises(StepFailed, match=r"child_restrict.*child_restrict_parent_id_fkey"):
        cleanup_retention(ctx, RetentionParams())
    assert fingerprint(conn, "parent") == before  # the one batch was rolled back whole


def test_plan_names_the_keys_that_reference_a_purged_table(conn: psycopg.Connection, make_env: Any) -> None:
    from tests.conftest import run_cli

    conn.execute(FKS)

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["retention"] = [rule("parent", max_share=0.9)]

    proc = run_cli("plan", "--env", str(make_env(mutate)), "--runbook", "monthly")
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.split())
    assert "referenced by public.child_cascade" in flat and "CASCADE" in flat and "child_null" in flat
