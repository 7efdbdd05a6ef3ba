"""Benchmark: pitstop's streamed pre-backup against its floors (``make bench-backup``).

Setup: a pgbench database (scale 100, ~1.5 GB) on the embedded PostgreSQL 16 (pgserver), kept under
``.pitstop/bench-backup`` between runs; an S3 endpoint from moto's server mode in its own process on
loopback. For each compression level (default -Z6, and -Z0 standing in for incompressible data) and
``BENCH_REPS`` repetitions (best time kept; the machine is shared and noisy):

* dump floor:   ``pg_dump -Fc`` to /dev/null
* upload floor: the same dump's bytes uploaded to the same endpoint with boto3 ``upload_file``
                (same part size and concurrency as pitstop)
* pitstop:      ``backup.postgres`` streaming pg_dump into S3, in a child process whose peak RSS
                is measured (``ru_maxrss``)

Final line: ``backup_vs_floor=<pitstop Z6 / dump floor Z6> overlap_vs_sequential=<pitstop Z0 /
(dump floor Z0 + upload floor Z0)> peak_rss_mb=<max pitstop RSS> db_mb=<database size>``.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("BENCH_STATE", ROOT / ".pitstop" / "bench-backup"))
SCALE = int(os.environ.get("BENCH_SCALE", "100"))
REPS = int(os.environ.get("BENCH_REPS", "2"))
DB = "bench"
BUCKET = "pitstop-bench"
os.environ.setdefault("BENCH_KEY", "bench-access-key")
os.environ.setdefault("BENCH_SECRET", "bench-secret-key")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pg() -> tuple[str, Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        STATE.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(STATE / "pgdata", cleanup_mode=None)
    from urllib.parse import parse_qs, urlparse

    host = parse_qs(urlparse(server.get_uri()).query)["host"][0]
    return host, Path(pgserver.__file__).parent / "pginstall" / "bin"


def tool_env(host: str) -> dict[str, str]:
    return {**os.environ, "PGHOST": host, "PGUSER": "postgres", "PGPORT": "5432"}


def ensure_db(host: str, bindir: Path) -> int:
    import psycopg

    with psycopg.connect(host=host, user="postgres", dbname="postgres", autocommit=True) as c:
        exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone()
        if exists:
            with psycopg.connect(host=host, user="postgres", dbname=DB) as b:
                n = b.execute("SELECT count(*) FROM pgbench_branches").fetchone()
                if n and n[0] == SCALE:
                    return int(b.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore
            c.execute(f'DROP DATABASE "{DB}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{DB}"')
    log(f"pgbench -i -s {SCALE} (once; kept in {STATE})")
    subprocess.run([str(bindir / "pgbench"), "-i", "-q", "-s", str(SCALE), DB], env=tool_env(host), check=True,
                   stdout=subprocess.DEVNULL)
    return ensure_db(host, bindir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not start")


def client(url: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=os.environ["BENCH_KEY"],
                        aws_secret_access_key=os.environ["BENCH_SECRET"])


def empty_bucket(s3: Any) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for o in page.get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=o["Key"])


def dump_floor(host: str, bindir: Path, z: int, out: str = "/dev/null") -> float:
    t0 = time.monotonic()
    with open(out, "wb") as f:
        subprocess.run([str(bindir / "pg_dump"), "-Fc", f"-Z{z}", DB], stdout=f, env=tool_env(host), check=True)
    return time.monotonic() - t0


def upload_floor(url: str, path: Path, part: int, conc: int) -> float:
    from boto3.s3.transfer import TransferConfig

    s3 = client(url)
    t0 = time.monotonic()
    s3.upload_file(str(path), BUCKET, "floor/upload.dump",
                   Config=TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=conc))
    took = time.monotonic() - t0
    empty_bucket(s3)
    return took


def child_config(host: str, bindir: Path, url: str) -> dict[str, Any]:
    return {"name": "bench", "state_dir": str(STATE / "state"),
            "database": {"host": host, "dbname": DB, "user": "postgres", "pg_bin_dir": str(bindir),
                         "sslmode": "disable"},
            "storage": {"kind": "s3", "bucket": BUCKET, "endpoint_url": url, "access_key_env": "BENCH_KEY",
                        "secret_key_env": "BENCH_SECRET"}}


def child(cfg_json: str, z: int) -> None:
    """Run pitstop's backup.postgres once; print wall time and this process's peak RSS."""
    from pitstop.backup.steps import BackupParams, backup_postgres
    from pitstop.config import EnvironmentConfig
    from pitstop.context import RunContext, RunOptions
    from pitstop.runbook import Runbook

    cfg = EnvironmentConfig.model_validate(json.loads(cfg_json))
    rb = Runbook.model_validate({"name": "bench", "kind": "custom", "stages": []})
    ctx = RunContext.create(cfg, rb, RunOptions())
    t0 = time.monotonic()
    out = backup_postgres(ctx, BackupParams(compress=z))
    took = time.monotonic() - t0
    m = out.data["backup"]
    print(json.dumps({"s": took, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "size": m["size"], "upload": m["upload"]}))


def pitstop_run(cfg: dict[str, Any], url: str, z: int) -> dict[str, Any]:
    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg), str(z)], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    empty_bucket(client(url))
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def main() -> None:
    host, bindir = pg()
    db_bytes = ensure_db(host, bindir)
    moto, url = start_moto()
    try:
        client(url).create_bucket(Bucket=BUCKET)
        cfg = child_config(host, bindir, url)
        from pitstop.config import StorageConfig
        from pitstop.connectors.s3 import part_size_for

        scfg = StorageConfig.model_validate(cfg["storage"])
        part, conc = part_size_for(db_bytes, scfg.part_size), scfg.max_concurrency
        results: dict[str, dict[str, Any]] = {}
        for z in (6, 0):
            tmp = STATE / f"floor-Z{z}.dump"
            dump_floor(host, bindir, z, str(tmp))  # the bytes for the upload floor (untimed)
            r: dict[str, Any] = {"dump": [], "upload": [], "pitstop": [], "rss": [], "bytes": tmp.stat().st_size}
            for rep in range(REPS):
                r["dump"].append(dump_floor(host, bindir, z))
                r["upload"].append(upload_floor(url, tmp, part, conc))
                p = pitstop_run(cfg, url, z)
                r["pitstop"].append(p["s"])
                r["rss"].append(p["rss_mb"])
                log(f"Z{z} rep {rep + 1}/{REPS}: dump {r['dump'][-1]:.1f}s upload {r['upload'][-1]:.1f}s "
                    f"pitstop {p['s']:.1f}s rss {p['rss_mb']:.0f} MB ({p['upload']['parts']} parts)")
            tmp.unlink()
            results[f"Z{z}"] = r
    finally:
        moto.terminate()
        moto.wait()
    z6, z0 = results["Z6"], results["Z0"]
    print(f"db {db_bytes / 2**20:.0f} MB; part {part // 2**20} MiB x {conc}; best of {REPS}")
    for name, r in results.items():
        print(f"{name}: dump bytes {r['bytes'] / 2**20:.0f} MB | dump floor {min(r['dump']):.2f}s | upload floor "
              f"{min(r['upload']):.2f}s | pitstop {min(r['pitstop']):.2f}s | pitstop peak RSS {max(r['rss']):.0f} MB")
    backup_vs_floor = min(z6["pitstop"]) / min(z6["dump"])
    overlap = min(z0["pitstop"]) / (min(z0["dump"]) + min(z0["upload"]))
    rss = max(z6["rss"] + z0["rss"])
    print(f"backup_vs_floor={backup_vs_floor:.2f} overlap_vs_sequential={overlap:.2f} "
          f"peak_rss_mb={rss:.0f} db_mb={db_bytes / 2**20:.0f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
