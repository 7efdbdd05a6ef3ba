"""Earlier runs of a runbook, read from their ``report.json`` files (estimates come from history)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from .config import EnvironmentConfig

SCAN_LIMIT = 200  # run folders looked at, newest first


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def recent_reports(cfg: EnvironmentConfig, runbook: str, limit: int = 10, status: str | None = "succeeded",
                   keep: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
    """The latest ``limit`` reports of ``runbook`` on this environment, newest first.

    Run folders are named ``<UTC stamp>-...``, so they are read newest first and the scan stops after
    ``limit`` matches or ``SCAN_LIMIT`` folders: the cost stays flat however long the history grows."""
    reports: list[dict[str, Any]] = []
    paths = sorted(cfg.resolve(cfg.reports.dir).glob("*/report.json"), key=lambda p: p.parent.name, reverse=True)
    for path in paths[:SCAN_LIMIT]:
        if len(reports) >= limit:
            break
        try:
            r = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if r.get("runbook") == runbook and (status is None or r.get("status") == status) \
                and not r.get("dry_run") and r.get("environment", cfg.name) == cfg.name and (keep is None or keep(r)):
            reports.append(r)
    reports.sort(key=lambda r: str(r.get("started_at")), reverse=True)
    return reports[:limit]
