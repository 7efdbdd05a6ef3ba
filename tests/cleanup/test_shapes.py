"""Partition retention on the shapes real databases have: monthly ranges with a DEFAULT partition,
sub-partitions (range → list, list → range, range → range), leaves in other schemas, mixed-case and
space-containing names, date and timestamp keys, multi-column ranges, hash partitioning, tables
without a primary key; through ``plan`` and the purge in the three modes.

Every expectation is computed independently in SQL from the seeded rows (never from pitstop's own
figures): which leaves go, which rows go, which rows stay.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
import yaml

from pitstop.cleanup.steps import RetentionParams, cleanup_retention, plan_retention
from tests.conftest import run_cli

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
CREATE TABLE parcels_other PARTITION OF parcels DEFAULT;
INSERT INTO parcels SELECT g, (ARRAY['eu', 'us', 'apac'])[1 + g % 3], now() - make_interval(days => g % 300)
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
    assert {"parcels_other", "parcels_eu_new", "parcels_us"} <= leaves(conn, "parcels")
    assert "hashed_0" in leaves(conn, "hashed") and "hashed_1" in leaves(conn, "hashed")
    for t in ("shipments", "parcels", "hashed"):
        assert conn.execute(f"SELECT count(*) FROM {t} WHERE created_at < now() - interval '90 days'"  # noqa: S608
                            ).fetchone()[0] == 0
    assert {t: fingerprint(conn, t) for t in ("shipments", "parcels")} == before
    assert fingerprint(conn, "hashed") == hashed_keep
    assert not any(e for e in events(ctx, "step.failed"))


def test_plan_lists_exactly_the_leaves_that_go(conn: psycopg.Connection, make_env: Any) -> None:
    conn.execute(SUBPARTS)

    def mutate(cfg: dict[str, Any]) -> None:
        cfg["retention"] = [rule("shipments", max_share=0.95)]

    proc = run_cli("plan", "--env", str(make_env(mutate)), "--runbook", "monthly", "--json")
    assert proc.returncode == 0, proc.stderr
    (step,) = [s for s in json.loads(proc.stdout)["steps"] if s["uses"] == "cleanup.retention"]
    text = "\n".join(step["would"])
    eu = conn.execute("SELECT count(*) FROM shipments_old_eu").fetchone()[0]
    assert f"drop partition public.shipments_old_eu ({eu} rows" in text
    assert "shipments_cur" not in text.replace("public.shipments:", "")




# A parent in a schema with a space, leaves in another schema, a `timestamp` (no time zone) key with a
# space in its name, and a range partition sub-partitioned by range on the same column: a sub-leaf goes on
# its own bound although its parent's range reaches past the cutoff.
NAMED = """
CREATE SCHEMA "App Data";
CREATE SCHEMA "Cold Store";
CREATE TABLE "App Data"."Event Log" (id bigint, "Created At" timestamp NOT NULL, "Kind" text)
  PARTITION BY RANGE ("Created At");
CREATE TABLE "Cold Store"."EL ancient" PARTITION OF "App Data"."Event Log"
  FOR VALUES FROM (MINVALUE) TO (now() - interval '300 days');
CREATE TABLE "App Data"."EL older" PARTITION OF "App Data"."Event Log"
  FOR VALUES FROM (now() - interval '300 days') TO (now() - interval '100 days') PARTITION BY RANGE ("Created At");
CREATE TABLE "Cold Store"."EL older a" PARTITION OF "App Data"."EL older"
  FOR VALUES FROM (MINVALUE) TO (now() - interval '200 days');
CREATE TABLE "App Data"."EL older b" PARTITION OF "App Data"."EL older"
  FOR VALUES FROM (now() - interval '200 days') TO (MAXVALUE);
CREATE TABLE "App Data"."EL recent" PARTITION OF "App Data"."Event Log"
  FOR VALUES FROM (now() - interval '100 days') TO (MAXVALUE);
INSERT INTO "App Data"."Event Log" SELECT g, now() - make_interval(days => g % 400, secs => 11), 'k' || g % 3
  FROM generate_series(1, 4000) g;
