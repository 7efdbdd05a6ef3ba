"""Canary secrets in every secret slot; logs (INFO and DEBUG, ours and the libraries'), stdout and
stderr, the run folder and state directory, every stored S3 object and the Prefect flow run's
parameters and logs are scanned: zero hits. Each secret is proven used by the service it unlocks."""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from pitstop.config import load_config
from pitstop.demo import setup_hosts
from tests.conftest import demo_config
from tests.reliability.helpers import cli
from tests.reliability.results import record

CANARIES = {
    "PITSTOP_R_DB_PASSWORD": "canary-rel-dbpw-51e0c9",
    "PITSTOP_R_S3_ACCESS": "CANARYRELACCESS8842",
    "PITSTOP_R_S3_SECRET": "canary-rel-s3secret-77a1b2c3",
    "PITSTOP_R_ADMIN_AUTH": "Bearer canary-rel-admin-0d15ea5e",
}
HOOK_TOKEN = "canary-rel-hooktoken-feedf00d"


class Seen(http.server.BaseHTTPRequestHandler):
    requests: list[tuple[str, str, str]] = []  # (method, path, authorization)
    maintenance_on = False

    def log_message(self, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        Seen.requests.append((self.command, self.path, self.headers.get("Authorization") or ""))
        if self.path.startswith("/admin") and self.headers.get("Authorization") != CANARIES["PITSTOP_R_ADMIN_AUTH"]:
            self.send_response(401)
            self.end_headers()
            return
        if self.path.startswith("/admin") and self.command in ("POST", "DELETE"):
            Seen.maintenance_on = self.command == "POST"
        body = json.dumps({"enabled": Seen.maintenance_on}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _handle


@pytest.fixture
def http_server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Seen)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _flow_run_texts(api_url: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        texts = []
        for fr in runs:
            texts.append(json.dumps(fr.parameters, default=str))
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[fr.id])))
            texts += [lg.message for lg in logs]
        return texts


def test_canary_secrets_never_leak(tmp_path: Path, pg_data_dir: Path, seeded_db: str, moto_endpoint: str,
                                   http_server: str, prefect_api: str) -> None:
    bucket = f"rel-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id=CANARIES["PITSTOP_R_S3_ACCESS"],
                      aws_secret_access_key=CANARIES["PITSTOP_R_S3_SECRET"])
    s3.create_bucket(Bucket=bucket)
    cfg = demo_config(tmp_path / "state", pg_data_dir, seeded_db)
    cfg["database"]["password_env"] = "PITSTOP_R_DB_PASSWORD"
    cfg["storage"] = {"kind": "s3", "bucket": bucket, "endpoint_url": moto_endpoint, "region": "us-east-1",
                      "access_key_env": "PITSTOP_R_S3_ACCESS", "secret_key_env": "PITSTOP_R_S3_SECRET"}
    cfg["notifications"]["channels"]["hook"] = {"kind": "apprise", "url_env": "PITSTOP_R_HOOK_URL"}
    admin = f"http://{http_server}/admin"
    cfg["maintenance"] = {"strategy": "http", "targets": "web", "deadman": {"enabled": False}, "http": {
        "on": {"method": "POST", "url": admin, "json": {"ttl_seconds": "{ttl_seconds}"}},
        "off": {"method": "DELETE", "url": admin},
        "status": {"method": "GET", "url": admin}, "status_json_field": "enabled",
        "headers": [{"name": "Authorization", "value_env": "PITSTOP_R_ADMIN_AUTH"}]}}
    env_path = tmp_path / "env.yaml"
    env_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    setup_hosts(load_config(str(env_path)))
    secrets = {**CANARIES, "PITSTOP_R_HOOK_URL": f"json://{http_server}/hook/{HOOK_TOKEN}"}
    debug = {"PREFECT_LOGGING_LEVEL": "DEBUG", "PREFECT_LOGGING_ROOT_LEVEL": "DEBUG", "PREFECT_API_URL": prefect_api}

    res = cli("run", "--env", str(env_path), "--runbook", "monthly", "--engine", "prefect", "--json",
              env={**secrets, **debug})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "DEBUG" in res.stdout + res.stderr, "DEBUG logging was not on"
    assert "[REDACTED]" in res.stdout + res.stderr, "no library tried to log a secret: the scan proves little"

    needles = [*CANARIES.values(), HOOK_TOKEN, CANARIES["PITSTOP_R_ADMIN_AUTH"].split()[1]]
    hits: list[str] = []

    def scan(where: str, data: bytes) -> None:
        hits.extend(f"{where}: {n}" for n in needles if n.encode() in data)

    scan("stdout+stderr", (res.stdout + res.stderr).encode())
    files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert any(p.name == "audit.jsonl" for p in files) and any(p.name == "report.json" for p in files)
    for p in files:
        scan(str(p), p.read_bytes())
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(k.endswith(".dump") or "dump" in k for k in keys), keys
    for k in keys:
        scan(f"s3://{bucket}/{k}", s3.get_object(Bucket=bucket, Key=k)["Body"].read())
    texts = _flow_run_texts(prefect_api)
    assert texts, "no Prefect flow run found"
    for t in texts:
        scan("prefect flow run parameters/logs", t.encode())

    # Every secret was really used.
    assert any(HOOK_TOKEN in path for _, path, _ in Seen.requests), "the apprise hook was never called"
    assert any(auth == CANARIES["PITSTOP_R_ADMIN_AUTH"] for _, _, auth in Seen.requests)
    record("secrets", secret_leaks=len(hits))
    assert hits == [], hits
