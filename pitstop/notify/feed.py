"""The status feed: ``status.json`` (for the platform's in-app banner) and a static ``status.html``.

Three lists — ``upcoming`` (scheduled windows, including skipped ones with the reason),
``in_progress`` (runs with their current stage) and ``completed`` (latest runs and outcome) —
rewritten atomically at every run transition and by every ``send-due``. Writers serialise on an
``flock`` of ``status.lock``; readers always see a complete file (temporary name + rename). With
``notifications.feed.publish`` both files are also copied to storage under ``status/<env>/``.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from ..config import EnvironmentConfig
from ..fsmodes import private_dir, private_opener, write_private

if TYPE_CHECKING:
    from ..runview import RunView

Doc = dict[str, Any]


def feed_dir(cfg: EnvironmentConfig) -> Path:
    return cfg.resolve(cfg.notifications.feed.path)


def _atomic_write(path: Path, data: bytes) -> None:
    """Readers see the old or the new file, never half of one (rename). No fsync: the feed is a view
    rewritten at every run transition and rebuilt from the next one, not a record (the audit log is)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_private(tmp, data)  # 0600 whatever the umask; publish copies the feed to storage
    os.replace(tmp, path)


@functools.cache
def _template() -> jinja2.Template:
    """Compiled once per process: the feed is re-rendered at every run transition."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("pitstop.notify", "templates"), autoescape=True)
    return env.get_template("status.html.j2")


def render_html(doc: Doc) -> str:
    return _template().render(doc=doc)


MAX_UPCOMING = 50  # the feed lists the next windows, not every hourly slot of the horizon


def upcoming(cfg: EnvironmentConfig, now: datetime) -> list[Doc]:
    from ..schedule import upcoming_windows
    from .downtime import expected_downtime

    out = []
    specs = cfg.schedules.windows()
    cache: dict[tuple[str, str], Any] = {}  # history is read once per schedule, not once per window
    for w in upcoming_windows(cfg, now, now + cfg.notifications.feed.horizon, include_skipped=True)[:MAX_UPCOMING]:
        key = (w.runbook, w.schedule)
        if key not in cache:
            cache[key] = expected_downtime(cfg, w.runbook, specs.get(w.schedule))
        dt = cache[key]
        out.append({"window_id": w.id, "schedule": w.schedule, "runbook": w.runbook,
                    "start": w.start.isoformat(), "end": w.end.isoformat(), "timezone": w.timezone,
                    "expected_downtime_s": dt.seconds, "expected_downtime_source": dt.source,
                    "skipped": w.skipped})
    return out


def update_feed(cfg: EnvironmentConfig, mutate: Callable[[Doc], None], now: datetime | None = None,
                refresh_upcoming: bool = False) -> Doc:
    now = now or datetime.now(UTC)
    d = private_dir(feed_dir(cfg))
    with open(d / "status.lock", "a", opener=private_opener) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            doc = json.loads((d / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = {}
        doc.setdefault("upcoming", [])
        doc.setdefault("in_progress", [])
        doc.setdefault("completed", [])
        mutate(doc)
        if refresh_upcoming or not doc["upcoming"]:
            doc["upcoming"] = upcoming(cfg, now)
        else:  # drop windows that have ended
            doc["upcoming"] = [u for u in doc["upcoming"] if datetime.fromisoformat(u["end"]) > now]
        doc.update({"environment": cfg.name, "title": cfg.notifications.notices.title or cfg.name,
                    "timezone": cfg.timezone, "generated_at": now.isoformat(timespec="seconds"), "schema_version": 1})
        doc["completed"] = doc["completed"][: cfg.notifications.feed.keep_completed]
        data = json.dumps(doc, indent=2, default=str).encode()
        html = render_html(doc).encode()
        _atomic_write(d / "status.json", data)
        _atomic_write(d / "status.html", html)
    if cfg.notifications.feed.publish:
        from ..connectors.storage import open_storage

        st = open_storage(cfg)
        st.put_bytes(f"status/{cfg.name}/status.json", data)
        st.put_bytes(f"status/{cfg.name}/status.html", html)
    return doc


def record_run_event(ctx: RunView, event: Doc, expected_s: float) -> Doc:
    """Fold one audit event of a run into the feed."""
    kind, data, ts = event["kind"], event["data"], event["ts"]
    run_id = ctx.run_id

    def mutate(doc: Doc) -> None:
        runs = {r["run_id"]: r for r in doc["in_progress"]}
        cur = runs.get(run_id) or {"run_id": run_id, "runbook": ctx.runbook.name,
                                   "trigger": ctx.options.trigger.value, "started_at": ts,
                                   "expected_downtime_s": expected_s, "stage": None, "window_open": False,
                                   "extended": False}  # public: never the operator's reason (hosts, errors)
        if kind == "stage.started":
            cur["stage"] = data.get("stage")
        elif kind == "window.opened":
            cur["window_open"], cur["window_opened_at"] = True, data.get("down_since") or ts
        elif kind == "window.closed":
            cur["window_open"] = False
        elif kind == "window.extended":
            cur["extended"] = True
        elif kind == "window.decision":  # false: this run never takes the site down (pitstop/need.py)
            cur["window_needed"] = bool(data.get("window_needed", True))
        doc["in_progress"] = [r for r in doc["in_progress"] if r["run_id"] != run_id]
        if kind == "run.finished":
            done = {k: cur.get(k) for k in ("run_id", "runbook", "trigger", "started_at")}
            done.update(status=data.get("status"), finished_at=ts, extended=cur.get("extended", False),
                        window_needed=cur.get("window_needed", True))
            doc["completed"] = [done, *[c for c in doc["completed"] if c["run_id"] != run_id]]
        else:
            doc["in_progress"].append(cur)

    return update_feed(ctx.cfg, mutate, refresh_upcoming=kind in ("run.started", "run.finished"))
