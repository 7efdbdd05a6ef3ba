"""What one rule's purge reports: the archive manifest and the result recorded as ``cleanup.purged``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..units import format_duration
from . import archive

if TYPE_CHECKING:
    from .pacing import Monitor
    from .progress import Episode
    from .purge import RulePurge
    from .rules import TableFacts


def _valid_chunk(meta: Any) -> bool:
    return isinstance(meta, dict) and all(isinstance(meta.get(k), int) and not isinstance(meta.get(k), bool)
                                          for k in ("rows", "size")) and isinstance(meta.get("sha256"), str)


def manifest(purge: RulePurge) -> dict[str, Any] | None:
    """Write the archive manifest of the episode. The chunks recorded in the progress row are hints too:
    only objects under this episode's own prefix that storage really holds are listed."""
    assert purge.ep is not None
    if not purge.rule.archive:
        return None
    base = purge._archive_base()
    raw = purge.ep.state.get("chunks", {})
    recorded = raw if isinstance(raw, dict) else {}
    stored_keys = set(purge.ctx.storage.list(base + "/")) if recorded else set()
    chunks = {}
    for key, meta in recorded.items():
        if isinstance(key, str) and key.startswith(base + "/") and key in stored_keys and _valid_chunk(meta):
            chunks[key] = {k: meta[k] for k in ("rows", "sha256", "size")}
        else:
            purge.warn(f"archive chunk {str(key)[:200]!r} recorded in the progress row is not an object of this "
                       "episode in storage: left out of the manifest")
    if raw is not recorded:
        purge.warn("the progress row's archive chunk list is malformed: ignored")
    stored = archive.write_manifest(purge.ctx.storage, base, chunks, purge.rule.qualified, purge.ep.cutoff.isoformat())
    rows = sum(c["rows"] for c in chunks.values())
    return {"manifest": stored.location, "sha256": stored.sha256, "objects": len(chunks), "rows": rows}


def result(purge: RulePurge, ep: Episode, mon: Monitor, elapsed: float, rows_after: int, before: dict[str, Any],
           after: dict[str, Any], stored: dict[str, Any] | None, facts: TableFacts) -> dict[str, Any]:
    s, txns, p = purge.stats, sorted(purge.stats.txn_ms), purge.p
    share = ep.expired / ep.rows_before if ep.rows_before else 0.0
    return {
        "table": purge.rule.qualified, "column": purge.rule.column,
        "older_than": format_duration(purge.rule.older_than), "partitions_mode": purge.rule.partitions,
        "cutoff": ep.cutoff.isoformat(), "profile": purge.opts.profile_name, "episode": ep.id,
        "strategy": "partitioned" if facts.kind == "p" else ("pk-range" if facts.pk else "ctid-range"),
        "rows_before": ep.rows_before, "expired": ep.expired, "share": round(share, 4),
        "max_share": purge.rule.max_share, "deleted": ep.deleted,
        "deleted_this_run": ep.deleted - (purge._base_deleted or 0),
        "rows_after": rows_after, "resumed": ep.resumed, "runs": ep.runs,
        "batches": ep.batches, "lock_retries": s.lock_retries, "statement_timeouts": s.statement_timeouts,
        "longest_batch_ms": round(s.longest_txn_ms, 1),
        "p50_batch_ms": round(txns[len(txns) // 2], 1) if txns else None,
        "max_lock_wait_caused_ms": round(mon.total.max_wait_ms, 1),
        "lock_wait_method": f"sampled pg_locks.waitstart of sessions blocked by the purge every "
                            f"{p.sample_ms:g} ms (may under-read by one interval); the longest "
                            "purge transaction bounds it from above",
        "sessions_blocked_samples": mon.total.blocked_by_us, "monitor_error": mon.error,
        "throttled_s": round(purge.throttle.waited_s, 3), "throttle_reasons": purge.throttle.reasons,
        "paused_s": round(s.paused_s, 3), "duration_s": round(elapsed, 3),
        "rows_per_s": round(s.deleted / elapsed, 1) if elapsed > 0 else None,
        "partitions_dropped": purge.dropped, "partitions_refused": purge.refused,
        "foreign_keys": purge.foreign_keys, "warnings": purge.warnings, "archive": stored,
        "metrics_before": before, "metrics_after": after,
    }
