"""Group commit: writes that arrive together go to the store as one batch.

Callers `submit` an item and wait for its own answer; one writer task takes
everything queued (up to `max_batch`), hands it to `write` as one batch and
answers each caller with its own result or error. While a batch is being
written, the next one gathers, so under load a batch costs one transaction
for many writes, and a lone write waits for no timer.

`write` returns one result per item, in order; an item's error is its own
(an exception in its slot), while an exception raised by `write` itself
fails the whole batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Batches of `T` written by one task; each caller gets its own `R`."""

    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int = 256,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._write = write
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: T) -> R:
        """Queue `item`; return its result once its batch is written."""
        if self._closed:
            raise RuntimeError("the store is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain(), name="group-commit writer")
        return await future

    async def close(self) -> None:
        """Refuse new items and wait for the queued ones to be written."""
        self._closed = True
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._write_batch(batch)
        finally:
            self._writer = None
            # Only a cancelled writer (the loop shutting down) leaves items.
            left, self._pending = self._pending, []
            for _, future in left:
                if not future.done():
                    future.set_exception(RuntimeError("the store closed before this write"))

    async def _write_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError("the write was cancelled"))
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller gave up waiting; the write stands
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
