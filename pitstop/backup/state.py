"""The backup's share of a run's state (``ctx.state.of(BackupState)``), its rebuild from the audit log, and
the gate it keeps: destructive steps need this run's backup, verified by a restore."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..plugin import Event, GateVerdict, Plugin, PluginState

if TYPE_CHECKING:
    from ..context import RunContext


class BackupState(PluginState):
    # this run's backup: its manifest's fields, ``manifest_sha256``, ``verified`` and, once verified,
    # ``verification`` (the same record the step data in the audit log carries)
    backup: dict[str, Any] | None = None

    @property
    def verified(self) -> bool:
        return bool(self.backup and self.backup.get("verified"))

    def rebuild(self, events: list[Event]) -> None:
        """The backup an earlier attempt took and whether it verified it, from its steps' finished data."""
        for ev in events:
            d = ev["data"]
            if ev["kind"] == "step.finished" and d.get("status") == "succeeded":
                data = d.get("data") or {}
                if "backup" in data:
                    self.backup = {**data["backup"], "verified": False}
                if "verification" in data and self.backup:
                    self.backup.update(verified=True, verification=data["verification"])


class BackupPlugin(Plugin):
    state = BackupState

    def gate(self, ctx: RunContext) -> GateVerdict:
        if ctx.state.of(BackupState).verified:
            return GateVerdict(passed=True)
        # what the backup an override sets aside looked like at that moment
        events = ctx.audit.events
        created = [e for e in events if e["kind"] == "backup.created"]
        failed = [e for e in events if e["kind"] == "backup.verify_failed"]
        state = "verification failed" if failed else "taken, not verified" if created else "no backup in this run"
        return GateVerdict(
            passed=False,
            refusal="this run has no verified backup (add backup.postgres + backup.verify to pre-backup, or "
                    "override with --accept-unverified-backup --reason ...)",
            evidence={"backup": state, "backup_created_at": created[-1]["ts"] if created else None,
                      "verify_failed_at": failed[-1]["ts"] if failed else None,
                      "verify_error": failed[-1]["data"].get("error") if failed else None})
