"""The cheap fleet path stays safe: the exec-channel put is atomic, keeps the mode and quotes every
path; the cached, indexed known_hosts still refuses unknown, changed and revoked keys before any
session; AES-GCM is preferred without locking out servers that lack it; command output larger than
the SSH window on both streams is read completely; the fleet path imports nothing it does not need."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import paramiko
import pytest

from pitstop.config import HostConfig, SshSettings
from pitstop.connectors.ssh import SshConnection
from pitstop.errors import ConnectorError, HostKeyError
from pitstop.fleet.hostkeys import KnownHosts, known_hosts
from tests.fleet.sshlab import FakeHost, SshLab, keygen

ROOT = Path(__file__).resolve().parents[2]


def conn_for(lab: SshLab, h: FakeHost, known: Path | None = None) -> SshConnection:
    over = {"known_hosts": [str(known)]} if known else {}
    return SshConnection(h.name, HostConfig(address=h.address, port=h.port), SshSettings(**lab.ssh_settings(**over)))


def pub(path: Path) -> str:
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


# -- the exec-channel put ----------------------------------------------------------------------------------
def test_put_replaces_by_rename_and_keeps_mode(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    target = tmp_path / "etc" / "sysctl.d" / "99-pitstop.conf"
    with conn_for(ssh_lab, fleet[0]) as conn:
        assert conn.put_via == "exec"
        conn.put(str(target), b"old\n", mode=0o600)
        assert target.stat().st_mode & 0o777 == 0o600
        assert target.parent.stat().st_mode & 0o777 == 0o755  # created directories: default umask
        held = target.open("rb")  # a reader holding the old file
        before = target.stat().st_ino
        conn.put(str(target), b"new content\n", mode=0o755)
        assert held.read() == b"old\n"  # never truncated or rewritten in place
        held.close()
        assert target.stat().st_ino != before and target.read_bytes() == b"new content\n"
        assert target.stat().st_mode & 0o777 == 0o755
        assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary file left
        assert not conn.history  # a put is file transfer, not a command of the step


def test_concurrent_reader_sees_whole_files_only(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    target = tmp_path / "big.conf"
    versions = [bytes([65 + i]) * 300_000 for i in range(6)]
    target.write_bytes(versions[0])
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add(target.read_bytes())

    t = threading.Thread(target=reader)
    t.start()
    try:
        with conn_for(ssh_lab, fleet[0]) as conn:
            for data in versions[1:]:
                conn.put(str(target), data)
    finally:
        stop.set()
        t.join()
    assert seen <= set(versions) and target.read_bytes() == versions[-1]


@pytest.mark.parametrize("name", ["with space/it's \"quoted\"", "$(touch {c})/`touch {c}`;x", "new\nline/a b"])
def test_put_hostile_paths_are_quoted(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path, name: str) -> None:
    canary = tmp_path / "canary"
    target = tmp_path / name.format(c=canary) / "f 'x'.conf"
    with conn_for(ssh_lab, fleet[1]) as conn:
        conn.put(str(target), b"v=1\n", mode=0o640)
        assert target.read_bytes() == b"v=1\n" and target.stat().st_mode & 0o777 == 0o640
        assert conn.get(str(target)) == b"v=1\n"
    assert not canary.exists()


def test_put_failures_raise_and_leave_nothing(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    with conn_for(ssh_lab, fleet[1]) as conn:
        with pytest.raises(ConnectorError, match="is a directory"):
            conn.put(str(tmp_path / "adir"), b"data")
        with pytest.raises(ConnectorError, match=r"cannot write .*afile/sub/f\.conf"):
            conn.put(str(tmp_path / "afile" / "sub" / "f.conf"), b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]
    assert list((tmp_path / "adir").iterdir()) == []


def test_sftp_put_still_available(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    target = tmp_path / "s" / "f.conf"
    with conn_for(ssh_lab, fleet[2]) as conn:
        conn.put_via = "sftp"
        conn.put(str(target), b"sftp\n", mode=0o600)
    assert target.read_bytes() == b"sftp\n" and target.stat().st_mode & 0o777 == 0o600


# -- host keys through the cache ---------------------------------------------------------------------------
def accepted_logins(h: FakeHost) -> int:
    return h.sshd.log.count("Accepted publickey")


def test_cache_refuses_changed_and_unknown_keys_without_a_session(
    ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path
) -> None:
    h, other = fleet[3], fleet[4]
    known = tmp_path / "known_hosts"
    known.write_text(h.known_hosts_line + "\n")
    with conn_for(ssh_lab, h, known) as conn:  # warms the cache with the right key
        assert conn.run(["true"]).exit_code == 0
    impostor = keygen(tmp_path / "impostor")
    known.write_text(f"[{h.address}]:{h.port} {pub(impostor)}\n")  # same size class, new content
    logins = accepted_logins(h)
    canary = tmp_path / "canary"
    conn = conn_for(ssh_lab, h, known)
    with pytest.raises(HostKeyError, match="HOST KEY CHANGED"):
        conn.run(["touch", str(canary)])
    conn2 = conn_for(ssh_lab, other, known)  # not in the file at all
    with pytest.raises(HostKeyError, match="not known"):
        conn2.run(["touch", str(canary)])
    assert conn.connects == 1 and conn2.connects == 1 and not canary.exists()
    assert accepted_logins(h) == logins  # refused before authentication: no session


def test_revoked_key_is_refused(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    h = fleet[3]
    known = tmp_path / "known_hosts"
    known.write_text(f"{h.known_hosts_line}\n@revoked * {h.sshd.host_pub}\n")
    with pytest.raises(HostKeyError, match="not known"):
        conn_for(ssh_lab, h, known).run(["true"])


def test_known_hosts_index_matches_paramiko(tmp_path: Path) -> None:
    keys = [keygen(tmp_path / f"k{i}") for i in range(3)]
    plain = tmp_path / "plain"
    plain.write_text(
        "# comment\n\n"
        f"a.example,[b.example]:2222 {pub(keys[0])}\n"
        f"c.example {pub(keys[1])}\n"
        f"c.example {pub(keys[2])}\n"  # second key of the same type: the first wins, as in paramiko
        "garbage line\n"
    )
    hashed = tmp_path / "hashed"
    hashed.write_text(plain.read_text().replace("garbage line\n", ""))
    subprocess.run(["ssh-keygen", "-H", "-f", str(hashed)], check=True, capture_output=True)
    assert "|1|" in hashed.read_text()
    for f in (plain, hashed):
        ours, theirs = KnownHosts(str(f)), paramiko.HostKeys(str(f))
        for name in ("a.example", "[b.example]:2222", "c.example", "b.example", "nope"):
            want = theirs.lookup(name)
            got = ours.lookup(name)
            assert (dict(want) if want else None) == got, (f.name, name)
            assert ours.check(name, _pkey(keys[0])) == theirs.check(name, _pkey(keys[0]))
    marked = tmp_path / "marked"  # marker lines paramiko cannot parse: ignored, the rest still loads
    marked.write_text(f"@cert-authority *.example {pub(keys[1])}\nd.example {pub(keys[0])}\n")
    assert set(KnownHosts(str(marked)).lookup("d.example") or {}) == {"ssh-ed25519"}
    assert KnownHosts(str(marked)).lookup("x.example") is None


def _pkey(path: Path) -> paramiko.PKey:
    return paramiko.PKey.from_path(str(path))


def test_known_hosts_cache_sees_edits(tmp_path: Path) -> None:
    key = keygen(tmp_path / "k")
    f = tmp_path / "known_hosts"
    f.write_text("")
    assert known_hosts([str(f)]).lookup("h") is None
    f.write_text(f"h {pub(key)}\n")
    assert set(known_hosts([str(f)]).lookup("h") or {}) == {"ssh-ed25519"}
    assert known_hosts([str(f)]) is known_hosts([str(f)])  # parsed once per content


# -- transport ---------------------------------------------------------------------------------------------
def test_gcm_preferred_and_other_ciphers_still_work(ssh_lab: SshLab, fleet: list[FakeHost]) -> None:
    with conn_for(ssh_lab, fleet[5]) as conn:
        conn.run(["true"])
        t = conn._transport()
        assert (t.local_cipher, t.remote_cipher) == ("aes128-gcm@openssh.com", "aes128-gcm@openssh.com")
    legacy = ssh_lab.start(1, prefix="ctr-only", extra="Ciphers aes128-ctr\nMACs hmac-sha2-256")[0]
    with conn_for(ssh_lab, legacy) as conn:
        assert conn.run(["echo", "ok"]).stdout == "ok\n"
        assert conn._transport().remote_cipher == "aes128-ctr"


def test_output_beyond_the_window_on_both_streams(ssh_lab: SshLab, fleet: list[FakeHost]) -> None:
    script = "head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 2500000 /dev/zero | tr '\\0' o; echo done >&2"
    with conn_for(ssh_lab, fleet[6]) as conn:
        res = conn.run(["sh", "-c", script])
    assert res.stdout == "o" * 2_500_000 and res.stderr == "e" * 3_000_000 + "done\n"


# -- imports -----------------------------------------------------------------------------------------------
def test_fleet_path_imports_stay_lean(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text('Host alias\n  HostName real.example\nMatch exec "test 1 = 1"\n  User matched\n')
    code = f"""
