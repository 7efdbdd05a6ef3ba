"""S3 (and S3-compatible) storage over boto3: streaming multipart upload with bounded memory.

``put_stream`` reads the source (e.g. ``pg_dump``'s stdout pipe) into part-sized buffers and hands
each to a small thread pool, so dumping and uploading overlap. At most ``max_concurrency`` buffers
exist at a time: when all are in flight the reader blocks, and so does the producer on its full
pipe (back-pressure), which keeps memory near ``part_size x max_concurrency``.

Part size comes from a size hint (the database size) so a dump never needs more than
``MAX_PARTS``; if the hint was far too low, parts grow (S3 allows parts of different sizes) instead
of failing at part 10,000. Every request is retried with tenacity (exponential backoff with jitter)
on transient errors only; permanent errors fail at once with a clear message. A failed upload is
aborted so no orphaned parts are billed.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, BinaryIO, TypeVar

import boto3
import botocore.exceptions as bex
from botocore.config import Config
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from ..config import StorageConfig
from ..errors import ConfigError, ConnectorError, TransientError
from .store import Storage, StoredObject

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3's minimum for every part but the last
MAX_PART = 5 * 1024 * MiB
MAX_PARTS = 10_000
DEFAULT_PART = 8 * MiB  # x max_concurrency 4: ~32 MiB of part buffers (peak RSS goal 150 MB)
PLANNED_PARTS = 4_000  # parts the hint is spread over: leaves 6,000 parts of head-room
GROW_AFTER = PLANNED_PARTS  # past this part number (the hint was wrong), part size doubles every GROW_EVERY
GROW_EVERY = 1_000
CHECKSUM = "CRC32"  # per-part integrity checksum (botocore's default algorithm), declared on the upload

T = TypeVar("T")

PERMANENT_HINTS = {
    "AccessDenied": "the credentials are not allowed to do this (check the bucket policy / IAM role)",
    "AllAccessDisabled": "all access to this bucket is disabled",
    "NoSuchBucket": "the bucket does not exist at this endpoint (check storage.bucket / endpoint_url)",
    "InvalidAccessKeyId": "the access key is unknown to the endpoint (check the variable named by "
                          "storage.access_key_env)",
    "SignatureDoesNotMatch": "the secret key is wrong (check the variable named by storage.secret_key_env)",
    "InvalidBucketName": "storage.bucket is not a valid bucket name",
    "KMS.NotFoundException": "the KMS key does not exist",
    "NotImplemented": "the endpoint does not implement a header sent: most often server-side encryption, "
                      "which pitstop asks for by default (storage.server_side_encryption: AES256); enable it on "
                      "the endpoint, or set `server_side_encryption: none` to store objects unencrypted",
    "InvalidEncryptionAlgorithmError": "the endpoint refuses storage.server_side_encryption's algorithm",
}
TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestLimitExceeded",
                   "InternalError", "ServiceUnavailable", "BandwidthLimitExceeded", "503", "500", "502", "504"}


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: 5xx, throttling, timeouts, dropped or reset connections."""
    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(err.get("Code", ""))
        return code not in PERMANENT_HINTS and (code in TRANSIENT_CODES or status >= 500 or status == 429)
    return isinstance(exc, bex.ConnectionError | bex.HTTPClientError | ConnectionError | TimeoutError |
                      bex.IncompleteReadError | bex.ResponseStreamingError)


