"""A Prefect command run in-process must not leave the local server's address in os.environ: the full
suite's later subprocesses inherited a dead server's PREFECT_API_URL from an in-process run and went
to it instead of their own state directory's server."""

from __future__ import annotations

import os
from typing import Any

import pytest

from pitstop.cli import _client_env


class FakeServer:
    def client_env(self) -> dict[str, str]:
        return {"PREFECT_API_URL": "http://127.0.0.1:9/api", "PREFECT_API_AUTH_STRING": "pitstop:abcd1234",
                "PITSTOP_PREFECT_LOCAL": "1"}


def test_the_local_servers_settings_last_as_long_as_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PITSTOP_PREFECT_LOCAL", raising=False)
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "the-callers-own")
    server: Any = FakeServer()
    with pytest.raises(RuntimeError), _client_env(server):
        assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:9/api"
        raise RuntimeError("the run failed")
    assert "PREFECT_API_URL" not in os.environ and "PITSTOP_PREFECT_LOCAL" not in os.environ
    assert os.environ["PREFECT_API_AUTH_STRING"] == "the-callers-own"
