"""The storage contract: what a backend (:mod:`pitstop.connectors.storage`'s local directory,
:mod:`pitstop.connectors.s3`) implements and what a stored object reports."""

from __future__ import annotations

import abc
from typing import BinaryIO

from pydantic import BaseModel


class StoredObject(BaseModel):
    key: str
    location: str
    size: int
    sha256: str


class Storage(abc.ABC):
    @abc.abstractmethod
    def put_stream(self, key: str, stream: BinaryIO, size_hint: int | None = None) -> StoredObject: ...

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        import io

        return self.put_stream(key, io.BytesIO(data), len(data))

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def location(self, key: str) -> str: ...

    @abc.abstractmethod
    def size(self, key: str) -> int: ...

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()
