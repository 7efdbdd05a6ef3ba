"""Tamper detection for a run folder: the audit hash chain and the file manifest.

Detected: a changed byte anywhere (audit event, report, manifest itself), a deleted or reordered
audit line (including the last one: the manifest seals the chain's length and last hash), a file
removed from or added to the folder. The first problem found is named.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..audit import EMPTY_MEANS, is_empty, read_events, verify_chain
from .writer import MANIFEST, manifest_text

MANIFEST_KEYS = {"algorithm", "files", "audit"}


def _is_digest(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _well_formed(m: dict[str, Any]) -> bool:
    if set(m) - MANIFEST_KEYS or m.get("algorithm") != "sha256":
        return False
    if not all(isinstance(k, str) and _is_digest(v) for k, v in m["files"].items()):
        return False
    audit = m.get("audit")
    return audit is None or (isinstance(audit, dict) and set(audit) == {"events", "last_hash"}
                             and isinstance(audit["events"], int) and _is_digest(audit["last_hash"]))


def _load_manifest(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    path = run_dir / MANIFEST
    if not path.is_file():
        return None, f"{MANIFEST} is missing"
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, f"{MANIFEST} is not valid JSON (changed bytes)"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None, f"{MANIFEST} is not a valid manifest"
    if not _well_formed(manifest):
        return None, f"{MANIFEST} has unexpected fields or values (changed)"
    if manifest_text(manifest).encode() != raw:
        return None, f"{MANIFEST} was re-written (its bytes are not the form pitstop writes)"
    return manifest, None


def _check_audit(run_dir: Path, manifest: dict[str, Any]) -> str | None:
    audit = run_dir / "audit.jsonl"
    if "audit.jsonl" not in manifest["files"]:
        return "manifest does not list audit.jsonl"
    if not audit.is_file():
        return "audit.jsonl is missing"
    bad = verify_chain(audit)
    if bad:
        return bad
    sealed = manifest.get("audit")
    if isinstance(sealed, dict):
        events = read_events(audit)
        if len(events) != sealed.get("events"):
            return (f"audit.jsonl holds {len(events)} events where the manifest sealed {sealed.get('events')} "
                    f"(events removed from or added to the end)")
        if events and events[-1]["hash"] != sealed.get("last_hash"):
            return f"audit.jsonl event {len(events)}: last hash differs from the sealed one (event changed)"
    return None


def _check_files(run_dir: Path, files: dict[str, str]) -> str | None:
    for name, digest in files.items():
        p = run_dir / name
        if not p.is_file():
            return f"{name} is listed in the manifest but missing (removed)"
        if hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            return f"{name} does not match its SHA-256 in the manifest (changed)"
    extra = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
                   if p.is_file() and p.name != MANIFEST and p.relative_to(run_dir).as_posix() not in files)
    if extra:
        return f"{extra[0]} is not in the manifest (added after the run)"
    return None


def verify_run_dir(run_dir: Path) -> str | None:
    """``None`` if intact, else a message naming the first bad event or file."""
    if not run_dir.is_dir():
        return f"{run_dir} is not a run folder"
    manifest, problem = _load_manifest(run_dir)
    if manifest is None:
        # The chain still names the first bad event when only the manifest was damaged or removed.
        audit = run_dir / "audit.jsonl"
        chain = verify_chain(audit) if audit.is_file() else None
        return chain or problem
    return _check_audit(run_dir, manifest) or _check_files(run_dir, manifest["files"])


def unfinished(run_dir: Path, env: str | None = None) -> str | None:
    """A message when ``run_dir`` is a run that never finished (intact chain, no ``run.finished``, no
    manifest): not tampered with, it has no report yet. None
    otherwise — in particular for a log that records the run's end without a manifest: that folder
    lost its seal (``verify_run_dir`` says so)."""
    audit = run_dir / "audit.jsonl"
    if not (run_dir / MANIFEST).is_file() and is_empty(audit):
        return (f"run {run_dir.name} never started: its audit.jsonl is empty ({EMPTY_MEANS}); there is nothing to "
                f"resume or report — start a new run")
    if (run_dir / MANIFEST).is_file() or not audit.is_file() or verify_chain(audit):
        return None
    events = read_events(audit)
    if any(e.get("kind") == "run.finished" for e in events):
        return None
    last = events[-1] if events else {}
    what = f"{len(events)} events, the last {last.get('kind')} at {last.get('ts')}" if events else "no events"
    return (f"run {run_dir.name} is unfinished (no manifest yet; {what}): finish it with "
            f"`pitstop resume {run_dir.name} --env {env or 'ENV'}`")


def finished_unsealed(run_dir: Path) -> str | None:
    """A message when the audit log records the run's end but the folder has no manifest."""
    audit = run_dir / "audit.jsonl"
    if (run_dir / MANIFEST).is_file() or not audit.is_file():
        return None
    try:
        ended = any(e.get("kind") == "run.finished" for e in read_events(audit))
    except ValueError:
        return None
    if not ended:
        return None
    return (f"run {run_dir.name} has no report: its audit log records the end of the run but the folder was never "
            "sealed (killed before its report was written, or the report removed); `pitstop report verify` checks "
            "it")
