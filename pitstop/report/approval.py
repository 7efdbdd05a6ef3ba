"""The report's ``approval`` section, read off the audit log (docs/approvals.md, docs/reports.md).

``None`` when the run had no approval gate; else who was asked, who decided what, how and when — or that
the wait timed out, failed, or was skipped by an emergency runbook (with its reason)."""

from __future__ import annotations

from typing import Any

from .shape import text

_STATUS = {"approve": "approved", "reject": "rejected"}


def approval_section(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    out: dict[str, Any] | None = None
    for e in events:
        d, kind = e["data"], e["kind"]
        if kind == "approval.skipped":
            out = {"status": "skipped", "reason": text(d.get("reason")), "at": e["ts"],
                   "source": text(d.get("source")) or "runbook"}
        elif kind == "approval.requested":
            out = {"status": "waiting", "requested_at": e["ts"], "before": text(d.get("before")),
                   "stage": text(d.get("stage")), "approvers": [text(a) for a in d.get("approvers") or []],
                   "audience": text(d.get("audience")), "deadline": text(d.get("deadline")),
                   "timeout_s": d.get("timeout_s"), "mechanism": text(d.get("mechanism")),
                   "flow_run_id": text(d.get("flow_run_id")), "source": text(d.get("source")),
                   "approver": None, "comment": None, "via": None, "authenticated": None, "decided_at": None,
                   "waited_s": None, "error": None, "what": [text(w) for w in d.get("what") or []]}
        elif out is not None and kind == "approval.decided":
            out.update(status=_STATUS.get(text(d.get("decision")) or "", "unknown"), approver=text(d.get("approver")),
                       comment=text(d.get("comment")), via=text(d.get("via")),
                       authenticated=bool(d.get("authenticated")), decided_at=text(d.get("decided_at")) or e["ts"],
                       waited_s=d.get("waited_s"))
        elif out is not None and kind == "approval.timed_out":
            out.update(status="timed out", waited_s=d.get("waited_s"), decided_at=e["ts"])
        elif out is not None and kind == "approval.failed":
            out.update(status="failed", error=text(d.get("error")), decided_at=e["ts"])
        elif out is not None and kind == "approval.already_given":
            out["resumed"] = True  # a later attempt of the run, which was approved before it crashed
    return out
