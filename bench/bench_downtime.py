"""How long users sit in maintenance mode: the naive runbook vs pitstop's plan, in one run.

Environment: the demo config (embedded PostgreSQL seeded with the demo shop, local storage) with 20
local hosts (``transport: local``), under ``.pitstop/bench-downtime``. The runbook is the monthly
one widened to 20 steps with realistic costs: real pg_dump + restore-verify, real retention purge
and VACUUM, real log rotation on 20 hosts, and ``host.command`` sleeps standing in for staging
packages (slow, online-safe) and the atomic switches inside the window (config swap, migration,
restart, cache warm-up). Both variants run through the engine directly (``runner.execute`` with the
direct unit runner, i.e. ``--engine local``); the database is re-seeded before each.

(a) naive: every cleanup/tuning step ``window: inside``, no ``after:`` (runbook order); its in-window
    time also counts pre-backup and post-verification, which a naive runbook does with the
    maintenance page up.
(b) pitstop: placements as the steps declare them, independent exclusive steps with ``after:``.

floor    = sum of the measured durations of the steps on (b)'s in-window critical path
overhead = (b)'s wall time minus the union of its step intervals (time when no step was running:
           planning, context, events, notifications, report), per run and per step.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pitstop import runner  # noqa: E402
from pitstop.audit import read_events  # noqa: E402
from pitstop.config import load_config  # noqa: E402
from pitstop.connectors.postgres import Database  # noqa: E402
from pitstop.demo import setup  # noqa: E402

HOSTS = 20
# A production-like database: the demo shop plus this many extra events (a quarter past retention), so
# the backup, its restore-verify and the purge cost what they cost on a small real platform (seconds),
# not the 0.3 s of the 10k-row demo. BENCH_EVENTS=0 gives the bare demo data.
# Staging (download + upload of the month's packages and configs under temporary names, in parallel on
# every app host): 5 s stands in for what takes minutes on a real fleet. BENCH_STAGING_S=2 was the
# earlier figure (see BENCHMARKS.md for both).
STAGING_S = float(os.environ.get("BENCH_STAGING_S", 5.0))
EXTRA_EVENTS = int(os.environ.get("BENCH_EVENTS", 1_000_000))
HISTORY = """
INSERT INTO events (user_id, kind, payload, created_at)
SELECT 1 + g % 200, (ARRAY['login', 'view', 'purchase', 'logout'])[1 + g % 4], jsonb_build_object('n', g),
       now() - make_interval(days => CASE WHEN g % 4 = 0 THEN 120 + g % 200 ELSE g % 80 END, mins => g % 600)
