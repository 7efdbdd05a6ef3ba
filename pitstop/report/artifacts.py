"""Publishes a run's report as Prefect artifacts (a markdown artifact and a table artifact) on the
flow run it belongs to, through the publisher the flow hands the runner (``FlowRunRef.publish``, from
the Prefect adapter). Without one (``--engine local``) it does nothing; it never imports Prefect."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..provenance import ArtifactPublisher


def _slug(text: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower())


def artifact_key(report: dict[str, Any], suffix: str) -> str:
    base = _slug(f"pitstop-{report['environment']}-{report['runbook']}")
    return f"{base.strip('-')}-{suffix}"


def artifact_prefix(env: str) -> str:
    """The start of every artifact key of environment ``env`` (``report verify`` looks them up by it)."""
    return _slug(f"pitstop-{env}-")


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for s in report["stages"]:
        for st in s["steps"]:
            rows.append({"kind": "step", "stage": s["name"], "name": st["name"], "host": "", "status": st["status"],
                         "detail": st.get("error") or st.get("summary") or ""})
    for c in report["checks"]:
        rows.append({"kind": "check", "stage": c.get("stage") or "", "name": c["name"], "host": c.get("host") or "",
                     "status": c["status"], "detail": f"observed {c['observed']}; expected {c['expected']}"})
    return rows


def full_report_link(ctx: Any) -> str:
    """Where the full report (``report.html``) of the run is: under the config's ``reports.url`` when it is
    served, else a ``file://`` URL on the machine that ran it."""
    base = ctx.cfg.reports.url
    if base:
        from urllib.parse import quote

        return f"{base.rstrip('/')}/{quote(ctx.run_id)}/report.html"
    return (ctx.run_dir / "report.html").resolve().as_uri()


def publish(report: dict[str, Any], markdown: str, link: str | None = None,
            publisher: ArtifactPublisher | None = None) -> dict[str, str] | None:
    """Create the artifacts with ``publisher``; returns their ids, or None without one or outside a flow
    run. Never raises.

    ``link``: the full report's address, put at the top of the markdown artifact."""
    try:
        if publisher is None:
            return None
        if link:
            markdown = f"**Full report:** [report.html]({link}) (HTML, with every section; also report.json)\n\n" \
                       + markdown
        audit = report.get("audit") or {}
        desc = (f"pitstop {report['runbook']} on {report['environment']}: {report['status']} ({report['run_id']}); "
                f"audit chain head: {audit.get('events')} events, last hash {audit.get('last_hash')}")
        return publisher(markdown, artifact_key(report, "report"), table_rows(report),
                                artifact_key(report, "results"), desc)
    except Exception:  # noqa: BLE001 - the run folder is the record; the UI copy is a convenience
        return None
