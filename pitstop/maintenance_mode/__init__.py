"""Maintenance-mode strategies (flag_file, command, http) and the dead-man's switch."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import MaintenanceConfig
    from .base import Strategy


def strategy_for(cfg: MaintenanceConfig) -> Strategy:
    """The configured strategy (``maintenance.strategy``)."""
    if cfg.strategy == "command":
        from .command import CommandStrategy

        return CommandStrategy(cfg)
    if cfg.strategy == "http":
        from .http import HttpStrategy

        return HttpStrategy(cfg)
    from .flag_file import FlagFile

    return FlagFile(cfg)
