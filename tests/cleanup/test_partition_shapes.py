"""Progress rows are hints, never permission: forged, malformed or stale rows in the progress table, and
tables that change between pitstop's check and its act, never make it detach or drop what it must not.

The reliability suite (``make reliability``) runs this file and counts its ``forged_inputs`` / ``trusted``.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import psycopg
import pytest

from pitstop.cleanup.progress import Progress
from pitstop.cleanup.rules import rule_key
from pitstop.cleanup.steps import RetentionParams, cleanup_retention, plan_retention
from pitstop.config import RetentionRule
from pitstop.errors import GateRefused, StepFailed
from tests.reliability.results import record

from .conftest import events, fingerprint, rule

METRICS = """
CREATE TABLE metrics (id bigint, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);
CREATE TABLE metrics_old PARTITION OF metrics FOR VALUES FROM (MINVALUE) TO (now() - interval '200 days');
CREATE TABLE metrics_young PARTITION OF metrics FOR VALUES FROM (now() - interval '200 days') TO (MAXVALUE);
INSERT INTO metrics SELECT g, now() - make_interval(days => g % 300, secs => 5) FROM generate_series(1, 3000) g;
CREATE TABLE other (id bigint, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);
CREATE TABLE other_part_old PARTITION OF other FOR VALUES FROM (MINVALUE) TO (now() - interval '200 days');
INSERT INTO other SELECT g, now() - interval '250 days' FROM generate_series(1, 50) g;
"""
WATCHED = ("orders", "metrics_young", "other_part_old")


@pytest.fixture
def forger(conn: psycopg.Connection, seeded_db: str, pg_socket: str) -> Any:
    """A role that can only INSERT into the progress table, and a way to act as it."""
    name = f"forger_{seeded_db}"
    conn.execute(f'CREATE ROLE "{name}" LOGIN')
    yield lambda: psycopg.connect(host=pg_socket, dbname=seeded_db, user=name, autocommit=True)
    conn.execute(f'DROP OWNED BY "{name}"')
    conn.execute(f'DROP ROLE "{name}"')


def forge(conn: psycopg.Connection, ctx: Any, forger: Any, rule_dict: dict[str, Any], state: Any,
          cutoff: str = "now() - interval '90 days' - interval '1 minute'", rows_before: int = 3000,
          expired: int = 10) -> None:
    """Insert a running episode for this rule, as the INSERT-only role."""
    Progress(ctx.cfg.cleanup).ensure(conn)
    role = f'"forger_{conn.info.dbname}"'
    conn.execute(f"GRANT INSERT ON pitstop_cleanup_progress TO {role}")
    conn.execute(f"GRANT USAGE ON SEQUENCE pitstop_cleanup_progress_id_seq TO {role}")
    key = rule_key(RetentionRule.model_validate(rule_dict))
    with forger() as f:
        f.execute("INSERT INTO pitstop_cleanup_progress (rule_key, rule_table, cutoff, rows_before, expired, runs, "
                  f"state) VALUES (%s, 'forged', {cutoff}, %s, %s, ARRAY['forged'], %s)",  # noqa: S608 - test text
                  [key, rows_before, expired, json.dumps(state)])


def oid(conn: psycopg.Connection, table: str) -> int:
    return int(conn.execute("SELECT %s::regclass::oid", [table]).fetchone()[0])


METRICS_RULE = rule("metrics", max_share=0.95, partitions="drop_only")


@pytest.mark.parametrize("victim,state", [("orders", "planned"), ("orders", "detached"), ("orders", "dropped"),
                                          ("metrics_young", "planned"), ("other_part_old", "detaching"),
                                          ("metrics_young", "detached"), ("other_part_old", "detached")])
def test_forged_progress_rows_drop_nothing(conn: psycopg.Connection, cleanup_ctx: Any, forger: Any,
                                           victim: str, state: str) -> None:
    conn.execute(METRICS)
    ctx = cleanup_ctx([METRICS_RULE])
    before = {t: fingerprint(conn, t) for t in WATCHED}
    entry = {"schema": "public", "name": victim, "state": state, "oid": oid(conn, victim), "rows": 7}
    forge(conn, ctx, forger, METRICS_RULE, {"partitions": {f"public.{victim}": entry}})
    out = cleanup_retention(ctx, RetentionParams())
    (res,) = out.data["cleanup"]
    damaged = {t for t in before if fingerprint(conn, t) != before[t]}
    record("forged_progress_row", forged_inputs=1, trusted=int(bool(damaged)))
    assert {t: fingerprint(conn, t) for t in WATCHED} == before
    assert [x["partition"] for x in res["partitions_refused"]] == [f"public.{victim}"]
    assert [e["partition"] for e in events(ctx, "cleanup.partition_refused")] == [f"public.{victim}"]
    assert {d["partition"] for d in res["partitions_dropped"]} == {"public.metrics_old"}
    assert f"REFUSED to drop 1 partition(s): public.{victim}: " in out.summary  # what the report shows


@pytest.mark.parametrize("state", [
    {"partitions": ["public.orders"]},
    {"partitions": {"public.orders": "drop it"}},
    {"partitions": {"public.orders": {"schema": "public", "name": "orders", "state": "detached", "oid": "1"}}},
    {"partitions": {"public.orders": {"schema": "public", "name": "metrics_old", "state": "planned"}}},
    {"partitions": {"public.orders": {"schema": "public", "name": "orders", "state": "gone", "oid": 5}}},
    {"partitions": {"public.orders": {"schema": "public", "name": "orders", "state": "detached"}}},
], ids=["list", "string-entry", "text-oid", "name-mismatch", "unknown-state", "no-oid"])
def test_malformed_partition_entries_are_refused_without_a_traceback(conn: psycopg.Connection, cleanup_ctx: Any,
                                                                     forger: Any, state: Any) -> None:
    conn.execute(METRICS)
    ctx = cleanup_ctx([METRICS_RULE])
    before = {t: fingerprint(conn, t) for t in WATCHED}
    forge(conn, ctx, forger, METRICS_RULE, state)
    (res,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    record("malformed_progress_entry", forged_inputs=1, trusted=int(any(fingerprint(conn, t) != before[t]
                                                                        for t in WATCHED)))
    assert {t: fingerprint(conn, t) for t in WATCHED} == before
    assert len(res["partitions_refused"]) == 1
    assert {d["partition"] for d in res["partitions_dropped"]} == {"public.metrics_old"}


@pytest.mark.parametrize("state,runs", [([], "ARRAY['forged']"), ({"targets": []}, "ARRAY['forged']"),
                                        ({}, "'{}'::text[]")], ids=["state-list", "targets-list", "no-runs"])
def test_a_malformed_episode_fails_the_step_and_deletes_nothing(ev: psycopg.Connection, cleanup_ctx: Any,
                                                                forger: Any, state: Any, runs: str) -> None:
    ctx = cleanup_ctx([rule("ev")])
    forge(ev, ctx, forger, rule("ev"), state)
    if runs != "ARRAY['forged']":
        ev.execute(f"UPDATE pitstop_cleanup_progress SET runs = {runs}")  # noqa: S608 - test constant
    before = fingerprint(ev, "ev")
    with pytest.raises(StepFailed, match="malformed .* a progress row pitstop did not write; nothing was deleted"):
        cleanup_retention(ctx, RetentionParams())
    record("malformed_episode", forged_inputs=1, trusted=int(fingerprint(ev, "ev") != before))
    assert fingerprint(ev, "ev") == before


def test_a_forged_cursor_is_ignored_and_the_purge_stays_exact(ev: psycopg.Connection, cleanup_ctx: Any,
                                                              forger: Any) -> None:
    ctx = cleanup_ctx([rule("ev")])
    forge(ev, ctx, forger, rule("ev"), {"targets": {"public.ev": {"cursor": "1; DROP TABLE ev", "done": False}}})
    keep = fingerprint(ev, "ev", "created_at >= now() - interval '89 days'")
    (res,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert ev.execute("SELECT count(*) FROM ev WHERE created_at < %s", [res["cutoff"]]).fetchone()[0] == 0
    assert fingerprint(ev, "ev", "created_at >= now() - interval '89 days'") == keep


def test_forged_counts_do_not_get_past_max_share(ev: psycopg.Connection, cleanup_ctx: Any, forger: Any) -> None:
    # 25% of ev is expired; the rule allows 20%. The forged episode claims 1 expired row of a million.
    strict = rule("ev", max_share=0.2)
    ctx = cleanup_ctx([strict])
    forge(ev, ctx, forger, strict, {}, rows_before=1_000_000, expired=1)
    before = fingerprint(ev, "ev")
    with pytest.raises(GateRefused, match="max_share"):
        cleanup_retention(ctx, RetentionParams())
    record("forged_counts", forged_inputs=1, trusted=int(fingerprint(ev, "ev") != before))
    assert fingerprint(ev, "ev") == before


def test_a_forged_archive_record_does_not_skip_the_archive(conn: psycopg.Connection, cleanup_ctx: Any,
                                                           forger: Any) -> None:
    conn.execute(METRICS)
    archived = {**METRICS_RULE, "archive": True}
    ctx = cleanup_ctx([archived])
    rows = conn.execute("SELECT count(*) FROM metrics_old").fetchone()[0]
    fake = {"key": "elsewhere.csv.gz", "location": "/dev/null", "rows": rows, "sha256": "0" * 64, "size": 1}
    entry = {"schema": "public", "name": "metrics_old", "state": "planned", "archive": fake}
    forge(conn, ctx, forger, archived, {"partitions": {"public.metrics_old": entry}})
    (res,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    (dropped,) = res["partitions_dropped"]
    key = dropped["archive"]["key"]
    lines = gzip.decompress(ctx.storage.open(key).read()).decode().splitlines() if ctx.storage.exists(key) else []
    record("forged_archive_record", forged_inputs=1, trusted=int(len(lines) - 1 != rows))
    assert key.endswith("/partitions/public.metrics_old.csv.gz")
    assert len(lines) - 1 == rows == dropped["archive"]["rows"]


def test_forged_archive_chunks_stay_out_of_the_manifest(ev: psycopg.Connection, cleanup_ctx: Any,
                                                        forger: Any) -> None:
    archived = rule("ev", archive=True)
    ctx = cleanup_ctx([archived])
    chunks = {"cleanup-archive/public.ev/episode-1/public.ev/0999999.csv.gz": {"rows": 999, "sha256": "f" * 64,
                                                                              "size": 10},
              "../../etc/passwd": {"rows": 1, "sha256": "0" * 64, "size": 1}}
    forge(ev, ctx, forger, archived, {"chunks": chunks})
    (res,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    with open(res["archive"]["manifest"], "rb") as fh:  # local storage: the location is a path
        manifest = json.loads(fh.read())
    keys = [o["key"] for o in manifest["objects"]]
    record("forged_archive_chunks", forged_inputs=1, trusted=int(any(k in chunks for k in keys)))
    assert not set(keys) & set(chunks)
    assert manifest["rows"] == res["deleted"] and len(res["warnings"]) == 2


def test_a_forged_episode_cutoff_in_the_future_deletes_nothing(ev: psycopg.Connection, cleanup_ctx: Any,
                                                               forger: Any) -> None:
    ctx = cleanup_ctx([rule("ev")])
    forge(ev, ctx, forger, rule("ev"), {}, cutoff="now() + interval '1 year'", rows_before=20000, expired=1)
    before = fingerprint(ev, "ev")
    (line,) = plan_retention(ctx, RetentionParams())
    assert "REFUSED: the running episode in the progress table was not written by pitstop" in line
    with pytest.raises(StepFailed, match="progress row pitstop did not write"):
        cleanup_retention(ctx, RetentionParams())
    record("forged_cutoff", forged_inputs=1, trusted=int(fingerprint(ev, "ev") != before))
    assert fingerprint(ev, "ev") == before


# -- the catalog changes between pitstop's check and its act ------------------------------------------------
class Crash(Exception):
    pass


def test_a_detached_table_that_gained_young_rows_is_not_dropped(conn: psycopg.Connection, cleanup_ctx: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from pitstop.cleanup import partitions

    conn.execute(METRICS)
    ctx = cleanup_ctx([METRICS_RULE])

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash("simulated crash between detach and drop")

    with monkeypatch.context() as m:
        m.setattr(partitions, "_drop", crash)
        with pytest.raises(Crash):
            cleanup_retention(ctx, RetentionParams())
    assert not conn.execute("SELECT relispartition FROM pg_class WHERE relname = 'metrics_old'").fetchone()[0]
    # The owner reuses the detached table meanwhile (its copied partition constraint dropped first).
    for (name,) in conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'metrics_old'::regclass "
                                "AND contype = 'c'").fetchall():
        conn.execute(f'ALTER TABLE metrics_old DROP CONSTRAINT "{name}"')
    conn.execute("INSERT INTO metrics_old VALUES (-1, now())")
    kept = fingerprint(conn, "metrics_old")
    (res,) = cleanup_retention(cleanup_ctx([METRICS_RULE], name="env2.yaml"), RetentionParams()).data["cleanup"]
    assert fingerprint(conn, "metrics_old") == kept
    assert not res["partitions_dropped"]
    (refused,) = res["partitions_refused"]
    assert refused["partition"] == "public.metrics_old" and "1 row(s) not older than the cutoff" in refused["reason"]


def test_a_partition_swapped_between_check_and_detach_is_left_attached(conn: psycopg.Connection, cleanup_ctx: Any,
                                                                       db_conn: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from pitstop.cleanup import partitions

    conn.execute(METRICS)
    young = fingerprint(conn, "metrics", "created_at >= now() - interval '200 days'")
    original = partitions._detach

    def swap_then_detach(*args: Any, **kwargs: Any) -> Any:
        # the table owner, in between: `metrics_old` becomes the name of the young partition
        with db_conn(conn.info.dbname) as owner:
            owner.execute("""
                ALTER TABLE metrics DETACH PARTITION metrics_old;
                ALTER TABLE metrics_old RENAME TO metrics_saved;
                ALTER TABLE metrics DETACH PARTITION metrics_young;
                ALTER TABLE metrics_young RENAME TO metrics_old;
                ALTER TABLE metrics ATTACH PARTITION metrics_old
                  FOR VALUES FROM (now() - interval '200 days') TO (MAXVALUE);""")
        monkeypatch.setattr(partitions, "_detach", original)
        return original(*args, **kwargs)

    monkeypatch.setattr(partitions, "_detach", swap_then_detach)
    (res,) = cleanup_retention(cleanup_ctx([METRICS_RULE]), RetentionParams()).data["cleanup"]
    assert fingerprint(conn, "metrics") == young  # the young rows are all still in the partitioned table
    assert conn.execute("SELECT relispartition FROM pg_class WHERE relname = 'metrics_old'").fetchone()[0]
    assert not res["partitions_dropped"]
    assert [x["partition"] for x in res["partitions_refused"]] == ["public.metrics_old"]