"""
NAMED_TABLE = '"App Data"."Event Log"'
NAMED_EXPIRED = "\"Created At\" < now() - interval '150 days'"
NAMED_GOING = {"Cold Store.EL ancient", "Cold Store.EL older a"}


def named_rule(mode: str) -> dict[str, Any]:
    return {"schema": "App Data", "table": "Event Log", "column": "Created At", "older_than": "150d",
            "partitions": mode, "max_share": 0.9}


def leaf_rows(conn: psycopg.Connection, qualified: str) -> int:
    schema, name = qualified.split(".")
    return int(conn.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone()[0])  # noqa: S608


@pytest.mark.parametrize("mode", ["drop", "drop_only", "rows"])
def test_quoted_names_other_schemas_and_range_in_range(conn: psycopg.Connection, cleanup_ctx: Any,
                                                       mode: str) -> None:
    conn.execute(NAMED)
    going_rows = {q: leaf_rows(conn, q) for q in NAMED_GOING}
    assert all(going_rows.values())
    survivors = f"NOT ({NAMED_EXPIRED})" if mode != "drop_only" else \
        "tableoid NOT IN ('\"Cold Store\".\"EL ancient\"'::regclass, '\"Cold Store\".\"EL older a\"'::regclass)"
    keep = fingerprint(conn, NAMED_TABLE, survivors)
    ctx = cleanup_ctx([named_rule(mode)])
    plan = "\n".join(plan_retention(ctx, RetentionParams()))
    listed = {line.split("drop partition ")[1].split(" (")[0] for line in plan.splitlines() if "drop partition" in line}
    assert listed == (set() if mode == "rows" else NAMED_GOING)
    for q, n in going_rows.items():
        assert (f"drop partition {q} ({n} rows, upper bound" in plan) is (mode != "rows")
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert {d["partition"]: d["rows"] for d in r["partitions_dropped"]} == ({} if mode == "rows" else going_rows)
    assert fingerprint(conn, NAMED_TABLE) == keep
    assert not r["partitions_refused"] and not r["warnings"]


# A date key, a multi-column range key (never qualifies by bounds), and hash partitioning.
OTHER_KEYS = """
CREATE TABLE daily (d date NOT NULL, v int) PARTITION BY RANGE (d);
CREATE TABLE daily_old PARTITION OF daily FOR VALUES FROM ('2000-01-01') TO (current_date - 120);
CREATE TABLE daily_new PARTITION OF daily FOR VALUES FROM (current_date - 120) TO (current_date + 1000);
INSERT INTO daily SELECT current_date - g % 300, g FROM generate_series(1, 3000) g;
CREATE TABLE pairs (created_at timestamptz NOT NULL, region text NOT NULL) PARTITION BY RANGE (created_at, region);
CREATE TABLE pairs_old PARTITION OF pairs FOR VALUES FROM (MINVALUE, MINVALUE) TO (now() - interval '200 days', 'm');
CREATE TABLE pairs_new PARTITION OF pairs FOR VALUES FROM (now() - interval '200 days', 'm') TO (MAXVALUE, MAXVALUE);
INSERT INTO pairs SELECT now() - make_interval(days => g % 300, secs => 3), (ARRAY['a', 'z'])[1 + g % 2]
  FROM generate_series(1, 3000) g;
