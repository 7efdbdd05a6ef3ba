"""Environment configuration (``config/<env>.yaml``): typed models and the loader, one module per
section (hosts, data, notifications, schedules) and the environment that ties them together.

Relative paths in a config resolve against the environment's *state directory*
(``state_dir``, default ``.pitstop/<name>``; ``PITSTOP_STATE_DIR`` overrides it), so a demo or a
test never writes outside it. Secrets are never values in the file: fields ending in ``_env`` name
the environment variable that holds them.
"""

from .approval import ApprovalConfig
from .base import Identifier, Name, Percent, Strict
from .data import BackupConfig, CleanupProfile, CleanupSettings, DatabaseConfig, Filter, RetentionRule, StorageConfig
from .environment import (
                          EnvironmentConfig,
                          ReportsConfig,
                          WindowConfig,
                          default_search_dirs,
                          find_config,
                          load_config,
                          shadowed,
)
from .hosts import FleetConfig, HostConfig, MaintenanceConfig, SshSettings
from .notifications import AudienceConfig, ChannelConfig, FeedConfig, NoticesConfig, NotificationsConfig
from .schedules import Blackout, SchedulesConfig, ScheduleSpec

__all__ = [
    "ApprovalConfig",
    "Identifier", "Name", "Percent", "Strict", "BackupConfig", "CleanupProfile", "CleanupSettings",
    "DatabaseConfig", "Filter", "RetentionRule", "StorageConfig", "EnvironmentConfig", "ReportsConfig",
    "WindowConfig", "default_search_dirs", "find_config", "load_config", "shadowed", "FleetConfig", "HostConfig",
    "MaintenanceConfig", "SshSettings", "AudienceConfig", "ChannelConfig", "FeedConfig", "NoticesConfig",
    "NotificationsConfig", "Blackout", "ScheduleSpec", "SchedulesConfig",
]
