"""Log rotation as root where another user controls part of the path: a symlink swapped in at any
moment (tests/security/races.py), over the local transport and over real sshd.

For each root file operation of ``tuning.logs`` (rotate = copy + truncate + compress; compress;
delete) and each foothold (the log's directory, a sticky shared directory, a parent directory),
20 real runs of the step race an unprivileged process swapping a link in; the root files the link
points at must never change and their content must never reach the attacker. The figures go on the
reliability suite's line (``symlink_races=``, ``followed=``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fleet.sshlab import SshLab
from tests.maintenance.helpers import make_ctx, root_of, write_env
from tests.reliability.results import full, record

from .races import LAYOUTS, OPS, race

ATTEMPTS = 20  # per operation, foothold and transport; each is one full run of the step

pytestmark = [pytest.mark.root, pytest.mark.services("setpriv")]  # the attack needs root to be worth anything;
# the racer runs as nobody via setpriv


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pitstop-race-"))  # not under pytest's 0700 tmp: nobody must reach it
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[SshLab, list[Any]]]:
    d = Path(tempfile.mkdtemp(prefix="pitstop-race-lab-"))
    lab = SshLab(d)
    try:
        yield lab, lab.start(1, prefix="web")
    finally:
        lab.stop()
        shutil.rmtree(d, ignore_errors=True)


def _check(op: str, kind: str, transport: str, res: Any) -> None:
    record(f"symlink_race_{op}_{kind}_{transport}", symlink_races=res.attempts, followed=res.followed)
    assert res.swaps >= res.attempts // 2, f"the racer hardly swapped: the test proves nothing ({res})"
    if kind == "attacker-ancestor":  # root files under an attacker's directory: refused, never touched
        assert res.refused > 0, res
    else:
        assert res.worked > 0, f"the step never did its job: refusing everything proves nothing ({res})"
    assert res.followed == 0, f"root followed a swapped link in {res.followed} of {res.attempts} runs"


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("op", OPS)
def test_local_a_swapped_link_never_makes_root_touch_another_file(base: Path, op: str, kind: str) -> None:
    env = write_env(base, hosts={"web-1": {"transport": "local", "root": "hosts/web-1"}})
    ctx = make_ctx(env)
    try:
        res = race(ctx, "web-1", root_of(env, "web-1"), base, op, kind, ATTEMPTS)
    finally:
        ctx.close()
    _check(op, kind, "local", res)


@pytest.mark.parametrize("kind", LAYOUTS if full() else ("attacker-ancestor",))
@pytest.mark.parametrize("op", OPS)
def test_ssh_a_swapped_link_never_makes_root_touch_another_file(base: Path, lab: tuple[SshLab, list[Any]],
                                                                op: str, kind: str) -> None:
    ssh_lab, hosts = lab
    cfg = ssh_lab.config(hosts, base / "state", roots=base / "roots")
    cfg["groups"] = {"web": [h.name for h in hosts]}
    env = base / "env.yaml"
    env.write_text(yaml.safe_dump(cfg, sort_keys=False))
    ctx = make_ctx(env)
    try:
        res = race(ctx, hosts[0].name, base / "roots" / hosts[0].name, base, op, kind, ATTEMPTS)
    finally:
        ctx.close()
    _check(op, kind, "ssh", res)
