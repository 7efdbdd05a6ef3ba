"""The audit chain's head, published where the run folder's writer cannot rewrite it.

A run folder proves itself (hash chain + manifest) only against edits that do not recompute them:
whoever can rewrite the folder can remove events, rechain, re-render and reseal. So when a report is
written, its chain head — run id, number of events, last hash, the manifest's SHA-256 — is also
published outside the folder:

* **storage**: ``reports/<env>/<run_id>.anchor.json``, with COMPLIANCE retention where the S3 bucket
  has Object Lock (an overwrite then only adds a version: the *first* version is the anchor);
* **the Prefect artifact** of the flow run (its description carries the head);
* **the ops notification** of the run's end carries the head of the chain as of ``run.finished``.

``pitstop report verify RUN --env E`` checks every anchor it can reach (storage here; the artifact and
the message are for an auditor to compare by hand) and says which it checked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..audit import read_events


def head(run_dir: Path) -> dict[str, Any]:
    events = read_events(run_dir / "audit.jsonl")
    manifest = run_dir / "manifest.json"
    return {"run_id": run_dir.name, "events": len(events), "last_hash": events[-1]["hash"] if events else None,
            "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None}


def key(env: str, run_id: str) -> str:
    return f"reports/{env}/{run_id}.anchor.json"


def publish(storage: Any, env: str, run_dir: Path, policy: dict[str, Any] | None) -> dict[str, Any]:
    from .objectlock import put_locked

    body = head(run_dir)
    data = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
    if policy:
        put_locked(storage, key(env, run_dir.name), data, policy)
    else:
        storage.put_bytes(key(env, run_dir.name), data)
    return body


def _first_version(storage: Any, k: str) -> bytes:
    """The oldest stored version of ``k`` (S3 with versioning), else the object itself."""
    client, bucket = getattr(storage, "client", None), getattr(storage, "bucket", None)
    if client is not None and bucket is not None:
        full = storage._key(k)  # noqa: SLF001 - the storage's own prefixing
        try:
            versions = [v for v in client.list_object_versions(Bucket=bucket, Prefix=full).get("Versions", [])
                        if v["Key"] == full and v.get("VersionId") not in (None, "null")]
        except Exception:  # noqa: BLE001 - no versioning: the object as it is
            versions = []
        if versions:
            oldest = min(versions, key=lambda v: v["LastModified"])
            return bytes(client.get_object(Bucket=bucket, Key=full, VersionId=oldest["VersionId"])["Body"].read())
    return bytes(storage.get_bytes(k))


def check_storage(storage: Any, env: str, run_dir: Path) -> tuple[str, str | None]:
    """``(what was checked, problem or None)`` for the storage anchor of ``run_dir``."""
    k = key(env, run_dir.name)
    where = storage.location(k)
    try:
        published = json.loads(_first_version(storage, k))
    except Exception:  # noqa: BLE001 - missing or unreadable: say so, it is not proof of tampering alone
        return where, None if not (run_dir / "manifest.json").is_file() else f"no readable anchor at {where}"
    local = head(run_dir)
    for field in ("events", "last_hash", "manifest_sha256"):
        if published.get(field) != local.get(field):
            return where, (f"the run folder's {field.replace('_', ' ')} ({local.get(field)}) differs from the anchor "
                           f"published at {where} ({published.get(field)}): events were removed or the folder "
                           "was rewritten and resealed")
    return where, None
