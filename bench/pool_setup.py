"""One Prefect server on PostgreSQL, one process work pool, several process workers and many environments,
on this machine: the pieces of ``make bench-pool`` (bench/bench_pool.py), also used by
tests/prefect/test_pool.py.

Everything started here is a child process in its own session, registered in a :class:`Processes` and
killed with its whole process tree (the flow-run processes a worker started included) on ``stop()``.
The PostgreSQL cluster is Debian's PostgreSQL 15 (Prefect's server needs the pg_trgm extension, which the
pgserver wheel lacks), on a Unix socket only, as the ``postgres`` system user: one database for Prefect's
server and one per environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import yaml

ROOT = Path(__file__).resolve().parents[1]
PG15 = Path("/usr/lib/postgresql/15/bin")
PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Processes:
    """Every long-lived process we started; ``stop()`` ends each one's tree (SIGTERM, then SIGKILL)."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # Ctrl-C reaches us, not them: we stop them in order
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill_tree(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL, grace_s: float = 10) -> None:
        try:
            parent = psutil.Process(proc.pid)
            tree = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=grace_s)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass

    def stop(self) -> None:
        for proc in reversed(self.procs):  # workers (and their flow runs) before the server
            self.kill_tree(proc, signal.SIGTERM)
        self.procs.clear()


