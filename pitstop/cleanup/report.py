"""The cleanup section of the report, folded from the audit events (``cleanup.*``)."""

from __future__ import annotations

from typing import Any


def cleanup_section(events: list[dict[str, Any]]) -> dict[str, Any]:
    def of(kind: str) -> list[dict[str, Any]]:
        return [e["data"] for e in events if e["kind"] == kind]

    purges = of("cleanup.purged")
    tables: dict[str, int] = {}
    for p in purges:
        tables[p["table"]] = tables.get(p["table"], 0) + int(p.get("deleted_this_run", p.get("deleted")) or 0)
    vacuum = of("cleanup.vacuumed")
    invalid = sorted({ix for d in of("cleanup.invalid_indexes") for ix in d.get("indexes", [])})
    return {
        "tables": tables,
        "rows_purged": sum(tables.values()),
        "rules": purges,
        "partitions_dropped": [{"table": p["table"], **d} for p in purges for d in p.get("partitions_dropped") or []],
        "partitions_refused": of("cleanup.partition_refused"),
        "foreign_keys": [{"table": p["table"], **k} for p in purges for k in p.get("foreign_keys") or []],
        "warnings": of("cleanup.warning"),
        "archives": [{"table": p["table"], **p["archive"]} for p in purges if p.get("archive")],
        "max_lock_wait_caused_ms": max((p.get("max_lock_wait_caused_ms") or 0 for p in purges), default=None),
        "longest_batch_ms": max((p.get("longest_batch_ms") or 0 for p in purges), default=None),
        "backoffs": len(of("cleanup.backoff")),
        "vacuum": vacuum,
        "reindexed": of("cleanup.reindexed"),
        "rewritten": of("cleanup.rewritten"),
        "invalid_indexes": invalid,
        "superuser": bool(of("cleanup.superuser")),
    }
