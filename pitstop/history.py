"""Earlier runs of a runbook, read from their ``report.json`` files (estimates come from history)."""

from __future__ import annotations

import json
import math
from typing import Any

from .config import EnvironmentConfig


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def recent_reports(cfg: EnvironmentConfig, runbook: str, limit: int = 10,
                   status: str | None = "succeeded") -> list[dict[str, Any]]:
    """The latest ``limit`` reports of ``runbook`` on this environment, newest first."""
    reports = []
    for path in cfg.resolve(cfg.reports.dir).glob("*/report.json"):
        try:
            r = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if r.get("runbook") == runbook and (status is None or r.get("status") == status) \
                and not r.get("dry_run"):
            reports.append(r)
    reports.sort(key=lambda r: str(r.get("started_at")), reverse=True)
    return reports[:limit]
