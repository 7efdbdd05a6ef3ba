"""Figures for the reliability driver: each test appends what it actually injected and checked.

Tests call ``record(...)``; when ``PITSTOP_RELIABILITY_OUT`` names a file (set by run_suite.py) one
JSON line per call is appended there, and the driver sums them into its final line.
"""

from __future__ import annotations

import json
import os

FIELDS = ("kill_points", "left_in_maintenance", "repeated_destructive", "lost_rows", "transient_faults",
          "recovered", "bad_inputs", "clear_errors", "injections", "executed", "secret_leaks",
          "symlink_races", "followed", "modes_checked", "world_readable", "secret_forms", "forged_inputs", "trusted")


def full() -> bool:
    """True under `make reliability` (every case); False in `make test` (a fast subset)."""
    return os.environ.get("PITSTOP_RELIABILITY_FULL") == "1"


def record(test: str, **counts: int) -> None:
    unknown = set(counts) - set(FIELDS)
    assert not unknown, unknown
    out = os.environ.get("PITSTOP_RELIABILITY_OUT")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps({"test": test, **counts}) + "\n")
