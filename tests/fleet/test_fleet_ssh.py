"""SshConnection over real OpenSSH: commands, stdin, exit codes, timeouts, sudo, SFTP files,
one connection reused, and hostile values that must never reach a shell unquoted."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitstop.config import HostConfig, SshSettings
from pitstop.connectors.ssh import SshConnection
from pitstop.errors import CommandFailed
from tests.fleet.sshlab import FakeHost, SshLab

HOSTILE = ["; touch {c}", "$(touch {c})", "`touch {c}`", "' ; touch {c} '", '" ; touch {c} "',
           "\ntouch {c}\n", "a && touch {c}", "| touch {c}", "$((1+1)) ${{HOME}} > {c}"]


def conn_for(lab: SshLab, h: FakeHost, **over: object) -> SshConnection:
    host = HostConfig(transport="ssh", address=h.address, port=h.port, **over)  # type: ignore[arg-type]
    return SshConnection(h.name, host, SshSettings(**lab.ssh_settings()))


def test_commands_stdin_exit_codes_and_one_connection(ssh_lab: SshLab, fleet: list[FakeHost]) -> None:
    with conn_for(ssh_lab, fleet[0]) as conn:
        assert conn.connects == 0  # lazy: nothing happens before first use
        res = conn.run(["sh", "-c", 'echo out; echo err >&2; exit 3'], check=False)
        assert (res.exit_code, res.stdout, res.stderr) == (3, "out\n", "err\n")
        with pytest.raises(CommandFailed) as exc:
            conn.run(["false"])
        assert exc.value.exit_code_seen == 1 and exc.value.host == fleet[0].name
        assert conn.run(["cat"], input=b"x" * 300_000).stdout == "x" * 300_000
        assert conn.run(["sh", "-c", "printenv HOME"]).stdout.strip() == str(ssh_lab.home)
        assert conn.connects == 1  # reused for every command
        assert [c["exit_code"] for c in conn.history] == [3, 1, 0, 0]


def _running(pattern: str) -> list[str]:
    import subprocess

    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()


def test_command_timeout_stops_the_remote_command(ssh_lab: SshLab, fleet: list[FakeHost]) -> None:
    """A timed-out command does not keep running on the host (a quiet one would survive the closed
    channel): the session's process group gets TERM, children included; the connection stays usable."""
    import time

    with conn_for(ssh_lab, fleet[0]) as conn:
        with pytest.raises(CommandFailed) as exc:
            conn.run(["sh", "-c", "sleep 30.4321 & sleep 30.4322; wait"], timeout=0.5)
        assert exc.value.exit_code_seen == 124
        deadline = time.monotonic() + 5
        while _running("sleep 30.432") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _running("sleep 30.432") == []
        # a batch op running out of time is stopped the same way
        from pitstop.connectors.base import Cmd

        with pytest.raises(CommandFailed):
            conn.run_batch([Cmd(["echo", "first"]), Cmd(["sleep", "30.4323"], timeout=0.5)])
        deadline = time.monotonic() + 5
        while _running("sleep 30.4323") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _running("sleep 30.4323") == []
        assert conn.run(["echo", "still usable"]).stdout == "still usable\n"


def test_put_get_exists_remove_atomic(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    target = tmp_path / "deep" / "dir" / "sysctl.conf"
    with conn_for(ssh_lab, fleet[1]) as conn:
        assert not conn.exists(str(target))
        conn.put(str(target), b"vm.swappiness = 10\n", mode=0o640)
        assert target.read_bytes() == b"vm.swappiness = 10\n"
        assert target.stat().st_mode & 0o777 == 0o640
        conn.put(str(target), b"v2\n")
        assert conn.get(str(target)) == b"v2\n"
        assert [p.name for p in target.parent.iterdir()] == ["sysctl.conf"]  # no temp file left
        assert conn.exists(str(target)) and conn.remove(str(target)) and not conn.remove(str(target))


def test_root_prefix_maps_host_paths(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    with conn_for(ssh_lab, fleet[2], root=str(tmp_path / "h")) as conn:
        conn.put("/var/www/maintenance.flag", b"on")
        assert (tmp_path / "h/var/www/maintenance.flag").read_bytes() == b"on"
        assert conn.path("/var/log") == f"{tmp_path}/h/var/log"


def test_sudo_prefix(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    with conn_for(ssh_lab, fleet[3]) as conn:
        assert conn.run(["printenv", "SUDO_USER"], check=False).stdout == ""
        assert conn.run(["printenv", "SUDO_USER"], sudo=True).stdout == "root\n"
    with conn_for(ssh_lab, fleet[3], sudo=True) as conn:  # configured: every command and file op
        assert conn.run(["printenv", "SUDO_COMMAND"]).stdout.startswith("/usr/bin/printenv")
        conn.put(str(tmp_path / "s" / "f.txt"), b"via sudo")
        assert conn.get(str(tmp_path / "s" / "f.txt")) == b"via sudo"
        assert conn.remove(str(tmp_path / "s" / "f.txt")) and not conn.exists(str(tmp_path / "s" / "f.txt"))


def test_hostile_values_never_executed(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    values = [v.format(c=canary) for v in HOSTILE]
    for sudo in (False, True):
        with conn_for(ssh_lab, fleet[4]) as conn:
            for v in values:
                assert conn.run(["echo", v], sudo=sudo).stdout == v + "\n"
                assert conn.run(["printf", "%s", v], sudo=sudo).stdout == v
            odd = tmp_path / "odd $(touch x) ;`y`'\"\n"
            conn.put(str(odd / "f"), b"data")
            assert (odd / "f").read_bytes() == b"data" and conn.exists(str(odd / "f"))
    with conn_for(ssh_lab, fleet[4], sudo=True) as conn:
        conn.put(str(tmp_path / values[1]), b"sudo put")  # file ops through sudo are argv too
        assert conn.get(str(tmp_path / values[1])) == b"sudo put"
    assert not canary.exists()
    assert not (Path(ssh_lab.home) / "x").exists()


def test_passphrase_protected_key_is_used_through_the_agent(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A passphrase-protected IdentityFile whose key sits in a real ssh-agent: pitstop never asks for
    the passphrase; it authenticates through the agent, and without one says what to do."""
    import os
    import shutil
    import subprocess
    import time

    from pitstop.connectors.ssh import AuthError

    h = fleet[3]
    protected = tmp_path / "id_protected"
    shutil.copy(ssh_lab.user_key, protected)
    protected.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "correct horse", "-f", str(protected)], check=True,
                   capture_output=True)
    host = HostConfig(transport="ssh", address=h.address, port=h.port)
    settings = SshSettings(**ssh_lab.ssh_settings(identity_file=str(protected), agent=True))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with SshConnection(h.name, host, settings) as conn, pytest.raises(AuthError, match="protected by a passphrase"):
        conn.run(["true"])
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        key = tmp_path / "id_plain"  # ssh-add refuses group-readable keys
        shutil.copy(ssh_lab.user_key, key)
        key.chmod(0o600)
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)}, check=True,
                       capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        with SshConnection(h.name, host, settings) as conn:
            assert conn.run(["echo", "via the agent"]).stdout == "via the agent\n"
    finally:
        agent.terminate()
        agent.wait(timeout=10)
