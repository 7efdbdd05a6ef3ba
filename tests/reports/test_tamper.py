"""Tamper evidence: every single-byte edit, deleted or reordered audit line, removed or added file of
a real run folder is detected and named (seeded RNG, so failures reproduce)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from pitstop.report.verify import verify_run_dir
from tests.conftest import run_cli

SEED = 20261122


@pytest.fixture
def fresh(monthly_run, tmp_path):
    """A private copy of the sealed run folder to damage."""
    def copy(name: str = "run") -> Path:
        dst = tmp_path / name
        shutil.copytree(monthly_run["run_dir"], dst)
        return dst

    return copy


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file())


def test_intact_run_verifies(fresh):
    assert verify_run_dir(fresh()) is None


def test_random_single_byte_edits_are_all_detected(fresh):
    rng = random.Random(SEED)
    src = fresh("pristine")
    for i in range(40):
        d = fresh(f"edit{i}")
        target = rng.choice(_files(d))
        data = bytearray(target.read_bytes())
        pos = rng.randrange(len(data))
        data[pos] = rng.choice([b for b in range(256) if b != data[pos]])
        target.write_bytes(bytes(data))
        problem = verify_run_dir(d)
        assert problem is not None, f"edit {i}: byte {pos} of {target.name} not detected"
        assert target.name in problem, f"edit {i}: {problem!r} does not name {target.name}"
    assert verify_run_dir(src) is None


def _audit_lines(d: Path) -> list[bytes]:
    return (d / "audit.jsonl").read_bytes().splitlines(keepends=True)


def test_random_deleted_audit_lines_are_detected(fresh):
    rng = random.Random(SEED + 1)
    n = len(_audit_lines(fresh("count")))
    for i, victim in enumerate(sorted(rng.sample(range(n), 12)) + [n - 1]):
        d = fresh(f"del{i}")
        lines = _audit_lines(d)
        del lines[victim]
        (d / "audit.jsonl").write_bytes(b"".join(lines))
        problem = verify_run_dir(d)
        assert problem is not None and "audit.jsonl" in problem, (victim, problem)
        if victim < n - 1:
            assert f"line {victim + 1}:" in problem  # the first bad event is named


def test_random_reordered_pairs_are_detected(fresh):
    rng = random.Random(SEED + 2)
    n = len(_audit_lines(fresh("count")))
    for i in range(12):
        d = fresh(f"swap{i}")
        lines = _audit_lines(d)
        a = rng.randrange(n - 1)
        lines[a], lines[a + 1] = lines[a + 1], lines[a]
        (d / "audit.jsonl").write_bytes(b"".join(lines))
        problem = verify_run_dir(d)
        assert problem is not None and f"audit.jsonl line {a + 1}:" in problem, (a, problem)


def test_removed_and_added_files_are_detected(fresh):
    rng = random.Random(SEED + 3)
    names = [p.name for p in _files(fresh("names"))]
    for i, name in enumerate(rng.sample(names, len(names))):
        d = fresh(f"rm{i}")
        (d / name).unlink()
        problem = verify_run_dir(d)
        assert problem is not None and name in problem, (name, problem)
    d = fresh("added")
    (d / "notes.txt").write_text("added later")
    assert verify_run_dir(d) == "notes.txt is not in the manifest (added after the run)"


def test_cli_exits_non_zero_naming_the_problem(fresh):
    d = fresh()
    html = d / "report.html"
    html.write_bytes(html.read_bytes().replace(b"succeeded", b"SUCCEEDED", 1))
    proc = run_cli("report", "verify", str(d))
    assert proc.returncode == 1
    assert "report.html does not match its SHA-256" in proc.stderr
    d2 = fresh("chain")
    lines = _audit_lines(d2)
    lines[4] = lines[4].replace(b'"seq": 5', b'"seq": 5 ', 1)
    (d2 / "audit.jsonl").write_bytes(b"".join(lines))
    proc = run_cli("report", "verify", str(d2), "--json")
    assert proc.returncode == 1 and "audit.jsonl" in proc.stdout
