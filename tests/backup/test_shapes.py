"""Backup → verify → ``pitstop restore --into`` on a database with the shapes real platforms have.

One database per module, seeded once: range partitions with a leaf in another schema, a sub-partitioned
leaf and a DEFAULT; several schemas; mixed-case, quoted, space-, dot- and newline-containing names (two
tables whose names print identically in a TOC: ``"a b".c`` and ``a."b c"``); unlogged, empty and
primary-key-less tables; identity, serial, untouched and descending sequences; generated columns; enum
and domain types; an extension type; a table that belongs to an extension; row-level security forced
on a table; a table owned by a non-superuser role with a grant; views, a populated and an unpopulated
materialized view; a foreign table; large objects. One ``pitstop run`` (backup.postgres + backup.verify)
serves every test; each restore goes to a database of its own.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.backup.backup_helpers import admin, drop_database, pg_bin, write_runbook
from tests.conftest import demo_config, report_of, run_cli

OWNER, READER = "pitstop_shape_owner", "pitstop_shape_reader"
SHAPES = f"""
CREATE EXTENSION vector;
CREATE SCHEMA archive;
CREATE SCHEMA "Sales Dept";
CREATE SCHEMA "a b";
CREATE SCHEMA a;
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE DOMAIN positive_int AS int CHECK (VALUE > 0);

CREATE TABLE audit_log (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz NOT NULL, what text)
  PARTITION BY RANGE (at);
CREATE TABLE archive.audit_log_2025 PARTITION OF audit_log FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE audit_log_2026 PARTITION OF audit_log FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')
  PARTITION BY HASH (id);
CREATE TABLE audit_log_2026_h0 PARTITION OF audit_log_2026 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE archive.audit_log_2026_h1 PARTITION OF audit_log_2026 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE audit_log_rest PARTITION OF audit_log DEFAULT;
INSERT INTO audit_log (at, what)
  SELECT timestamptz '2025-03-01' + make_interval(hours => 10 * g), 'e' || g FROM generate_series(1, 1500) g;
INSERT INTO audit_log (at, what) VALUES ('2031-01-01', 'far future, in DEFAULT');

CREATE TABLE "Sales Dept"."Order Lines" ("Line No" int, "Amount" numeric, "Mood" mood, qty positive_int,
                                        total numeric GENERATED ALWAYS AS (qty * 2) STORED);
INSERT INTO "Sales Dept"."Order Lines" ("Line No", "Amount", "Mood", qty)
  SELECT g, g * 1.5, (ARRAY['calm', 'busy'])[1 + g % 2]::mood, 1 + g % 7 FROM generate_series(1, 40) g;
CREATE TABLE "a b".c (x int);
INSERT INTO "a b".c SELECT generate_series(1, 3);
CREATE TABLE a."b c" (x int);
INSERT INTO a."b c" SELECT generate_series(1, 5);
CREATE TABLE "dot.ted" (x int);
INSERT INTO "dot.ted" VALUES (1);
CREATE TABLE "line
break" (x int);
INSERT INTO "line
break" VALUES (1), (2);
CREATE TABLE "MixedCase" (v text);
INSERT INTO "MixedCase" VALUES ('a'), ('b');
CREATE UNLOGGED TABLE scratch_cache (k text);
INSERT INTO scratch_cache VALUES ('x');
CREATE TABLE empty_one (id int);
CREATE TABLE no_pk (a int, b text);
INSERT INTO no_pk SELECT g % 3, 'dup' FROM generate_series(1, 9) g;
CREATE TABLE embeddings (id int, v vector(3));
INSERT INTO embeddings VALUES (1, '[1,2,3]'), (2, '[4,5,6]');
CREATE TABLE ext_member (x int);
INSERT INTO ext_member VALUES (1);
ALTER EXTENSION vector ADD TABLE ext_member;

CREATE TABLE secrets_rls (id int, tenant text);
INSERT INTO secrets_rls SELECT g, 't' || g % 3 FROM generate_series(1, 30) g;
ALTER TABLE secrets_rls ENABLE ROW LEVEL SECURITY;
ALTER TABLE secrets_rls FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_only ON secrets_rls USING (tenant = current_user);

