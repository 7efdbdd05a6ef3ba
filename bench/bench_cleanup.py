"""make bench-cleanup: does pitstop's purge hurt live traffic less than a single DELETE?

One private PostgreSQL 16 (pgserver), the same settings for every variant (wal_compression=lz4,
shared_buffers=1GB). A 5M-row ``events`` table (indexes on created_at and (account, created_at)),
1M rows past a 90-day retention with the lowest ids. pgbench drives a fixed-rate application load
(-c 4 -j 2 -R 200, per-transaction log -l): 70% point reads of an account's recent rows, 27% updates
of recent rows, 3% updates of *expired* rows (late refunds), so a purge can really block it.
Variants: (a) baseline, no cleanup; (b) one DELETE of the expired rows; (c) pitstop's purge with the
default profile; then the gentle and fast profiles for the trade-off curve. The expired rows are
restored (and the table vacuumed) between variants. p99 is taken over the transactions that ran
during the purge (started or finished inside it: one held up by a lock counts with its whole wait);
the baseline p99 is the median of four 8 s no-cleanup windows (one at the start, one right before
each pitstop profile). The longest lock wait imposed on
the application is sampled every 5 ms from pg_locks.waitstart of pgbench backends (under-reads by up
to 5 ms); the longest purge transaction is timed by the client.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROWS = int(os.environ.get("BENCH_ROWS", 5_000_000))
EXPIRED = ROWS // 5
SETTINGS = {"wal_compression": "lz4", "shared_buffers": "1GB", "max_wal_size": "8GB", "checkpoint_timeout": "30min",
            "autovacuum": "off"}
SCRIPT = f"""\\set r random(1, 100)
\\set acct random(0, 9999)
\\set recent random({EXPIRED + 1}, {ROWS})
\\set old random(1, {EXPIRED})
\\if :r <= 70
SELECT id, kind, created_at FROM events WHERE account = :acct ORDER BY created_at DESC LIMIT 5;
\\elif :r <= 97
UPDATE events SET payload = 'updated' WHERE id = :recent;
\\else
UPDATE events SET payload = 'late refund' WHERE id = :old;
\\endif
"""
SETUP = f"""
DROP TABLE IF EXISTS events, expired_copy;
CREATE TABLE events (id bigint PRIMARY KEY, account int NOT NULL, kind text NOT NULL, payload text,
                     created_at timestamptz NOT NULL);
INSERT INTO events
SELECT g, g % 10000, (ARRAY['view', 'click', 'buy'])[1 + g % 3], md5(g::text),
       CASE WHEN g <= {EXPIRED} THEN now() - interval '200 days' + g * (interval '100 days' / {EXPIRED})
            ELSE now() - interval '80 days' + (g - {EXPIRED}) * (interval '80 days' / {ROWS - EXPIRED}) END
