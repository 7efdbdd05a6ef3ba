"""Database, storage, backup and cleanup settings.

Sections ``database``, ``storage``, ``backup``, ``retention`` and ``cleanup``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..units import Duration
from .base import Identifier, Name, Strict


class DatabaseConfig(Strict):
    """The platform's PostgreSQL. ``embedded: true`` starts a private server from the pgserver wheel."""

    embedded: bool = False
    data_dir: str = "pgdata"
    host: str | None = None
    port: int = Field(5432, ge=1, le=65535)
    dbname: str = "postgres"
    user: str = "postgres"
    password_env: str | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        "prefer", description="libpq sslmode; default: `require` for a host off this machine, `prefer` for a Unix "
        "socket or a loopback address (a connection leaving the machine without TLS is a deviation in the report)")
    pg_bin_dir: str | None = Field(None, description="bin directory of pg_dump/pg_restore/psql at least as new as "
                                   "the server (default: chosen by the server's version, docs/platforms.md)")
    connect_timeout: int = Field(10, ge=1)
    verify_server: str | None = Field(None, description="conninfo of another server to restore-verify backups on")

    @model_validator(mode="after")
    def _where(self) -> DatabaseConfig:
        if not self.embedded and not self.host:
            raise ValueError("set `host` (or `embedded: true` for the built-in demo server)")
        if "sslmode" not in self.model_fields_set and not self.embedded and not is_loopback(self.host):
            self.sslmode = "require"  # never silently in clear text across a network
        return self


def is_loopback(host: str | None) -> bool:
    """A Unix socket directory, ``localhost`` or a loopback address: traffic never leaves the machine."""
    import ipaddress

    if not host or host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StorageConfig(Strict):
    kind: Literal["local", "s3"] = "local"
    path: str = "storage"
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_env: str | None = None
    secret_key_env: str | None = None
    server_side_encryption: Literal["AES256", "aws:kms", "none"] = Field(
        "AES256", description="server-side encryption of every object (default AES256; `none` for an endpoint "
        "without it)")
    kms_key_id: str | None = Field(None, description="KMS key id/ARN when server_side_encryption is aws:kms")
    storage_class: str | None = None
    part_size: int | None = Field(None, ge=5 * 1024**2, le=5 * 1024**3,
                                  description="S3 multipart part size in bytes (default: derived from the DB size)")
    max_concurrency: int = Field(4, ge=1, le=32,
                                 description="S3 parts uploaded in parallel (memory ~ part x (this + 1))")
    retry_attempts: int = Field(6, ge=1, le=20, description="attempts per S3 request on transient errors")
    retry_max_wait: float = Field(20, gt=0, description="cap of the exponential backoff between attempts (s)")
    payload_signing: bool = Field(False, description="SigV4-sign each part's payload (botocore does it over "
                                  "plain HTTP; parts carry a signed CRC32 and the dump a verified SHA-256 anyway)")

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> StorageConfig:
        if self.kind == "s3" and not self.bucket:
            raise ValueError("S3 storage needs `bucket`")
        return self


class BackupConfig(Strict):
    """``backup:`` — dump format and retention of pre-backups (see docs/backup.md)."""

    format: Literal["custom", "directory"] = "custom"
    jobs: int = Field(2, ge=1, le=64, description="pg_dump/pg_restore -j for the directory format")
    compress: int = Field(6, ge=0, le=9, description="pg_dump -Z level (a step's `compress` overrides it)")
    staging_dir: str = Field("backup-staging", description="scratch space for the directory format")
    keep_monthly: int = Field(12, ge=1)
    keep_quarterly: int = Field(8, ge=1)
    keep_emergency: int = Field(10, ge=1)
    keep_custom: int = Field(5, ge=1)
    when: Literal["always", "before_destructive_work"] = Field(
        "always", description="`always`: every run with a backup step takes one; `before_destructive_work`: only "
        "when a destructive step (cleanup.retention, a step declared `destructive: true` ...) has work, from facts "
        "(docs/backup.md)")


class Filter(Strict):
    """A structured condition of a retention rule: no free SQL text from config."""

    column: Identifier
    op: Literal["=", "!=", "<", "<=", ">", ">=", "is_null", "is_not_null", "in"]
    value: str | int | float | bool | list[str | int | float] | None = None


