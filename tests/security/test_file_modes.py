"""Files of a run are private by their own explicit modes, not only thanks to the CLI's umask.

tests/reliability/test_file_modes.py runs the CLI (which works under umask 077 for the whole command)
under umask 000/022/077. Here the engine is embedded the way a caller without the entry points would
use it — ``pitstop.runner.execute`` in a process whose umask is 000 — so every file and directory a
monthly run creates under the state directory must get 0600/0700 from pitstop itself. Excluded, with
reason: ``hosts/`` (sandboxed host filesystems: their files belong to the hosts).

Also the shared helpers (pitstop/fsmodes.py): private whatever the umask, never through a link.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pitstop import fsmodes
from tests.conftest import ROOT
from tests.reliability.results import record

EMBEDDED = """
import json, os, sys
os.umask(0)
from pitstop.runner import execute
res = execute(sys.argv[1], "monthly")
print(json.dumps({"run_dir": str(res.run_dir), "status": res.report()["status"]}))
"""


def exposed(state: Path) -> tuple[int, list[str]]:
    checked, bad = 0, []
    for p in state.rglob("*"):
        rel = p.relative_to(state)
        if rel.parts[:1] == ("hosts",) or p.is_symlink():
            continue
        checked += 1
        mode = stat.S_IMODE(p.lstat().st_mode)
        if mode & 0o077:
            bad.append(f"{rel} {oct(mode)}")
    return checked, bad


def test_an_embedded_run_under_umask_000_writes_only_private_files(make_env: Any, tmp_path: Path) -> None:
    def mutate(cfg: dict[str, Any]) -> None:
        cfg["retention"][0]["archive"] = True

    env = make_env(mutate)
    res = subprocess.run([sys.executable, "-c", EMBEDDED, str(env)], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["status"] == "succeeded", out
    checked, bad = exposed(tmp_path / "state")
    assert checked > 20 and any(p.suffix == ".gz" for p in (tmp_path / "state").rglob("*"))
    record("file_modes_embedded", modes_checked=checked, world_readable=len(bad))
    assert bad == [], bad


def test_helpers_are_private_whatever_the_umask_and_never_follow_a_link(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        d = fsmodes.private_dir(tmp_path / "a" / "b")
        f = fsmodes.write_private(d / "report.json", "{}")
        with open(d / "audit.jsonl", "a", opener=fsmodes.private_opener) as fh:
            fh.write("x\n")
        existing = d / "old.txt"
        existing.write_text("")
        existing.chmod(0o644)
        fsmodes.write_private(existing, "secret")  # an existing file loses its group/other bits
    finally:
        os.umask(old)
    for p in (tmp_path / "a", d):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
    for p in (f, d / "audit.jsonl", existing):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (d / "link.json").symlink_to(target)
    with pytest.raises(OSError):
        fsmodes.write_private(d / "link.json", "overwrite")
    with pytest.raises(OSError), open(d / "link.json", "a", opener=fsmodes.private_opener):
        pass
    assert target.read_text() == "keep"
