"""The append-only, hash-chained event log of a run (``audit.jsonl``).

Every event carries the SHA-256 of the previous event, so a changed byte, a deleted line or a
reordered pair breaks the chain. Notifications, the console view and the report are all read off
this log: what an auditor sees is what happened.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64

Listener = Callable[[dict[str, Any]], None]


def _canonical(event: dict[str, Any]) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), default=str).encode()


def event_hash(event: dict[str, Any]) -> str:
    body = {k: v for k, v in event.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class AuditLog:
    """Thread-safe writer of ``audit.jsonl``. ``redact`` scrubs secrets before anything is written."""

    def __init__(self, path: Path, redact: Callable[[str], str] | None = None):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._redact = redact or (lambda s: s)
        self._listeners: list[Listener] = []
        self.events: list[dict[str, Any]] = []
        self._prev = GENESIS
        self._closed = False
        self.late: list[tuple[str, dict[str, Any]]] = []
        if path.exists():  # resuming: continue the chain
            for ev in read_events(path):
                self.events.append(ev)
                self._prev = ev["hash"]

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def close(self) -> None:
        """No event is written after this (the report is about to be built and sealed from the file): a
        straggler — a host command of an interrupted step that ran on to its end — would otherwise land
        after the seal and make an intact folder look tampered. Late events are kept in ``late`` only."""
        with self._lock:
            self._closed = True

    def reopen(self) -> None:
        """The report could not be written (nothing was sealed): the log takes events again, the late
        ones first."""
        with self._lock:
            self._closed = False
            late, self.late = self.late, []
        for kind, data in late:
            self.emit(kind, **data)

    def emit(self, kind: str, /, **data: Any) -> dict[str, Any]:
        with self._lock:
            if self._closed:
                self.late.append((kind, data))
                return {"seq": None, "kind": kind, "data": {}, "late": True}
            # raw values first (a secret holding '"', '\\' or non-ASCII is not in its JSON-escaped text as
            # itself): anything that is not JSON yet becomes its str() first, so that text is scrubbed raw too;
            # then the serialised text once more, as a net
            from .redact import redact_value

            raw = redact_value(json.loads(json.dumps(data, default=str)), self._redact)
            try:
                clean = json.loads(self._redact(json.dumps(raw, ensure_ascii=False)))
            except ValueError:  # a mask landed across JSON syntax: the raw pass already scrubbed every value
                clean = raw
            event = {"seq": len(self.events) + 1, "ts": now_iso(), "kind": kind, "data": clean, "prev": self._prev}
            event["hash"] = event_hash(event)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(event, sort_keys=True, default=str) + "\n")
                fh.flush()
            self._prev = event["hash"]
            self.events.append(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001,S110 - a display problem must never break the run
                pass
        return event

    def of_kind(self, *kinds: str) -> Iterator[dict[str, Any]]:
        return (e for e in self.events if e["kind"] in kinds)


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


EMPTY_MEANS = ("no event was ever recorded (the run never started: it was stopped before its first event, so "
               "nothing ran)")


def is_empty(path: Path) -> bool:
    """True for an audit log without a single event (the run was stopped before ``run.started``)."""
    try:
        return not path.read_bytes().strip()
    except OSError:
        return False


def verify_chain(path: Path) -> str | None:
    """``None`` if the chain is intact, else a message naming the first bad line (or saying the log is empty)."""
    return read_chain(path)[1]


def read_chain(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The events of an audit log, read and parsed once, and ``None`` if its chain is intact, else a message
    naming the first bad line, or saying the log is empty (the events are then those before it)."""
    prev = GENESIS
    events: list[dict[str, Any]] = []
    data = path.read_bytes()
    if not data.strip():
        return events, f"{path.name} is empty: {EMPTY_MEANS}"
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw and n > 1:
            continue  # the final newline
        try:
            event = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return events, f"{path.name} line {n}: not valid JSON (changed bytes)"
        if not isinstance(event, dict):
            return events, f"{path.name} line {n}: not an event"
        if event.get("seq") != n:
            return events, (f"{path.name} line {n}: sequence {event.get('seq')} where {n} was expected "
                            "(line removed or moved)")
        if event.get("prev") != prev:
            return events, (f"{path.name} line {n}: previous-hash link broken (an event before it was changed "
                            "or removed)")
        if event_hash(event) != event.get("hash"):
            return events, f"{path.name} line {n}: content does not match its hash (event changed)"
        prev = event["hash"]
        events.append(event)
    return events, None
