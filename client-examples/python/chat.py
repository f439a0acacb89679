"""Join a room, send a message, receive it live, then resume with `after`."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing

from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

import options

JOIN = gql("""
mutation Join($room: ID!) {
  joinRoom(roomId: $room) { id name }
}
""")
CREATE = gql("""
mutation Create($room: ID!, $name: String!) {
  createRoom(input: {id: $room, name: $name}) { id name }
}
""")
SEND = gql("""
mutation Send($room: ID!, $text: String!) {
  sendMessage(input: {roomId: $room, data: {text: $text}}) { id cursor }
}
""")
MESSAGES = gql("""
subscription Messages($room: ID!, $after: String) {
  roomMessages(roomId: $room, after: $after) { type userId data cursor }
}
""")
LAST = gql("""
query Last($room: ID!) {
  history(roomId: $room, last: 1) { pageInfo { endCursor } }
}
""")


def connect(url: str, token: str) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=url,
        init_payload={"Authorization": f"Bearer {token}"},
        # graphql-transport-ws: queries and mutations travel on the socket too.
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )


async def main(url: str, token: str, room: str, text: str) -> None:
    async with Client(transport=connect(url, token)) as session:
        try:
            await session.execute(JOIN, variable_values={"room": room})
        except TransportQueryError as exc:
            if (exc.errors or [{}])[0].get("extensions", {}).get("code") != "NOT_FOUND":
                raise
            await session.execute(CREATE, variable_values={"room": room, "name": room})
        # Start from the newest message so the subscription misses nothing
        # that is sent after it, even before it is live.
        last = await session.execute(LAST, variable_values={"room": room})
        cursor = last["history"]["pageInfo"]["endCursor"]
        variables = {"room": room, "after": cursor}
        # aclosing: leaving the loop early completes the subscription at once.
        async with aclosing(session.subscribe(MESSAGES, variable_values=variables)) as stream:
            await session.execute(SEND, variable_values={"room": room, "text": text})
            async for result in stream:
                message = result["roomMessages"]
                print(json.dumps(message), flush=True)
                cursor = message["cursor"]
                if message["type"] == "MESSAGE":
                    break

    # A new connection later: `after` replays what was missed, then goes live.
    async with Client(transport=connect(url, token)) as session:
        await session.execute(SEND, variable_values={"room": room, "text": text + " (again)"})
        variables = {"room": room, "after": cursor}
        async with aclosing(session.subscribe(MESSAGES, variable_values=variables)) as stream:
            async for result in stream:
                print(json.dumps(result["roomMessages"]), flush=True)
                break


if __name__ == "__main__":
    parser = options.parser(__doc__, url="ws://127.0.0.1:8000/graphql", text="hello from gql")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.token, args.room, args.text))
