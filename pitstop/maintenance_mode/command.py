"""``strategy: command``: custom on/off/status argument lists run on each target host.

Placeholders (``{run_id}``, ``{ttl_seconds}``, ``{expires_at}``, ``{message}``) are replaced by
plain text substitution inside single arguments; the argv is never passed through a shell by
pitstop (the SSH transport quotes every argument). A marker file names the run that turned
maintenance on, for the dead-man's switch and for ``status`` without a status command.
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING

from ..errors import CommandFailed, ConfigError
from .base import DeadmanTarget, MaintenanceRecord, MaintenanceStatus, Strategy, substitute
from .state import MaintenanceState

if TYPE_CHECKING:
    from ..context import RunContext
    from .settings import CommandStrategyConfig


class CommandStrategy(Strategy):
    name = "command"

    @property
    def c(self) -> CommandStrategyConfig:
        if self.cfg.command is None:
            raise ConfigError("maintenance.strategy is command but maintenance.command is missing")
        return self.cfg.command

    def _argv(self, argv: list[str], values: dict[str, str]) -> list[str]:
        return [str(a) for a in substitute(list(argv), values)]

    def _values(self, ctx: RunContext, host: str) -> dict[str, str]:
        record = ctx.state.of(MaintenanceState).record
        if isinstance(record, MaintenanceRecord):
            return record.placeholders(host)
        return {"{host}": host, "{run_id}": ctx.run_id}

    def _run(self, ctx: RunContext, host: str, argv: list[str]) -> None:
        res = ctx.host(host).run(argv, timeout=self.c.timeout, check=False, sudo=self.cfg.sudo)
        ctx.event("maintenance.command", host=host, argv=argv, exit_code=res.exit_code,
                  stdout_tail=res.stdout[-300:], stderr_tail=res.stderr[-300:])
        if res.exit_code != 0:
            raise CommandFailed(argv, res.exit_code, res.stderr, host)

    def on(self, ctx: RunContext, host: str, record: MaintenanceRecord) -> bool:
        was_on = self._status_on(ctx, host)
        self._run(ctx, host, self._argv(self.c.on, record.placeholders(host)))
        self.renew(ctx, host, record)
        return was_on is not True

    def renew(self, ctx: RunContext, host: str, record: MaintenanceRecord) -> None:
        """Write the record (``on`` and every dead-man renewal)."""
        ctx.host(host).put(self.c.marker_path, (record.model_dump_json() + "\n").encode(), mode=0o600,
                           sudo=self.cfg.sudo)

    def off(self, ctx: RunContext, host: str) -> bool:
        was_on = self._status_on(ctx, host)
        self._run(ctx, host, self._argv(self.c.off, self._values(ctx, host)))
        ctx.host(host).remove(self.c.marker_path, sudo=self.cfg.sudo)
        return was_on is not False

    def _status_on(self, ctx: RunContext, host: str) -> bool | None:
        if self.c.status is None:
            return None
        argv = self._argv(self.c.status, self._values(ctx, host))
        res = ctx.host(host).run(argv, timeout=self.c.timeout, check=False, sudo=self.cfg.sudo)
        return res.exit_code in self.c.status_on_exit

    def status(self, ctx: RunContext, host: str) -> MaintenanceStatus:
        conn = ctx.host(host)
        marker: dict[str, object] = {}
        if conn.exists(self.c.marker_path, sudo=self.cfg.sudo):
            try:
                marker = json.loads(conn.get(self.c.marker_path, sudo=self.cfg.sudo))
            except ValueError:
                marker = {}
        on = self._status_on(ctx, host)
        if on is None:
            on, detail = bool(marker), f"marker {self.c.marker_path} " + ("present" if marker else "absent")
        else:
            detail = "status command says " + ("on" if on else "off")
        return MaintenanceStatus(host=host, strategy=self.name, on=on, detail=detail,
                                 run_id=str(marker["run_id"]) if marker.get("run_id") else None,
                                 expires_at=str(marker["expires_at"]) if marker.get("expires_at") else None)

    def deadman_target(self, ctx: RunContext, host: str) -> DeadmanTarget:
        return DeadmanTarget(marker=self.c.marker_path, off_argv=self._argv(self.c.off, self._values(ctx, host)))

    def describe(self, ctx: RunContext, host: str, turning_on: bool) -> list[str]:
        argv = self.c.on if turning_on else self.c.off
        return ["run " + shlex.join(argv)]