CREATE TABLE owned_by_role (id serial PRIMARY KEY, v text);
INSERT INTO owned_by_role (v) SELECT 'v' || g FROM generate_series(1, 12) g;
SELECT setval(pg_get_serial_sequence('owned_by_role', 'id'), 5000);
ALTER TABLE owned_by_role OWNER TO {OWNER};
GRANT SELECT ON owned_by_role TO {READER};
CREATE SEQUENCE untouched_seq;
CREATE SEQUENCE down_seq INCREMENT -1 START 100 MINVALUE 1 MAXVALUE 1000;
SELECT nextval('down_seq'), nextval('down_seq'), nextval('down_seq');

CREATE VIEW recent AS SELECT * FROM audit_log WHERE at > '2026-01-01';
CREATE MATERIALIZED VIEW audit_per_year AS SELECT date_trunc('year', at) y, count(*) n FROM audit_log GROUP BY 1;
CREATE MATERIALIZED VIEW never_filled AS SELECT 1 AS x WITH NO DATA;
CREATE FOREIGN DATA WRAPPER pitstop_dummy_fdw;
CREATE SERVER pitstop_dummy FOREIGN DATA WRAPPER pitstop_dummy_fdw;
CREATE FOREIGN TABLE far_away (x int) SERVER pitstop_dummy;
SELECT lo_from_bytea(0, convert_to('first large object', 'UTF8')), lo_from_bytea(0, '\\x00ff00'::bytea);
"""
# what the manifest must list: every leaf with storage, and nothing else
LEAVES = {("archive", "audit_log_2025"), ("public", "audit_log_2026_h0"), ("archive", "audit_log_2026_h1"),
          ("public", "audit_log_rest"), ("Sales Dept", "Order Lines"), ("a b", "c"), ("a", "b c"),
          ("public", "dot.ted"), ("public", "line\nbreak"), ("public", "MixedCase"), ("public", "scratch_cache"),
          ("public", "empty_one"), ("public", "no_pk"), ("public", "embeddings"), ("public", "secrets_rls"),
          ("public", "owned_by_role")}
LEAF_SQL = """SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
  AND c.relname <> 'ext_member' ORDER BY 1, 2"""


@dataclass
class Shaped:
    env: Path
    dbname: str
    run_id: str
    report: dict[str, Any]
    manifest: dict[str, Any]
    runbook: Path


def state(conn: Any) -> dict[str, Any]:
    """Every leaf table's count and an md5 of its ordered rows, the sequences, large objects, matviews."""
    conn.execute("SET row_security = off")
    out: dict[str, Any] = {}
    for _s, _n, q in conn.execute(LEAF_SQL).fetchall():
        out[q] = conn.execute(f"SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') "  # noqa: S608
                              f"FROM {q} x").fetchone()
    out["sequences"] = conn.execute(
        "SELECT format('%I.%I', schemaname, sequencename), last_value, increment_by FROM pg_sequences "
        "ORDER BY 1").fetchall()
    out["large objects"] = conn.execute("SELECT oid, md5(lo_get(oid)) FROM pg_largeobject_metadata "
                                        "ORDER BY 2").fetchall()
    out["matviews"] = conn.execute("SELECT relname, relispopulated FROM pg_class WHERE relkind = 'm' "
                                   "ORDER BY 1").fetchall()
    out["audit_per_year"] = conn.execute("SELECT * FROM audit_per_year ORDER BY 1").fetchall()
    out["generated"] = conn.execute('SELECT sum(total) FROM "Sales Dept"."Order Lines"').fetchone()
    return out


@pytest.fixture(scope="module")
def shaped(pg_data_dir: Path, pg_socket: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shaped]:
    from pitstop.config import load_config
    from pitstop.demo import setup_hosts

    dbname = f"shapes_{uuid.uuid4().hex[:8]}"
    with admin(pg_socket) as conn:
        for role in (OWNER, READER):
            conn.execute(f"DO $$ BEGIN CREATE ROLE {role} NOLOGIN; EXCEPTION WHEN duplicate_object THEN END $$")
        conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        with admin(pg_socket, dbname) as conn:
            conn.execute(SHAPES)
        base = tmp_path_factory.mktemp("shapes")
        cfg = demo_config(base / "state", pg_data_dir, dbname)
        cfg["retention"] = []
        env = base / "env.yaml"
        env.write_text(yaml.safe_dump(cfg, sort_keys=False))
        setup_hosts(load_config(str(env)))
        rb = write_runbook(base / "backup.yaml", [
            {"name": "pre-backup", "steps": [{"uses": "backup.postgres"}, {"uses": "backup.verify"}]}], kind="monthly")
        res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
        assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-2000:]
        report = report_of(res.stdout)
        location = Path(report["backup"]["location"])
        manifest = json.loads(location.with_name(location.name.replace(".dump", ".manifest.json")).read_text())
        yield Shaped(env, dbname, report["run_id"], report, manifest, rb)
    finally:
        drop_database(pg_socket, dbname)
        with admin(pg_socket) as conn:
            for role in (OWNER, READER):
                conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def target(pg_socket: str) -> Iterator[str]:
    name = f"restored_{uuid.uuid4().hex[:8]}"
    yield name
    drop_database(pg_socket, name)


