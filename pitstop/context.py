"""The one object passed through a run: ids, config, audit log, connections, shared state."""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from .audit import AuditLog
from .config import EnvironmentConfig
from .model import Trigger
from .redact import Redactor, secret_values  # noqa: F401 - re-exported: a run's redaction lives in pitstop.redact
from .runbook import Runbook

if TYPE_CHECKING:
    from .connectors.base import Connection
    from .connectors.postgres import Database
    from .connectors.storage import Storage
    from .notify.notifier import Notifier

_STEP_SCOPE: ContextVar[dict[str, str] | None] = ContextVar("pitstop_step_scope", default=None)


def new_run_id(env: str, runbook: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{env}-{runbook}-{uuid.uuid4().hex[:6]}"


def provenance(cfg: EnvironmentConfig, runbook: Runbook) -> dict[str, Any]:
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
    flow_run = os.environ.get("PREFECT__FLOW_RUN_ID")
    deployment: str | None = None
    if "prefect" in sys.modules:  # a flow run: in process (pitstop run) or started by a worker from a deployment
        try:
            from prefect.runtime import deployment as dep
            from prefect.runtime import flow_run as current

            flow_run = flow_run or (str(current.id) if current.id else None)
            if dep.id:
                deployment = f"{dep.name} ({dep.id})" if dep.name else str(dep.id)
        except Exception:  # noqa: BLE001,S110 - the API may be unreachable: the flow run id is enough
            pass
    return {"user": user, "uid": os.getuid(), "host": socket.gethostname(), "pid": os.getpid(),
            "pitstop_version": pitstop_version, "prefect_flow_run": flow_run, "prefect_deployment": deployment,
            "config": digest(cfg.source), "runbook": digest(runbook.source)}


@dataclass
class RunOptions:
    trigger: Trigger = Trigger.MANUAL
    reason: str = ""
    dry_run: bool = False
    accept_unverified_backup: bool = False
    override_blackout: bool = False
    rehearsal: bool = False  # a test of the runbook in production: customers hear nothing, everything is labelled
    expected_downtime: timedelta | None = None  # given for this run (pitstop emergency --expected-downtime)

    def to_record(self) -> dict[str, Any]:
        """Every option (each field of this class, typed by pydantic), as the audit log's first event carries
        it: what ``resume`` restores. ``expected_downtime_s`` is kept beside the ISO duration for readers."""
        rec: dict[str, Any] = _OPTIONS.dump_python(self, mode="json")
        rec["expected_downtime_s"] = self.expected_downtime.total_seconds() if self.expected_downtime else None
        return rec

    @classmethod
    def from_record(cls, started: dict[str, Any]) -> RunOptions:
        """The options of a run from its ``run.started`` data, validated field by field (ValidationError on
        a malformed record). Older logs: the flat fields, ``expected_downtime_s`` for the downtime."""
        opts = started.get("options")
        rec: dict[str, Any] = dict(opts if isinstance(opts, dict) else started)
        if rec.get("expected_downtime") is None and rec.get("expected_downtime_s"):
            rec["expected_downtime"] = rec["expected_downtime_s"]
        return _OPTIONS.validate_python({k: rec[k] for k in _OPTION_FIELDS if k in rec})


_OPTIONS: TypeAdapter[RunOptions] = TypeAdapter(RunOptions)
_OPTION_FIELDS = tuple(f.name for f in fields(RunOptions))


@dataclass
class RunContext:
    run_id: str
    cfg: EnvironmentConfig
    runbook: Runbook
    options: RunOptions
    run_dir: Path
    audit: AuditLog
    redact: Redactor
    notifier: Notifier | None = None
    holds_environment_lock: bool = False  # set by the runner: no other run of this environment is alive
    state: dict[str, Any] = field(default_factory=dict)
    _conns: dict[str, Connection] = field(default_factory=dict)
    _db: Database | None = None
    _storage: Storage | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, cfg: EnvironmentConfig, runbook: Runbook, options: RunOptions,
               run_id: str | None = None, run_dir: Path | None = None) -> RunContext:
        """A run's context; its folder is ``<reports dir>/<run id>`` unless ``run_dir`` is given."""
        run_id = run_id or new_run_id(cfg.name, runbook.name)
        run_dir = run_dir or cfg.resolve(cfg.reports.dir) / run_id
        from .fsmodes import private_dir

        private_dir(run_dir)
        redact = Redactor(secret_values(cfg))
        return cls(run_id=run_id, cfg=cfg, runbook=runbook, options=options, run_dir=run_dir,
                   audit=AuditLog(run_dir / "audit.jsonl", redact), redact=redact)

    # -- lazily opened resources, one per run ------------------------------------------------------
    @property
    def db(self) -> Database:
        with self._lock:
            if self._db is None:
                from .connectors.postgres import Database

                self._db = Database(self.cfg)
            return self._db

    @property
    def storage(self) -> Storage:
        with self._lock:
            if self._storage is None:
                from .connectors.storage import open_storage

                self._storage = open_storage(self.cfg)
                if hasattr(self._storage, "on_retry"):
                    self._storage.on_retry = self._retry_event
            return self._storage

    def host(self, name: str) -> Connection:
        """One connection per host per run, reused across steps and stages."""
        with self._lock:
            conn = self._conns.get(name)
            if conn is None:
                from .connectors import connect_host

                conn = self._conns[name] = connect_host(self.cfg, name)
                if hasattr(conn, "on_retry"):
                    conn.on_retry = self._retry_event
            return conn

    def close(self) -> None:
        for conn in self._conns.values():
            try:
                conn.close()
            except Exception:  # noqa: BLE001,S110 - closing must not mask the run's outcome
                pass
        self._conns.clear()

    def event(self, kind: str, /, **data: Any) -> None:
        scope = _STEP_SCOPE.get()  # steps may run concurrently: say which one this event belongs to
        self.audit.emit(kind, **({**scope, **data} if scope else data))

    def _retry_event(self, **data: Any) -> None:
        self.event("retry", **data)

    @contextmanager
    def step_scope(self, stage: str, step: str) -> Iterator[None]:
        """Events emitted by this thread inside the block carry ``stage`` and ``step``."""
        token = _STEP_SCOPE.set({"stage": stage, "step": step})
        try:
            yield
        finally:
            _STEP_SCOPE.reset(token)