import sys
from pitstop.process_defaults import cli_process_defaults
cli_process_defaults()  # what the command's entry point (pitstop/entry.py) does for its own process
import pitstop.cli
import pitstop.config, pitstop.connectors, pitstop.fleet.fanout, pitstop.connectors.ssh
heavy = [m for m in ("prefect", "jinja2", "boto3", "botocore", "apprise") if m in sys.modules]
assert not heavy, heavy
assert type(sys.modules["invoke"]).__name__ == "_Deferred"
import paramiko
assert paramiko.SSHConfig.from_path({str(ssh_config)!r}).lookup("alias")["user"] == "matched"  # Match exec
assert type(sys.modules["invoke"]).__name__ == "module"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_importing_pitstop_changes_no_process_state() -> None:
    """A library import (a shared Prefect worker, a script) leaves the environment and sys.modules alone:
    no PYDANTIC_DISABLE_PLUGINS, no stand-in ``invoke`` (only the ``pitstop`` command sets them). Importing
    :mod:`pitstop.cli` too: a test that did once set ``PREFECT_LOGGING_LEVEL`` for every process it started."""
    code = """
import os, sys
before = dict(os.environ)
import pitstop, pitstop.runner, pitstop.connectors.ssh, pitstop.fleet.hostkeys, pitstop.connectors.ssh_transport
import pitstop.registry, pitstop.cli
pitstop.registry.load_plugins()
assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
assert "invoke" not in sys.modules or type(sys.modules["invoke"]).__name__ == "module"
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_handshake_deadline_without_timer_thread() -> None:
    import socket

    from pitstop.connectors.ssh_transport import BufferedSocket, FleetTransport

    a, b = socket.socketpair()
    try:
        t = FleetTransport(BufferedSocket(a))
        before = threading.active_count()
        p = t.packetizer
        assert not p.handshake_timed_out()  # not started
        p.start_handshake(-1)  # a deadline already passed
        assert p.handshake_timed_out() and threading.active_count() == before  # no Timer thread
        p.complete_handshake()
        assert not p.handshake_timed_out()
        b.sendall(b"SSH-2.0-x\r\nrest")  # buffered reads hand out exactly what is asked, in order
        assert t.sock.recv(4) == b"SSH-" and t.sock.recv(100) == b"2.0-x\r\nrest"
        b.close()
        assert t.sock.recv(10) == b""  # EOF still reads as EOF
    finally:
        a.close()
        b.close()
