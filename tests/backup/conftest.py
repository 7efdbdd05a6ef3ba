"""Fixtures for the backup tests: a real S3 endpoint (moto's server mode over HTTP on loopback),
a TCP proxy in front of it that resets connections on demand, and helpers to build run contexts."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.backup.backup_helpers import KEY_ENV, SECRET_ENV
from tests.reliability.faults import FaultProxy


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_client(moto_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                        aws_access_key_id=os.environ[KEY_ENV], aws_secret_access_key=os.environ[SECRET_ENV])


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"pitstop-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def reset_proxy(moto_endpoint: str) -> Iterator[Callable[[int], FaultProxy]]:
    made: list[FaultProxy] = []
    host, port = moto_endpoint.removeprefix("http://").split(":")

    def make(resets: int) -> FaultProxy:
        made.append(FaultProxy((host, int(port)), ["reset"] * resets))
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture
def ctx_for(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Build a real RunContext for a config path (runbook ``monthly`` unless named)."""
    from pitstop.config import load_config
    from pitstop.context import RunContext, RunOptions
    from pitstop.model import Trigger
    from pitstop.runbook import load_runbook

    made: list[Any] = []

    def make(env_path: Path, runbook: str = "monthly", trigger: str = "manual",
             run_id: str | None = None) -> Any:
        cfg = load_config(str(env_path))
        options = RunOptions(trigger=Trigger(trigger))
        ctx = RunContext.create(cfg, load_runbook(runbook, cfg), options, run_id=run_id)
        made.append(ctx)
        return ctx

    yield make
    for c in made:
        c.close()
