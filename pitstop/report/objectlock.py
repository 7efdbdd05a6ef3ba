"""S3 Object Lock for report objects: when the report bucket has Object Lock enabled, every file of
the run folder is written with COMPLIANCE-mode retention (nobody, not even the root account, can
delete or overwrite that version before the retain-until date) and the ETag and VersionId of each
object are recorded in a receipt.

The retention period is the bucket's default retention rule (days or years), or
``DEFAULT_RETAIN_DAYS`` when the bucket has Object Lock enabled without a default rule. Buckets
without Object Lock, and local storage, get plain copies (see writer.copy_to_storage).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_RETAIN_DAYS = 400  # a year and a bit: long enough for an annual audit


def lock_policy(storage: Any) -> dict[str, Any] | None:
    """``{"mode": "COMPLIANCE", "days": n}`` if ``storage`` is an S3 bucket with Object Lock on."""
    client, bucket = getattr(storage, "client", None), getattr(storage, "bucket", None)
    if client is None or bucket is None:
        return None
    try:
        conf = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    except Exception:  # noqa: BLE001 - ObjectLockConfigurationNotFoundError and friends: no lock
        return None
    if conf.get("ObjectLockEnabled") != "Enabled":
        return None
    rule = (conf.get("Rule") or {}).get("DefaultRetention") or {}
    days = int(rule.get("Days") or 0) or int(rule.get("Years") or 0) * 365 or DEFAULT_RETAIN_DAYS
    return {"mode": "COMPLIANCE", "days": days}


def put_locked(storage: Any, key: str, data: bytes, policy: dict[str, Any]) -> dict[str, Any]:
    """Write one object with COMPLIANCE retention; returns its receipt entry."""
    until = (datetime.now(UTC) + timedelta(days=policy["days"])).replace(microsecond=0)
    full_key = storage._key(key)  # noqa: SLF001 - the storage's own prefixing
    resp = storage.client.put_object(
        Bucket=storage.bucket, Key=full_key, Body=data,
        ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode(),  # noqa: S324 - required by Object Lock
        ObjectLockMode=policy["mode"], ObjectLockRetainUntilDate=until)
    return {"key": key, "location": storage.location(key), "etag": resp.get("ETag", "").strip('"'),
            "version_id": resp.get("VersionId"), "sha256": hashlib.sha256(data).hexdigest(),
            "lock_mode": policy["mode"], "retain_until": until.isoformat()}
