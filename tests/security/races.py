"""A symlink race against every root file operation of ``tuning.logs``, on a real host layout.

The audit's attack: ``tuning.logs`` listed big logs with ``find``, then ran ``cp -p``, ``truncate`` and
``gzip -f`` on the same path several commands later; a symlink to a root-owned 0600 file swapped in
between made root truncate it and copy its content into the attacker's directory.

:func:`race` runs the real step again and again while a racer *process running as an unprivileged
user* (``nobody``, through ``setpriv``) swaps part of the log's path for a symlink in a tight loop,
and counts the attempts in which root touched anything it should not have: a target changed,
truncated, compressed, deleted or re-moded, or its content found anywhere the attacker can read.

Layouts (where the attacker has a foothold):

* ``attacker-dir``: the log directory belongs to the attacker; the log file is swapped for a link to
  a root-only file elsewhere;
* ``sticky-dir``: a root-owned ``/tmp``-like directory (1777), the log belongs to the attacker;
* ``attacker-ancestor``: a *parent* of the configured (root-owned) log directory belongs to the
  attacker, who swaps the directory below it for a link into a root-only tree holding root files
  of the same names (the check of the file's own directory alone does not see this).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pitstop.context import RunContext
from pitstop.fleet.tuning import LogParams, tuning_logs

NOBODY = 65534
SECRET = b"root-only secret " * 64
OPS = ("rotate", "compress", "delete")
LAYOUTS = ("attacker-dir", "sticky-dir", "attacker-ancestor")

# The racer: runs as nobody; swaps path A for a symlink to B and back until SIGTERM, then puts A
# back and prints how many swaps it made.
RACER = r"""
import os, random, signal, sys, time
a, b, link_s, real_s = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
aside, swaps = a + ".aside", 0
print("ready", flush=True)
while not stop:
    try:
        time.sleep(random.uniform(0, real_s))
        os.rename(a, aside)
        os.symlink(b, a)
        time.sleep(random.uniform(0, link_s))
        os.unlink(a)
        os.rename(aside, a)
        swaps += 1
    except OSError:
        pass
if os.path.islink(a):
    os.unlink(a)
if os.path.lexists(aside) and not os.path.lexists(a):
    os.rename(aside, a)
