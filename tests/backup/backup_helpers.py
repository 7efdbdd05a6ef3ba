"""Helpers shared by the backup tests (imported as ``backup_helpers``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

KEY_ENV, SECRET_ENV = "PITSTOP_TEST_S3_KEY", "PITSTOP_TEST_S3_SECRET"
os.environ.setdefault(KEY_ENV, "testing-access-key")
os.environ.setdefault(SECRET_ENV, "testing-secret-key-do-not-log")


def s3_storage(endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "s3", "bucket": bucket, "endpoint_url": endpoint, "region": "us-east-1",
            "access_key_env": KEY_ENV, "secret_key_env": SECRET_ENV, **extra}


def kinds(ctx: Any) -> list[str]:
    return [e["kind"] for e in ctx.audit.events]


def write_runbook(path: Path, stages: list[dict[str, Any]], kind: str = "custom") -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "kind": kind, "stages": stages}, sort_keys=False))
    return path
