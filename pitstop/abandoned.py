"""Abandoned runs: a run that was SIGKILLed (or whose machine died) cannot alert for itself.

The next pitstop invocation for the same environment (``run``, ``resume``) looks for them right after
taking the environment lock — holding the lock proves no other run of the environment is alive, so
an audit log whose last ``run.started``/``run.resumed`` has no ``run.finished`` after it belongs to a
dead process. For each one it sends a ``run.abandoned`` alert, once, to the channels of the ``ops``
audience: run id, runbook, the last stage and step, when the log stopped, whether maintenance mode
was on and when its dead-man TTL expires (or that no dead-man was armed). The alert is idempotent
through the notification ledger (key ``abandoned-<run id>-<attempt>-<channel>``: a second invocation,
or a concurrent one, does not resend; a failed delivery is retried by the next invocation) and is
recorded in the abandoned run's own audit log as a ``run.abandoned`` event. Values come from the
audit log, which is already redacted: no secrets. Finding or alerting never breaks the invocation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import EnvironmentConfig

if TYPE_CHECKING:
    from .notify.channels import SecretReader

EVENT = "run.abandoned"
AUDIENCE = "ops"
log = logging.getLogger(__name__)


@dataclass
class Abandoned:
    run_id: str
    run_dir: Path
    attempt: int  # how many times the run was started or resumed (each can be abandoned once)
    runbook: str
    trigger: str
    last_event: str
    last_event_at: str
    started_at: str = ""
    stage: str | None = None
    step: str | None = None
    maintenance_hosts: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> expires_at, deadman

    @property
    def maintenance_on(self) -> bool:
        return bool(self.maintenance_hosts)

    def facts(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("run_dir")
        return {**d, "maintenance_on": self.maintenance_on}


def _events(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by the crash: everything before it is what the run recorded
    return out


def inspect(run_dir: Path, environment: str) -> Abandoned | None:
    """The abandoned attempt of ``run_dir``, or None (finished, never started, other environment)."""
    from .resume import attempt_events

    events = attempt_events(_events(run_dir / "audit.jsonl"))  # a report-only resume is not an attempt
    starts = [i for i, e in enumerate(events) if e.get("kind") in ("run.started", "run.resumed")]
    if not starts or any(e.get("kind") == "run.finished" for e in events[starts[-1]:]):
        return None
    first = events[starts[0]].get("data", {})
    if first.get("environment") not in (None, environment):
        return None
    found = Abandoned(run_id=run_dir.name, run_dir=run_dir, attempt=len(starts), runbook=str(first.get("runbook", "")),
                      trigger=str(first.get("trigger", "")), last_event=events[-1]["kind"],
                      last_event_at=str(events[-1].get("ts", "")), started_at=str(events[starts[0]].get("ts", "")))
    for e in events:
        kind, d = e.get("kind"), e.get("data") or {}
        if kind == "step.started":
            found.stage, found.step = d.get("stage"), d.get("step")
        elif kind in ("maintenance.deadman_armed", "maintenance.on") and d.get("host"):
            found.maintenance_hosts[d["host"]] = {"expires_at": d.get("expires_at"), "deadman": d.get("deadman")}
        elif kind == "maintenance.off" and d.get("host"):
            found.maintenance_hosts.pop(d["host"], None)
    return found


def _sealed_after(audit: Path) -> bool:
    """The run's manifest.json (written last, after run.finished) is newer than its audit log."""
    try:
        return (audit.parent / "manifest.json").stat().st_mtime_ns >= audit.stat().st_mtime_ns
    except OSError:
        return False


def scan(cfg: EnvironmentConfig) -> list[Abandoned]:
    root = cfg.resolve(cfg.reports.dir)
    if not root.is_dir():
        return []
    found = []
    for audit in sorted(root.glob("*/audit.jsonl")):
        if _sealed_after(audit):
            continue  # finished and sealed after its last event: nothing to read (keeps the scan flat)
        try:
            item = inspect(audit.parent, cfg.name)
        except (OSError, ValueError, KeyError):
            continue
        if item is not None:
            found.append(item)
    return found


def _text(a: Abandoned) -> tuple[str, str]:
    subject = f"{a.runbook or 'maintenance'} run {a.run_id} was abandoned (process died)"
    lines = [f"The run stopped without finishing: its last event was {a.last_event} at {a.last_event_at}.",
             f"Last step: {a.step} (stage {a.stage})" if a.step else "No step had started.",
             f"Attempt {a.attempt} (started or resumed {a.attempt} time(s))."]
    if a.maintenance_hosts:
        for host, m in sorted(a.maintenance_hosts.items()):
            lines.append(f"Maintenance mode ON on {host}: expires {m.get('expires_at') or 'unknown'}; "
                         + (f"dead-man switch armed ({m['deadman']})" if m.get("deadman")
                            else "NO dead-man switch recorded: lift it by hand if the resume does not"))
    else:
        lines.append("Maintenance mode: not on (no host left in maintenance by this run).")
    lines.append(f"Resume it with: pitstop resume {a.run_id} --env <config>")
    return subject, "\n".join(lines)


