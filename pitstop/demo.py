"""The embedded demo environment: an embedded PostgreSQL (pgserver) seeded with a small demo
application, and local "hosts" (sandbox directories) with logs to rotate. Set-up is idempotent."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .config import EnvironmentConfig
from .connectors.postgres import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id          serial PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS sessions (
    id          bigserial PRIMARY KEY,
    user_id     int NOT NULL REFERENCES users(id),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id           bigserial PRIMARY KEY,
    user_id      int NOT NULL REFERENCES users(id),
    amount_cents int NOT NULL,
    status       text NOT NULL,
    created_at   timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id          bigserial PRIMARY KEY,
    user_id     int NOT NULL REFERENCES users(id),
    kind        text NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS events_created_at_idx ON events (created_at);
CREATE INDEX IF NOT EXISTS sessions_expires_at_idx ON sessions (expires_at);
"""

# Ages are chosen well away from the retention cutoffs (90 days for events, 30 days for sessions)
# so the expected purge is exact whatever the time of day: 1,500 events and 400 sessions expire.
SEED = """
INSERT INTO users (email, created_at)
SELECT 'user' || g || '@demo.example', now() - make_interval(days => 400 - g) FROM generate_series(1, 200) g;

INSERT INTO events (user_id, kind, payload, created_at)
SELECT 1 + g % 200, (ARRAY['login', 'view', 'purchase', 'logout'])[1 + g % 4], jsonb_build_object('n', g),
       now() - make_interval(days => CASE WHEN g % 4 = 0 THEN 120 + g % 200 ELSE g % 80 END, mins => g % 600)
FROM generate_series(1, 6000) g;

INSERT INTO sessions (user_id, created_at, expires_at)
SELECT 1 + g % 200, t, t + interval '1 day'
FROM (SELECT g, now() - make_interval(days => CASE WHEN g % 5 = 0 THEN 45 + g % 100 ELSE g % 20 END) AS t
      FROM generate_series(1, 2000) g) s;

INSERT INTO orders (user_id, amount_cents, status, created_at)
SELECT 1 + g % 200, 500 + (g * 37) % 20000, (ARRAY['paid', 'refunded', 'pending'])[1 + g % 3],
       now() - make_interval(days => g % 365)
FROM generate_series(1, 1000) g;
"""

DEMO_TABLES = ("events", "sessions", "orders", "users")


def setup_database(cfg: EnvironmentConfig, reset: bool = False) -> dict[str, int]:
    db = Database(cfg)
    with db.connect() as conn:
        if reset:
            conn.execute("DROP TABLE IF EXISTS events, sessions, orders, users CASCADE")
        conn.execute(SCHEMA)
        row = conn.execute("SELECT count(*) FROM users").fetchone()
        if row is not None and row[0] == 0:
            conn.execute(SEED)
        conn.commit()
        counts = {}
        for t in DEMO_TABLES:
            r = conn.execute(f"SELECT count(*) FROM {t}").fetchone()  # noqa: S608 - constant table names
            counts[t] = int(r[0]) if r else 0
    return counts


def _touch(path: Path, days_old: float, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    t = time.time() - days_old * 86400
    os.utime(path, (t, t))


def setup_hosts(cfg: EnvironmentConfig) -> list[str]:
    """Give every local host a log directory with a live log, old logs and a stale archive."""
    names = []
    for name, host in cfg.hosts.items():
        if host.transport != "local" or not host.root:
            continue
        logs = cfg.resolve(host.root) / "var" / "log" / "app"
        (cfg.resolve(host.root) / "var" / "www").mkdir(parents=True, exist_ok=True)
        live = logs / "app.log"
        if not live.exists():
            _touch(live, 0, f"{name} app log\n")
        for days in (3, 4, 5):
            old = logs / f"app-{days}d.log"
            if not old.exists() and not Path(str(old) + ".gz").exists():
                _touch(old, days, f"{name} log from {days} days ago\n" * 50)
        stale = logs / "app-45d.log.gz"
        if not stale.exists():
            _touch(stale, 45, "stale archive")
        names.append(name)
    return names


def setup(cfg: EnvironmentConfig, reset: bool = False) -> dict[str, object]:
    counts = setup_database(cfg, reset=reset)
    hosts = setup_hosts(cfg)
    return {"database": counts, "hosts": hosts}