class PgCluster:
    """A throw-away Debian PostgreSQL 15 cluster on a Unix socket (trust auth, no TCP)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pitstop-pool-pg-"))
        self.base.chmod(0o755)  # the postgres user must reach the socket directory
        shutil.chown(self.base, "postgres", "postgres")
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.started = False

    @property
    def socket_dir(self) -> str:
        return str(self.base)

    def start(self) -> None:
        subprocess.run([*self.as_pg, str(PG15 / "initdb"), "-D", str(self.base / "data"), "--auth=trust",
                        "-U", "postgres"], check=True, capture_output=True)
        # room for 2 workers' flow runs, Prefect's pool and each run's lock + work connections
        subprocess.run([*self.as_pg, str(PG15 / "pg_ctl"), "-D", str(self.base / "data"), "-w", "-l",
                        str(self.base / "log"), "-o", f"-k {self.base} -c listen_addresses='' -c max_connections=300",
                        "start"], check=True, capture_output=True)
        self.started = True

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(host=self.socket_dir, dbname=dbname, user="postgres", autocommit=True)

    def create_db(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        if self.started:
            subprocess.run([*self.as_pg, str(PG15 / "pg_ctl"), "-D", str(self.base / "data"), "-w", "-m", "immediate",
                            "stop"], capture_output=True)
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)


def start_server(procs: Processes, pg: PgCluster, home: Path, dbname: str = "prefect",
                 timeout_s: float = 180, auth: str | None = None) -> dict[str, str]:
    """``prefect server start`` backed by ``dbname`` on ``pg`` (with basic auth ``user:password`` when given);
    returns the environment clients and workers use."""
    pg.create_db(dbname)
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false", "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@/{dbname}?host={pg.socket_dir}"}
    if auth:
        env["PREFECT_SERVER_API_AUTH_STRING"] = env["PREFECT_API_AUTH_STRING"] = auth
    log = home / "server.log"
    server = procs.start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise RuntimeError("prefect server exited: " + log.read_text()[-3000:])
        time.sleep(0.5)
    else:
        raise RuntimeError("prefect server did not start: " + log.read_text()[-3000:])
    keys = ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK",
            "PREFECT_API_AUTH_STRING")
    return {k: env[k] for k in keys if k in env}


def start_worker(procs: Processes, api_env: dict[str, str], pool: str, name: str, log: Path,
                 limit: int | None = None, query_s: float | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, **api_env}
    if query_s is not None:
        env["PREFECT_WORKER_QUERY_SECONDS"] = str(query_s)
    argv = [PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--name", name]
    if limit is not None:
        argv += ["--limit", str(limit)]
    return procs.start(argv, env, log)


def write_environment(directory: Path, name: str, pg: PgCluster) -> Path:
    """A demo-like environment ``name``: its own database (seeded with the demo shop) on ``pg``, three
    local-transport hosts under its own state directory, local storage; written as ``<name>.yaml``."""
    from pitstop.config import load_config
    from pitstop.demo import SCHEMA, SEED, setup_hosts

    pg.create_db(name)
    with pg.connect(name) as conn:
        conn.execute(SCHEMA)
        conn.execute(SEED)
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["name"] = name
    cfg["state_dir"] = str(directory / name)
    cfg["database"] = {"host": pg.socket_dir, "port": 5432, "dbname": name, "user": "postgres",
                       "pg_bin_dir": str(PG15)}
    cfg["schedules"].pop("blackouts", None)  # real dates: a run on one of them would be skipped
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    setup_hosts(load_config(str(path)))
    return path


def staging_runbook(directory: Path, seconds: float, argv: list[str] | None = None) -> Path:
    """The project's monthly runbook plus an online-safe staging step on the app host that takes ``seconds``
    (``sleep``: it stands for downloading and unpacking the month's packages, minutes on a real fleet) or runs
    ``argv`` (in the host's sandbox directory), as ``<directory>/runbooks/monthly.yaml`` (beside the
    environments' configs: a flow run may name it)."""
    rb = yaml.safe_load((ROOT / "runbooks" / "monthly.yaml").read_text())
    stage = next(s for s in rb["stages"] if s["name"] == "server-tuning")
    stage["steps"].insert(0, {"uses": "host.command", "name": "stage this month's packages", "targets": "app",
                              "destructive": False, "window": "outside",
                              "with": {"argv": argv or ["sleep", f"{seconds:g}"]}})
    path = directory / "runbooks" / "monthly.yaml"
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(rb, sort_keys=False))
    return path


def pitstop_deploy(config: Path, pool: str, api_env: dict[str, str]) -> list[dict[str, Any]]:
    """pitstop's own deploy path (``pitstop deploy --env CONFIG --work-pool POOL``)."""
    out = subprocess.run([sys.executable, "-m", "pitstop.cli", "deploy", "--env", str(config), "--work-pool", pool,
                          "--json"], env={**os.environ, **api_env}, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"pitstop deploy --env {config} exited {out.returncode}: {out.stderr[-2000:]}")
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def with_api(api_env: dict[str, str]) -> None:
    """Point this process's Prefect clients at the server (read by :func:`client`)."""
    os.environ.update(api_env)


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[Any]:
    """A Prefect client for the server :func:`with_api` named. Prefect reads its settings once, when it is
    imported: in a process that imported it earlier (a test session), the environment alone is not enough."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    updates: dict[Any, Any] = {PREFECT_API_URL: os.environ["PREFECT_API_URL"]}
    if os.environ.get("PREFECT_API_AUTH_STRING"):
        updates[PREFECT_API_AUTH_STRING] = os.environ["PREFECT_API_AUTH_STRING"]
    with temporary_settings(updates=updates):
        async with get_client() as c:
            yield c


async def pause_deployments(names: list[str]) -> None:
    """Pause the schedules we do not measure (hourly notices), so no stray flow run joins in."""
    async with client() as c:
        for name in names:
            dep = await c.read_deployment_by_name(name)
            await c.set_deployment_paused_state(dep.id, True)


async def trigger(names: list[str], at: datetime | None = None, parameters: dict[str, Any] | None = None) -> list[str]:
    """One flow run of each deployment, all created together, scheduled for ``at`` (now when None) with the
    deployment's own parameters (updated with ``parameters``): what the scheduler does when their schedules
    fire in the same minute."""
    from prefect.states import Scheduled

    async with client() as c:
        deps = await asyncio.gather(*(c.read_deployment_by_name(n) for n in names))
        runs = await asyncio.gather(*(c.create_flow_run_from_deployment(
            d.id, parameters=parameters, state=Scheduled(scheduled_time=at) if at else None, tags=["bench-pool"])
            for d in deps))
    return [str(r.id) for r in runs]


async def flow_runs(ids: list[str]) -> dict[str, Any]:
    from uuid import UUID

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with client() as c:
        wanted = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in ids]))
        runs = await c.read_flow_runs(flow_run_filter=wanted, limit=len(ids) + 1)
    return {str(r.id): r for r in runs}


def wait_final(ids: list[str], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        runs = asyncio.run(flow_runs(ids))
        if len(runs) == len(ids) and all(r.state and r.state.is_final() for r in runs.values()):
            return runs
        if time.monotonic() > deadline:
            pending = {i: (r.state.name if r.state else None) for i, r in runs.items()
                       if not (r.state and r.state.is_final())}
            raise TimeoutError(f"flow runs not finished after {timeout_s:.0f} s: {pending}")
        time.sleep(1)


@dataclass
class AuditRun:
    environment: str
    run_id: str
    started: float
    finished: float | None
    status: str | None


def audit_runs(state_dir: Path) -> list[AuditRun]:
    """Every run of one environment as its audit log tells it: first ``run.started`` (or ``run.resumed``) to
    the last ``run.finished``, epoch seconds."""
    from pitstop.audit import read_events

    out = []
    for audit in sorted((state_dir / "runs").glob("*/audit.jsonl")):
        events = read_events(audit)
        starts = [e for e in events if e["kind"] in ("run.started", "run.resumed")]
        ends = [e for e in events if e["kind"] == "run.finished"]
        if not starts:
            continue
        out.append(AuditRun(environment=state_dir.name, run_id=audit.parent.name,
                            started=datetime.fromisoformat(starts[0]["ts"]).timestamp(),
                            finished=datetime.fromisoformat(ends[-1]["ts"]).timestamp() if ends else None,
                            status=ends[-1]["data"].get("status") if ends else None))
    return out


def lock_violations(runs: list[AuditRun]) -> list[tuple[str, str]]:
    """Pairs of runs of one environment whose audit intervals overlap (an unfinished run lasts forever)."""
    bad = []
    by_env: dict[str, list[AuditRun]] = {}
    for r in runs:
        by_env.setdefault(r.environment, []).append(r)
    for env_runs in by_env.values():
        env_runs.sort(key=lambda r: r.started)
        for i, a in enumerate(env_runs):
            for b in env_runs[i + 1:]:
                if a.finished is None or b.started < a.finished:
                    bad.append((a.run_id, b.run_id))
    return bad


def wait_started(state_dir: Path, timeout_s: float) -> AuditRun:
    """The environment's first run, once its audit log says it started (it holds the environment lock)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = audit_runs(state_dir)
        if runs:
            return runs[0]
        time.sleep(0.2)
    raise TimeoutError(f"no run of {state_dir.name} started within {timeout_s:.0f} s")