class RetentionRule(Strict):
    table: Identifier
    schema_: Identifier = Field("public", alias="schema")
    column: Identifier = Field(description="timestamp column compared with now() - older_than")
    older_than: Duration
    where: list[Filter] = Field(default_factory=list)
    archive: bool = Field(False, description="copy purged rows (gzip CSV) to storage before deleting them")
    max_share: float = Field(0.5, gt=0, le=1, description="refuse to purge more than this share of the table")
    batch_size: int | None = Field(None, ge=1, description="initial batch size (default: the profile's)")
    profile: Name | None = Field(None, description="cleanup profile for this rule (default: cleanup.profile)")
    partitions: Literal["drop", "drop_only", "rows"] = Field(
        "drop", description="partitioned tables: `drop` leaf partitions entirely past the cutoff, then delete the "
        "remaining expired rows; `drop_only` drop those leaves and delete no row of a partition that stays (the "
        "'keep N months' policy); `rows` delete rows only")

    @model_validator(mode="after")
    def _drop_only_without_filters(self) -> RetentionRule:
        if self.partitions == "drop_only" and self.where:
            raise ValueError("`partitions: drop_only` drops whole partitions only, and a rule with `where` filters "
                             "never drops a whole partition: remove `where`, or use `partitions: drop` or `rows`")
        return self

    @property
    def qualified(self) -> str:
        return f"{self.schema_}.{self.table}"


class CleanupProfile(Strict):
    """How hard a purge pushes: batch duration target, pacing and the ceilings that throttle it."""

    target_batch_ms: float = Field(100, gt=0, description="adapt the batch size to this duration per batch")
    initial_batch: int = Field(1000, ge=1)
    min_batch: int = Field(50, ge=1)
    max_batch: int = Field(50000, ge=1)
    pause_ms: float = Field(0, ge=0, description="minimum pause between batches")
    duty_cycle: float = Field(1.0, gt=0, le=1, description="share of wall time spent inside batches")
    max_pause_ms: float = Field(2000, ge=0, description="ceiling of the feedback-driven pause")
    lock_timeout_ms: int = Field(100, ge=1)
    statement_timeout_ms: int = Field(2000, ge=1)
    max_batch_ms: int | None = Field(
        200, ge=1, description="hard ceiling of one batch: its statements are cancelled past this (the batch rolls "
                               "back and is retried at a quarter of the size); None: only statement_timeout_ms")
    max_lock_retries: int = Field(100, ge=0, description="lock timeouts tolerated per target before failing")
    max_replica_lag_s: float | None = Field(10, gt=0, description="pause while a replica lags more than this")
    max_replica_lag_bytes: int | None = Field(None, gt=0)
    max_active_backends: int | None = Field(None, ge=1, description="pause while more app backends are active")
    max_app_waiters: float = Field(0.5, ge=0, description="mean app backends waiting (Lock/LWLock/IO) per sample "
                                                          "tolerated during a batch before slowing down")
    max_app_stall_ms: float | None = Field(
        20, gt=0, description="slow down when an application statement has been stuck this long in a "
                              "Lock/LWLock/IO wait (e.g. WALWrite behind the purge's WAL flush); None: off")
    sample_ms: float = Field(10, gt=0, description="pg_stat_activity / pg_locks sampling interval")
    max_throttle_s: float = Field(600, gt=0, description="fail (resumably) after throttling this long in a row")


def _builtin_profiles() -> dict[str, CleanupProfile]:
    return {
        "gentle": CleanupProfile(target_batch_ms=25, initial_batch=200, min_batch=20, max_batch=5000,
                                 pause_ms=10, duty_cycle=0.15, lock_timeout_ms=50, max_app_waiters=0.2,
                                 max_batch_ms=100),
        "default": CleanupProfile(),
        "fast": CleanupProfile(target_batch_ms=200, initial_batch=5000, max_batch=200000, duty_cycle=1.0,
                               lock_timeout_ms=200, statement_timeout_ms=5000, max_app_waiters=4,
                               max_batch_ms=None),
    }


class CleanupSettings(Strict):
    """Environment-wide cleanup settings. ``profiles`` adds or overrides gentle/default/fast."""

    profile: Name = "default"
    profiles: dict[Name, CleanupProfile] = Field(default_factory=_builtin_profiles)
    progress_schema: Identifier = "public"
    progress_table: Identifier = "pitstop_cleanup_progress"
    archive_prefix: str = Field("cleanup-archive", pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,200}$")
    reindex_bloat_threshold: float = Field(0.3, ge=0, le=1)
    reindex_min_bytes: int = Field(8 * 1024 * 1024, ge=0)

    @field_validator("profiles")
    @classmethod
    def _merge_builtins(cls, v: dict[str, CleanupProfile]) -> dict[str, CleanupProfile]:
        return {**_builtin_profiles(), **v}
