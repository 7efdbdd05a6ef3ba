"""What Prefect adds around a run, and what is left behind (issue #22).

Every figure comes from real ``pitstop`` commands (``python -m pitstop.cli``, subprocesses of this one
bench process) on copies of the demo environment (embedded PostgreSQL under ``.pitstop/bench-overhead``,
local hosts, local storage; blackouts dropped), with one Prefect home for all of them:

* ``warm_added_vs_import``: (wall of the monthly run through Prefect - wall with ``--engine local``) /
  wall of ``python -c "import prefect"``, the three alternating, after one run of each (so a server that
  can be reused is running); median over ``BENCH_REPS`` (5) of the per-round ratio. Goal <= 2.0.
* ``cold_added_vs_import``: the same with no Prefect server running before each Prefect run
  (``PITSTOP_PREFECT_IDLE=0``; the bench waits for it to be gone). Goal <= 4.0.
* ``first_line_vs_help``: time to the run's first line on stderr (the line naming runbook and
  environment) / wall of ``pitstop --help``; medians over BENCH_REPS. Goal <= 1.5.
* ``orphans``: Prefect API server processes (Prefect's ephemeral uvicorn or pitstop's) alive 10 s after
  SIGKILL of ``BENCH_KILLS`` (10) runs, each in a fresh state directory (so some die while their server
  starts), at a random point of a cold run's wall time (``BENCH_SEED``); ``PITSTOP_PREFECT_IDLE=5``.
  A server that ``server.json`` names as the state directory's shared one is not counted (reported apart).
  Goal 0.
* ``concurrent_failed``: of 8 runs started at the same instant on 4 environments (two each; a fresh
  Prefect home and fresh Prefect state), those that did not start: an exit other than 0 or 3 (3 = refused,
  the environment is busy: documented), a traceback, or an environment where no run ran. Goal 0.
* ``noop_window_s``: seconds a maintenance flag existed on a web host (polled every 5 ms) during the
  second of two back-to-back monthly runs. Goal 0.

``BENCH_ROOT`` runs another checkout's code with this venv (e.g. ``git archive main`` unpacked somewhere).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("BENCH_ROOT", HERE)).resolve()
sys.path.insert(0, str(ROOT))
BASE = HERE / ".pitstop" / "bench-overhead"
REPS = int(os.environ.get("BENCH_REPS", 5))
KILLS = int(os.environ.get("BENCH_KILLS", 10))
PY = sys.executable
HOME = BASE / "prefect-home"
SERVER_MARKS = (b"prefect.server.api.server", b"pitstop.prefect_serve")


def log(msg: str) -> None:
    print(msg, flush=True)


# -- environments -------------------------------------------------------------------------------------
def write_env(name: str, dbname: str) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["name"] = name
    cfg["state_dir"] = str(BASE / name)
    cfg["database"].update({"data_dir": str(BASE / "pgdata"), "dbname": dbname})
    cfg.get("schedules", {}).pop("blackouts", None)
    BASE.mkdir(parents=True, exist_ok=True)
    path = BASE / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def prepare(path: Path) -> None:
    """The environment's database (created if missing) seeded with the demo shop, and its hosts."""
    from pitstop.config import load_config
    from pitstop.connectors.postgres import Database
    from pitstop.demo import setup

    cfg = load_config(str(path))
    if cfg.database.dbname != "postgres":
        admin = load_config(str(write_env("ov-admin", "postgres")))
        with Database(admin).connect() as conn:
            conn.autocommit = True
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [cfg.database.dbname]).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{cfg.database.dbname}"')
    setup(cfg)


def state(path: Path) -> Path:
    return Path(yaml.safe_load(path.read_text())["state_dir"])