def part_size_for(size_hint: int | None, configured: int | None = None) -> int:
    """Part size so that ``size_hint`` bytes fit in ``PLANNED_PARTS`` parts (whole MiB, 5 MiB-5 GiB)."""
    size = configured or DEFAULT_PART
    if size_hint:
        needed = -(-size_hint // PLANNED_PARTS)
        size = max(size, -(-needed // MiB) * MiB)
    return min(max(size, MIN_PART), MAX_PART)


def part_size_at(base: int, part_number: int) -> int:
    """The size of part ``part_number`` (1-based): ``base`` until GROW_AFTER, then doubling."""
    if part_number <= GROW_AFTER:
        return base
    return min(base * 2 ** ((part_number - GROW_AFTER - 1) // GROW_EVERY + 1), MAX_PART)


def _read_full(stream: BinaryIO, buf: memoryview) -> int:
    """Fill ``buf`` from ``stream``; fewer bytes only at end of stream."""
    got = 0
    readinto = getattr(stream, "readinto", None)
    while got < len(buf):
        if readinto is not None:
            n = readinto(buf[got:])
        else:
            data = stream.read(len(buf) - got)
            n = len(data)
            buf[got:got + n] = data
        if not n:
            break
        got += n
    return got


class S3Storage(Storage):
    def __init__(self, cfg: StorageConfig, sleep: Callable[[float], None] | None = None):
        assert cfg.bucket
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.prefix = cfg.prefix.strip("/") + "/" if cfg.prefix.strip("/") else ""
        self._sleep = sleep
        self.on_retry: Callable[..., None] | None = None
        self.retries: list[dict[str, Any]] = []  # transient failures seen (op, attempt, error type)
        self._retries_lock = threading.Lock()
        self.last_upload: dict[str, Any] = {}
        self.client = boto3.session.Session(**self._credentials()).client(
            "s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region or "us-east-1",
            config=Config(retries={"total_max_attempts": 1},  # tenacity retries, botocore does not
                          max_pool_connections=cfg.max_concurrency + 4,
                          connect_timeout=10, read_timeout=120,
                          s3={"payload_signing_enabled": cfg.payload_signing,
                              **({"addressing_style": "path"} if cfg.endpoint_url else {})}))

    def _credentials(self) -> dict[str, str]:
        names = (self.cfg.access_key_env, self.cfg.secret_key_env)
        if not any(names):
            return {}  # boto3's own chain: AWS_* variables, profile, instance role
        if not all(names):
            raise ConfigError("storage: set both access_key_env and secret_key_env (or neither)")
        values = {}
        for field, name in zip(("aws_access_key_id", "aws_secret_access_key"), names, strict=True):
            assert name is not None
            value = os.environ.get(name)
            if not value:
                raise ConfigError(f"storage credentials: environment variable ${name} is not set")
            values[field] = value
        return values

    # -- retries and errors ---------------------------------------------------------------------------
    def _call(self, op: str, key: str, fn: Callable[..., T], **kwargs: Any) -> T:
        def note(state: Any) -> None:
            exc = state.outcome.exception()
            with self._retries_lock:
                self.retries.append({"op": op, "attempt": state.attempt_number, "error": type(exc).__name__})
            if self.on_retry is not None:  # the run's audit: one `retry` event per retry
                self.on_retry(what=f"s3.{op}", attempt=state.attempt_number, error=type(exc).__name__,
                              wait_s=round(state.next_action.sleep, 3))

        retrying = Retrying(retry=retry_if_exception(is_transient), reraise=True, before_sleep=note,
                            stop=stop_after_attempt(self.cfg.retry_attempts),
                            wait=wait_random_exponential(multiplier=0.25, max=self.cfg.retry_max_wait),
                            sleep=self._sleep or time.sleep)
        try:
            return retrying(fn, **kwargs)
        except bex.ClientError as exc:
            raise self._error(op, key, exc) from None
        except (bex.BotoCoreError, ConnectionError, TimeoutError) as exc:
            if is_transient(exc):
                raise TransientError(f"S3 {op} of {self.location(key)} failed after {self.cfg.retry_attempts} "
                                     f"attempts: {type(exc).__name__}: {exc}") from None
            raise ConnectorError(f"S3 {op} of {self.location(key)} failed: {type(exc).__name__}: {exc}") from None

    def _error(self, op: str, key: str, exc: bex.ClientError) -> ConnectorError:
        code = str(exc.response.get("Error", {}).get("Code", "?"))
        msg = str(exc.response.get("Error", {}).get("Message", "")).strip()
        where = f"S3 {op} of {self.location(key)}" + (f" at {self.cfg.endpoint_url}" if self.cfg.endpoint_url else "")
        if is_transient(exc):
            return TransientError(f"{where} failed after {self.cfg.retry_attempts} attempts: {code} {msg}")
        hint = PERMANENT_HINTS.get(code, "not retried: the error is permanent")
        return ConnectorError(f"{where} failed: {code}: {hint}" + (f" ({msg})" if msg else ""))

    # -- Storage interface ----------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        return self.prefix + key

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _extra(self) -> dict[str, str]:
        extra: dict[str, str] = {}
        if self.cfg.server_side_encryption != "none":
            extra["ServerSideEncryption"] = self.cfg.server_side_encryption
            if self.cfg.kms_key_id:
                extra["SSEKMSKeyId"] = self.cfg.kms_key_id
        if self.cfg.storage_class:
            extra["StorageClass"] = self.cfg.storage_class
        return extra

    def put_stream(self, key: str, stream: BinaryIO, size_hint: int | None = None) -> StoredObject:
        base = part_size_for(size_hint, self.cfg.part_size)
        digest = hashlib.sha256()
        first = bytearray(base)
        n = _read_full(stream, memoryview(first))
        if n < base:  # small object: one PUT
            body = bytes(memoryview(first)[:n])
            del first
            digest.update(body)
            self._call("upload", key, self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=body,
                       **self._extra())
            self.last_upload = {"parts": 1, "part_size": base, "multipart": False}
            return StoredObject(key=key, location=self.location(key), size=n, sha256=digest.hexdigest())
        return self._multipart(key, stream, base, first, digest)

    def _multipart(self, key: str, stream: BinaryIO, base: int, first: bytearray,
                   digest: Any) -> StoredObject:
        # Declaring the parts' checksum algorithm up front makes the object's checksum the composite of the
        # parts' CRC32s, which the endpoint checks per part; without it S3 (and moto) settle on a full-object
        # CRC64 that the server computes again over the whole object when the upload completes.
        created = self._call("upload", key, self.client.create_multipart_upload, Bucket=self.bucket,
                             Key=self._key(key), ChecksumAlgorithm=CHECKSUM, **self._extra())
        upload_id = created["UploadId"]
        # Part buffers alive at once: max_concurrency uploading + one being filled from the stream, so the
        # producer (pg_dump) never waits for an upload slot before its next part can be read.
        slots = threading.Semaphore(self.cfg.max_concurrency + 1)
        parts: dict[int, dict[str, Any]] = {}
        futures: set[Future[None]] = set()
        size = 0

        def send(number: int, body: bytes | bytearray) -> None:
            try:
                resp = self._call("upload", key, self.client.upload_part, Bucket=self.bucket, Key=self._key(key),
                                  UploadId=upload_id, PartNumber=number, Body=body, ChecksumAlgorithm=CHECKSUM)
                parts[number] = {"PartNumber": number, "ETag": resp["ETag"],
                                 **({"ChecksumCRC32": resp["ChecksumCRC32"]} if resp.get("ChecksumCRC32") else {})}
            finally:
                slots.release()

        pool = ThreadPoolExecutor(max_workers=self.cfg.max_concurrency, thread_name_prefix="pitstop-s3")
        try:
            number, buf, n = 1, first, len(first)
            slots.acquire()
            while n:
                body = buf if n == len(buf) else bytes(memoryview(buf)[:n])
                digest.update(memoryview(body))
                size += n
                futures.add(pool.submit(send, number, body))
                del buf, body
                done = {f for f in futures if f.done()}
                for f in done:
                    f.result()  # surface a failed part now, not at the end
                futures -= done
                number += 1
                if number > MAX_PARTS:
                    raise ConnectorError(f"S3 upload of {self.location(key)} exceeds {MAX_PARTS} parts")
                slots.acquire()  # back-pressure: at most max_concurrency + 1 buffers alive
                buf = bytearray(part_size_at(base, number))
                n = _read_full(stream, memoryview(buf))
            slots.release()
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for f in finished:
                f.result()
            wait(futures)
            for f in futures:
                f.result()
            ordered = [parts[i] for i in sorted(parts)]
            self._call("upload", key, self.client.complete_multipart_upload, Bucket=self.bucket,
                       Key=self._key(key), UploadId=upload_id, MultipartUpload={"Parts": ordered})
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            self._abort(key, upload_id)
            raise
        pool.shutdown(wait=True)
        self.last_upload = {"parts": len(parts), "part_size": base, "multipart": True}
        return StoredObject(key=key, location=self.location(key), size=size, sha256=digest.hexdigest())

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._call("abort", key, self.client.abort_multipart_upload, Bucket=self.bucket, Key=self._key(key),
                       UploadId=upload_id)
        except ConnectorError:
            pass  # the original error matters more; a lifecycle rule cleans leftovers

    def open(self, key: str) -> BinaryIO:
        return io.BufferedReader(_S3Reader(self, key), buffer_size=MiB)  # type: ignore[arg-type]

    def size(self, key: str) -> int:
        head = self._call("read", key, self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        return int(head["ContentLength"])

    def list(self, prefix: str = "") -> list[str]:
        def page_all() -> list[str]:
            out: list[str] = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                               Prefix=self._key(prefix)):
                out.extend(o["Key"][len(self.prefix):] for o in page.get("Contents", []))
            return out

        return sorted(self._call("list", prefix, page_all))

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except bex.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error("read", key, exc) from None


class _S3Reader(io.RawIOBase):
    """A readable S3 object that resumes with a Range request when the connection drops."""

    def __init__(self, store: S3Storage, key: str):
        self.store, self.key, self.pos = store, key, 0
        self.body: Any = None

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        kw = {"Range": f"bytes={self.pos}-"} if self.pos else {}
        try:
            resp = self.store._call("read", self.key, self.store.client.get_object, Bucket=self.store.bucket,
                                    Key=self.store._key(self.key), **kw)
        except ConnectorError as exc:
            if "InvalidRange" in str(exc):  # resumed exactly at the end
                self.body = io.BytesIO(b"")
                return
            raise
        self.body = resp["Body"]

    def readinto(self, b: Any) -> int:
        for attempt in range(self.store.cfg.retry_attempts):
            try:
                if self.body is None:
                    self._open()
                data = self.body.read(len(b))
                b[:len(data)] = data
                self.pos += len(data)
                return len(data)
            except (bex.BotoCoreError, ConnectionError, TimeoutError) as exc:
                if not is_transient(exc) or attempt + 1 >= self.store.cfg.retry_attempts:
                    raise ConnectorError(f"S3 read of {self.store.location(self.key)} failed at byte {self.pos}: "
                                         f"{type(exc).__name__}") from None
                self.body = None
        return 0

    def close(self) -> None:
        if self.body is not None:
            self.body.close()
        super().close()