print(swaps, flush=True)
"""


@dataclass
class RaceResult:
    attempts: int = 0
    followed: int = 0
    swaps: int = 0
    worked: int = 0  # attempts in which the step did its job on the real file
    refused: int = 0  # attempts in which the step refused (or failed on) the file instead


class Racer:
    def __init__(self, path: Path, target: Path, link_s: float, real_s: float):
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
             sys.executable, "-I", "-c", RACER, str(path), str(target), str(link_s), str(real_s)],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> int:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        return int(out.split()[-1]) if out.strip() else 0


@dataclass
class Layout:
    logdir: Path  # the real directory of the logs
    host_path: str  # the directory as configured in the step (a path on the host)
    swapped: Callable[[Path], Path]  # what the racer swaps, given the attempt's log
    target: Callable[[Path], Path]  # what the racer's link points at, given the attempt's log
    vault: Path | None  # a root-only tree holding root files named like the attacker's logs
    readable: Path  # where the attacker can read


def _secret(path: Path, age_days: float = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(SECRET)
    path.chmod(0o600)
    if age_days:
        t = time.time() - age_days * 86400
        os.utime(path, (t, t))
    return path


def make_layout(kind: str, host_root: Path, base: Path) -> Layout:
    """The directories of ``kind`` under ``host_root`` (a sandbox host's filesystem inside ``base``)."""
    host_root.mkdir(parents=True, exist_ok=True)
    for p in (base, *[q for q in host_root.parents if base in q.parents], host_root):
        p.chmod(0o755)  # the attacker must be able to reach its foothold
    app = host_root / "var/log/app"
    app.mkdir(parents=True)
    (host_root / "var").chmod(0o755)
    (host_root / "var/log").chmod(0o755)
    outside = _secret(base / "root-secret")
    if kind in ("attacker-dir", "sticky-dir"):
        if kind == "attacker-dir":
            os.chown(app, NOBODY, NOBODY)
        app.chmod(0o755 if kind == "attacker-dir" else 0o1777)
        return Layout(app, "/var/log/app", lambda f: f, lambda f: outside, None, app)
    # attacker-ancestor: var/log/app (the attacker's) / sub (root's, 0755) / logs (root's, 0755)
    os.chown(app, NOBODY, NOBODY)
    app.chmod(0o755)
    logs = app / "sub" / "logs"
    logs.mkdir(parents=True)
    (app / "sub").chmod(0o755)
    logs.chmod(0o755)
    vault = base / "vault"  # root-only: the attacker can aim a link at it but not look inside
    (vault / "logs").mkdir(parents=True)
    vault.chmod(0o700)
    return Layout(logs, "/var/log/app/sub/logs", lambda f: app / "sub", lambda f: vault, vault, app)


def _plant(op: str, lay: Layout, n: int) -> tuple[Path, LogParams, list[Path]]:
    """The attempt's file (the attacker's), the step's parameters for ``op``, and the root files
    that must come out of the attempt untouched."""
    days = {"rotate": 0, "compress": 3, "delete": 5}[op]
    name = f"app-{n}.log" + (".gz" if op == "delete" else "")
    f = lay.logdir / name
    f.write_bytes(gzip.compress(b"old archive\n") if op == "delete" else b"application line\n" * 200)
    os.chown(f, NOBODY, NOBODY)
    if days:
        t = time.time() - days * 86400
        os.utime(f, (t, t))
    secrets = [lay.target(f)] if lay.vault is None else [_secret(lay.vault / "logs" / name, age_days=days)]
    if op == "rotate":
        p = LogParams(paths=[lay.host_path], max_size_mb=0.001, compress_after_days=30, delete_after_days=60)
    elif op == "compress":
        p = LogParams(paths=[lay.host_path], compress_after_days=0, delete_after_days=60)
    else:
        p = LogParams(paths=[lay.host_path], compress_after_days=1, delete_after_days=2)
    return f, p, secrets


def _leaked_file(p: Path) -> bool:
    if not p.is_file() or p.is_symlink():
        return False
    data = p.read_bytes()
    if p.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            pass
    return b"root-only secret" in data


def _intact(p: Path) -> bool:
    return (not p.is_symlink() and p.is_file() and p.read_bytes() == SECRET
            and (p.stat().st_mode & 0o777) == 0o600 and p.stat().st_uid == 0)


def _worked(op: str, f: Path) -> bool:
    if op == "delete":
        return not os.path.lexists(f)
    return any(p.name.startswith(f.name) and p.suffix == ".gz" for p in f.parent.iterdir())


def race(ctx: RunContext, host: str, host_root: Path, base: Path, op: str, kind: str, attempts: int) -> RaceResult:
    """``attempts`` real runs of ``tuning.logs`` on ``host`` (whose filesystem is ``host_root``, a
    directory inside ``base``) for ``op``, each against a racer swapping part of the log's path:
    how often root followed the link."""
    lay = make_layout(kind, host_root, base)
    res = RaceResult()
    # the link must stay long enough to be acted on, the real path long enough to be listed
    link_s, real_s = (0.01, 0.01) if kind == "attacker-ancestor" else (0.003, 0.02)
    try:
        for n in range(attempts):
            f, params, secrets = _plant(op, lay, n)
            racer = Racer(lay.swapped(f), lay.target(f), link_s, real_s)
            refused = False
            try:
                out = tuning_logs(ctx, params, host)
                refused = bool(out.data.get("refused"))
            except Exception:  # noqa: BLE001 - a failed attempt is fine; touching a target is not
                refused = True
            finally:
                res.swaps += racer.stop()
            res.attempts += 1
            res.worked += _worked(op, f)
            res.refused += refused
            leaks = [p for p in lay.readable.rglob("*") if _leaked_file(p)]
            if leaks or not all(_intact(s) for s in secrets):
                res.followed += 1
                for p in leaks:
                    p.unlink()
                for s in secrets:
                    for q in s.parent.glob(s.name + "*"):
                        q.unlink()
                    _secret(s)
        return res
    finally:
        shutil.rmtree(host_root / "var", ignore_errors=True)
        for p in (base / "root-secret", base / "vault"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
