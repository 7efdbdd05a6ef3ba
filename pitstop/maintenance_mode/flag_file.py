"""``strategy: flag_file``: a flag file on each web host that the web server checks.

The flag is written atomically (temporary name, then rename; :meth:`Connection.put`) and holds the
run's :class:`MaintenanceRecord` as JSON, so the dead-man's switch can tell whether the flag still
belongs to the run that armed it. See docs/maintenance-mode.md for the nginx snippet.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .base import DeadmanTarget, MaintenanceRecord, MaintenanceStatus, Strategy

if TYPE_CHECKING:
    from ..context import RunContext


class FlagFile(Strategy):
    name = "flag_file"

    def _read(self, ctx: RunContext, host: str) -> dict[str, object] | None:
        conn = ctx.host(host)
        if not conn.exists(self.cfg.flag_path, sudo=self.cfg.sudo):
            return None
        try:
            doc = json.loads(conn.get(self.cfg.flag_path, sudo=self.cfg.sudo) or b"{}")
        except (ValueError, FileNotFoundError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def on(self, ctx: RunContext, host: str, record: MaintenanceRecord) -> bool:
        before = self._read(ctx, host)
        self.renew(ctx, host, record)
        return before is None or before.get("run_id") != record.run_id

    def renew(self, ctx: RunContext, host: str, record: MaintenanceRecord) -> None:
        """Write the record (``on`` and every dead-man renewal)."""
        ctx.host(host).put(self.cfg.flag_path, (record.model_dump_json() + "\n").encode(), sudo=self.cfg.sudo)

    def off(self, ctx: RunContext, host: str) -> bool:
        return ctx.host(host).remove(self.cfg.flag_path, sudo=self.cfg.sudo)

    def status(self, ctx: RunContext, host: str) -> MaintenanceStatus:
        doc = self._read(ctx, host)
        if doc is None:
            return MaintenanceStatus(host=host, strategy=self.name, on=False, detail=f"{self.cfg.flag_path} absent")
        return MaintenanceStatus(host=host, strategy=self.name, on=True, run_id=_str(doc.get("run_id")),
                                 expires_at=_str(doc.get("expires_at")), detail=f"{self.cfg.flag_path} present")

    def deadman_target(self, ctx: RunContext, host: str) -> DeadmanTarget:
        return DeadmanTarget(marker=self.cfg.flag_path)

    def describe(self, ctx: RunContext, host: str, turning_on: bool) -> list[str]:
        present = ctx.host(host).exists(self.cfg.flag_path, sudo=self.cfg.sudo)
        if turning_on:
            return [f"create {self.cfg.flag_path}" + (" (already present!)" if present else "")]
        return [f"remove {self.cfg.flag_path}" + ("" if present else " (not present now)")]


def _str(v: object) -> str | None:
    return None if v is None else str(v)