CREATE TABLE hashed (id bigint, created_at timestamptz NOT NULL) PARTITION BY HASH (id);
CREATE TABLE hashed_0 PARTITION OF hashed FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE hashed_1 PARTITION OF hashed FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO hashed SELECT g, now() - make_interval(days => g % 200, secs => 3) FROM generate_series(1, 2000) g;
"""


def test_date_keys_multi_column_ranges_and_hash(conn: psycopg.Connection, cleanup_ctx: Any) -> None:
    conn.execute(OTHER_KEYS)
    keep = {"daily": fingerprint(conn, "daily", "d >= now() - interval '100 days'"),
            "pairs": fingerprint(conn, "pairs", "created_at >= now() - interval '100 days'"),
            "hashed": fingerprint(conn, "hashed", "created_at >= now() - interval '100 days'")}
    old_rows = leaf_rows(conn, "public.daily_old")
    rules = [rule("daily", column="d", older_than="100d", max_share=0.9), rule("pairs", max_share=0.9),
             rule("hashed", max_share=0.9)]
    for r in rules:
        r["older_than"] = "100d"
    ctx = cleanup_ctx(rules)
    plan = [line for line in plan_retention(ctx, RetentionParams()) if "drop partition" in line]
    assert plan == [f"  drop partition public.daily_old ({old_rows} rows, upper bound "
                    f"{conn.execute('SELECT current_date - 120').fetchone()[0]})"]
    results = {r["table"]: r for r in cleanup_retention(ctx, RetentionParams()).data["cleanup"]}
    assert [d["partition"] for d in results["public.daily"]["partitions_dropped"]] == ["public.daily_old"]
    assert not results["public.pairs"]["partitions_dropped"] and not results["public.hashed"]["partitions_dropped"]
    assert {t: fingerprint(conn, t) for t in keep} == keep


def test_drop_only_on_hash_partitions_deletes_nothing(conn: psycopg.Connection, cleanup_ctx: Any) -> None:
    conn.execute(OTHER_KEYS)
    before = fingerprint(conn, "hashed")
    expired = conn.execute("SELECT count(*) FROM hashed WHERE created_at < now() - interval '90 days'").fetchone()[0]
    ctx = cleanup_ctx([rule("hashed", max_share=0.9, partitions="drop_only")])
    plan = plan_retention(ctx, RetentionParams())
    assert f"  drop_only: 0 partition(s), 0 row(s) go; {expired} expired row(s) in partitions that stay are kept" \
        in plan
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert r["deleted"] == 0 and fingerprint(conn, "hashed") == before


def test_drop_only_on_a_plain_table_deletes_nothing_and_says_so(ev: psycopg.Connection, cleanup_ctx: Any) -> None:
    before = fingerprint(ev, "ev")
    ctx = cleanup_ctx([rule("ev", partitions="drop_only")])
    assert "  drop_only: public.ev is not partitioned: nothing is deleted (0 rows)" in plan_retention(
        ctx, RetentionParams())
    out = cleanup_retention(ctx, RetentionParams())
    (r,) = out.data["cleanup"]
    assert fingerprint(ev, "ev") == before and r["deleted"] == 0
    assert "not partitioned" in out.summary and "WARNING" in out.summary
    assert [e["reason"] for e in events(ctx, "cleanup.warning")] == r["warnings"]


def test_drop_only_with_where_filters_is_a_config_error(make_env: Any) -> None:
    path = make_env(lambda cfg: cfg.update(retention=[rule("events", partitions="drop_only")]))
    data = yaml.safe_load(path.read_text())
    data["retention"][0]["where"] = [{"column": "kind", "op": "=", "value": "x"}]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = run_cli("validate", "--env", str(path), "--runbook", "monthly")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{path.name}:" in proc.stderr and "at retention.0: `partitions: drop_only`" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_partitioned_table_without_primary_key_is_purged_by_ctid(conn: psycopg.Connection,
                                                                   cleanup_ctx: Any) -> None:
    conn.execute("""
        CREATE TABLE "Raw Hits" ("At" timestamptz NOT NULL, body text) PARTITION BY LIST (body);
        CREATE TABLE "Raw Hits a" PARTITION OF "Raw Hits" FOR VALUES IN ('a');
        CREATE TABLE "Raw Hits rest" PARTITION OF "Raw Hits" DEFAULT;
        INSERT INTO "Raw Hits" SELECT now() - make_interval(days => g % 200, secs => 3),
          (ARRAY['a', 'b', 'a'])[1 + g % 3] FROM generate_series(1, 3000) g;""")
    keep = fingerprint(conn, '"Raw Hits"', "\"At\" >= now() - interval '90 days'")
    ctx = cleanup_ctx([{"table": "Raw Hits", "column": "At", "older_than": "90d", "max_share": 0.9}])
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert r["strategy"] == "partitioned" and r["deleted"] > 0 and not r["partitions_dropped"]
    assert fingerprint(conn, '"Raw Hits"') == keep
    assert not events(ctx, "cleanup.partition_refused")
