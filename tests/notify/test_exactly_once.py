"""Exactly-once: concurrent send-due calls (threads and processes) and a crash between the send and
the ledger record. The receiver is a real HTTP server reached through apprise's json:// scheme."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pitstop.notify.notices import plan_notices, send_due

from ..conftest import run_cli
from .conftest import due_now

T = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)  # 47 h before the 6 Dec window: the 48 h notice is due
NO_SLEEP = lambda s: None  # noqa: E731


class Crash(BaseException):
    """Stands for the process dying between the delivery and the ledger record."""


def received(recv: Any) -> Counter[str]:
    return Counter(r["headers"].get("X-Pitstop-Notice-Id") for r in recv.requests if r["status"] == 200)


@pytest.fixture
def hook_env(notices_env: Any, http_receiver: Any, monkeypatch: Any) -> tuple[Any, Any]:
    addr, recv = http_receiver
    monkeypatch.setenv("HOOK_A", f"json://{addr}/a")
    monkeypatch.setenv("HOOK_B", f"json://{addr}/b")

    def make(delivery: str = "at-least-once", mutate: Any = None) -> Any:
        def change(d: dict[str, Any]) -> None:
            d["notifications"]["notices"].update(delivery=delivery)
            if mutate:
                mutate(d)

        return notices_env({"a": {"kind": "apprise", "url_env": "HOOK_A", "audiences": ["customers"]},
                            "b": {"kind": "apprise", "url_env": "HOOK_B", "audiences": ["ops"]}}, change)

    return make, recv


def test_concurrent_threads_send_each_notice_once(hook_env: Any) -> None:
    make, recv = hook_env
    cfg = make()
    barrier = threading.Barrier(6)
    results: list[Any] = []

    def worker() -> None:
        barrier.wait()
        results.extend(send_due(cfg, T, clock=lambda: T, sleep=NO_SLEEP))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert received(recv) == {"monthly_20261206T010000Z__advance-48h__a": 1,
                              "monthly_20261206T010000Z__advance-48h__b": 1}
    assert Counter(r.status for r in results)["sent"] == 2


def test_concurrent_processes_send_each_notice_once(hook_env: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    make, recv = hook_env
    window: list[str] = []
    cfg = make(mutate=lambda d: window.append(due_now(d)))  # due at the real time: the CLI sends only then
    key = window[0].replace("@", "_")
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "pitstop.cli", "notices", "send-due", "--env", cfg.source, "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert received(recv) == {f"{key}__advance-48h__a": 1, f"{key}__advance-48h__b": 1}
    again = run_cli("notices", "send-due", "--env", cfg.source, "--json")
    assert again.returncode == 0 and again.stdout.strip() == "[]"


def test_crash_between_send_and_ledger_at_least_once(hook_env: Any) -> None:
    make, recv = hook_env
    cfg = make("at-least-once")

    def crash(key: str) -> None:
        if key.endswith("__a"):
            raise Crash()

    with pytest.raises(Crash):
        send_due(cfg, T, clock=lambda: T, sleep=NO_SLEEP, after_send=crash)
    assert received(recv)["monthly_20261206T010000Z__advance-48h__a"] == 1
    # Our own process is alive, so the claim is in flight until its lease (10 min) runs out:
    t1 = T + timedelta(minutes=5)
    out = send_due(cfg, t1, clock=lambda: t1, sleep=NO_SLEEP)
    assert [(r.channel, r.status) for r in out] == [("b", "sent")]
    assert {p.channel: p.state for p in plan_notices(cfg, t1) if p.notice == "advance-48h"}["a"] == "in_flight"
    # After the lease the notice is sent again (at-least-once): never lost, possibly duplicated,
    # with the same notice id so the receiver can drop the copy.
    t2 = T + timedelta(minutes=11)
    out = send_due(cfg, t2, clock=lambda: t2, sleep=NO_SLEEP)
    assert [(r.channel, r.status) for r in out] == [("a", "sent")]
    assert received(recv)["monthly_20261206T010000Z__advance-48h__a"] == 2
    assert send_due(cfg, t2 + timedelta(hours=1), clock=lambda: t2 + timedelta(hours=1), sleep=NO_SLEEP) == []
    ledger_dir = cfg.state_path / "notices" / "ledger" / "monthly_20261206T010000Z__advance-48h__a"
    assert sorted(p.name for p in ledger_dir.iterdir()) == ["claim-0001.json", "claim-0002.json", "done-0002.json"]


def test_crash_between_send_and_ledger_at_most_once(hook_env: Any) -> None:
    make, recv = hook_env
    cfg = make("at-most-once")
    with pytest.raises(Crash):
        send_due(cfg, T, clock=lambda: T, sleep=NO_SLEEP, after_send=lambda key: (_ for _ in ()).throw(Crash()))
    t2 = T + timedelta(minutes=30)
    out = send_due(cfg, t2, clock=lambda: t2, sleep=NO_SLEEP)
    assert [(r.channel, r.status) for r in out] == [("a", "abandoned"), ("b", "sent")]
    assert received(recv)["monthly_20261206T010000Z__advance-48h__a"] == 1  # not resent
    states = {p.channel: p.state for p in plan_notices(cfg, t2) if p.notice == "advance-48h"}
    assert states == {"a": "abandoned", "b": "sent"}


def _crashing_child(cfg_source: str) -> None:
    from pitstop.config import load_config

    cfg = load_config(cfg_source)
    send_due(cfg, T, clock=lambda: T, sleep=NO_SLEEP, after_send=lambda key: os._exit(137))


def test_real_process_killed_after_send_is_recovered_at_once(hook_env: Any) -> None:
    make, recv = hook_env
    cfg = make()
    child = multiprocessing.get_context("spawn").Process(target=_crashing_child, args=(cfg.source,))
    child.start()
    child.join(120)
    assert child.exitcode == 137
    assert sum(received(recv).values()) == 1
    # Same host, dead pid: the claim is stale immediately, no lease wait.
    out = send_due(cfg, T, clock=lambda: T, sleep=NO_SLEEP)
    assert sorted(r.channel for r in out if r.status == "sent") == ["a", "b"]
    assert all(n >= 1 for n in received(recv).values()) and len(received(recv)) == 2


def test_a_library_caller_pretending_a_time_gets_the_real_one_recorded(hook_env: Any) -> None:
    """``send_due(now=T)`` with the real clock (the CLI never does this: ``--now`` only previews): the
    ledger records the real send time and the pretended one beside it, never T as the send time."""
    import json as _json

    from pitstop.notify.ledger import open_ledger
    from pitstop.schedule import system_clock

    make, recv = hook_env
    cfg = make()
    before = datetime.now(UTC)
    out = send_due(cfg, T, clock=system_clock, sleep=NO_SLEEP)
    assert out and all(r.status == "sent" for r in out)
    ledger = open_ledger(cfg)
    done = [_json.loads(ledger.store.read(n)) for n in ledger.store.list() if "/done-" in n]
    assert done
    for rec in done:
        sent = datetime.fromisoformat(rec["at"])
        assert abs((sent - before).total_seconds()) < 300, rec  # the real time, not the pretended one
        assert "simulated_at" in rec and datetime.fromisoformat(rec["simulated_at"]) != sent
