"""Benchmark piece: how long the maintenance flag existed during the second of two back-to-back demo
monthly runs (``noop_window_s``; goal 0: a run with nothing to do needs no window, docs/window.md).

A fresh demo state directory (``BENCH_STATE``, default a temporary one) gets ``pitstop demo`` (set-up and
the first monthly run, which has work), then ``pitstop run --env demo --runbook monthly`` while a thread
polls every web host's flag file each millisecond and adds up the time it existed. ``BENCH_ENGINE``
(``local`` by default; ``prefect``) picks the engine of both runs.

Final line: ``noop_window_s=<seconds> first_window_s=<seconds the flag existed in the first run>``.
:func:`measure` is what ``make bench-overhead`` can call.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class FlagClock:
    """Seconds any of ``paths`` existed while the clock ran (polled every millisecond)."""

    def __init__(self, paths: list[Path]):
        self.paths, self.seconds = paths, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if any(p.exists() for p in self.paths):
                self.seconds += now - last
            last = now
            time.sleep(0.001)

    def __enter__(self) -> FlagClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _pitstop(state: Path, *args: str) -> None:
    env = {**os.environ, "PITSTOP_STATE_DIR": str(state)}
    res = subprocess.run([sys.executable, "-m", "pitstop.cli", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    if res.returncode != 0:
        raise SystemExit(f"pitstop {' '.join(args)} failed ({res.returncode}): {res.stderr[-2000:]}")


def measure(state: Path, engine: str = "local") -> tuple[float, float]:
    """(seconds the flag existed in the second run, in the first run) of two back-to-back demo monthly runs."""
    flags = [state / "hosts" / h / "var" / "www" / "maintenance.flag" for h in ("web-1", "web-2")]
    with FlagClock(flags) as first:
        _pitstop(state, "demo", "--engine", engine)
    with FlagClock(flags) as second:
        _pitstop(state, "run", "--env", "demo", "--runbook", "monthly", "--engine", engine)
    return round(second.seconds, 3), round(first.seconds, 3)


def main() -> None:
    engine = os.environ.get("BENCH_ENGINE", "local")
    given = os.environ.get("BENCH_STATE")
    with tempfile.TemporaryDirectory(prefix="pitstop-noop-") as tmp:
        noop, first = measure(Path(given) if given else Path(tmp) / "state", engine)
    print(f"noop_window_s={noop} first_window_s={first}")


if __name__ == "__main__":
    main()
