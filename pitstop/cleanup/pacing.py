"""Pacing: how big the next batch is and how long to wait before it.

Three signals, all read from PostgreSQL itself:

* the batch's own duration: the size is adapted multiplicatively towards ``target_batch_ms``;
* the application's observed impact, sampled by :class:`Monitor` on its own connection while the
  purge runs: sessions waiting for a lock that *our* backend holds (``pg_locks.waitstart`` and
  ``pg_blocking_pids``) and application backends waiting on ``Lock``/``LWLock``/``IO`` wait events
  (``pg_stat_activity``). Waiters shrink the batch and lengthen the pause; a quiet server lets the
  pause decay back to the profile's floor;
* application statements stalled on a wait (``clock_timestamp() - query_start`` of app backends in a
  Lock/LWLock/IO wait, e.g. ``WALWrite`` behind the purge's WAL flush): past ``max_app_stall_ms`` the
  batch shrinks and the pause grows, which is what keeps the application's tail latency flat;
* ceilings checked before every batch: replica lag (``pg_stat_replication``) and active backends.

The monitor also measures the *longest lock wait the purge caused*: the maximum, over every
sampled waiter blocked by our backend, of ``now() - waitstart``. Sampling means it can under-read by
up to one interval (``sample_ms``); the longest purge transaction is reported beside it as an upper
bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import CleanupProfile, EnvironmentConfig
from ..errors import StepFailed

_WAITERS = """
SELECT l.pid, extract(epoch FROM now() - l.waitstart) * 1000
FROM pg_locks l
WHERE NOT l.granted AND l.waitstart IS NOT NULL AND %(pid)s = ANY(pg_blocking_pids(l.pid))
"""
_APP_WAITS = """
SELECT count(*) FILTER (WHERE wait_event_type IN ('Lock', 'LWLock', 'IO')),
       count(*) FILTER (WHERE wait_event_type = 'Lock'),
       coalesce(max(extract(epoch FROM clock_timestamp() - query_start) * 1000)
                FILTER (WHERE wait_event_type IN ('Lock', 'LWLock', 'IO')), 0)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()
  AND pid <> %(pid)s AND application_name NOT LIKE 'pitstop%%'
"""
_CEILINGS = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND state = 'active'
          AND pid <> pg_backend_pid() AND application_name NOT LIKE 'pitstop%%'),
       (SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) FROM pg_stat_replication),
       (SELECT coalesce(max(pg_wal_lsn_diff(sent_lsn, replay_lsn)), 0) FROM pg_stat_replication)
"""


def resolve_profile(cfg: EnvironmentConfig, *names: str | None) -> tuple[str, CleanupProfile]:
    """The first named profile (step param, then rule, then environment default)."""
    name = next((n for n in names if n), cfg.cleanup.profile)
    if name not in cfg.cleanup.profiles:
        raise StepFailed(f"unknown cleanup profile {name!r} (known: {', '.join(sorted(cfg.cleanup.profiles))})")
    return name, cfg.cleanup.profiles[name]


@dataclass
class Impact:
    """What the monitor saw during one window (normally one batch)."""

    samples: int = 0
    app_waiting: int = 0  # sum over samples of app backends waiting on Lock/LWLock/IO
    blocked_by_us: int = 0  # sum over samples of sessions waiting for our locks
    max_wait_ms: float = 0.0
    max_app_stall_ms: float = 0.0  # longest-running app statement seen stuck in a Lock/LWLock/IO wait

    @property
    def mean_app_waiting(self) -> float:
        return self.app_waiting / self.samples if self.samples else 0.0


class Monitor:
    """Samples, on its own connection, what the purge's backend does to everyone else."""

    def __init__(self, connect: Callable[[], Any], purge_pid: int, sample_ms: float):
        self._connect = connect
        self.pid = purge_pid
        self.interval = sample_ms / 1000
        self._window = Impact()
        self.total = Impact()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pitstop-cleanup-monitor", daemon=True)
        self.error: str | None = None

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def take(self) -> Impact:
        """The impact since the previous call."""
        with self._lock:
            window, self._window = self._window, Impact()
        return window

    def _run(self) -> None:
        try:
            with self._connect() as conn:
                conn.autocommit = True
                while not self._stop.wait(self.interval):
                    self._sample(conn)
        except Exception as exc:  # noqa: BLE001 - monitoring must never break the purge
            self.error = str(exc)

    def _sample(self, conn: Any) -> None:
        app_wait, lock_wait, stall_ms = conn.execute(_APP_WAITS, {"pid": self.pid}).fetchone()
        waits: list[tuple[int, float]] = []
        if lock_wait:  # pg_blocking_pids takes the lock manager's locks: only call it when needed
            waits = [(int(p), float(ms or 0)) for p, ms in conn.execute(_WAITERS, {"pid": self.pid}).fetchall()]
        longest = max((ms for _, ms in waits), default=0.0)
        with self._lock:
            for imp in (self._window, self.total):
                imp.samples += 1
                imp.app_waiting += int(app_wait)
                imp.blocked_by_us += len(waits)
                imp.max_wait_ms = max(imp.max_wait_ms, longest)
                imp.max_app_stall_ms = max(imp.max_app_stall_ms, float(stall_ms or 0))


