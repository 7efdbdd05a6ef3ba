"""Batches (``Connection.run_batch``) over real OpenSSH: several ops in one session give exactly the
results the ops give one by one (the local transport's sequential batch is the reference), stop at the
first failure, keep each op on its own (subshells, stdin), honour timeouts and sudo, and quote every
value as ``run`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_fleet_ssh import HOSTILE, conn_for

from pitstop.connectors.base import Cmd, Connection, Put
from pitstop.connectors.local import LocalConnection
from pitstop.connectors.ssh import SshConnection
from pitstop.errors import CommandFailed, ConnectorError
from tests.fleet.sshlab import FakeHost, SshLab


def sessions(conn: SshConnection) -> list[str]:
    """Count the exec sessions the connection opens (a spy around the real call)."""
    seen: list[str] = []
    real = conn._call

    def spy(cmd: str, *a: Any, **kw: Any) -> Any:
        seen.append(cmd)
        return real(cmd, *a, **kw)

    conn._call = spy  # type: ignore[method-assign]
    return seen


def ops_for(put_base: str, base: str) -> list[Cmd | Put]:
    """The same work for both transports: ``put_base`` is the host path, ``base`` where it really is."""
    return [
        Put(f"{put_base}/etc/99-bench.conf", b"net.core.somaxconn = 4096\n", mode=0o640),
        Cmd(["sh", "-c", f"cat {base}/etc/99-bench.conf; stat -c %a {base}/etc/99-bench.conf"]),
        Cmd(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False),
        Cmd(["printf", "%s", "no newline at the end"]),
        Cmd(["sh", "-c", "printf 'two\\nlines'; printf 'e1\\ne2' >&2"]),
        Cmd(["sh", "-c", "cat; echo read-nothing"]),  # stdin is /dev/null for commands
        Cmd(["sh", "-c", "exit 255"], check=False),
    ]


def shape(results: list[Any]) -> list[Any]:
    return [None if r is None else (r.exit_code, r.stdout, r.stderr) for r in results]


def test_one_session_same_results_as_one_by_one(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    local = LocalConnection("local", tmp_path / "sandbox")
    want = shape(local.run_batch(ops_for("", local.path("/"))))
    assert want[1] == (0, "net.core.somaxconn = 4096\n640\n", "")
    with conn_for(ssh_lab, fleet[0]) as conn:
        seen = sessions(conn)
        got = conn.run_batch(ops_for(str(tmp_path / "remote"), str(tmp_path / "remote")))
        assert len(seen) == 1  # seven ops, one exec session
        assert shape(got) == want
        assert [c["exit_code"] for c in conn.history] == [0, 3, 0, 0, 0, 255]
        assert [p.name for p in (tmp_path / "remote" / "etc").iterdir()] == ["99-bench.conf"]  # no temp file
        assert conn.run_batch([]) == [] and len(seen) == 1


@pytest.mark.parametrize("make", ["local", "ssh"])
def test_first_failure_stops_the_batch(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path, make: str) -> None:
    canary = tmp_path / "canary"
    conn: Connection = (LocalConnection("local", tmp_path / "sandbox") if make == "local"
                        else conn_for(ssh_lab, fleet[1]))
    with conn:
        with pytest.raises(CommandFailed) as exc:
            conn.run_batch([Cmd(["true"]), Cmd(["sh", "-c", "echo why >&2; exit 4"]), Cmd(["touch", str(canary)])])
        assert exc.value.exit_code_seen == 4 and exc.value.stderr == "why\n" and not canary.exists()
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        target = f"{blocker}/sub/f.conf" if make == "ssh" else "/a-file/sub/f.conf"
        if make == "local":
            (tmp_path / "sandbox" / "a-file").write_text("x")
        with pytest.raises((ConnectorError, OSError)) as err:
            conn.run_batch([Put(target, b"data"), Cmd(["touch", str(canary)])])
        if make == "ssh":
            assert "cannot write" in str(err.value) and "Not a directory" in str(err.value)
        assert not canary.exists()


def test_each_op_in_its_own_subshell(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    with conn_for(ssh_lab, fleet[2]) as conn:
        res = conn.run_batch([Cmd(["exit", "7"], check=False), Cmd(["cd", "/"]), Cmd(["pwd"]),
                              Cmd(["umask", "000"]), Cmd(["umask"])])
        assert res[0] is not None and res[0].exit_code == 7  # `exit` left its subshell, not the batch
        assert res[2] is not None and res[2].stdout == conn.run(["pwd"]).stdout != "/\n"  # `cd` stayed in its own
        assert res[4] is not None and res[4].stdout.strip() != "0000"
        # An op that prints the whole batch script (as `ps` would) cannot fake the marker.
        res = conn.run_batch([Cmd(["sh", "-c", "tr '\\0' ' ' < /proc/$PPID/cmdline"]), Cmd(["echo", "next"])])
        assert res[0] is not None and "@pitstop-" in res[0].stdout and "printf" in res[0].stdout
        assert res[1] is not None and res[1].stdout == "next\n"


def test_batch_timeout_names_the_op(ssh_lab: SshLab, fleet: list[FakeHost]) -> None:
    with conn_for(ssh_lab, fleet[3]) as conn:
        with pytest.raises(CommandFailed) as exc:
            conn.run_batch([Cmd(["echo", "a"], timeout=0.5), Cmd(["sleep", "30"], timeout=0.5), Cmd(["echo", "b"])])
        assert exc.value.argv == ["sleep", "30"] and exc.value.exit_code_seen == 124
        assert "timed out" in str(exc.value)
        assert [c["argv"] for c in conn.history] == [["echo", "a"], ["sleep", "30"]]
        assert conn.run(["echo", "still usable"]).stdout == "still usable\n"


def test_hostile_values_in_batches_never_executed(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    values = [v.format(c=canary) for v in HOSTILE]
    for sudo in (False, True):
        with conn_for(ssh_lab, fleet[4], sudo=sudo) as conn:
            odd = tmp_path / f"odd {sudo} $(touch {canary}) ;`y`'\"\n"
            ops: list[Cmd | Put] = [Put(str(odd / values[0]), b"data")]
            ops += [Cmd(["printf", "%s", v]) for v in values]
            res = conn.run_batch(ops)
            assert [r.stdout for r in res[1:] if r is not None] == values
            assert (odd / values[0]).read_bytes() == b"data"
            if sudo:
                assert conn.run_batch([Cmd(["printenv", "SUDO_USER"])])[0].stdout == "root\n"  # type: ignore[union-attr]
    assert not canary.exists()
    assert not (Path(ssh_lab.home) / "y").exists()


def test_one_put_per_batch(ssh_lab: SshLab, fleet: list[FakeHost], tmp_path: Path) -> None:
    with conn_for(ssh_lab, fleet[5]) as conn:
        seen = sessions(conn)
        with pytest.raises(ConnectorError, match="at most one put"):
            conn.run_batch([Put(str(tmp_path / "a"), b"1"), Put(str(tmp_path / "b"), b"2")])
        assert not seen and not (tmp_path / "a").exists()


def test_each_op_gets_its_own_duration(ssh_lab: SshLab, fleet: list[FakeHost]) -> None:
    with conn_for(ssh_lab, fleet[6]) as conn:
        slow, fast = conn.run_batch([Cmd(["sleep", "0.4"]), Cmd(["true"])])
        assert slow is not None and fast is not None
        assert slow.duration_s >= 0.4 > fast.duration_s
        assert [c["duration_s"] for c in conn.history] == [round(slow.duration_s, 3), round(fast.duration_s, 3)]
