"""Config validation against injection, the superuser warning, VACUUM/REINDEX/invalid indexes,
the exclusive VACUUM FULL step and the cleanup section of a real run's report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pitstop.cleanup.steps import (
    RetentionParams,
    VacuumFullParams,
    VacuumParams,
    cleanup_retention,
    vacuum_analyze,
    vacuum_full,
)
from pitstop.registry import Placement, get_step
from tests.conftest import ROOT, demo_config, report_of, run_cli

from .conftest import EXPIRED, events, rule

INJECTIONS = [
    ("table", 'events; DROP TABLE users; --'),
    ("column", 'created_at < now() OR true --'),
    ("schema", 'public"."users'),
    ("table", 'ev"ent'),
]


@pytest.mark.parametrize(("field", "value"), INJECTIONS)
def test_injection_in_identifiers_is_rejected_with_file_and_line(tmp_path, pg_data_dir, field, value):
    cfg = demo_config(tmp_path / "state", pg_data_dir, "postgres")
    cfg["retention"] = [rule("events"), {**rule("sessions", column="expires_at"), field: value}]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    line = [i for i, text in enumerate(path.read_text().splitlines(), 1) if f"{field}:" in text][-1]
    proc = run_cli("validate", "--env", str(path))
    assert proc.returncode == 2
    assert f"{path}:{line}" in proc.stderr + proc.stdout
    assert f"retention.1.{field}" in proc.stderr + proc.stdout


def test_injection_in_filter_column_and_step_tables_is_rejected(tmp_path, pg_data_dir):
    cfg = demo_config(tmp_path / "state", pg_data_dir, "postgres")
    cfg["retention"] = [rule("events", where=[{"column": "kind = 'x' OR 1=1", "op": "=", "value": "a"}])]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run_cli("validate", "--env", str(path))
    assert proc.returncode == 2 and "retention.0.where.0.column" in proc.stderr + proc.stdout
    with pytest.raises(ValueError):
        RetentionParams(tables=["events; DROP TABLE users"])
    with pytest.raises(ValueError):
        VacuumFullParams(tables=['x"; DROP'])


def test_unknown_profile_is_a_config_error(tmp_path, pg_data_dir):
    cfg = demo_config(tmp_path / "state", pg_data_dir, "postgres")
    cfg["retention"] = [rule("events", profile="turbo")]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run_cli("validate", "--env", str(path))
    assert proc.returncode == 2 and "unknown cleanup profile 'turbo'" in proc.stderr + proc.stdout


def test_filter_values_are_parameters_not_sql(ev, cleanup_ctx):
    hostile = "view' OR '1'='1"
    ctx = cleanup_ctx([rule("ev", where=[{"column": "kind", "op": "=", "value": hostile}])])
    (r,) = cleanup_retention(ctx, RetentionParams()).data["cleanup"]
    assert r["deleted"] == 0 and ev.execute("SELECT count(*) FROM ev").fetchone()[0] == 20000


def test_vacuum_reindex_and_invalid_indexes(ev, cleanup_ctx):
    ctx = cleanup_ctx([rule("ev")])
    cleanup_retention(ctx, RetentionParams())
    # An interrupted CREATE INDEX CONCURRENTLY leaves an invalid index behind.
    ev.execute("INSERT INTO ev (account, kind, created_at) SELECT 1, 'dup', now() FROM generate_series(1, 2)")
    with pytest.raises(Exception, match="could not create unique index"):
        ev.execute("CREATE UNIQUE INDEX CONCURRENTLY ev_kind_uniq ON ev (kind)")
    out = vacuum_analyze(ctx, VacuumParams(bloat_threshold=0.0, min_index_bytes=0))
    (vac,) = out.data["vacuum"]
    assert vac["table"] == "public.ev" and vac["after"]["dead_tuples"] == 0
    assert vac["before"]["dead_tuples"] >= EXPIRED
    assert vac["after"]["live_rows"] == 20002 - EXPIRED
    rebuilt = {r["index"] for r in out.data["reindexed"]}
    assert rebuilt and rebuilt <= {"ev_pkey", "ev_created_at_idx", "ev_account_created_idx"}
    assert out.data["invalid_indexes"] == ["ev_kind_uniq"]
    assert events(ctx, "cleanup.invalid_indexes")[0]["indexes"] == ["ev_kind_uniq"]
    assert all(r["bytes_after"] > 0 for r in out.data["reindexed"])


def test_vacuum_full_is_an_explicit_in_window_step(ev, cleanup_ctx):
    assert get_step("database.vacuum_full").placement == Placement.INSIDE
    assert get_step("cleanup.retention").placement == Placement.OUTSIDE and get_step("cleanup.retention").destructive
    ctx = cleanup_ctx([rule("ev")])
    cleanup_retention(ctx, RetentionParams())
    out = vacuum_full(ctx, VacuumFullParams(tables=["public.ev"]))
    (d,) = out.data["rewritten"]
    assert d["after"]["table_bytes"] < d["before"]["table_bytes"]
    out = vacuum_full(ctx, VacuumFullParams(tables=["ev"], mode="cluster", index="ev_created_at_idx"))
    assert out.data["rewritten"][0]["mode"] == "cluster"


def test_monthly_run_reports_cleanup_and_superuser_deviation(make_env):
    path = make_env()
    proc = run_cli("run", "--env", str(path), "--runbook", "monthly", "--engine", "local", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = report_of(proc.stdout)
    cl = report["cleanup"]
    assert cl["tables"] == {"public.events": 1500, "public.sessions": 400}
    assert {r["strategy"] for r in cl["rules"]} == {"pk-range"}
    assert cl["vacuum"] and cl["superuser"] is True
    assert any(d["kind"] == "cleanup.superuser" for d in report["deviations"])
    run_dir = Path(json.loads(proc.stdout)["report"]).parent
    md = (run_dir / "report.md").read_text()
    assert "| public.events | default | pk-range |" in md and "after VACUUM (ANALYZE)" in md
    assert "Longest lock wait caused" in (run_dir / "report.html").read_text()
    assert ROOT.exists()