def _send(cfg: EnvironmentConfig, a: Abandoned, read_secret: SecretReader | None) -> list[dict[str, Any]]:
    from .context import Redactor, secret_values
    from .notify.audiences import audiences, render
    from .notify.channels import Message, build_channels
    from .notify.ledger import open_ledger
    from .notify.notifier import base_context, deliver

    aud = audiences(cfg)[AUDIENCE]
    if not aud.wants(EVENT):
        return []
    redact = Redactor(secret_values(cfg))
    ledger = open_ledger(cfg)
    subject, body = _text(a)
    now = datetime.now(UTC)
    context = {**base_context(cfg, now), "subject": subject, "body": body, "severity": "failure",
               "stage": a.stage, "status": "abandoned",
               "run": {"id": a.run_id, "runbook": a.runbook, "trigger": a.trigger, "reason": ""}}
    out = []
    for channel in build_channels(cfg, read_secret):
        if AUDIENCE not in channel.cfg.audiences:
            continue
        key = f"abandoned-{a.run_id}-{a.attempt}-{channel.name}"
        attempt = ledger.claim(key, now, {"event": EVENT, "run_id": a.run_id, "channel": channel.name})
        if attempt is None:
            continue  # already sent (or being sent by a concurrent invocation)
        subj, text = render(cfg, EVENT, aud, channel.style, context)
        msg = Message(event=EVENT, run_id=a.run_id, environment=cfg.name, severity="failure", subject=subj,
                      body=text, audience=AUDIENCE, notice_id=key, data=a.facts())
        d = deliver(channel, msg, redact, cfg.notifications.attempts, cfg.notifications.wait_max)
        recipients = redact(channel.recipients())
        ledger.finish(key, attempt, datetime.now(UTC), d.status, error=d.error, recipients=recipients,
                      receipt=d.receipt)
        out.append({**d.model_dump(), "recipients": recipients})
    return out


def _record(cfg: EnvironmentConfig, a: Abandoned, deliveries: list[dict[str, Any]]) -> None:
    import fcntl

    from .audit import AuditLog
    from .context import Redactor, secret_values

    path = a.run_dir / "audit.jsonl"
    with path.open("a") as guard:  # one appender at a time: the chain is read and extended under the lock
        fcntl.flock(guard, fcntl.LOCK_EX)
        AuditLog(path, Redactor(secret_values(cfg))).emit(
            EVENT, **a.facts(), deliveries=[{k: d[k] for k in ("channel", "status", "attempts", "error", "recipients",
                                                              "receipt")} for d in deliveries])


def refuse_beside_open_window(cfg: EnvironmentConfig, found: list[Abandoned]) -> None:
    """A new run is refused (:class:`~pitstop.errors.AbandonedWindow`, exit 3, nothing of it created) while
    a dead run's audit log says it left maintenance mode on: the new run would fail its checks on that run's
    page or lift it, and a later resume of the dead run would then run its in-window steps with the site back.
    Resuming the dead run (it lifts maintenance mode and writes its report) unblocks the environment.

    Only a log whose hash chain verifies blocks: what a log says is checked before it is acted on, and a run
    with a broken chain cannot be resumed (``resume`` refuses it), so it must not hold the environment for
    ever; it has been alerted as abandoned like any other."""
    from .audit import verify_chain
    from .errors import AbandonedWindow

    open_windows = [a for a in found if a.maintenance_on and verify_chain(a.run_dir / "audit.jsonl") is None]
    if not open_windows:
        return
    a = open_windows[0]
    until = sorted(str(m.get("expires_at")) for m in a.maintenance_hosts.values() if m.get("expires_at"))
    deadman = f"; its dead-man switch lifts it at {until[0]}" if until else "; no dead-man switch was armed"
    raise AbandonedWindow(
        f"environment {cfg.name!r}: run {a.run_id} died with maintenance mode on "
        f"({', '.join(sorted(a.maintenance_hosts))}){deadman}. This run was not started. Finish that run first "
        f"(it lifts maintenance mode and writes its report):\n  pitstop resume {a.run_id} --env {cfg.name}")


def alert_abandoned(cfg: EnvironmentConfig, found: list[Abandoned] | None = None,
                    read_secret: SecretReader | None = None) -> list[Abandoned]:
    """Alert every abandoned run of ``cfg``'s environment (``found``: what :func:`scan` returned, when the
    caller scanned already). Call only while holding its lock. ``read_secret``: how the channels' Prefect
    Secret blocks are read (pitstop.notify.channels.build_channels).

    Concurrent alerters (the same host or others) are made unique by the notification ledger's
    create-if-absent claims: each delivery is sent by one of them."""
    found = scan(cfg) if found is None else found
    alerted = []
    for a in found:
        try:
            deliveries = _send(cfg, a, read_secret)
            if deliveries:  # a delivery was attempted: leave the evidence in the run's own log
                _record(cfg, a, deliveries)
            alerted.append(a)
        except Exception as exc:  # noqa: BLE001 - alerting about an old run never blocks this one
            log.warning("could not alert abandoned run %s: %s", a.run_id, type(exc).__name__)
    return alerted