@dataclass
class Controller:
    """Adaptive batch size (rows, or blocks for ctid ranges) and feedback-driven pause."""

    profile: CleanupProfile
    size: int = 0
    pause_ms: float = 0.0
    scale: float = 1.0  # rows per unit (1 for key ranges; rows per block for ctid ranges)
    history: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.size = self.size or self.profile.initial_batch
        self.pause_ms = self.profile.pause_ms

    def units(self) -> int:
        lo, hi = self.profile.min_batch / self.scale, self.profile.max_batch / self.scale
        return max(1, int(min(max(self.size / self.scale, lo), hi)))

    def observe(self, duration_ms: float, impact: Impact) -> float:
        """Adapt after a committed batch; returns the pause (ms) before the next one."""
        p = self.profile
        ratio = p.target_batch_ms / max(duration_ms, 0.1)
        self.size = int(self.size * min(1.5, max(0.5, ratio)))
        hurt = impact.blocked_by_us > 0 or impact.mean_app_waiting > p.max_app_waiters or (
            p.max_app_stall_ms is not None and impact.max_app_stall_ms > p.max_app_stall_ms)
        if hurt:  # multiplicative decrease of the work, multiplicative increase of the pause
            self.size = int(self.size * 0.6)
            self.pause_ms = min(p.max_pause_ms, max(self.pause_ms * 2, duration_ms, p.pause_ms + 5))
        else:
            self.pause_ms = max(p.pause_ms, self.pause_ms * 0.7)
        self.size = int(min(max(self.size, p.min_batch), p.max_batch))
        duty_pause = duration_ms * (1 / p.duty_cycle - 1)
        return max(self.pause_ms, duty_pause)

    def shrink(self, factor: float = 0.5) -> None:
        self.size = max(self.profile.min_batch, int(self.size * factor))


class Throttle:
    """Waits before a batch while a replica lags or the server is busier than the profile allows."""

    def __init__(self, profile: CleanupProfile, sleep: Callable[[float], None] = time.sleep):
        self.profile = profile
        self.sleep = sleep
        self.waited_s = 0.0
        self.reasons: dict[str, int] = {}

    def check(self, conn: Any) -> tuple[str, str] | None:
        """``(kind, message)`` of the first ceiling exceeded, or None."""
        p = self.profile
        active, lag_s, lag_bytes = conn.execute(_CEILINGS).fetchone()
        conn.commit()
        if p.max_replica_lag_s is not None and float(lag_s) > p.max_replica_lag_s:
            return "replica_lag", f"replica lag {float(lag_s):.1f}s > {p.max_replica_lag_s}s"
        if p.max_replica_lag_bytes is not None and int(lag_bytes) > p.max_replica_lag_bytes:
            return "replica_lag", f"replica lag {int(lag_bytes)} bytes > {p.max_replica_lag_bytes}"
        if p.max_active_backends is not None and int(active) > p.max_active_backends:
            return "active_backends", f"{int(active)} active backends > {p.max_active_backends}"
        return None

    def wait(self, conn: Any) -> None:
        start = time.monotonic()
        delay = 0.05
        while (found := self.check(conn)) is not None:
            kind, reason = found
            self.reasons[kind] = self.reasons.get(kind, 0) + 1
            if time.monotonic() - start > self.profile.max_throttle_s:
                raise StepFailed(f"purge throttled for over {self.profile.max_throttle_s:.0f}s ({reason}); "
                                 "progress is saved, rerun to resume")
            self.sleep(delay)
            delay = min(1.0, delay * 2)
        self.waited_s += time.monotonic() - start
