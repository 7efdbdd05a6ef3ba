"""Client tools chosen by the server's version, and a clean refusal when none is new enough.

pg_dump refuses to dump a newer server and pg_restore cannot read a newer archive. On every server of
the matrix: ``pitstop validate`` reports the client pitstop will run (the same major, else the oldest
newer one) or, where this machine has none new enough (17, 18: its tools are Debian's 15 and the pgserver
wheel's 16), refuses with exit 2 naming both versions and the fix, pointing at the config. A
``database.pg_bin_dir`` older than the server is refused the same way. ``pitstop run`` refuses before
anything changes: no run folder, no lock, not a row touched.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pitstop.connectors.pgtools import client_major, known_dirs
from tests.conftest import run_cli

from .conftest import PgServer
from .test_matrix import RUNBOOK, state, write_env


def _runbook(tmp_path: Path) -> Path:
    rb = tmp_path / "matrix.yaml"
    rb.write_text(yaml.safe_dump(RUNBOOK, sort_keys=False))
    return rb


def _assert_refused_before_anything_changed(server: PgServer, dbname: str, env: Path, rb: Path,
                                            expect: list[str]) -> None:
    with server.connect(dbname) as conn:
        before = state(conn)
        tables = conn.execute("SELECT count(*) FROM pg_class").fetchone()[0]
    res = run_cli("run", "--env", str(env), "--runbook", str(rb), "--engine", "local", "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    flat = " ".join(res.stderr.split())
    assert "nothing was executed" in flat and "Traceback" not in res.stderr
    assert all(e in flat for e in expect), flat
    runs = env.parent / "state" / "runs"
    assert not runs.exists() or not list(runs.iterdir())
    with server.connect(dbname) as conn:
        assert state(conn) == before
        assert conn.execute("SELECT count(*) FROM pg_class").fetchone()[0] == tables  # no lock/progress table


def test_client_tools_match_the_server(shaped: tuple[PgServer, str], tmp_path: Path) -> None:
    server, dbname = shaped
    with server.connect() as conn:
        version = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
    majors = {m: d for d in reversed(known_dirs()) if (m := client_major(d)) is not None}
    assert {15, 16} <= set(majors), majors  # Debian's postgresql-client-15 and the pgserver wheel's 16
    fits = sorted(m for m in majors if m >= server.major)
    rb = _runbook(tmp_path)

    env = write_env(server, dbname, tmp_path)
    res = run_cli("validate", "--env", str(env), "--runbook", str(rb), "--json")
    if fits:  # the same major if there is one, else the oldest newer one
        assert res.returncode == 0, res.stdout + res.stderr
        clients = json.loads(res.stdout)["pg_clients"]
        assert clients["checked"] is True and clients["server_version"] == version
        assert clients["client_major"] == fits[0] and client_major(Path(clients["pg_bin_dir"])) == fits[0]
    else:
        assert res.returncode == 2, res.stdout + res.stderr
        problem = json.loads(res.stdout)["problems"][0]
        assert problem["file"] == str(env) and problem["at"] == "database" and problem["line"] > 1
        message = problem["message"]
        for part in (f"PostgreSQL {version} needs pg_dump/pg_restore {server.major} or newer",
                     f"the newest pg_dump found is {max(majors)}", f"install postgresql-client-{server.major}",
                     "database.pg_bin_dir", "nothing was changed"):
            assert part in message, message
        _assert_refused_before_anything_changed(server, dbname, env, rb, [
            f"needs pg_dump/pg_restore {server.major} or newer", f"the newest pg_dump found is {max(majors)}"])

    older = [m for m in majors if m < server.major]
    if older:  # a pg_bin_dir older than the server: refused even though a newer client exists elsewhere
        old = max(older)
        env = write_env(server, dbname, tmp_path, pg_bin_dir=majors[old])
        res = run_cli("validate", "--env", str(env), "--runbook", str(rb))
        assert res.returncode == 2, res.stdout + res.stderr
        flat = " ".join(res.stderr.split())
        assert f"{env}:" in flat and "at database.pg_bin_dir" in flat, flat
        assert f"PostgreSQL {version} needs pg_dump/pg_restore {server.major} or newer" in flat, flat
        assert f"holds pg_dump {old}" in flat and f"postgresql-client-{server.major}" in flat, flat
        if fits:  # (where nothing fits, the run's refusal was proven above)
            _assert_refused_before_anything_changed(server, dbname, env, rb, [f"holds pg_dump {old}"])


def test_validate_without_a_reachable_database_only_notes_it(tmp_path: Path) -> None:
    """The client check needs the server's version; a database validate cannot reach is not bad input."""
    server = PgServer(major=16, sockdir=str(tmp_path), port=1)  # nothing listens there
    env = write_env(server, "shapes", tmp_path)
    res = run_cli("validate", "--env", str(env), "--runbook", str(_runbook(tmp_path)), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    clients = json.loads(res.stdout)["pg_clients"]
    assert clients["checked"] is False and "could not be asked its version" in clients["note"]
    assert "checks them again before anything changes" in clients["note"]


def test_a_pg_bin_dir_without_pg_dump_is_bad_input(tmp_path: Path) -> None:
    """Refused by validate whatever the server (here: none reachable), and by run before anything else."""
    empty = tmp_path / "no-tools"
    empty.mkdir()
    env = write_env(PgServer(major=16, sockdir=str(tmp_path), port=1), "shapes", tmp_path, pg_bin_dir=empty)
    res = run_cli("validate", "--env", str(env), "--runbook", str(_runbook(tmp_path)), "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    problem = json.loads(res.stdout)["problems"][0]
    assert problem["file"] == str(env) and problem["at"] == "database.pg_bin_dir" and problem["line"] > 1
    assert f"{empty} holds no working pg_dump" in problem["message"]