def test_the_backup_of_every_shape_verifies_and_lists_leaf_tables_only(shaped: Shaped) -> None:
    assert shaped.report["status"] == "succeeded" and shaped.report["backup"]["verified"] is True
    m = shaped.manifest
    assert {(t["schema"], t["name"]) for t in m["tables"]} == LEAVES
    assert all(isinstance(t["oid"], int) for t in m["tables"])
    # no partitioned parent, view, matview, foreign table or extension member among the counted tables
    for gone in ("public.audit_log", "public.audit_log_2026", "public.recent", "public.audit_per_year",
                 "public.far_away", "public.ext_member"):
        assert gone not in m["row_counts"]
    rows = {(t["schema"], t["name"]): t["rows"] for t in m["tables"]}
    assert rows[("public", "secrets_rls")] == 30  # counted with row_security off, never filtered
    assert rows[("a b", "c")] == 3 and rows[("a", "b c")] == 5 and rows[("public", "empty_one")] == 0
    assert sum(v for (s, n), v in rows.items() if n.startswith("audit_log")) == 1501
    seqs = {(s["schema"], s["name"]): s for s in m["sequences"]}
    assert seqs[("public", "owned_by_role_id_seq")]["next_value"] == 5001
    assert seqs[("public", "untouched_seq")]["next_value"] == 1
    assert seqs[("public", "down_seq")]["next_value"] == 97 and seqs[("public", "down_seq")]["increment"] == -1
    assert seqs[("public", "audit_log_id_seq")]["next_value"] == 1502
    assert m["large_objects"] == 2
    assert {(v["name"], v["populated"]) for v in m["materialized_views"]} == {("audit_per_year", True),
                                                                             ("never_filled", False)}


def test_restore_reproduces_every_shape_without_owners(shaped: Shaped, target: str, pg_socket: str) -> None:
    out = run_cli("restore", "--env", str(shaped.env), "--run", shaped.run_id, "--into", target, "--json")
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout
    info = json.loads(out.stdout)
    assert info["differences"] == [] and info["owner"] == "the restoring role"
    assert info["large_objects"] == 2 and info["provenance"].startswith("manifest SHA-256")
    with admin(pg_socket, shaped.dbname) as src, admin(pg_socket, target) as dst:
        assert state(dst) == state(src)
        # --no-owner --no-privileges: everything belongs to the restoring role, no grant is restored
        owner = "SELECT relowner::regrole::text, relacl FROM pg_class WHERE oid = 'owned_by_role'::regclass"
        assert dst.execute(owner).fetchone() == ("postgres", None)
        # row-level security and its policy come back as they were
        assert dst.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
                           "WHERE oid = 'secrets_rls'::regclass").fetchone() == (True, True)
        assert dst.execute("SELECT count(*) FROM pg_policy").fetchone() == (1,)
        # the database says where it came from
        comment = dst.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                              "WHERE datname = current_database()").fetchone()[0]
        assert shaped.run_id in comment and shaped.manifest["sha256"] in comment
    journal = [json.loads(ln) for ln in Path(info["journal"]).read_text().splitlines()]
    assert journal[-1]["outcome"] == "restored" and journal[-1]["run_id"] == shaped.run_id
    assert Path(info["journal"]).stat().st_mode & 0o077 == 0


