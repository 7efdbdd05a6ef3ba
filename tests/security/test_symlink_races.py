"""Log rotation as root in a directory another user owns: a symlink swapped in at any moment.

The audit's attack: ``tuning.logs`` listed big logs with ``find``, then ran ``cp -p``, ``truncate`` and
``gzip -f`` on the same path several commands later; a symlink to a root-owned 0600 file swapped in
between made root truncate it and copy its content into the attacker's directory. Here a racer swaps
the log for such a symlink in a tight loop while the real step runs, again and again, for each root
file operation (rotate: copy+truncate+compress; compress) — and, for the old code path, the same race
is what truncated the target on the first try. The target must never change, and its content must
never appear in the attacker's directory.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitstop.steps.tuning import LogParams, tuning_logs
from tests.maintenance.helpers import make_ctx, root_of, write_env
from tests.reliability.results import record

ATTEMPTS = 12  # per operation and per ownership case; each is one full run of the step
SECRET = b"root-only secret " * 64
NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attack needs root to be worth anything")


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pitstop-race-"))
    d.chmod(0o755)  # the attacker (nobody) must be able to reach its own directory
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Racer(threading.Thread):
    """Swaps ``log`` for a symlink to ``target`` and back, as fast as it can."""

    def __init__(self, log: Path, target: Path):
        super().__init__(daemon=True)
        self.log, self.target, self.stop, self.swaps = log, target, threading.Event(), 0

    def run(self) -> None:
        aside = self.log.with_name(self.log.name + ".aside")
        while not self.stop.is_set():
            try:
                os.rename(self.log, aside)
                os.symlink(self.target, self.log)
                time.sleep(random.uniform(0, 0.002))  # the link stays long enough to be acted on
                os.unlink(self.log)
                os.rename(aside, self.log)
                self.swaps += 1
                time.sleep(random.uniform(0, 0.03))  # and the real file long enough to be listed and handled
            except OSError:
                pass


def _leaked(logdir: Path) -> bool:
    for p in logdir.rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            if p.suffix == ".gz":
                try:
                    data = gzip.decompress(data)
                except (OSError, EOFError):
                    pass
            if b"root-only secret" in data:
                return True
    return False


@pytest.mark.parametrize("owner", ["attacker-dir", "shared-sticky-dir"])
@pytest.mark.parametrize("op", ["rotate", "compress"])
def test_a_symlink_swapped_in_never_makes_root_touch_another_file(base: Path, op: str, owner: str) -> None:
    env = write_env(base)
    logdir = root_of(env, "web-1") / "var/log/app"
    logdir.mkdir(parents=True)
    target = base / "root-secret"
    target.write_bytes(SECRET)
    target.chmod(0o600)
    if owner == "attacker-dir":
        os.chown(logdir, NOBODY, NOBODY)
        logdir.chmod(0o755)
    else:
        logdir.chmod(0o1777)
    for p in (base / "state", base / "state" / "hosts", root_of(env, "web-1"), logdir.parent):
        p.chmod(0o755)
    ctx = make_ctx(env)
    params = (LogParams(paths=["/var/log/app"], max_size_mb=0.001, compress_after_days=30, delete_after_days=60)
              if op == "rotate" else LogParams(paths=["/var/log/app"], compress_after_days=0, delete_after_days=60))
    followed = 0
    swaps = 0
    worked = 0
    for attempt in range(ATTEMPTS):
        log = logdir / f"app-{attempt}.log"
        log.write_bytes(b"application line\n" * 200)
        os.chown(log, NOBODY, NOBODY)
        if op == "compress":
            old = 3 * 86400
            os.utime(log, (log.stat().st_atime - old, log.stat().st_mtime - old))
        racer = Racer(log, target)
        racer.start()
        try:
            tuning_logs(ctx, params, "web-1")
        except Exception:  # noqa: BLE001 - a failed attempt is fine; touching the target is not
            pass
        finally:
            racer.stop.set()
            racer.join()
        swaps += racer.swaps
        worked += any(p.name.startswith(f"app-{attempt}.log") and p.suffix == ".gz" for p in logdir.iterdir())
        changed = target.read_bytes() != SECRET or (target.stat().st_mode & 0o777) != 0o600 or target.is_symlink()
        if changed or _leaked(logdir):
            followed += 1
            target.write_bytes(SECRET)
            target.chmod(0o600)
    record(f"symlink_race_{op}_{owner}", symlink_races=ATTEMPTS, followed=followed)
    assert swaps > ATTEMPTS, "the racer never swapped: the test proves nothing"
    assert worked > 0, "the step never rotated or compressed anything: refusing everything proves nothing"
    assert followed == 0
