"""Every root file operation of the host steps, on paths other users control, without a race:
who acts (root or the user who controls the path), what is refused, and what root never touches.

* tuning.logs compress / rotate / delete and disk.reclaim: pitstop/fleet/safefile.py walks the path
  from / and acts as whoever can change it;
* tuning.sysctl reads and replaces its drop-in only where nobody but root can change the path;
* host.script uploads and runs its script only where nobody else could swap it in between;
* sysctl keys end sysctl's options (``--``) and cannot start with ``-``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitstop.connectors.local import LocalConnection
from pitstop.errors import StepFailed
from pitstop.fleet import safefile
from pitstop.fleet.commands import ScriptParams, host_script
from pitstop.fleet.sysctl import SysctlParams, tuning_sysctl
from pitstop.fleet.tuning import LogParams, tuning_logs
from tests.conftest import run_cli
from tests.maintenance.helpers import make_ctx, root_of, write_env

NOBODY = 65534
STRANGER = 4242  # a uid with no passwd entry

root_only = pytest.mark.root  # who acts only matters when pitstop runs as root


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pitstop-rootops-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _ctx(base: Path) -> tuple[Any, Path]:
    env = write_env(base, hosts={"web-1": {"transport": "local", "root": "hosts/web-1"}})
    host = root_of(env, "web-1")
    for p in (base / "state", base / "state/hosts", host):
        p.chmod(0o755)
    return make_ctx(env), host


def _dir(path: Path, mode: int, uid: int = 0, gid: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def _log(path: Path, uid: int, days: float = 0, size: int = 4096, mode: int = 0o644) -> Path:
    path.write_bytes(b"line\n" * (size // 5))
    os.chown(path, uid, uid)
    path.chmod(mode)
    if days:
        t = time.time() - days * 86400
        os.utime(path, (t, t))
    return path


COMPRESS = LogParams(paths=["/var/log/app"], compress_after_days=0, delete_after_days=60)
ROTATE = LogParams(paths=["/var/log/app"], compress_after_days=30, delete_after_days=60, max_size_mb=0.001)


@root_only
def test_in_another_users_directory_the_work_is_done_as_that_user(base: Path) -> None:
    ctx, host = _ctx(base)
    logs = _dir(host / "var/log/app", 0o755, NOBODY, NOBODY)
    _log(logs / "old.log", NOBODY, days=3)
    out = tuning_logs(ctx, COMPRESS, "web-1")
    assert out.data["compressed"] == 1, out.summary
    assert (logs / "old.log.gz").stat().st_uid == NOBODY  # written by nobody, not by root


@root_only
def test_a_root_owned_link_on_the_way_is_followed_and_the_work_done_as_root(base: Path) -> None:
    ctx, host = _ctx(base)
    real = _dir(host / "data/log/app", 0o755)
    (host / "data").chmod(0o755)
    _dir(host / "var", 0o755)
    (host / "var/log").symlink_to("../data/log")  # /var/log -> /data/log, set up by root
    _log(real / "old.log", 0, days=3)
    assert tuning_logs(ctx, COMPRESS, "web-1").data["compressed"] == 1
    assert (real / "old.log.gz").stat().st_uid == 0 and not (real / "old.log").exists()


@root_only
def test_root_files_under_a_directory_another_user_owns_are_refused_not_touched(base: Path) -> None:
    """The configured directory is root's, but its parent belongs to the application's user, who
    could swap it for a link at any moment: root must not act there as root (old code did)."""
    ctx, host = _ctx(base)
    _dir(host / "var/log", 0o755)
    app = _dir(host / "var/log/app", 0o755, NOBODY, NOBODY)
    logs = _dir(app / "sub/logs", 0o755)
    (app / "sub").chmod(0o755)
    big = _log(logs / "big.log", 0, size=8192)
    size = big.stat().st_size
    old = _log(logs / "old.log", 0, days=3)
    archive = _log(logs / "ancient.log.gz", 0, days=90)
    p = {"paths": ["/var/log/app/sub/logs"]}
    rotated = tuning_logs(ctx, ROTATE.model_copy(update=p), "web-1")
    compressed = tuning_logs(ctx, COMPRESS.model_copy(update=p), "web-1")
    deleted = tuning_logs(ctx, LogParams(**p, compress_after_days=1, delete_after_days=30), "web-1")
    assert big.stat().st_size == size and old.exists() and archive.exists()
    assert rotated.data["rotated"] == 0 and compressed.data["compressed"] == 0 and deleted.data["deleted"] == 0
    assert any("65534" in r for r in rotated.data["refused"]), rotated.data
    assert any("65534" in r for r in compressed.data["refused"]), compressed.data
    assert "Permission denied" in " ".join(deleted.data["problems"]), deleted.data  # find ran as nobody


@root_only
@pytest.mark.parametrize("mode,trusted,expect", [(0o775, [], "refused"), (0o775, ["nogroup"], "done"),
                                                  (0o777, ["nogroup"], "refused"), (0o1777, [], "done")])
def test_shared_directories(base: Path, mode: int, trusted: list[str], expect: str) -> None:
    """Group-writable without the sticky bit: anyone in the group could swap a file, so refused unless
    the group is trusted (logrotate's rule); world-writable without it: always refused; sticky: the
    file's owner is the only one who can swap it, so the work is done as that owner."""
    ctx, host = _ctx(base)
    logs = _dir(host / "var/log/app", mode, 0, NOBODY)
    _log(logs / "old.log", NOBODY, days=3)
    out = tuning_logs(ctx, COMPRESS.model_copy(update={"trusted_groups": trusted}), "web-1")
    assert (out.data["compressed"] == 1) == (expect == "done"), out.data
    assert bool(out.data.get("refused")) == (expect == "refused"), out.data


@root_only
def test_a_path_two_users_can_change_is_refused(base: Path) -> None:
    ctx, host = _ctx(base)
    logs = _dir(host / "var/log/app", 0o1777, NOBODY, NOBODY)  # nobody's sticky dir ...
    f = _log(logs / "old.log", STRANGER, days=3)  # ... holding a stranger's log: both could swap it
    out = tuning_logs(ctx, COMPRESS, "web-1")
    assert f.exists() and out.data["compressed"] == 0
    assert "both uid" in " ".join(out.data["refused"])


@root_only
def test_the_final_component_is_never_a_link(base: Path) -> None:
    host = base / "h"
    logs = _dir(host / "logs", 0o755)
    target = _log(base / "secret", 0, mode=0o600)
    (logs / "x.log").symlink_to(target)
    out = safefile.apply(LocalConnection("h", host), "compress", [str(logs / "x.log")])
    assert out.done == [] and "link" in out.refused[0] and target.read_bytes().startswith(b"line")


@root_only
def test_sysctl_dropin_in_a_directory_another_user_controls_is_refused(base: Path) -> None:
    ctx, host = _ctx(base)
    d = _dir(host / "etc/sysctl.d", 0o755, NOBODY, NOBODY)
    secret = _log(base / "secret.env", 0, mode=0o600)
    secret.write_text("db_password = hunter2\n")
    (d / "90-pitstop.conf").symlink_to(secret)  # root would read it into the drop-in it rewrites
    with pytest.raises(StepFailed, match="65534"):
        tuning_sysctl(ctx, SysctlParams(values={"vm.swappiness": 10}), "web-1")
    assert (d / "90-pitstop.conf").is_symlink() and secret.read_text() == "db_password = hunter2\n"
    # a root-only /etc/sysctl.d is fine, even one that does not exist yet
    shutil.rmtree(host / "etc")
    out = tuning_sysctl(ctx, SysctlParams(values={"vm.swappiness": 10}), "web-1")
    assert out.data["file_changed"] and "vm.swappiness = 10" in (host / "etc/sysctl.d/90-pitstop.conf").read_text()


@root_only
def test_a_script_is_never_uploaded_where_another_user_could_swap_it(base: Path) -> None:
    ctx, host = _ctx(base)
    _dir(host / "srv/app/tmp", 0o755, NOBODY, NOBODY)
    canary = base / "ran"
    params = ScriptParams(script=f"touch {canary}\n", remote_dir="/srv/app/tmp")
    with pytest.raises(StepFailed, match="refusing to upload"):
        host_script(ctx, params, "web-1")
    assert not canary.exists() and list((host / "srv/app/tmp").iterdir()) == []
    _dir(host / "var/tmp", 0o1777)  # a sticky shared directory is fine: our file stays ours
    assert host_script(ctx, params.model_copy(update={"remote_dir": "/var/tmp"}), "web-1").changed
    assert canary.exists()


def test_sysctl_keys_end_the_options_of_sysctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real (non-sandbox) local host whose ``sysctl`` records its arguments: ``--`` comes before
    the key. The kernel keeps its value, so the step fails its read-back and writes no drop-in."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "argv"
    (bindir / "sysctl").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    (bindir / "sysctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    env = write_env(tmp_path, hosts={"real": {"transport": "local", "root": "/"}})
    ctx = make_ctx(env)
    live = int(Path("/proc/sys/vm/swappiness").read_text())
    dropin = tmp_path / "90-pitstop.conf"
    with pytest.raises(StepFailed, match="kernel reports"):
        tuning_sysctl(ctx, SysctlParams(values={"vm.swappiness": live + 1}, file=str(dropin)), "real")
    assert record.read_text().splitlines() == ["-q", "-w", "--", f"vm.swappiness={live + 1}"]
    assert not dropin.exists()


@pytest.mark.parametrize("key", ["-p", "--load=/etc/evil", "-a.b"])
def test_a_sysctl_key_like_an_option_is_bad_input_with_file_and_line(make_env: Any, tmp_path: Path,
                                                                     key: str) -> None:
    rb = tmp_path / "sysctl.yaml"
    rb.write_text(yaml.safe_dump({"name": "sysctl", "kind": "custom", "stages": [{"name": "server-tuning", "steps": [
        {"uses": "tuning.sysctl", "targets": "app", "with": {"values": {key: "1"}}}]}]}, sort_keys=False))
    res = run_cli("validate", "--env", str(make_env()), "--runbook", str(rb))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "sysctl.yaml:" in res.stderr and "Traceback" not in res.stderr


def test_new_files_keep_the_logs_mode(tmp_path: Path) -> None:
    """A rotated copy holds the log's content: it keeps the log's mode (0600 stays 0600)."""
    d = tmp_path / "logs"
    d.mkdir()
    f = d / "app.log"
    f.write_bytes(b"private\n" * 100)
    f.chmod(0o600)
    out = safefile.apply(LocalConnection("h", tmp_path), "rotate", [str(f)], "STAMP")
    assert out.done == [str(f)], out
    copy = d / "app.log.STAMP.gz"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and gzip.decompress(copy.read_bytes()) == b"private\n" * 100
    assert f.stat().st_size == 0