def test_restore_with_keep_owner_restores_owners_and_grants(shaped: Shaped, target: str, pg_socket: str) -> None:
    out = run_cli("restore", "--env", str(shaped.env), "--run", shaped.run_id, "--into", target, "--keep-owner",
                  "--json")
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout
    assert json.loads(out.stdout)["owner"] == "kept"
    with admin(pg_socket, target) as dst:
        owner, acl = dst.execute("SELECT relowner::regrole::text, relacl::text FROM pg_class "
                                 "WHERE oid = 'owned_by_role'::regclass").fetchone()
        assert owner == OWNER and f"{READER}=r/{OWNER}" in acl


def test_template1_additions_never_reach_a_restore_or_a_verification(shaped: Shaped, target: str, pg_socket: str,
                                                                    ctx_for: Any) -> None:
    """Restores and scratch verifications are created from template0: a table someone added to template1
    (the issue's 200 inherited `users` rows) is not in them, and does not make them differ."""
    from pitstop.backup.steps import verify_backup

    with admin(pg_socket, "template1") as conn:
        conn.execute("CREATE TABLE pitstop_template_junk (x int); INSERT INTO pitstop_template_junk VALUES (1)")
    try:
        out = run_cli("restore", "--env", str(shaped.env), "--run", shaped.run_id, "--into", target, "--json")
        assert out.returncode == 0, out.stderr[-3000:] + out.stdout
        with admin(pg_socket, target) as dst:
            assert dst.execute("SELECT to_regclass('pitstop_template_junk')").fetchone() == (None,)
        evidence = verify_backup(ctx_for(shaped.env, str(shaped.runbook)), shaped.manifest)
        assert evidence["differences"] == {} and "public.pitstop_template_junk" not in evidence["row_counts"]
    finally:
        with admin(pg_socket, "template1") as conn:
            conn.execute("DROP TABLE IF EXISTS pitstop_template_junk")


def test_a_sequence_behind_or_a_lost_large_object_is_a_difference(shaped: Shaped, target: str,
                                                                  pg_socket: str) -> None:
    from pitstop.backup.contents import Contents, compare, read_restored

    out = run_cli("restore", "--env", str(shaped.env), "--run", shaped.run_id, "--into", target, "--json")
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout
    expected = Contents.from_manifest(shaped.manifest)
    with admin(pg_socket, target) as dst:
        assert compare(expected, read_restored(dst)) == {}
        dst.execute("SELECT setval('owned_by_role_id_seq', 12)")  # ids 13..5000 would be handed out again
        dst.execute("SELECT setval('down_seq', 150, false)")  # descending: 150 is behind 97
        dst.execute("SELECT nextval('untouched_seq')")  # ahead: fine
        dst.execute("SELECT lo_unlink(min(oid)) FROM pg_largeobject_metadata")
        dst.execute("DELETE FROM no_pk WHERE a = 0")
        diffs = compare(expected, read_restored(dst))
    assert set(diffs) == {"sequence public.owned_by_role_id_seq", "sequence public.down_seq", "large objects",
                          "public.no_pk"}
    assert diffs["sequence public.owned_by_role_id_seq"]["restored"] == 13
    assert diffs["large objects"] == {"manifest": 2, "restored": 1}


def test_the_tables_of_contents_is_matched_by_oid_not_by_printed_names(shaped: Shaped) -> None:
    """``"a b".c`` and ``a."b c"`` both print as ``a b c`` in ``pg_restore --list``: a dump that lacks one
    of them must not pass because the other's entry reads the same."""
    from pitstop.backup.contents import Contents
    from pitstop.backup.restore import toc_sanity
    from pitstop.errors import BackupError

    listing = subprocess.run([pg_bin("pg_restore"), "--list", shaped.report["backup"]["location"]],
                             capture_output=True, text=True, check=True).stdout
    expected = Contents.from_manifest(shaped.manifest)
    assert toc_sanity(listing, expected)["toc_table_data"] == len(LEAVES)
    lost = next(t for t in expected.tables if (t.schema_, t.name) == ("a", "b c"))
    without = "\n".join(ln for ln in listing.splitlines() if f" {lost.oid} TABLE DATA " not in ln)
    assert without.count("TABLE DATA a b c ") == 1
    with pytest.raises(BackupError, match=r"lacks data for 1 table\(s\): a\.b c"):
        toc_sanity(without, expected)
    no_blobs = "\n".join(ln for ln in listing.splitlines() if " BLOBS " not in ln)
    with pytest.raises(BackupError, match="no large objects"):
        toc_sanity(no_blobs, expected)