# -- processes ----------------------------------------------------------------------------------------
def cli_env(home: Path = HOME, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PITSTOP_STATE_DIR")}
    return {**env, "PREFECT_HOME": str(home), "PYTHONPATH": str(ROOT), "COLUMNS": "120", **extra}


def pitstop(*args: str) -> list[str]:
    return [PY, "-m", "pitstop.cli", *args]


def timed(argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode not in ok:
        raise SystemExit(f"{' '.join(argv[2:])} exited {res.returncode}:\n{res.stderr[-3000:]}")
    return wall


def servers(home: Path) -> list[int]:
    """Prefect API server processes started with this Prefect home."""
    from pitstop.prefect_server import api_servers_of

    return api_servers_of(home)


def recorded(state_dir: Path) -> int | None:
    try:
        return int(json.loads((state_dir / "prefect" / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stop_servers(home: Path, timeout: float = 60) -> None:
    """End the servers the bench's commands started with this home (SIGTERM, then wait)."""
    for pid in servers(home):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    wait_gone(home, timeout)


def wait_gone(home: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while servers(home) and time.monotonic() < deadline:
        time.sleep(0.05)


# -- phases -------------------------------------------------------------------------------------------
def import_wall() -> float:
    return timed([PY, "-c", "import prefect"], cli_env())


def added(env_file: Path, cold: bool) -> tuple[float, list[str]]:
    run = pitstop("run", "--env", str(env_file), "--runbook", "monthly", "--json")
    ratios, rows = [], []
    for i in range(REPS):
        imp = import_wall()
        if cold:
            stop_servers(HOME)
        pf = timed(run, cli_env(PITSTOP_PREFECT_IDLE="0" if cold else "600"))
        if cold:
            wait_gone(HOME)
        loc = timed([*run, "--engine", "local"], cli_env())
        ratios.append((pf - loc) / imp)
        rows.append(f"  {'cold' if cold else 'warm'} {i + 1}: prefect {pf:.2f}s local {loc:.2f}s import {imp:.2f}s "
                    f"-> added/import {(pf - loc) / imp:.2f}")
    return statistics.median(ratios), rows


def first_line(env_file: Path) -> tuple[float, list[str]]:
    helps, firsts, rows = [], [], []
    for i in range(REPS):
        helps.append(timed(pitstop("--help"), cli_env()))
        t0 = time.perf_counter()
        proc = subprocess.Popen(pitstop("run", "--env", str(env_file), "--runbook", "monthly"), cwd=ROOT,
                                env=cli_env(PITSTOP_PREFECT_IDLE="600"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        seen, first = [], None
        for line in proc.stderr:
            seen.append(line)
            if first is None and "monthly on " in line:
                first = time.perf_counter() - t0
        proc.wait()
        if first is None or proc.returncode != 0:
            raise SystemExit(f"no first line / exit {proc.returncode}:\n{''.join(seen)[-3000:]}")
        firsts.append(first)
        rows.append(f"  first line {i + 1}: {first:.3f}s, --help {helps[-1]:.3f}s")
    return statistics.median(firsts) / statistics.median(helps), rows


def noop_window(env_file: Path) -> tuple[float, list[str]]:
    run = pitstop("run", "--env", str(env_file), "--runbook", "monthly", "--json")
    timed(run, cli_env(PITSTOP_PREFECT_IDLE="600"))
    flags = [h / "var/www/maintenance.flag" for h in (state(env_file) / "hosts").iterdir()]
    proc = subprocess.Popen(run, cwd=ROOT, env=cli_env(PITSTOP_PREFECT_IDLE="600"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    on, last = 0.0, time.perf_counter()
    while proc.poll() is None:
        time.sleep(0.005)
        now = time.perf_counter()
        if any(f.exists() for f in flags):
            on += now - last
        last = now
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"second run exited {proc.returncode}:\n{err[-3000:]}")
    report = json.loads(Path(json.loads(out)["report"]).read_text())
    w = report.get("maintenance_window") or {}
    return on, [f"  second run: flag seen for {on:.3f}s; report's window {w.get('duration_s')}s"]


def _tree(root: int, known: set[int]) -> set[int]:
    """``known`` plus every live descendant of ``root``."""
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p.name))
    todo, seen = [root], set(known)
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def _is_server(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(m in cmd for m in SERVER_MARKS)


def orphans(cold_wall: float) -> tuple[int, list[str]]:
    rng = random.Random(int(os.environ.get("BENCH_SEED", 22)))
    home = BASE / "prefect-home-kills"
    shutil.rmtree(home, ignore_errors=True)
    total, shared, rows = 0, 0, []
    for k in range(KILLS):
        env_file = write_env(f"ovk{k}", "ovk")
        shutil.rmtree(state(env_file), ignore_errors=True)
        prepare(env_file)
        at = rng.uniform(0.2, 1.1 * cold_wall)
        proc = subprocess.Popen(pitstop("run", "--env", str(env_file), "--runbook", "monthly"), cwd=ROOT,
                                env=cli_env(home, PITSTOP_PREFECT_IDLE="5"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        t0, tree = time.perf_counter(), set()
        while time.perf_counter() - t0 < at and proc.poll() is None:
            tree = _tree(proc.pid, tree)
            time.sleep(0.05)
        tree = _tree(proc.pid, tree)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = time.perf_counter()
        time.sleep(max(0.0, killed + 10 - time.perf_counter()))
        keep = recorded(state(env_file))
        left = {p for p in tree | set(servers(home)) if _is_server(p)}
        counted = sorted(p for p in left if p != keep)
        shared += int(keep in left)
        total += len(counted)
        rows.append(f"  kill {k + 1} at {at:.2f}s: server processes alive 10 s later: {counted or 'none'}"
                    + (f" (+ the shared one, pid {keep}, idle)" if keep in left else ""))
        for pid in counted:  # the bench started them: end them
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
    wait_gone(home, 60)
    rows.append(f"  shared idle servers alive at +10 s: {shared}; server processes left 60 s after the last "
                f"kill: {len(servers(home))}")
    return total, rows


def concurrent() -> tuple[int, list[str]]:
    home = BASE / "prefect-home-concurrent"
    shutil.rmtree(home, ignore_errors=True)
    envs = []
    for i in range(4):
        env_file = write_env(f"ovc{i}", f"ovc{i}")
        shutil.rmtree(state(env_file) / "prefect", ignore_errors=True)
        prepare(env_file)
        envs.append(env_file)
    procs = [(e, subprocess.Popen(pitstop("run", "--env", str(e), "--runbook", "monthly", "--json"), cwd=ROOT,
                                  env=cli_env(home, PITSTOP_PREFECT_IDLE="5"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)) for e in envs * 2]
    failed, ran, rows = 0, {e: 0 for e in envs}, []
    for e, p in procs:
        _out, err = p.communicate(timeout=900)
        bad = p.returncode not in (0, 3) or "Traceback" in err or "OperationalError" in err
        failed += int(bad)
        ran[e] += int(p.returncode == 0)
        tail = err.strip().splitlines()[-1][:160] if err.strip() else ""
        rows.append(f"  {e.stem}: exit {p.returncode}{' FAILED TO START' if bad else ''}"
                    + (f" ({tail})" if bad or p.returncode == 3 else ""))
    failed += sum(1 for n in ran.values() if n == 0)
    wait_gone(home, 60)
    return failed, rows


def main() -> None:
    log(f"code: {ROOT}; state: {BASE}; Prefect home: {HOME}; reps {REPS}, kills {KILLS}")
    main_env = write_env("ov0", "postgres")
    prepare(main_env)
    stop_servers(HOME)
    log("warm-up: one run of each engine (a first start creates the Prefect database)")
    timed(pitstop("run", "--env", str(main_env), "--runbook", "monthly", "--json"), cli_env(PITSTOP_PREFECT_IDLE="600"))
    timed(pitstop("run", "--env", str(main_env), "--runbook", "monthly", "--json", "--engine", "local"), cli_env())
    warm, rows = added(main_env, cold=False)
    log("\n".join(rows))
    fl, rows = first_line(main_env)
    log("\n".join(rows))
    noop, rows = noop_window(main_env)
    log("\n".join(rows))
    cold, rows = added(main_env, cold=True)
    log("\n".join(rows))
    cold_wall = statistics.median(float(r.split("prefect ")[1].split("s")[0]) for r in rows)
    conc, rows = concurrent()
    log("\n".join(rows))
    orph, rows = orphans(cold_wall)
    log("\n".join(rows))
    stop_servers(HOME)
    print(f"warm_added_vs_import={warm:.2f} cold_added_vs_import={cold:.2f} first_line_vs_help={fl:.2f} "
          f"orphans={orph} concurrent_failed={conc} noop_window_s={noop:.2f}")


if __name__ == "__main__":
    main()
