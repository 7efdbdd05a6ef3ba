"""Tuning steps over the local transport (sandbox hosts): each changes what it should, says so in
its plan beforehand, and changes nothing on a second run."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest

from pitstop.errors import CommandFailed, StepFailed
from pitstop.fleet.commands import CommandParams, ScriptParams, host_command, host_script
from pitstop.fleet.packages import PackagesParams, packages_update
from pitstop.fleet.reclaim import ReclaimParams, disk_reclaim, plan_reclaim
from pitstop.fleet.sysctl import HEADER, SysctlParams, plan_sysctl, tuning_sysctl
from pitstop.fleet.tuning import LogParams, plan_logs, tuning_logs
from pitstop.registry import get_step
from tests.maintenance.helpers import make_ctx, root_of, set_mtime, write_env


@pytest.fixture
def env(tmp_path: Path) -> Path:
    return write_env(tmp_path)


def _file(path: Path, days: float, size: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    set_mtime(path, days)
    return path


def test_logs_compress_rotate_delete_then_idempotent(env: Path) -> None:
    logs = root_of(env, "web-1") / "var/log/app"
    live = _file(logs / "app.log", 0, size=3 * 1024 * 1024)
    small = _file(logs / "worker.log", 0)
    old = _file(logs / "app-3d.log", 3)
    ancient = _file(logs / "app-60d.log", 60)
    stale = _file(logs / "app-45d.log.gz", 45)
    recent_gz = _file(logs / "app-5d.log.gz", 5)
    ctx = make_ctx(env)
    params = LogParams(paths=["/var/log/app"], compress_after_days=1, delete_after_days=30, max_size_mb=1)
    assert plan_logs(ctx, params, "web-1") == ["compress 1 log file(s), rotate 1 oversized, delete 2 old archive(s)"]
    out = tuning_logs(ctx, params, "web-1")
    assert out.changed and out.data == {"compressed": 1, "rotated": 1, "deleted": 2, "journal_freed": None}
    assert not old.exists() and gzip.decompress(Path(str(old) + ".gz").read_bytes()) == b"x" * 100
    assert not ancient.exists() and not stale.exists() and recent_gz.exists() and small.stat().st_size == 100
    assert live.stat().st_size == 0
    rotated = list(logs.glob("app.log.*.gz"))
    assert len(rotated) == 1 and len(gzip.decompress(rotated[0].read_bytes())) == 3 * 1024 * 1024
    again = tuning_logs(ctx, params, "web-1")
    assert not again.changed and again.summary == "0 compressed, 0 rotated, 0 deleted"
    assert plan_logs(ctx, params, "web-1")[0].startswith("compress 0 log file(s), rotate 0")


def test_logs_without_compression_and_journal_skipped_on_sandbox(env: Path) -> None:
    logs = root_of(env, "web-1") / "var/log/app"
    old = _file(logs / "a.log", 40)
    keep = _file(logs / "b.log", 3)
    ctx = make_ctx(env)
    params = LogParams(paths=["/var/log/app", "/var/log/missing"], compress=False, delete_after_days=30,
                       journal_vacuum_time="14d")
    assert "journal vacuum skipped (sandbox host)" in plan_logs(ctx, params, "web-1")
    assert tuning_logs(ctx, params, "web-1").data["deleted"] == 1
    assert not old.exists() and keep.exists()
    assert not tuning_logs(ctx, params, "web-1").changed


def test_sysctl_sandbox_writes_dropin_reports_old_values_idempotent(env: Path) -> None:
    root = root_of(env, "web-1")
    dropin = root / "etc/sysctl.d/90-pitstop.conf"
    dropin.parent.mkdir(parents=True)
    dropin.write_text("# by hand\nvm.swappiness = 10\n")
    live = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    ctx = make_ctx(env)
    params = SysctlParams(values={"net.core.somaxconn": 1024, "net.ipv4.tcp_rmem": "4096\t87380   6291456"})
    plan = plan_sysctl(ctx, params, "web-1")
    assert "live values not applied (sandbox or apply: false)" in plan and "write /etc/sysctl.d/90-pitstop.conf" in plan
    out = tuning_sysctl(ctx, params, "web-1")
    assert out.changed and out.data["applied"] is False and out.data["file_changed"] is True
    assert out.data["values"]["net.core.somaxconn"] == {"old": live, "new": "1024", "live": live, "set": False}
    assert dropin.read_text() == HEADER + ("net.core.somaxconn = 1024\nnet.ipv4.tcp_rmem = 4096 87380 6291456\n"
                                           "vm.swappiness = 10\n")
    assert Path("/proc/sys/net/core/somaxconn").read_text().strip() == live  # this machine untouched
    again = tuning_sysctl(ctx, params, "web-1")
    assert not again.changed and plan_sysctl(ctx, params, "web-1")[-1].endswith("already up to date")


def test_sysctl_rejects_values_that_would_inject_lines_or_paths() -> None:
    with pytest.raises(ValueError):
        SysctlParams(values={"kernel.x": "1\nkernel.core_pattern = |/bin/sh"})
    with pytest.raises(ValueError):
        SysctlParams(values={"../../etc/passwd": "1"})


def test_sysctl_apply_true_on_sandbox_fails_cleanly(env: Path) -> None:
    ctx = make_ctx(env)
    with pytest.raises(StepFailed, match="sandbox"):
        tuning_sysctl(ctx, SysctlParams(values={"vm.swappiness": 10}, apply=True), "web-1")
    assert not (root_of(env, "web-1") / "etc/sysctl.d/90-pitstop.conf").exists()


def test_logs_never_compress_a_log_a_process_still_has_open(env: Path) -> None:
    """A quiet daemon may still hold an old log open: compressing it (gzip writes .gz and unlinks the
    original) would send its next lines to a deleted file. It is left for a later run, and said so."""
    logs = root_of(env, "web-1") / "var/log/app"
    held = _file(logs / "quiet-daemon.log", 5)
    done = _file(logs / "rotated-3d.log", 3)
    ctx = make_ctx(env)
    params = LogParams(paths=["/var/log/app"], compress_after_days=1)
    with held.open("a") as daemon:
        plan = plan_logs(ctx, params, "web-1")
        assert plan[0].startswith("compress 1 log file(s)") and "still open" in plan[1], plan
        out = tuning_logs(ctx, params, "web-1")
        assert out.data["compressed"] == 1 and out.data["still_open"] == [str(held)]
        assert "1 old log(s) still open" in out.summary
        daemon.write("a late line\n")
    assert held.read_text().endswith("a late line\n") and not done.exists()  # nothing lost
    set_mtime(held, 5)  # quiet again, and closed: compressed on the next run
    out = tuning_logs(ctx, params, "web-1")
    assert out.data["compressed"] == 1 and "still_open" not in out.data and not held.exists()


def test_reclaim_package_caches_and_old_temp_then_idempotent(env: Path) -> None:
    root = root_of(env, "web-2")
    deb = _file(root / "var/cache/apt/archives/foo_1.0_amd64.deb", 0, 2048)
    lock = _file(root / "var/cache/apt/archives/lock", 0)
    old_tmp = _file(root / "tmp/session-abc/old.bin", 10, 4096)
    new_tmp = _file(root / "var/tmp/fresh", 1)
    ctx = make_ctx(env)
    params = ReclaimParams(temp_older_than_days=7)
    assert plan_reclaim(ctx, params, "web-2") == ["remove 2 file(s), free 6.0KiB"]
    out = disk_reclaim(ctx, params, "web-2")
    assert out.changed and out.data == {"files": 2, "bytes": 6144}
    assert not deb.exists() and not old_tmp.exists() and lock.exists() and new_tmp.exists()
    assert not disk_reclaim(ctx, params, "web-2").changed


def test_reclaim_keeps_private_tmp_and_never_follows_a_swapped_directory(env: Path) -> None:
    """Running as root in a world-writable /tmp: another user may swap a directory for a symlink
    between a listing and the deletion. Here the swap happens right after the first `find` returns
    (the window a list-then-rm step has); the file outside /tmp must survive."""
    root = root_of(env, "web-2")
    private = _file(root / "tmp/systemd-private-abc-nginx.service-x/tmp/old.sock", 30)
    _file(root / "tmp/evil/passwd", 30)
    outside = _file(root / "etc/passwd", 30)
    ctx = make_ctx(env)
    conn = ctx.host("web-2")
    real_run = conn.run

    def run_then_swap(argv: list[str], **kw: object) -> object:
        out = real_run(argv, **kw)  # type: ignore[arg-type]
        evil = root / "tmp/evil"
        if argv[0] == "find" and evil.is_dir() and not evil.is_symlink():
            (evil / "passwd").unlink(missing_ok=True)
            evil.rmdir()
            evil.symlink_to(root / "etc")
        return out

    conn.run = run_then_swap  # type: ignore[method-assign]
    out = disk_reclaim(ctx, ReclaimParams(package_caches=False, temp_dirs=["/tmp"]), "web-2")
    assert outside.exists() and outside.read_bytes() == b"x" * 100
    assert private.exists()
    assert out.data["files"] == 1  # tmp/evil/passwd, deleted before the swap


def test_command_and_script_guards_and_exit_codes(env: Path) -> None:
    root = root_of(env, "web-1")
    ctx = make_ctx(env)
    p = CommandParams(argv=["touch", "done-marker"], creates="/done-marker")
    assert host_command(ctx, p, "web-1").changed and (root / "done-marker").exists()
    assert host_command(ctx, p, "web-1").summary == "skipped: /done-marker exists"
    assert host_command(ctx, CommandParams(argv=["sh", "-c", "exit 3"], expect_exit=[0, 3]), "web-1").changed
    with pytest.raises(CommandFailed, match="exited 3"):
        host_command(ctx, CommandParams(argv=["sh", "-c", "exit 3"]), "web-1")
    script = ScriptParams(script="#!/bin/sh\necho \"$1\" >> ran.txt\n", args=["hello"],
                          unless=["grep", "-q", "hello", "ran.txt"])
    assert host_script(ctx, script, "web-1").changed
    assert not host_script(ctx, script, "web-1").changed
    assert (root / "ran.txt").read_text() == "hello\n"
    assert not list((root / "var/tmp").glob("pitstop-*"))  # the uploaded script is removed
    py = ScriptParams(script="import sys; sys.exit(4)", interpreter=[sys.executable], expect_exit=[4])
    assert host_script(ctx, py, "web-1").data["exit_code"] == 4


def test_packages_on_sandbox_change_nothing(env: Path) -> None:
    ctx = make_ctx(env)
    out = packages_update(ctx, PackagesParams(), "web-1")
    assert not out.changed and "sandbox" in out.summary
    info = get_step("packages.update")
    assert info.plan is not None and info.plan(ctx, PackagesParams(), "web-1") == ["sandbox host: nothing to update"]
