"""The audit chain's head, published where the run folder's writer cannot rewrite it.

A run folder proves itself (hash chain + manifest) only against edits that do not recompute them:
whoever can rewrite the folder can remove events, rechain, re-render and reseal. So when a report is
written, its chain head — run id, number of events, last hash, the manifest's SHA-256 — is also
published outside the folder:

* **storage**: ``reports/<env>/<run_id>.anchor.json``, with COMPLIANCE retention where the S3 bucket
  has Object Lock (an overwrite then only adds a version: the *first* version is the anchor);
* **the Prefect artifact** of the flow run (its description carries the head);
* **the ops notification** of the run's end carries the head of the chain as of its sending
  (``audit chain head: event N, hash H``: event N of the log must have hash H).

``pitstop report verify RUN --env E`` checks every anchor it can reach — storage always, the Prefect
artifact when a Prefect API is configured, a head the auditor copied from the ops message with
``--head N:HASH`` — and says which it checked and which matched. A mismatch is tampering; an anchor
that cannot be found or reached is reported as not checked.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..audit import read_events
from .shape import error_text

MATCHED, MISMATCH, MISSING, UNREACHABLE = "matched", "MISMATCH", "not found", "unreachable"
HEAD = re.compile(r"(\d+) events?, last hash ([0-9a-f]{64})|event (\d+), hash ([0-9a-f]{64})")


@dataclass
class AnchorCheck:
    anchor: str  # storage | prefect artifact | given head
    where: str
    status: str  # matched | MISMATCH | not found | unreachable
    detail: str | None = None

    @property
    def tampered(self) -> bool:
        return self.status == MISMATCH

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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


def _first_version(storage: Any, k: str) -> bytes | None:
    """The oldest stored version of ``k`` (S3 with versioning: a later overwrite or delete marker does not
    hide it), else the object itself; None when there is none."""
    client, bucket = getattr(storage, "client", None), getattr(storage, "bucket", None)
    if client is not None and bucket is not None:
        full = storage._key(k)  # noqa: SLF001 - the storage's own prefixing
        import botocore.exceptions as bex

        try:
            versions = [v for v in client.list_object_versions(Bucket=bucket, Prefix=full).get("Versions", [])
                        if v["Key"] == full and v.get("VersionId") not in (None, "null")]
        except bex.ClientError:  # no versioning API on this endpoint: the object as it is
            versions = []
        if versions:
            # S3 lists a key's versions newest first; LastModified has whole seconds, so among equal
            # times the one listed last is the older
            _, oldest = min(enumerate(versions), key=lambda iv: (iv[1]["LastModified"], -iv[0]))
            return bytes(client.get_object(Bucket=bucket, Key=full, VersionId=oldest["VersionId"])["Body"].read())
    if not storage.exists(k):
        return None
    return bytes(storage.get_bytes(k))


def _compare(local: dict[str, Any], published: dict[str, Any], fields: tuple[str, ...], where: str) -> str | None:
    for field in fields:
        if published.get(field) != local.get(field):
            return (f"the run folder's {field.replace('_', ' ')} ({local.get(field)}) differs from the anchor "
                    f"published at {where} ({published.get(field)}): events were removed or the folder was "
                    "rewritten and resealed")
    return None


def check_storage(storage: Any, env: str, run_dir: Path) -> AnchorCheck:
    """The storage anchor of ``run_dir`` against the folder's own chain head and manifest."""
    k = key(env, run_dir.name)
    where = storage.location(k)
    try:
        raw = _first_version(storage, k)
    except Exception as exc:  # noqa: BLE001 - the storage cannot be read now: not checked, say why
        return AnchorCheck("storage", where, UNREACHABLE, error_text(exc))
    if raw is None:
        return AnchorCheck("storage", where, MISSING, "no anchor was published there (the storage copy failed at "
                                                      "the end of the run, or it was removed)")
    try:
        published = json.loads(raw)
        assert isinstance(published, dict)
    except (ValueError, AssertionError):
        return AnchorCheck("storage", where, MISMATCH, f"the anchor at {where} is not the JSON pitstop writes")
    problem = _compare(head(run_dir), published, ("run_id", "events", "last_hash", "manifest_sha256"), where)
    return AnchorCheck("storage", where, MISMATCH if problem else MATCHED, problem)


def parse_head(text: str) -> tuple[int, str] | None:
    """``(events, last hash)`` from an anchor's text: ``N events, last hash H`` (Prefect artifact),
    ``event N, hash H`` (ops message) or ``N:H`` (``--head``)."""
    m = HEAD.search(text)
    if m:
        return (int(m.group(1)), m.group(2)) if m.group(1) else (int(m.group(3)), m.group(4))
    n, _, h = text.strip().partition(":")
    if n.isdigit() and re.fullmatch(r"[0-9a-f]{64}", h):
        return int(n), h
    return None


def check_head(run_dir: Path, anchor: str, where: str, events: int, last_hash: str) -> AnchorCheck:
    """A chain head published elsewhere: event ``events`` of the folder's log must have ``last_hash``
    (the ops message is sent before the run's last events, so its head is a prefix of the chain)."""
    chain = read_events(run_dir / "audit.jsonl")
    if events < 1 or events > len(chain):
        return AnchorCheck(anchor, where, MISMATCH, f"the anchor names event {events}, the run folder's log holds "
                                                    f"{len(chain)}: events were removed")
    if chain[events - 1]["hash"] != last_hash:
        return AnchorCheck(anchor, where, MISMATCH, f"event {events} of the run folder's log has hash "
                                                    f"{chain[events - 1]['hash']}, the anchor says {last_hash}: the "
                                                    "log was rewritten")
    return AnchorCheck(anchor, where, MATCHED)


ArtifactLookup = Callable[[str, str], list[Any]]  # (key prefix, run id) -> the run's markdown artifacts


def check_prefect(run_dir: Path, env: str, api_url: str, lookup: ArtifactLookup) -> AnchorCheck:
    """The chain head in the description of the run's Prefect markdown artifact (the first one published
    for this run id), looked up among the environment's artifacts on the Prefect API at ``api_url`` with
    ``lookup`` (the CLI hands in the Prefect adapter's: this module never imports Prefect)."""
    from .artifacts import artifact_prefix

    prefix = artifact_prefix(env)
    where = f"Prefect artifacts {prefix}* at {api_url}"
    try:
        mine = lookup(prefix, run_dir.name)
    except Exception as exc:  # noqa: BLE001 - the API cannot be asked now: not checked, say why
        return AnchorCheck("prefect artifact", where, UNREACHABLE, error_text(exc))
    if not mine:
        return AnchorCheck("prefect artifact", where, MISSING, "no artifact names this run (a run with --engine "
                                                               "local publishes none)")
    first = min(mine, key=lambda a: str(a.created))
    parsed = parse_head(first.description or "")
    if parsed is None:
        return AnchorCheck("prefect artifact", where, MISMATCH, "the artifact's description carries no chain head")
    return check_head(run_dir, "prefect artifact", f"Prefect artifact {first.id}", *parsed)
