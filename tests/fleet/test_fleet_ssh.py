"""SshConnection over real OpenSSH: commands, stdin, exit codes, timeouts, sudo, SFTP files,
one connection reused, and hostile values that must never reach a shell unquoted."""

from __future__ import annotations

from pathlib import Path

import pytest
from sshlab import FakeHost, SshLab

from pitstop.config import HostConfig, SshSettings
from pitstop.connectors.ssh import SshConnection
from pitstop.errors import CommandFailed

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


def test_command_timeout(ssh_lab: SshLab, fleet: list[FakeHost]) -> None:
    with conn_for(ssh_lab, fleet[0]) as conn:
        with pytest.raises(CommandFailed) as exc:
            conn.run(["sleep", "30"], timeout=0.5)
        assert exc.value.exit_code_seen == 124
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
