"""`calls.Documents` on a NATS KV bucket, through its compare-and-set `Bucket`."""

from __future__ import annotations

from typing import Any, TypeVar

from ..calls import Change
from .link import DELETE, Bucket, kv_key

T = TypeVar("T")


class NatsDocuments:
    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket

    def _key(self, kind: str, ident: str) -> str:
        return kv_key(f"doc-{kind}", ident)

    async def read(self, kind: str, ident: str) -> Any:
        async with self._bucket.link.guard():
            value, _ = await self._bucket.read(self._key(kind, ident))
            return value

    async def mutate(self, kind: str, ident: str, change: Change[T]) -> T:
        async def translated(current: Any) -> tuple[Any, T]:
            # KEEP passes through (one marker for every store); None deletes.
            new, result = change(current)
            return (DELETE if new is None else new), result

        async with self._bucket.link.guard():
            return await self._bucket.mutate(self._key(kind, ident), translated)
