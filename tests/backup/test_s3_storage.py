"""S3Storage against moto's server mode over HTTP, and LocalStorage atomicity."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zlib
from pathlib import Path
from typing import Any

import pytest

from pitstop.config import StorageConfig
from pitstop.connectors.s3 import MAX_PARTS, MIN_PART, S3Storage, part_size_at, part_size_for
from pitstop.connectors.storage import LocalStorage
from pitstop.errors import ConfigError, ConnectorError
from tests.backup.backup_helpers import SECRET_ENV, s3_storage

MiB = 1024 * 1024


def store(endpoint: str, bucket: str, **extra: Any) -> S3Storage:
    return S3Storage(StorageConfig(**s3_storage(endpoint, bucket, **extra)), sleep=lambda s: None)


class Failing(io.RawIOBase):
    """A source that yields ``ok`` bytes and then fails, like a producer dying mid-dump."""

    def __init__(self, ok: int):
        self.left = ok

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.left <= 0:
            raise OSError("producer died")
        n = min(len(b), self.left)
        b[:n] = os.urandom(n)
        self.left -= n
        return n


def test_part_size_never_hits_the_part_limit() -> None:
    assert part_size_for(None) >= MIN_PART
    assert part_size_for(1024) == part_size_for(None)
    for size in (10 * 1024**3, 200 * 1024**3, 2 * 1024**4):
        part = part_size_for(size)
        assert part % MiB == 0 and -(-size // part) <= MAX_PARTS // 2
    # a hint 20x too low still fits in 10,000 parts: parts grow past part 5,000
    base = part_size_for(50 * 1024**3)
    assert sum(part_size_at(base, n) for n in range(1, MAX_PARTS + 1)) > 20 * 50 * 1024**3


def test_multipart_stream_with_sse_and_storage_class(moto_endpoint: str, bucket: str, s3_client: Any) -> None:
    data = os.urandom(17 * MiB + 123)
    st = store(moto_endpoint, bucket, part_size=5 * MiB, max_concurrency=2, server_side_encryption="AES256",
               storage_class="STANDARD_IA", prefix="team/")
    obj = st.put_stream("a/b.dump", io.BytesIO(data), size_hint=len(data))
    assert obj.sha256 == hashlib.sha256(data).hexdigest() and obj.size == len(data)
    assert obj.location == f"s3://{bucket}/team/a/b.dump"
    assert st.last_upload == {"parts": 4, "part_size": 5 * MiB, "multipart": True}
    head = s3_client.head_object(Bucket=bucket, Key="team/a/b.dump", PartNumber=1)
    assert head["PartsCount"] == 4
    head = s3_client.head_object(Bucket=bucket, Key="team/a/b.dump", ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256" and head["StorageClass"] == "STANDARD_IA"
    # the parts' CRC32s were declared and passed on completion: the object's checksum is the composite of the
    # 4 parts' (S3 writes it "<base64>-4"), not a full-object checksum the endpoint recomputes over the dump
    crc, _, count = head["ChecksumCRC32"].partition("-")
    assert count in ("4", "")
    part_crcs = b"".join(zlib.crc32(data[i:i + 5 * MiB]).to_bytes(4, "big") for i in range(0, len(data), 5 * MiB))
    assert base64.b64decode(crc) == zlib.crc32(part_crcs).to_bytes(4, "big")
    with st.open("a/b.dump") as f:
        assert f.read() == data
    assert st.list("a/") == ["a/b.dump"] and st.exists("a/b.dump") and not st.exists("a/nope")
    st.delete("a/b.dump")
    assert st.list("a/") == []


def test_failed_stream_aborts_the_multipart_upload(moto_endpoint: str, bucket: str, s3_client: Any) -> None:
    st = store(moto_endpoint, bucket, part_size=5 * MiB, max_concurrency=2)
    with pytest.raises(OSError, match="producer died"):
        st.put_stream("x.dump", io.BufferedReader(Failing(12 * MiB)))  # type: ignore[arg-type]
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert not st.exists("x.dump")


def test_permanent_error_fails_at_once_with_a_clear_message(moto_endpoint: str) -> None:
    st = store(moto_endpoint, "pitstop-no-such-bucket")
    with pytest.raises(ConnectorError, match="NoSuchBucket: the bucket does not exist") as exc:
        st.put_bytes("x", b"data")
    assert st.retries == []  # not retried
    assert os.environ[SECRET_ENV] not in str(exc.value)


def test_transient_connection_resets_are_retried(reset_proxy: Any, bucket: str) -> None:
    proxy = reset_proxy(2)
    st = store(f"http://127.0.0.1:{proxy.port}", bucket, part_size=5 * MiB, max_concurrency=1)
    data = os.urandom(11 * MiB)
    obj = st.put_stream("r.dump", io.BytesIO(data))
    assert obj.sha256 == hashlib.sha256(data).hexdigest()
    assert len(st.retries) == 2 and {r["op"] for r in st.retries} == {"upload"}
    assert proxy.accepted >= 3
    with st.open("r.dump") as f:
        assert hashlib.sha256(f.read()).hexdigest() == obj.sha256


def test_transient_errors_give_up_after_the_configured_attempts(reset_proxy: Any, bucket: str) -> None:
    proxy = reset_proxy(100)
    st = store(f"http://127.0.0.1:{proxy.port}", bucket, retry_attempts=3)
    with pytest.raises(ConnectorError, match="failed after 3 attempts"):
        st.put_bytes("x", b"data")
    assert len(st.retries) == 2


def test_missing_credential_variable_is_named_not_its_value(moto_endpoint: str, bucket: str) -> None:
    cfg = StorageConfig(**{**s3_storage(moto_endpoint, bucket), "secret_key_env": "PITSTOP_UNSET_VAR_X"})
    with pytest.raises(ConfigError, match=r"\$PITSTOP_UNSET_VAR_X is not set"):
        S3Storage(cfg)


def test_local_storage_is_atomic(tmp_path: Path) -> None:
    st = LocalStorage(tmp_path / "s")
    with pytest.raises(OSError):
        st.put_stream("b/x.dump", io.BufferedReader(Failing(3 * MiB)))  # type: ignore[arg-type]
    assert st.list() == [] and not list((tmp_path / "s").rglob("*.partial"))
    obj = st.put_bytes("b/x.dump", b"hello")
    assert st.get_bytes("b/x.dump") == b"hello" and obj.size == 5 and st.size("b/x.dump") == 5
    with pytest.raises(ConnectorError, match="escapes"):
        st.put_bytes("../evil", b"x")


def test_objects_are_encrypted_server_side_by_default(moto_endpoint: str, bucket: str, s3_client: Any) -> None:
    st = store(moto_endpoint, bucket)
    st.put_bytes("backups/x/y.dump", b"production rows")
    head = s3_client.head_object(Bucket=bucket, Key="backups/x/y.dump")
    assert head["ServerSideEncryption"] == "AES256"
    plain = store(moto_endpoint, bucket, server_side_encryption="none")
    plain.put_bytes("backups/x/z.dump", b"rows")
    assert "ServerSideEncryption" not in s3_client.head_object(Bucket=bucket, Key="backups/x/z.dump")