FROM generate_series(1, {ROWS}) g;
CREATE INDEX events_created_at_idx ON events (created_at);
CREATE INDEX events_account_created_idx ON events (account, created_at);
CREATE TABLE expired_copy AS SELECT * FROM events WHERE id <= {EXPIRED};
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Server:
    def __init__(self, base: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
            from pgserver._commands import pg_ctl

        self.srv = pgserver.get_server(base / "data", cleanup_mode="stop")
        self.socket = parse_qs(urlparse(self.srv.get_uri()).query)["host"][0]
        with self.connect() as c:
            for k, v in SETTINGS.items():
                try:
                    c.execute(f"ALTER SYSTEM SET {k} = '{v}'")  # noqa: S608 - constants of this benchmark
                except psycopg.errors.InvalidParameterValue:  # this build lacks lz4: use pglz everywhere
                    SETTINGS[k] = "pglz"
                    c.execute(f"ALTER SYSTEM SET {k} = 'pglz'")
        pg_ctl(["-w", "-l", str(self.srv.log), "restart"], pgdata=self.srv.pgdata, user=self.srv.system_user,
               timeout=60)
        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"

    def connect(self, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(host=self.socket, dbname="postgres", user="postgres", autocommit=autocommit)


WAITS = ("SELECT coalesce(max(extract(epoch FROM now() - l.waitstart)) * 1000, 0) FROM pg_locks l "
         "JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted AND l.waitstart IS NOT NULL "
         "AND a.application_name = 'pgbench'")


class LockSampler(threading.Thread):
    """Longest lock wait of any pgbench backend, sampled from pg_locks.waitstart."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server, self.max_ms, self.stop = server, 0.0, threading.Event()

    def run(self) -> None:
        with self.server.connect() as c:
            while not self.stop.wait(0.005):
                ms = c.execute(WAITS).fetchone()[0]
                self.max_ms = max(self.max_ms, float(ms))


def run_variant(server: Server, work: Path, name: str, action) -> dict:
    prefix = work / f"pgbench-{name}"
    script = work / "app.sql"
    script.write_text(SCRIPT)
    env = {**os.environ, "PGHOST": server.socket, "PGUSER": "postgres", "PGDATABASE": "postgres",
           "PGAPPNAME": "pgbench"}
    bench = subprocess.Popen([str(server.bin / "pgbench"), "-n", "-f", str(script), "-c", "4", "-j", "2", "-R", "200",
                              "-T", "900", "-l", f"--log-prefix={prefix}"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    time.sleep(2.0)
    sampler = LockSampler(server)
    sampler.start()
    t0 = time.time()
    info = action()
    t1 = time.time()
    sampler.stop.set()
    sampler.join()
    time.sleep(3.0)  # pgbench's buffered log tail lies after the window
    bench.send_signal(signal.SIGTERM)  # not SIGINT: a shell's background jobs inherit SIGINT ignored
    bench.wait()
    lat = sorted(_latencies(glob.glob(f"{prefix}*"), t0, t1))
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000 if lat else float("nan")
    out = {"variant": name, "window_s": round(t1 - t0, 2), "txns": len(lat), "p99_ms": round(p99, 2),
           "max_latency_ms": round(lat[-1] / 1000, 1) if lat else None, "max_lock_wait_ms": round(sampler.max_ms, 1),
           **info}
    log(json.dumps(out))
    return out


def _latencies(files: list[str], t0: float, t1: float) -> list[float]:
    out = []
    for f in files:
        for line in Path(f).read_text().splitlines():
            parts = line.split()
            if len(parts) < 6:
                continue
            done = int(parts[4]) + int(parts[5]) / 1e6
            latency_us = float(parts[2])
            if done >= t0 and done - latency_us / 1e6 <= t1:  # ran during the window, even if it ended after
                out.append(latency_us)
    return out


def restore(server: Server) -> None:
    with server.connect() as c:
        c.execute("INSERT INTO events SELECT * FROM expired_copy ON CONFLICT (id) DO NOTHING")
        c.execute("VACUUM (ANALYZE) events")
        c.execute("CHECKPOINT")


def single_delete(server: Server) -> dict:
    with server.connect() as c:
        t0 = time.monotonic()
        n = c.execute("DELETE FROM events WHERE created_at < now() - interval '90 days'").rowcount
        dur = time.monotonic() - t0
    return {"rows": n, "duration_s": round(dur, 3), "rows_per_s": round(n / dur), "longest_txn_ms": round(dur * 1000)}


def pitstop_purge(server: Server, work: Path, profile: str) -> dict:
    import yaml

    from pitstop.cleanup.purge import PurgeOptions, RulePurge
    from pitstop.config import load_config
    from pitstop.context import RunContext, RunOptions
    from pitstop.runbook import load_runbook

    cfg_path = work / f"bench-{profile}.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "bench", "state_dir": str(work / "state"),
        "database": {"host": server.socket, "dbname": "postgres", "user": "postgres", "sslmode": "disable"},
        "retention": [{"table": "events", "column": "created_at", "older_than": "90d"}]}))
    cfg = load_config(str(cfg_path))
    ctx = RunContext.create(cfg, load_runbook("monthly"), RunOptions(), run_id=f"bench-{profile}")
    name, prof = profile, cfg.cleanup.profiles[profile]
    r = RulePurge(ctx, cfg.retention[0], PurgeOptions(profile_name=name, profile=prof)).run()
    return {"rows": r["deleted_this_run"], "duration_s": r["duration_s"], "rows_per_s": r["rows_per_s"],
            "longest_txn_ms": r["longest_batch_ms"], "batches": r["batches"], "lock_retries": r["lock_retries"],
            "pitstop_lock_wait_caused_ms": r["max_lock_wait_caused_ms"], "paused_s": r["paused_s"]}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-cleanup-"))
    os.chmod(work, 0o755)
    t_start = time.time()
    try:
        server = Server(work)
        log(f"server up at {server.socket}; settings {SETTINGS}; loading {ROWS} rows ({EXPIRED} expired)")
        with server.connect() as c:
            c.execute(SETUP)
            c.execute("VACUUM (ANALYZE) events")
            c.execute("CHECKPOINT")
        log("loaded")
        run_variant(server, work, "warm-up", lambda: (time.sleep(5), {})[1])  # caches warm, discarded
        results = {"baseline": run_variant(server, work, "baseline", lambda: (time.sleep(8), {})[1])}
        results["delete"] = run_variant(server, work, "delete", lambda: single_delete(server))
        baselines = [results["baseline"]]
        for profile in ("default", "gentle", "fast"):
            restore(server)
            # a fresh baseline window right before each variant: this disk has stalls of a few hundred
            # ms now and then, and one unlucky baseline window must not decide every ratio
            baselines.append(run_variant(server, work, f"baseline-{len(baselines) + 1}",
                                         lambda: (time.sleep(8), {})[1]))
            results[profile] = run_variant(server, work, profile, lambda p=profile: pitstop_purge(server, work, p))
        p99s = sorted(b["p99_ms"] for b in baselines)
        median = (p99s[1] + p99s[2]) / 2
        log(f"baseline p99 windows {p99s} ms; median {median:.2f} ms is the baseline")
        results["baseline"] = {**results["baseline"], "p99_ms": round(median, 2), "p99_windows_ms": p99s}
        base, dele, pit = results["baseline"], results["delete"], results["default"]
        curve = [{"profile": p, "p99_inflation": round(results[p]["p99_ms"] / base["p99_ms"], 2),
                  "rows_per_s_vs_delete": round(results[p]["rows_per_s"] / dele["rows_per_s"], 3),
                  "max_lock_wait_ms": results[p]["max_lock_wait_ms"], "longest_txn_ms": results[p]["longest_txn_ms"]}
                 for p in ("gentle", "default", "fast")]
        curve.insert(0, {"profile": "single DELETE", "p99_inflation": round(dele["p99_ms"] / base["p99_ms"], 2),
                         "rows_per_s_vs_delete": 1.0, "max_lock_wait_ms": dele["max_lock_wait_ms"],
                         "longest_txn_ms": dele["longest_txn_ms"]})
        log("trade-off curve: " + json.dumps(curve))
        (work / "results.json").write_text(json.dumps({"results": results, "curve": curve}, indent=2))
        print(json.dumps({"results": results, "curve": curve}, indent=2))
        log(f"total {time.time() - t_start:.0f}s")
        print(f"p99_inflation={pit['p99_ms'] / base['p99_ms']:.2f} max_lock_wait_ms={pit['max_lock_wait_ms']:.0f} "
              f"longest_txn_ms={pit['longest_txn_ms']:.0f} "
              f"rows_per_s_vs_delete={pit['rows_per_s'] / dele['rows_per_s']:.2f}")
    finally:
        try:
            server.srv.cleanup()  # type: ignore[possibly-undefined]
        except Exception:  # noqa: BLE001,S110
            pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
