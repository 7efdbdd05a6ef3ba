"""flag_file strategy over the local transport: atomic on/off/status, dead-man armed and cancelled,
and the dead-man lifting maintenance by itself (only while the flag still names the run)."""

from __future__ import annotations

import json
from pathlib import Path

from pitstop.maintenance_mode import deadman, strategy_for
from pitstop.maintenance_mode.state import MaintenanceState
from pitstop.maintenance_mode.steps import OffParams, OnParams, maintenance_off, maintenance_off_host, maintenance_on

from .helpers import make_ctx, process_alive, root_of, wait_for, write_env

FLAG = "var/www/maintenance.flag"


def test_on_writes_flag_arms_deadman_and_off_cancels_it(tmp_path: Path) -> None:
    env = write_env(tmp_path)
    ctx = make_ctx(env, tmp=tmp_path)
    out = maintenance_on(ctx, OnParams(message="back at 3"), "web-1")
    flag = root_of(env, "web-1") / FLAG
    doc = json.loads(flag.read_text())
    assert out.changed and doc["run_id"] == ctx.run_id and doc["message"] == "back at 3"
    assert doc["ttl_seconds"] == 120  # window 1m + margin 1m
    handle = ctx.state.of(MaintenanceState).deadman["web-1"]
    assert handle.method == "setsid" and process_alive(int(handle.ref))
    st = strategy_for(ctx.cfg.maintenance).status(ctx, "web-1")
    assert st.on and st.run_id == ctx.run_id
    # a second `on` in the same run changes nothing and replaces (not duplicates) the watcher
    again = maintenance_on(ctx, OnParams(message="back at 3"), "web-1")
    assert not again.changed
    wait_for(lambda: not process_alive(int(handle.ref)), what="old watcher replaced")
    handle2 = ctx.state.of(MaintenanceState).deadman["web-1"]

    off = maintenance_off_host(ctx, OffParams(), "web-1")
    assert off.changed and not flag.exists()
    wait_for(lambda: not process_alive(int(handle2.ref)), what="watcher cancelled")
    assert not maintenance_off_host(ctx, OffParams(), "web-1").changed
    assert not strategy_for(ctx.cfg.maintenance).status(ctx, "web-1").on
    ctx.close()


def test_safety_net_lifts_every_host_turned_on(tmp_path: Path) -> None:
    env = write_env(tmp_path)
    ctx = make_ctx(env, tmp=tmp_path)
    for host in ("web-1", "web-2"):
        maintenance_on(ctx, OnParams(), host)
    maintenance_off(ctx, OffParams())
    assert not any((root_of(env, h) / FLAG).exists() for h in ("web-1", "web-2"))
    assert ctx.state.of(MaintenanceState).on == set() and ctx.state.of(MaintenanceState).deadman == {}


def test_deadman_lifts_flag_when_pitstop_never_returns(tmp_path: Path) -> None:
    env = write_env(tmp_path, maintenance={"deadman": {"ttl": "1s"}})
    ctx = make_ctx(env, tmp=tmp_path)
    maintenance_on(ctx, OnParams(), "web-1")
    flag = root_of(env, "web-1") / FLAG
    assert flag.exists()
    # pitstop "forgets" (no off): the host lifts maintenance by itself after the TTL
    wait_for(lambda: not flag.exists(), deadline_s=30, what="dead-man to remove the flag")


def test_deadman_leaves_a_flag_of_another_run_alone(tmp_path: Path) -> None:
    env = write_env(tmp_path, maintenance={"deadman": {"ttl": "1s"}})
    ctx = make_ctx(env, tmp=tmp_path)
    maintenance_on(ctx, OnParams(), "web-1")
    pid = int(ctx.state.of(MaintenanceState).deadman["web-1"].ref)
    flag = root_of(env, "web-1") / FLAG
    flag.write_text(json.dumps({"run_id": "some-other-run"}))  # another run took over the window
    wait_for(lambda: not process_alive(pid), what="watcher to finish")
    assert json.loads(flag.read_text())["run_id"] == "some-other-run"


def test_cancel_refuses_a_pid_that_is_not_our_watcher(tmp_path: Path) -> None:
    env = write_env(tmp_path)
    ctx = make_ctx(env, tmp=tmp_path)
    conn = ctx.host("web-1")
    import os

    fake = deadman.DeadmanHandle(method="setsid", ref=str(os.getpid()), marker="/x", ttl_seconds=5)
    assert deadman.cancel(conn, fake, ctx.run_id) is False  # our own pytest process: untouched
    assert process_alive(os.getpid())


def test_deadman_disabled_arms_nothing(tmp_path: Path) -> None:
    env = write_env(tmp_path, maintenance={"deadman": {"enabled": False}})
    ctx = make_ctx(env, tmp=tmp_path)
    out = maintenance_on(ctx, OnParams(), "web-1")
    assert out.data["deadman"] is None and ctx.state.of(MaintenanceState).deadman == {}
    maintenance_off(ctx, OffParams())
