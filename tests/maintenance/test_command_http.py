"""command and http strategies: on/off/status, placeholders, dead-man for commands, secrets in
headers that never reach the audit log or the report, one call per shared endpoint."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pitstop.errors import ConfigError
from pitstop.maintenance_mode import strategy_for
from pitstop.maintenance_mode.state import MaintenanceState
from pitstop.maintenance_mode.steps import OffParams, OnParams, maintenance_off, maintenance_on
from pitstop.runner import execute

from .helpers import make_ctx, root_of, wait_for, write_env, write_runbook

COMMAND = {"strategy": "command",
           "command": {"on": ["sh", "-c", 'printf %s "$1" > maint-on', "maint", "{run_id} {ttl_seconds}"],
                       "off": ["rm", "-f", "maint-on"], "status": ["test", "-f", "maint-on"]}}


def test_command_strategy_on_status_off(tmp_path: Path) -> None:
    env = write_env(tmp_path, maintenance=COMMAND)
    ctx = make_ctx(env, tmp=tmp_path)
    root = root_of(env, "web-1")
    strat = strategy_for(ctx.cfg.maintenance)
    assert maintenance_on(ctx, OnParams(), "web-1").changed
    assert (root / "maint-on").read_text() == f"{ctx.run_id} 120"
    marker = json.loads((root / "var/tmp/pitstop-maintenance.json").read_text())
    assert marker["run_id"] == ctx.run_id
    assert strat.status(ctx, "web-1").on and strat.status(ctx, "web-1").run_id == ctx.run_id
    assert not maintenance_on(ctx, OnParams(), "web-1").changed  # status says already on
    maintenance_off(ctx, OffParams())
    assert not (root / "maint-on").exists() and not (root / "var/tmp/pitstop-maintenance.json").exists()
    assert not strat.status(ctx, "web-1").on


def test_maintenance_off_check_asks_the_strategy(tmp_path: Path) -> None:
    """``check.maintenance_off`` and ``check.maintenance_state`` share one probe, the strategy's status: with
    the command strategy, "off" is what its status command says (it once looked at a flag file only)."""
    from pitstop.maintenance_mode.checks import MaintenanceOffParams, StateParams, maintenance_state
    from pitstop.maintenance_mode.checks import maintenance_off as off_check

    env = write_env(tmp_path, maintenance=COMMAND)
    ctx = make_ctx(env, tmp=tmp_path)
    maintenance_on(ctx, OnParams(), "web-1")
    on = off_check(ctx, MaintenanceOffParams(), "web-1")
    assert on.status.value == "fail" and "maintenance mode on (status command says on)" in on.observed, on
    assert maintenance_state(ctx, StateParams(expect=True), "web-1").status.value == "pass"
    maintenance_off(ctx, OffParams())
    off = off_check(ctx, MaintenanceOffParams(), "web-1")
    assert off.status.value == "pass" and off.evidence["strategy"] == "command", off
    assert maintenance_state(ctx, StateParams(expect=False), "web-1").status.value == "pass"


def test_command_strategy_deadman_runs_the_off_command(tmp_path: Path) -> None:
    env = write_env(tmp_path, maintenance={**COMMAND, "deadman": {"ttl": "1s"}})
    ctx = make_ctx(env, tmp=tmp_path)
    maintenance_on(ctx, OnParams(), "web-2")
    root = root_of(env, "web-2")
    assert (root / "maint-on").exists()
    wait_for(lambda: not (root / "maint-on").exists() and not (root / "var/tmp/pitstop-maintenance.json").exists(),
             what="dead-man to run the off command")


def test_command_failure_is_reported(tmp_path: Path) -> None:
    env = write_env(tmp_path, maintenance={"strategy": "command",
                                           "command": {"on": ["false"], "off": ["true"]}})
    ctx = make_ctx(env, tmp=tmp_path)
    with pytest.raises(Exception, match="'false' on web-1 exited 1"):
        maintenance_on(ctx, OnParams(), "web-1")
    assert "web-1" in ctx.state.of(MaintenanceState).on  # the safety net still knows to lift it
    maintenance_off(ctx, OffParams())


def test_strategy_needs_its_section(tmp_path: Path) -> None:
    env = write_env(tmp_path, maintenance={"strategy": "http"})
    with pytest.raises(ConfigError, match=r"env.yaml:\d+.*needs a `http:` section"):
        make_ctx(env, tmp=tmp_path)


def test_http_without_an_expiry_has_no_dead_man_and_is_refused(tmp_path: Path) -> None:
    """With strategy http the dead-man is the endpoint's own expiry: an `on` call that sends none
    would leave the platform with no switch at all, silently. Refused, unless switched off on purpose."""
    http = {"on": {"method": "POST", "url": "http://127.0.0.1:9/maintenance", "json": {"enabled": True}},
            "off": {"method": "DELETE", "url": "http://127.0.0.1:9/maintenance"}}
    env = write_env(tmp_path, maintenance={"strategy": "http", "http": http})
    with pytest.raises(ConfigError, match=r"env.yaml:\d+.*dead-man.*\{ttl_seconds\} or \{expires_at\}"):
        make_ctx(env, tmp=tmp_path)
    env = write_env(tmp_path, maintenance={"strategy": "http", "http": http, "deadman": {"enabled": False}})
    make_ctx(env, tmp=tmp_path).close()


# -- http -------------------------------------------------------------------------------------------
class Admin:
    """A platform admin endpoint on loopback that honours the expiry sent with `on`."""

    def __init__(self, token: str):
        self.token = token
        self.calls: list[tuple[str, str, dict[str, Any] | None]] = []
        self.expires: float | None = None

    def on(self) -> bool:
        return self.expires is not None and time.time() < self.expires


@pytest.fixture
def admin() -> Iterator[tuple[Admin, str]]:
    state = Admin("s3cr3t-token-value")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, code: int, body: dict[str, Any] | None = None) -> None:
            data = json.dumps(body or {}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n)) if n else None
            state.calls.append((self.command, self.path, body))
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                return self._reply(401)
            if self.command == "GET":
                return self._reply(200, {"enabled": state.on()})
            if self.command == "POST":
                state.expires = time.time() + body["ttl_seconds"]
                return self._reply(201)
            state.expires = None
            return self._reply(204)

        do_GET = do_POST = do_DELETE = _handle

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield state, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _http_cfg(url: str) -> dict[str, Any]:
    return {"strategy": "http", "http": {
        "on": {"method": "POST", "url": f"{url}/maintenance",
               "json": {"ttl_seconds": "{ttl_seconds}", "run_id": "{run_id}", "reason": "{message}"}},
        "off": {"method": "DELETE", "url": f"{url}/maintenance"},
        "status": {"method": "GET", "url": f"{url}/maintenance"}, "status_json_field": "enabled",
        "headers": [{"name": "Authorization", "value_env": "PITSTOP_TEST_ADMIN_AUTH"}]}}


def test_http_strategy_run_secret_never_recorded(tmp_path: Path, admin: tuple[Admin, str], pg_data_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    state, url = admin
    monkeypatch.setenv("PITSTOP_TEST_ADMIN_AUTH", f"Bearer {state.token}")
    env = write_env(tmp_path, maintenance=_http_cfg(url), pg_data_dir=pg_data_dir)
    rb = write_runbook(tmp_path, [
        {"name": "maintenance-on", "steps": [{"uses": "maintenance.on"}]},
        {"name": "server-tuning", "steps": [{"uses": "check.maintenance_state", "window": "inside",
                                            "targets": "web", "with": {"expect": True}}]},
        {"name": "maintenance-off", "steps": [{"uses": "maintenance.off"}]},
        {"name": "post-verification", "steps": [{"uses": "check.maintenance_state", "targets": "web"}]},
    ])
    res = execute(str(env), str(rb))
    assert res.status.value == "succeeded"
    writes = [(m, b) for m, _, b in state.calls if m != "GET"]
    # two target hosts share one endpoint: one POST and one DELETE for the whole run
    assert [m for m, _ in writes] == ["POST", "DELETE"]
    assert writes[0][1] == {"ttl_seconds": 120, "run_id": res.run_id, "reason": "Scheduled maintenance in progress."}
    assert not state.on()
    for f in res.run_dir.iterdir():
        if f.is_file():
            assert state.token not in f.read_text(errors="replace"), f.name


def test_http_endpoint_expiry_is_the_deadman(tmp_path: Path, admin: tuple[Admin, str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    state, url = admin
    monkeypatch.setenv("PITSTOP_TEST_ADMIN_AUTH", f"Bearer {state.token}")
    env = write_env(tmp_path, maintenance={**_http_cfg(url), "deadman": {"ttl": "1s"}})
    ctx = make_ctx(env, tmp=tmp_path)
    maintenance_on(ctx, OnParams(), "web-1")
    assert strategy_for(ctx.cfg.maintenance).status(ctx, "web-1").on
    wait_for(lambda: not strategy_for(ctx.cfg.maintenance).status(ctx, "web-1").on, what="endpoint expiry")


def test_http_missing_secret_and_wrong_status(tmp_path: Path, admin: tuple[Admin, str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    state, url = admin
    monkeypatch.delenv("PITSTOP_TEST_ADMIN_AUTH", raising=False)
    env = write_env(tmp_path, maintenance=_http_cfg(url))
    ctx = make_ctx(env, tmp=tmp_path)
    with pytest.raises(ConfigError, match="PITSTOP_TEST_ADMIN_AUTH"):
        maintenance_on(ctx, OnParams(), "web-1")
    monkeypatch.setenv("PITSTOP_TEST_ADMIN_AUTH", "Bearer wrong-token")
    with pytest.raises(Exception, match="HTTP 401") as exc:
        strategy_for(ctx.cfg.maintenance).on(ctx, "web-2", ctx.state.of(MaintenanceState).record)
    assert "wrong-token" not in str(exc.value)
