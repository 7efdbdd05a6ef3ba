"""Fan-out over real SSH hosts: batches, canary, max_errors stopping a rollout with per-host
results (through the executor too), and a transient connect failure retried."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pitstop.config import FleetConfig, HostConfig, SshSettings
from pitstop.connectors.ssh import AuthError, SshConnection
from pitstop.fleet.fanout import batches, error_limit, fan_out
from pitstop.model import HostResult, Status, StepOutcome
from pitstop.registry import Placement, Target, step
from pitstop.runner import execute
from tests.fleet.sshlab import FakeHost, SshLab
from tests.reliability.faults import FaultProxy


def test_batches_and_limits() -> None:
    assert batches(10, None) == [10]
    assert batches(10, 1) == [1] * 10
    assert batches(10, "30%") == [3, 3, 3, 1]
    assert batches(20, [1, 5, "25%"]) == [1, 5, 5, 5, 4]
    assert batches(5, 2, canary=True) == [1, 2, 2]
    assert error_limit(None, 10) is None and error_limit(2, 10) == 2 and error_limit("25%", 10) == 2


def probe(lab: SshLab, hosts: list[FakeHost], marks: Path, failing: set[str]):  # type: ignore[no-untyped-def]
    """work(host): over SSH, leave a mark that the host started, then fail where asked."""
    by_name = {h.name: h for h in hosts}
    settings = SshSettings(**lab.ssh_settings())

    def work(name: str) -> HostResult:
        h = by_name[name]
        with SshConnection(name, HostConfig(address=h.address, port=h.port), settings) as conn:
            conn.run(["touch", str(marks / name)])
            res = conn.run(["false" if name in failing else "true"], check=False)
        status = Status.FAILED if res.exit_code else Status.SUCCEEDED
        return HostResult(host=name, status=status, data={"exit_code": res.exit_code})

    return work


def test_ctrl_c_starts_no_further_host() -> None:
    """Ctrl-C during a rollout: the hosts already running finish, no queued host starts, and the
    interrupt reaches the caller (whose finally-path lifts maintenance)."""
    import os
    import signal
    import threading
    import time

    started: list[str] = []
    lock = threading.Lock()

    def work(host: str) -> HostResult:
        with lock:
            started.append(host)
            first = len(started) == 1
        if first:
            os.kill(os.getpid(), signal.SIGINT)  # what the terminal's Ctrl-C does
        time.sleep(0.3)
        return HostResult(host=host, status=Status.SUCCEEDED)

    hosts = [f"h{i}" for i in range(12)]
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever an earlier test installed
    try:
        with pytest.raises(KeyboardInterrupt):
            fan_out(hosts, work, FleetConfig(max_concurrency=2))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert 1 <= len(started) <= 3, started  # Executor.map cancels the queued hosts


def test_max_errors_stops_the_rollout(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    names = [h.name for h in fleet]
    failing = {names[1], names[2]}
    res = fan_out(names, probe(ssh_lab, fleet, tmp_path, failing), FleetConfig(serial=1, max_errors=1))
    started = sorted(p.name for p in tmp_path.iterdir())
    assert started == sorted(names[:3])  # after the second failure no new host started
    assert [r.status for r in res.results] == [Status.SUCCEEDED, Status.FAILED, Status.FAILED] + [Status.SKIPPED] * 5
    assert res.results[1].data["exit_code"] == 1 and "max_errors=1" in (res.stopped or "")


def test_canary_and_percent(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    names = [h.name for h in fleet]
    (tmp_path / "a").mkdir()
    res = fan_out(names, probe(ssh_lab, fleet, tmp_path / "a", {names[0]}), FleetConfig(canary=True))
    assert [p.name for p in (tmp_path / "a").iterdir()] == [names[0]]
    assert "canary" in (res.stopped or "") and len(res.skipped) == 7
    (tmp_path / "b").mkdir()
    res = fan_out(names, probe(ssh_lab, fleet, tmp_path / "b", set(names[4:])),
                  FleetConfig(max_errors="25%", serial="50%", max_concurrency=4))
    assert res.batches == [4, 4] and len(res.failed) == 4 and not res.skipped  # 2 tolerated, batch in flight
    res = fan_out(names, probe(ssh_lab, fleet, tmp_path / "b", set(names)), FleetConfig(max_errors=0), enforce=False)
    assert len(res.failed) == 8 and res.stopped is None  # maintenance-off style: every host tried


@step("test.fleet_probe", target=Target.HOSTS, placement=Placement.OUTSIDE)
def fleet_probe(ctx, params, host: str) -> StepOutcome:  # type: ignore[no-untyped-def]
    conn = ctx.host(host)
    conn.run(["touch", conn.path("/started")])
    conn.run(["test", "-e", conn.path("/healthy")])
    return StepOutcome(changed=True, summary="healthy")


def test_executor_stops_rollout_with_per_host_results(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path,
                                                      make_env) -> None:  # type: ignore[no-untyped-def]
    roots = tmp_path / "roots"

    def mutate(cfg: dict) -> None:  # type: ignore[type-arg]
        cfg.update(ssh=ssh_lab.ssh_settings(), hosts=ssh_lab.host_entries(fleet, roots),
                   groups={"fleet": [h.name for h in fleet]}, fleet={"serial": 2, "max_errors": 1})
        cfg["maintenance"]["targets"] = "fleet"

    env = make_env(mutate)
    for h in fleet[:2] + fleet[4:]:
        (roots / h.name / "healthy").touch()  # web-3 and web-4 are broken
    rb = tmp_path / "rollout.yaml"
    rb.write_text(yaml.safe_dump({"name": "rollout", "stages": [{"name": "server-tuning", "steps": [
        {"uses": "test.fleet_probe", "targets": "fleet"}]}]}))
    result = execute(str(env), str(rb))
    assert result.status == Status.FAILED
    started = sorted(h.name for h in fleet if (roots / h.name / "started").exists())
    assert started == [h.name for h in fleet[:4]]  # batches [2, 2]: the third batch never started
    report = result.report()
    step_ev = [e for e in (result.run_dir / "audit.jsonl").read_text().splitlines() if '"step.finished"' in e]
    hosts = yaml.safe_load(step_ev[-1])["data"]["hosts"]
    assert [h["status"] for h in hosts] == ["succeeded"] * 2 + ["failed"] * 2 + ["skipped"] * 4
    failed = hosts[2]
    assert failed["data"]["exit_code"] == 1 and failed["commands"][-1]["argv"][:2] == ["test", "-e"]
    assert "4 host(s) not started" in report["failure"]["error"]
    # the report's per-host view: exit codes, and hosts never started counted as not run (not ok)
    broken, never = report["hosts"][fleet[2].name], report["hosts"][fleet[4].name]
    assert (broken["ok"], broken["failed"], broken["not_run"]) == (0, 1, 0)
    assert broken["results"][0]["exit_code"] == 1 and broken["results"][0]["commands"] == 2
    assert (never["ok"], never["failed"], never["not_run"]) == (0, 0, 1)
    html = (result.run_dir / "report.html").read_text()
    assert "<th class=\"num\">Exit</th>" in html and "0 ok, 1 not run" in html
    md = (result.run_dir / "report.md").read_text()
    assert f"| {fleet[2].name} | server-tuning: " in md and "| failed | 1 |" in md


def test_banner_timeout_and_maxstartups_drop_are_retried(ssh_lab: SshLab, fleet: list[FakeHost],
                                                          tmp_path: Path) -> None:
    """The other transient connect failures: a server that accepts and never speaks (banner timeout)
    and one that closes at once (sshd over MaxStartups). Both retried with backoff, each attempt an
    audit `retry` event; the third attempt gets through."""
    h = fleet[1]
    proxy = FaultProxy((h.address, h.port), ["stall", "drop"])
    (tmp_path / "kh").write_text(f"[127.0.0.1]:{proxy.port} {h.sshd.host_pub}\n")
    settings = SshSettings(**ssh_lab.ssh_settings(known_hosts=[str(tmp_path / "kh")], connect_timeout=1,
                                                  connect_retries=3))
    retries: list[dict[str, object]] = []
    try:
        with SshConnection("flaky", HostConfig(address="127.0.0.1", port=proxy.port), settings) as conn:
            conn.on_retry = lambda **kw: retries.append(kw)
            assert conn.run(["echo", "made it"]).stdout == "made it\n"
            assert conn.connects == 3 and proxy.served == {"stall": 1, "drop": 1}
    finally:
        proxy.close()
    assert [r["attempt"] for r in retries] == [1, 2] and all(r["what"] == "ssh.connect" for r in retries)


def test_transient_failure_retried_auth_failure_not(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    h = fleet[0]
    proxy = FaultProxy((h.address, h.port), ["reset", "reset"])
    (tmp_path / "kh").write_text(f"[127.0.0.1]:{proxy.port} {h.sshd.host_pub}\n")
    settings = SshSettings(**ssh_lab.ssh_settings(known_hosts=[str(tmp_path / "kh")]))
    with SshConnection("flaky", HostConfig(address="127.0.0.1", port=proxy.port), settings) as conn:
        assert conn.run(["echo", "made it"]).stdout == "made it\n"
        assert conn.connects == 3 and proxy.accepted == 3

    from tests.fleet.sshlab import keygen

    stranger_key = keygen(tmp_path / "not-authorized")
    bad = SshSettings(**ssh_lab.ssh_settings(known_hosts=[str(tmp_path / "kh")], identity_file=str(stranger_key)))
    before = proxy.accepted
    with SshConnection("flaky", HostConfig(address="127.0.0.1", port=proxy.port), bad) as conn:
        with pytest.raises(AuthError, match="authentication as root@127.0.0.1"):
            conn.run(["true"])
        assert conn.connects == 1 and proxy.accepted == before + 1
    proxy.sock.close()
