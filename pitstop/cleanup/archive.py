"""Archive of purged rows: gzip CSV (``COPY ... TO STDOUT``) written to the run's storage.

Row batches are archived with ``COPY (DELETE ... RETURNING *) TO STDOUT``: the CSV is exactly the
rows the DELETE removed, and the object is stored *before* the batch commits, so a deleted row is
never missing from the archive (a crash between upload and commit leaves an object that the retry
of the same batch number overwrites). A manifest lists every committed chunk with its row count
and SHA-256; its own SHA-256 goes into the report. Whole partitions are streamed in one object.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from typing import Any

from psycopg import sql

from ..connectors.storage import Storage, StoredObject

CSV = sql.SQL("(FORMAT csv, HEADER true)")


def prefix(base: str, table: str, episode: int) -> str:
    return f"{base.rstrip('/')}/{table}/episode-{episode}"


def copy_to_gzip(cur: Any, query: sql.Composable, args: list[Any]) -> tuple[bytes, int]:
    """Run ``COPY (query) TO STDOUT`` and return the gzip CSV and the row count (small batches)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=5, mtime=0) as gz:
        with cur.copy(sql.SQL("COPY ({}) TO STDOUT ").format(query) + CSV, args) as copy:
            for chunk in copy:
                gz.write(chunk)
    return buf.getvalue(), int(cur.rowcount)


class _GzipCopyStream(io.RawIOBase):
    """A readable stream of gzip bytes compressed on the fly from a COPY's chunks."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._z = zlib.compressobj(5, zlib.DEFLATED, 31)  # wbits 31: gzip container
        self._buf = bytearray()
        self._eof = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._buf) < size):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._buf += self._z.flush()
                self._eof = True
            else:
                self._buf += self._z.compress(bytes(chunk))
        n = len(self._buf) if size < 0 else min(size, len(self._buf))
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def stream_table(cur: Any, storage: Storage, key: str, table: sql.Composable) -> tuple[StoredObject, int]:
    """Stream a whole table (a detached partition) to ``key`` as gzip CSV."""
    query = sql.SQL("COPY (SELECT * FROM {}) TO STDOUT ").format(table) + CSV
    with cur.copy(query) as copy:
        stored = storage.put_stream(key, _GzipCopyStream(iter(copy)))  # type: ignore[arg-type]
    return stored, int(cur.rowcount)


def write_manifest(storage: Storage, base: str, chunks: dict[str, Any], table: str, cutoff: str) -> StoredObject:
    body = {"table": table, "cutoff": cutoff, "format": "csv+gzip, header row",
            "rows": sum(c["rows"] for c in chunks.values()),
            "objects": [{"key": k, **v} for k, v in sorted(chunks.items())]}
    return storage.put_bytes(f"{base}/manifest.json", json.dumps(body, indent=2).encode())