FROM generate_series(1, {n}) g;
ANALYZE events;
"""
STATE = ROOT / ".pitstop" / "bench-downtime"


def _config() -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["name"] = "bench-downtime"
    cfg["state_dir"] = str(STATE)
    names = [f"host-{i:02d}" for i in range(1, HOSTS + 1)]
    cfg["hosts"] = {n: {"transport": "local", "root": f"hosts/{n}"} for n in names}
    cfg["groups"] = {"web": names, "app": names, "db": names[:1]}
    cfg["fleet"] = {"progress": False}
    cfg["notifications"]["channels"] = {"ops-log": {"kind": "file", "path": "notifications.jsonl",
                                                    "audiences": ["ops"]}}
    cfg["notifications"]["notices"]["policy"] = "warn"
    cfg.pop("schedules", None)
    if os.environ.get("BENCH_FEED", "1") == "0":  # status feed re-rendered on every run event (see BENCHMARKS.md)
        cfg["notifications"].pop("feed", None)
    STATE.mkdir(parents=True, exist_ok=True)
    path = STATE / "env.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _sleep(name: str, secs: float, targets: str, **extra: Any) -> dict[str, Any]:
    return {"uses": "host.command", "name": name, "destructive": False, "targets": targets,
            "with": {"argv": ["sleep", str(secs)]}, **extra}


def _runbooks() -> tuple[dict[str, Any], dict[str, Any]]:
    monthly = yaml.safe_load((ROOT / "runbooks" / "monthly.yaml").read_text())
    stages = {s["name"]: s for s in monthly["stages"]}
    tuning = [s for s in stages["server-tuning"]["steps"] if s["uses"] in ("tuning.logs", "disk.reclaim")]
    tuning += [
        _sleep("stage packages and configs", STAGING_S, "app", window="outside"),  # upload under temp names
        _sleep("swap configs (rename)", 0.2, "app", id="swap"),
        _sleep("migrate schema", 0.6, "db", id="migrate", after=[]),
        _sleep("restart application", 0.4, "app", id="restart", after=["swap"]),
        _sleep("warm caches", 0.3, "app", after=["migrate", "restart"]),
    ]
    post = [s for s in stages["post-verification"]["steps"]
            if s["uses"] in ("check.maintenance_off", "check.postgres_connect", "check.data_parity",
                             "check.disk_free")]
    planned = {"name": "downtime", "kind": "monthly", "expected_downtime": "5m", "stages": [
        stages["preflight"], stages["pre-backup"], stages["maintenance-on"], stages["database-cleanup"],
        {"name": "server-tuning", "steps": tuning}, stages["maintenance-off"],
        {"name": "post-verification", "steps": post}]}
    naive = copy.deepcopy(planned)
    for stage in naive["stages"]:
        if stage["name"] in ("database-cleanup", "server-tuning"):
            for s in stage["steps"]:
                s["window"] = "inside"
                s.pop("after", None)
    count = sum(len(s["steps"]) for s in planned["stages"])
    assert count == 20, count
    return naive, planned


def _write(doc: dict[str, Any], name: str) -> Path:
    path = STATE / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _ts(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _run(env: Path, rb: Path) -> dict[str, Any]:
    cfg = load_config(str(env))
    setup(cfg, reset=True)
    if EXTRA_EVENTS:
        with Database(cfg).connect() as conn:
            conn.execute(HISTORY.format(n=int(EXTRA_EVENTS)))
            conn.commit()
    t0 = time.perf_counter()
    res = runner.execute(str(env), str(rb))
    wall = time.perf_counter() - t0
    report = res.report()
    assert report["status"] == "succeeded", report.get("failure")
    events = read_events(res.run_dir / "audit.jsonl")
    started: dict[str, float] = {}
    intervals = []
    for e in events:
        key = f"{e['data'].get('stage')}/{e['data'].get('step')}"
        if e["kind"] == "step.started":
            started[key] = _ts(e["ts"])
        elif e["kind"] == "step.finished":
            intervals.append((started[key], _ts(e["ts"])))
    stage_s = {s["name"]: s["duration_s"] or 0.0 for s in report["stages"]}
    return {"wall": wall, "window": report["maintenance_window"]["duration_s"], "stage_s": stage_s,
            "steps_union": _union(intervals), "steps": len(intervals), "report": report}


def main() -> None:
    os.environ.setdefault("PITSTOP_STATE_DIR", str(STATE))
    env = _config()
    naive_doc, planned_doc = _runbooks()
    naive_rb, planned_rb = _write(naive_doc, "naive"), _write(planned_doc, "planned")
    print(f"environment: {env} ({HOSTS} local hosts); engine: runner.execute (= --engine local)")
    a = _run(env, naive_rb)
    b = _run(env, planned_rb)
    naive_in = a["window"] + a["stage_s"].get("pre-backup", 0.0) + a["stage_s"].get("post-verification", 0.0)
    win = b["report"]["in_window"]
    floor = win["critical_path_s"]
    overhead = b["wall"] - b["steps_union"]
    pre, post = a["stage_s"].get("pre-backup", 0.0), a["stage_s"].get("post-verification", 0.0)
    print(f"(a) naive:   in-window {naive_in:.3f}s (window {a['window']:.3f}s + pre-backup {pre:.3f}s + "
          f"post-verification {post:.3f}s), wall {a['wall']:.3f}s")
    print(f"(b) pitstop: in-window {b['window']:.3f}s, wall {b['wall']:.3f}s, "
          f"steps' own time {b['steps_union']:.3f}s over {b['steps']} steps")
    print("critical path: " + " → ".join(f"{c['step']} {c['duration_s']}s" for c in win["critical_path"])
          + f" = floor {floor:.3f}s")
    print(f"in_window_vs_floor={b['window'] / floor:.2f} in_window_vs_naive={b['window'] / naive_in:.3f} "
          f"overhead_pct={100 * overhead / b['wall']:.1f} overhead_ms_per_step={round(1000 * overhead / b['steps'])}")


if __name__ == "__main__":
    main()
