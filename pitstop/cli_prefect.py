"""The CLI's doors into pitstop.prefect_adapter, for what the engine and the areas are handed rather than import
(a Secret block reader for the notification channels, the Prefect artifacts ``report verify`` checks, the
emergency deployment). Each imports the adapter, and so Prefect, only when called: a command that never
reaches Prefect (``--engine local`` without a Secret block) never imports it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import EnvironmentConfig


def read_secret_block(name: str) -> str:
    """The value of the Prefect Secret block ``name`` (pitstop.notify.channels' ``read_secret``)."""
    from .prefect_adapter import secret_block

    return secret_block(name)


def markdown_artifacts(prefix: str, run_name: str) -> list[Any]:
    """The run's markdown artifacts on the Prefect API (pitstop.report.anchor's ``lookup``)."""
    from .prefect_adapter import markdown_artifacts as lookup

    return lookup(prefix, run_name)


def find_deployment(cfg: EnvironmentConfig, kind: str = "emergency") -> str | None:
    """Full name of the environment's deployment ``kind`` on the configured API; None without one."""
    if not os.environ.get("PREFECT_API_URL"):
        return None
    from .prefect_adapter.deployments import find_deployment as find

    return find(cfg, kind)
