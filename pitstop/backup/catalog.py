"""The backups of an environment in storage: listing, a run's manifest (checked before it is used), retention.

Used by ``backup.prune``, ``pitstop backups list|prune`` and ``pitstop restore``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from ..config import BackupConfig
from ..connectors.storage import Storage
from ..errors import BackupError


class BackupEntry(BaseModel):
    run_id: str
    kind: str
    trigger: str = ""
    database: str
    started_at: str
    size: int
    sha256: str
    key: str
    manifest_key: str
    location: str
    format: str = "custom"
    verified: bool = False


def env_prefix(env: str) -> str:
    return f"backups/{env}/"


def list_backups(storage: Storage, env: str) -> list[BackupEntry]:
    """Every backup of ``env`` with a readable manifest, newest first."""
    out = []
    for mkey in storage.list(env_prefix(env)):
        if not mkey.endswith(".manifest.json"):
            continue
        try:
            m = json.loads(storage.get_bytes(mkey))
            out.append(BackupEntry(manifest_key=mkey, **{k: v for k, v in m.items() if k in BackupEntry.model_fields}))
        except (ValueError, TypeError):
            continue  # a damaged manifest is not a backup anyone can restore from
    return sorted(out, key=lambda b: (b.started_at, b.run_id), reverse=True)


def load_manifest(storage: Storage, env: str, run_id: str) -> tuple[dict[str, Any], bytes]:
    """A run's manifest (parsed, and the bytes stored, for their SHA-256), from that run's own prefix, after
    checking that it describes that run's backup of ``env`` and names a dump under the same prefix: a
    manifest sent elsewhere (another run's dump, another environment's, a path out of the prefix) is refused."""
    prefix = f"{env_prefix(env)}{run_id}/"
    found = [k for k in storage.list(prefix) if k.endswith(".manifest.json") and "/" not in k[len(prefix):]]
    if not found:
        raise BackupError(f"no backup of run {run_id!r} in {storage.location(env_prefix(env))} "
                          "(see `pitstop backups list`)")
    if len(found) > 1:
        raise BackupError(f"run {run_id} has {len(found)} manifests in {storage.location(prefix)}: which one "
                          "describes its backup cannot be told; nothing was restored")
    raw = storage.get_bytes(found[0])
    try:
        manifest = dict(json.loads(raw))
    except (ValueError, TypeError):
        raise BackupError(f"the manifest {storage.location(found[0])} is not readable JSON: nothing was "
                          "restored") from None
    key = str(manifest.get("key") or "")
    rest = key[len(prefix):]
    if (manifest.get("run_id") != run_id or manifest.get("environment") != env or not key.startswith(prefix)
            or not rest or "/" in rest or rest.startswith(".")):
        raise BackupError(f"the manifest {storage.location(found[0])} does not describe run {run_id}'s backup "
                          f"of {env} (it names {key!r}, run {manifest.get('run_id')!r} of environment "
                          f"{manifest.get('environment')!r}): it was altered; nothing was restored")
    return manifest, raw


def plan_prune(backups: list[BackupEntry], bcfg: BackupConfig, protect: set[str] | None = None) -> list[BackupEntry]:
    """Backups to delete: beyond keep_<kind> newest of each kind; never the newest verified one."""
    keep = {"monthly": bcfg.keep_monthly, "quarterly": bcfg.keep_quarterly, "emergency": bcfg.keep_emergency}
    newest_verified = next((b.run_id for b in backups if b.verified), None)
    seen: dict[str, int] = {}
    doomed = []
    for b in backups:  # newest first
        seen[b.kind] = seen.get(b.kind, 0) + 1
        if seen[b.kind] <= keep.get(b.kind, bcfg.keep_custom):
            continue
        if b.run_id == newest_verified or b.run_id in (protect or set()):
            continue
        doomed.append(b)
    return doomed


def delete_backup(storage: Storage, env: str, run_id: str) -> int:
    """Delete every object of one run's backup (dump first, manifest last). Returns objects deleted."""
    keys = storage.list(f"{env_prefix(env)}{run_id}/")
    keys.sort(key=lambda k: k.endswith(".manifest.json"))
    for k in keys:
        storage.delete(k)
    return len(keys)
