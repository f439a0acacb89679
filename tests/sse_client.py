"""A small Server-Sent Events client on raw httpx streaming, for the tests.

It parses the event stream as the WHATWG rules say (fields, comments, blank
line dispatch) and keeps comments apart, so a test can wait for a keep-alive
or for an event, each with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from tests.live import TIMEOUT, LiveServer

EVENT_STREAM = "text/event-stream"
TOKEN_HEADER = "x-graphql-event-stream-token"


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data) if self.data else None


class _Ended:
    pass


_END = _Ended()


_LINE_END = re.compile(r"\r\n|\r|\n")


async def sse_lines(response: httpx.Response) -> AsyncIterator[str]:
    """The stream's lines, ended by CRLF, CR or LF only, as the SSE rules say
    (httpx's `aiter_lines` also breaks at U+2028 and other Unicode breaks,
    which JSON may carry raw)."""
    pending = ""
    async for text in response.aiter_text():
        pending += text
        while (end := _LINE_END.search(pending)) is not None:
            if end.group() == "\r" and end.end() == len(pending):
                break  # a CR at the end of a chunk may be half of a CRLF
            yield pending[: end.start()]
            pending = pending[end.end() :]
    if pending:
        yield pending.rstrip("\r")


class EventReader:
    """Reads one streaming response into events and comments, in the background."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._events: asyncio.Queue[Event | _Ended] = asyncio.Queue()
        self._comments: asyncio.Queue[str] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        # The id is kept per event (stricter than a browser's last-event-id buffer).
        event: str = ""
        event_id: str | None = None
        data: list[str] = []
        try:
            async for line in sse_lines(self.response):
                if line == "":
                    if data or event:
                        await self._events.put(Event(event or "message", "\n".join(data), event_id))
                    event, data, event_id = "", [], None
                elif line.startswith(":"):
                    await self._comments.put(line[1:].strip())
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
                    elif name == "id":
                        event_id = value
        except httpx.HTTPError:
            pass
        finally:
            await self._events.put(_END)

    async def next(self, timeout: float = TIMEOUT) -> Event:
        """The next event; AssertionError if the stream ended first."""
        item = await asyncio.wait_for(self._events.get(), timeout)
        if isinstance(item, _Ended):
            raise AssertionError("the event stream ended")
        return item

    async def expect(self, name: str, timeout: float = TIMEOUT) -> Any:
        """The JSON data of the next event, which must be called `name`."""
        event = await self.next(timeout)
        assert event.event == name, event
        return event.json()

    async def comment(self, timeout: float = TIMEOUT) -> str:
        return await asyncio.wait_for(self._comments.get(), timeout)

    async def ended(self, timeout: float = TIMEOUT) -> None:
        """Wait for the server to end the stream; AssertionError on another event."""
        item = await asyncio.wait_for(self._events.get(), timeout)
        if not isinstance(item, _Ended):
            raise AssertionError(f"expected the end of the stream, got {item}")

    def assert_quiet(self) -> None:
        if not self._events.empty():
            raise AssertionError(f"unexpected event {self._events.get_nowait()}")

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def auth(token: str | None, **extra: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return {**headers, **extra}


@asynccontextmanager
async def event_stream(
    server: LiveServer,
    token: str | None,
    *,
    method: str = "POST",
    json: Any = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[EventReader]:
    """Open /graphql with `Accept: text/event-stream`; leaving closes the connection."""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT, read=None)) as http,
        http.stream(
            method,
            f"{server.url}/graphql",
            json=json,
            params=params,
            headers=auth(token, Accept=EVENT_STREAM, **(headers or {})),
        ) as response,
    ):
        reader = EventReader(response)
        try:
            yield reader
        finally:
            await reader.close()


async def request(
    server: LiveServer,
    method: str,
    token: str | None,
    *,
    json: Any = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        return await http.request(
            method,
            f"{server.url}/graphql",
            json=json,
            params=params,
            headers=auth(token, **(headers or {})),
        )
