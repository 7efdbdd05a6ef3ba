"""The one object passed through a run: ids, config, audit log, connections, shared state."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .audit import AuditLog
from .config import EnvironmentConfig
from .options import RunOptions  # noqa: F401 - re-exported: where callers have always found it
from .provenance import FlowRunRef, provenance  # noqa: F401 - re-exported
from .redact import Redactor, secret_values  # noqa: F401 - re-exported: a run's redaction lives in pitstop.redact
from .runbook import Runbook
from .runstate import RunState

if TYPE_CHECKING:
    from .connectors.base import Connection
    from .connectors.postgres import Database
    from .connectors.storage import Storage
    from .notify.notifier import Notifier

_STEP_SCOPE: ContextVar[dict[str, str] | None] = ContextVar("pitstop_step_scope", default=None)


def new_run_id(env: str, runbook: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{env}-{runbook}-{uuid.uuid4().hex[:6]}"


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
    flow_run: FlowRunRef | None = None  # the Prefect flow run this run is in, when the flow told the runner
    state: RunState = field(default_factory=RunState)
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

    @classmethod
    @contextmanager
    def scratch(cls, cfg: EnvironmentConfig, runbook: Runbook, options: RunOptions, name: str) -> Iterator[RunContext]:
        """A context for a command that is not a run (``plan``, ``maintenance status``): its facts are read over
        the same connections, its events go to a private temporary folder outside the reports directory (no
        run folder appears in ``report list``; two at once never share one), removed at the end."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix=f"pitstop-{name}-") as tmp:
            ctx = cls.create(cfg, runbook, options, run_id=name, run_dir=Path(tmp))
            try:
                yield ctx
            finally:
                ctx.close()

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
