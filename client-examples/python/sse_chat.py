"""Room messages over Server-Sent Events (graphql-sse, distinct connections
mode) with nothing but httpx: join a room, send a message over HTTP, receive it
from `roomMessages(after:)` on an event stream."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx

import options

JOIN = "mutation($room: ID!) { joinRoom(roomId: $room) { id } }"
CREATE = (
    "mutation($room: ID!, $name: String!) { createRoom(input: {id: $room, name: $name}) { id } }"
)
LAST = "query($room: ID!) { history(roomId: $room, last: 1) { pageInfo { endCursor } } }"
SEND = """mutation($room: ID!, $text: String!) {
  sendMessage(input: {roomId: $room, data: {text: $text}}) { id cursor }
}"""
MESSAGES = """subscription($room: ID!, $after: String) {
  roomMessages(roomId: $room, after: $after) { type userId data cursor }
}"""


class GraphQLError(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0].get("message"))
        self.code = errors[0].get("extensions", {}).get("code")


async def execute(
    http: httpx.AsyncClient, url: str, query: str, **variables: Any
) -> dict[str, Any]:
    body = (await http.post(url, json={"query": query, "variables": variables})).json()
    if body.get("errors"):
        raise GraphQLError(body["errors"])
    return body["data"]


_LINE_END = re.compile(r"\r\n|\r|\n")


async def lines(response: httpx.Response) -> AsyncIterator[str]:
    """The stream's lines, ended by CRLF, CR or LF only, as SSE says: httpx's
    `aiter_lines` also breaks at U+2028, which JSON carries raw."""
    pending = ""
    async for text in response.aiter_text():
        pending += text
        while (end := _LINE_END.search(pending)) is not None:
            if end.group() == "\r" and end.end() == len(pending):
                break  # may be the first half of a CRLF
            yield pending[: end.start()]
            pending = pending[end.end() :]
    if pending:
        yield pending.rstrip("\r")


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, str, str]]:
    """(event, id, data) of each Server-Sent Event; comments are keep-alives."""
    event, event_id, data = "message", "", []
    async for line in lines(response):
        if not line:  # a blank line ends an event
            if data:
                yield event, event_id, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value


async def main(url: str, token: str, room: str, text: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        try:
            await execute(http, url, JOIN, room=room)
        except GraphQLError as exc:
            if exc.code != "NOT_FOUND":
                raise
            await execute(http, url, CREATE, room=room, name=room)
        last = await execute(http, url, LAST, room=room)
        await execute(http, url, SEND, room=room, text=text)
        subscription = {
            "query": MESSAGES,
            "variables": {"room": room, "after": last["history"]["pageInfo"]["endCursor"]},
        }
        request = http.build_request(
            "POST", url, json=subscription, headers={"Accept": "text/event-stream"}
        )
        response = await http.send(request, stream=True)
        try:
            response.raise_for_status()
            async for event, event_id, data in events(response):
                if event == "complete":
                    break
                payload = json.loads(data)
                if payload.get("errors"):
                    raise GraphQLError(payload["errors"])
                message = payload["data"]["roomMessages"]
                # `id` is what a reconnecting client sends back as Last-Event-ID.
                print(json.dumps({"id": event_id, **message}), flush=True)
                if message["type"] == "MESSAGE":
                    break
        finally:
            await response.aclose()  # closing the stream ends the subscription


if __name__ == "__main__":
    parser = options.parser(__doc__, url="http://127.0.0.1:8000/graphql", text="hello over SSE")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.token, args.room, args.text))
