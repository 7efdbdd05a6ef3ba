"""Who started a run, where, with which pitstop and which files: the provenance its first event records."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .config import EnvironmentConfig
    from .runbook import Runbook


class ArtifactPublisher(Protocol):
    """Publishes a report on the flow run (a markdown and a table artifact); their ids, or ``None`` when
    there is nothing to publish to. Given by the flow (the Prefect adapter): the engine never imports it."""

    def __call__(self, markdown: str, md_key: str, table: list[dict[str, Any]], table_key: str,
                 description: str) -> dict[str, str] | None: ...


@dataclass(frozen=True)
class FlowRunRef:
    """The Prefect flow run a run is in, as the flow read it from Prefect's runtime (the Prefect adapter),
    and how the run's report is published on it (``publish``: None, nowhere)."""

    id: str | None = None
    deployment: str | None = None  # "name (id)", or the id
    publish: ArtifactPublisher | None = field(default=None, compare=False, repr=False)


def provenance(cfg: EnvironmentConfig, runbook: Runbook, prefect_run: FlowRunRef | None = None) -> dict[str, Any]:
    """Who started the run, where, with which pitstop, and the SHA-256 of the files it read: what an auditor
    needs to tie a report to a person, a machine and the exact configuration."""
    import getpass
    import hashlib
    import socket
    from importlib.metadata import PackageNotFoundError, version

    def digest(path: str | None) -> dict[str, str | None]:
        if not path:
            return {"path": None, "sha256": None}
        try:
            return {"path": str(Path(path).resolve()), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
        except OSError:
            return {"path": path, "sha256": None}

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    try:
        pitstop_version = version("pitstop")
    except PackageNotFoundError:
        pitstop_version = "unknown"
    # a worker's flow run names itself in the environment; the flow (the Prefect adapter, in process or in a
    # worker) hands the runner its flow run id and deployment, read from Prefect's runtime
    flow_run = os.environ.get("PREFECT__FLOW_RUN_ID") or (prefect_run.id if prefect_run else None)
    deployment = prefect_run.deployment if prefect_run else None
    return {"user": user, "uid": os.getuid(), "host": socket.gethostname(), "pid": os.getpid(),
            "pitstop_version": pitstop_version, "prefect_flow_run": flow_run, "prefect_deployment": deployment,
            "config": digest(cfg.source), "runbook": digest(runbook.source)}
