"""Host keys are verified: unknown and changed keys refused before anything runs; `pitstop hosts
trust` pins keys explicitly showing SHA256 fingerprints (the same ones ssh-keygen prints)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pitstop.config import HostConfig, SshSettings
from pitstop.connectors.ssh import SshConnection
from pitstop.errors import HostKeyError
from tests.conftest import run_cli
from tests.fleet.sshlab import FakeHost, SshLab, keygen


def keygen_fingerprint(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


def settings(lab: SshLab, known_hosts: Path) -> SshSettings:
    return SshSettings(**lab.ssh_settings(known_hosts=[str(known_hosts)]))


@pytest.fixture(scope="module")
def strangers(ssh_lab: SshLab) -> list[FakeHost]:
    return ssh_lab.start(2, prefix="stranger", trusted=False)


def test_unknown_host_key_refused(ssh_lab: SshLab, strangers: list[FakeHost], tmp_path: Path) -> None:
    h = strangers[0]
    canary = tmp_path / "canary"
    conn = SshConnection(h.name, HostConfig(address=h.address, port=h.port), SshSettings(**ssh_lab.ssh_settings()))
    with pytest.raises(HostKeyError) as exc:
        conn.run(["touch", str(canary)])
    msg = str(exc.value)
    assert h.name in msg and f"[{h.address}]:{h.port}" in msg and "not known" in msg
    assert keygen_fingerprint(h.sshd.host_key.with_suffix(".pub")) in msg
    assert conn.connects == 1  # never retried
    assert not canary.exists()


def test_changed_host_key_refused(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    h = fleet[5]
    impostor = keygen(tmp_path / "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(f"[{h.address}]:{h.port} " + " ".join(impostor.with_suffix(".pub").read_text().split()[:2])
                     + "\n")
    canary = tmp_path / "canary"
    conn = SshConnection(h.name, HostConfig(address=h.address, port=h.port), settings(ssh_lab, known))
    with pytest.raises(HostKeyError) as exc:
        conn.run(["touch", str(canary)])
    msg = str(exc.value)
    assert "HOST KEY CHANGED" in msg and h.name in msg
    assert keygen_fingerprint(h.sshd.host_key.with_suffix(".pub")) in msg  # the key seen
    assert keygen_fingerprint(impostor.with_suffix(".pub")) in msg  # the key pinned
    assert conn.connects == 1 and not canary.exists()


def test_trust_pins_fingerprints_then_check_passes(ssh_lab: SshLab, strangers: list[FakeHost], tmp_path: Path,
                                                   write_env) -> None:  # type: ignore[no-untyped-def]
    known = tmp_path / "pinned" / "known_hosts"
    cfg = ssh_lab.config(strangers, tmp_path / "state")
    cfg["ssh"]["known_hosts"] = [str(known)]
    env = str(write_env(cfg))
    before = run_cli("hosts", "check", "fleet", "--env", env, "--json")
    assert before.returncode == 1
    assert all(r["status"] == "failed" and "not known" in r["error"] for r in json.loads(before.stdout))

    res = run_cli("hosts", "trust", "fleet", "--env", env, "--yes")
    assert res.returncode == 0, res.stderr
    fp = keygen_fingerprint(strangers[0].sshd.host_key.with_suffix(".pub"))
    assert fp in res.stdout and "pinned 2 key(s)" in res.stdout
    assert known.read_text().count("ssh-ed25519") == 2
    assert {line.split()[0] for line in known.read_text().splitlines()} == {
        f"[{h.address}]:{h.port}" for h in strangers}

    again = run_cli("hosts", "trust", "fleet", "--env", env, "--json")
    assert {r["status"] for r in json.loads(again.stdout)} == {"already pinned"}
    listed = json.loads(run_cli("hosts", "list", "--env", env, "--json").stdout)
    assert listed[0]["host_key"] == [f"ssh-ed25519 {fp}"]
    after = run_cli("hosts", "check", "fleet", "--env", env, "--json")
    assert after.returncode == 0, after.stdout
    assert {r["status"] for r in json.loads(after.stdout)} == {"succeeded"}


def test_trust_refuses_to_replace_a_changed_key(ssh_lab: SshLab, strangers: list[FakeHost], tmp_path: Path,
                                                write_env) -> None:  # type: ignore[no-untyped-def]
    known = tmp_path / "known_hosts"
    impostor = keygen(tmp_path / "impostor")
    h = strangers[1]
    known.write_text(f"[{h.address}]:{h.port} " + " ".join(impostor.with_suffix(".pub").read_text().split()[:2])
                     + "\n")
    before = known.read_text()
    cfg = ssh_lab.config(strangers, tmp_path / "state")
    cfg["ssh"]["known_hosts"] = [str(known)]
    res = run_cli("hosts", "trust", "fleet", "--env", str(write_env(cfg)), "--yes")
    assert res.returncode == 1
    assert "CHANGED" in res.stdout and "nothing was written" in res.stderr
    assert known.read_text() == before


def test_trust_compares_like_with_like_and_refuses_a_vanished_key_type(
        ssh_lab: SshLab, strangers: list[FakeHost], tmp_path: Path, write_env) -> None:  # type: ignore[no-untyped-def]
    """A host with an ECDSA key pinned is asked for ECDSA first (not shown as a new ed25519 key to
    pin next to it); a host whose pinned key type is no longer offered is refused like a changed key."""
    ecdsa = tmp_path / "ssh_host_ecdsa_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(ecdsa)], check=True)
    two = ssh_lab.start(1, prefix="twokeys", trusted=False, extra=f"HostKey {ecdsa}")[0]  # + the lab's ed25519
    gone = strangers[0]  # ed25519 only
    other = tmp_path / "other_ecdsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"

    def pub(path: Path) -> str:
        return " ".join(path.with_suffix(".pub").read_text().split()[:2])

    known.write_text(f"[{two.address}]:{two.port} {pub(ecdsa)}\n[{gone.address}]:{gone.port} {pub(other)}\n")
    before = known.read_text()
    cfg = ssh_lab.config([two, gone], tmp_path / "state")
    cfg["ssh"]["known_hosts"] = [str(known)]
    env = str(write_env(cfg))
    res = run_cli("hosts", "trust", two.name, "--env", env, "--yes", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [(r["type"], r["status"]) for r in json.loads(res.stdout)] == [("ecdsa-sha2-nistp256", "already pinned")]
    res = run_cli("hosts", "trust", gone.name, "--env", env, "--yes")
    assert res.returncode == 1 and "CHANGED" in res.stdout and "nothing was written" in res.stderr
    assert known.read_text() == before
    empty = run_cli("hosts", "trust", "nosuchgroup", "--env", env, "--yes")
    assert empty.returncode == 2 and "unknown host group" in empty.stderr
