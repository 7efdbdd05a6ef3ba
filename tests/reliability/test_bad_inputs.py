"""Bad input corpus: every malformed config or runbook exits 2 with file:line and executes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from pitstop.errors import InputError
from pitstop.runner import load
from tests.reliability.corpus import CASES, Case
from tests.reliability.helpers import DEMO_CONFIG, MONTHLY, cli, point_at, sessions
from tests.reliability.results import full, record

FAST_CLI = {"yaml-unclosed-flow", "wrong-type-port", "unknown-host-in-group", "retention-table-injection",
            "retention-deletes-everything", "schedule-feb-30", "secret-db-password-unset",
            "secret-apprise-url-unset", "rb-unknown-step", "rb-group-injection", "rb-cycle", "rb-argv-not-list"}


def materialise(case: Case, tmp: Path, pg_data_dir: Path, dbname: str) -> tuple[Path, Path, Path, int | None]:
    """Write the case's config and runbook; returns (config, runbook, the broken file, expected line)."""
    cfg_text = DEMO_CONFIG if case.file == "runbook" else case.edit(DEMO_CONFIG)
    rb_text = case.edit(MONTHLY) if case.file == "runbook" else MONTHLY
    cfg_text = point_at(cfg_text, tmp / "state", pg_data_dir, dbname)
    c, r = tmp / f"{case.id}.env.yaml", tmp / f"{case.id}.runbook.yaml"
    assert case.id not in str(tmp), "the state_dir line would match the needle"
    c.write_text(cfg_text)
    r.write_text(rb_text)
    bad, text = (c, cfg_text) if case.file == "config" else (r, rb_text)
    line = None
    if case.needle is not None:
        line = next(i for i, t in enumerate(text.splitlines(), 1) if case.needle in t)
    return c, r, bad, line


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


def test_every_case_is_refused_in_process(tmp_path: Path, pg_data_dir: Path) -> None:
    clear = 0
    for case in CASES:
        c, r, bad, line = materialise(case, tmp_path, pg_data_dir, "postgres")
        with pytest.raises(InputError) as exc:
            load(str(c), str(r))
        assert exc.value.exit_code == 2
        mine = [p for p in exc.value.problems if p.file == str(bad) and p.line]
        assert mine, (case.id, str(exc.value))
        if line is not None:
            assert line in {p.line for p in mine}, (case.id, line, str(exc.value))
        clear += 1
    assert not (tmp_path / "state").exists()
    record("bad_inputs.in_process", bad_inputs=len(CASES), clear_errors=clear)


def test_cli_exits_2_with_file_line_and_executes_nothing(tmp_path: Path, pg_data_dir: Path, pg_socket: str,
                                                        seeded_db: str) -> None:
    chosen = [c for c in CASES if full() or c.id in FAST_CLI]
    before = sessions(pg_socket, seeded_db)
    clear = 0
    for i, case in enumerate(chosen):
        d = tmp_path / f"case{i}"  # not the case id: a needle must not match the state_dir line
        d.mkdir()
        c, r, bad, line = materialise(case, d, pg_data_dir, seeded_db)
        res = cli("run", "--env", str(c), "--runbook", str(r), "--engine", "local", "--json", env={"COLUMNS": "400"})
        assert res.returncode == 2, (case.id, res.returncode, res.stderr[-2000:])
        loc = f"{bad}:{line}" if line is not None else f"{bad}:"
        assert loc in res.stderr.replace("\n", ""), (case.id, loc, res.stderr)
        assert "nothing was executed" in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert not (d / "state").exists(), f"{case.id}: a state directory (runs, hosts) was created"
        clear += 1
    # Probe: one session of ours must show up (+1); once it has, any session a refused run had
    # opened earlier would have been flushed too, so exactly +1 proves none did.
    with psycopg.connect(host=pg_socket, dbname=seeded_db, user="postgres"):
        pass
    deadline = time.monotonic() + 10
    while sessions(pg_socket, seeded_db) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sessions(pg_socket, seeded_db) == before + 1, "a refused run opened a database session"
    record("bad_inputs.cli", clear_errors=0)  # the same cases as in-process: not counted twice
    assert clear == len(chosen)
