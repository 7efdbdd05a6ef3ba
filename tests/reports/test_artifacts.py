"""Reports published as Prefect artifacts (markdown + table) on the flow run, against a real Prefect
API; the local engine publishes nothing and never imports Prefect."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from pitstop.report.artifacts import artifact_key, publish
from tests.conftest import report_of, run_cli
from tests.reports.replay import rewrite_without


def test_prefect_run_publishes_markdown_and_table_artifacts(make_env, prefect_api):
    env_path = make_env()
    proc = run_cli("run", "--env", str(env_path), "--runbook", "monthly", "--engine", "prefect", "--json",
                   env={"PREFECT_API_URL": prefect_api})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = report_of(proc.stdout)

    import httpx

    keys = [artifact_key(report, "report"), artifact_key(report, "results")]
    assert keys == ["pitstop-test-monthly-report", "pitstop-test-monthly-results"]
    resp = httpx.post(f"{prefect_api}/artifacts/filter", timeout=30,
                      json={"artifacts": {"key": {"any_": keys}}, "limit": 50, "offset": 0, "sort": "CREATED_DESC"})
    resp.raise_for_status()
    arts = [SimpleNamespace(**a) for a in resp.json()]
    by_type = {a.type: a for a in arts if report["run_id"] in (a.description or "")}
    assert set(by_type) == {"markdown", "table"}
    md, table = by_type["markdown"], by_type["table"]
    assert md.flow_run_id is not None and md.flow_run_id == table.flow_run_id
    assert "# Maintenance report" in md.data and report["run_id"] in md.data
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    names = {row["name"] for row in rows}
    assert "data_parity" in names and "pg_dump to storage" in names

    # the artifact is an anchor: `report verify --env` reads the chain head back from the Prefect API
    def verify() -> tuple[int, dict]:
        res = run_cli("report", "verify", report["run_id"], "--env", str(env_path), "--json",
                      env={"PREFECT_API_URL": prefect_api})
        return res.returncode, json.loads(res.stdout)

    rc, ok = verify()
    assert rc == 0 and [(a["anchor"], a["status"]) for a in ok["anchors"]] == [("storage", "matched"),
                                                                              ("prefect artifact", "matched")], ok
    rewrite_without(Path(json.loads(proc.stdout)["run_dir"]), "cleanup.purged")
    rc, bad = verify()
    assert rc == 1 and [a["status"] for a in bad["anchors"]] == ["MISMATCH", "MISMATCH"], bad


def test_publish_outside_a_flow_run_does_nothing():
    assert publish({"environment": "x", "runbook": "y", "run_id": "z", "status": "succeeded"}, "# md") is None

