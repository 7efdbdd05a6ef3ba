"""Tamper detection for a run folder: the audit hash chain and the file manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..audit import verify_chain


def verify_run_dir(run_dir: Path) -> str | None:
    """``None`` if intact, else a message naming the first bad event or file."""
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        return "manifest.json is missing"
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, str] = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return "manifest.json is not a valid manifest"
    audit = run_dir / "audit.jsonl"
    if "audit.jsonl" not in files:
        return "manifest does not list audit.jsonl"
    if not audit.is_file():
        return "audit.jsonl is missing"
    bad = verify_chain(audit)
    if bad:
        return bad
    for name, digest in files.items():
        p = run_dir / name
        if not p.is_file():
            return f"{name} is listed in the manifest but missing"
        if hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            return f"{name} does not match its SHA-256 in the manifest"
    extra = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
                   if p.is_file() and p.name != "manifest.json" and p.relative_to(run_dir).as_posix() not in files)
    if extra:
        return f"{extra[0]} is not in the manifest (added after the run)"
    return None
