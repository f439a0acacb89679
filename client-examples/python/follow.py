"""gql, resuming after reconnects: follow a room's messages across server
restarts and network drops, each message exactly once, in order.

What differs from a plain gql client: the reconnecting session gql offers
(`connect_async(reconnecting=True)`, its default retry settings), and
`Resume` (resume.py), which keeps the resume map in the init payload and
subscribes again after a drop.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing

from gql import Client, GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
import options
from resume import Resume

JOIN = gql("mutation Join($room: ID!) { joinRoom(roomId: $room) { id } }")
CREATE = gql("""
mutation Create($room: ID!, $name: String!) { createRoom(input: {id: $room, name: $name}) { id } }
""")
LAST = gql("query Last($room: ID!) { history(roomId: $room, last: 1) { pageInfo { endCursor } } }")
SEND = gql("""
mutation Send($room: ID!, $text: String!) {
  sendMessage(input: {roomId: $room, data: {text: $text}}) { id }
}
""")
MESSAGES = gql("""
subscription Messages($room: ID!, $after: String) {
  roomMessages(roomId: $room, after: $after) { type userId data cursor }
}
""")


async def main(url: str, token: str, room: str, text: str, count: int, subprotocol: str) -> None:
    init_payload = {"Authorization": f"Bearer {token}"}
    resume = Resume(init_payload)
    transport = WebsocketsTransport(url=url, init_payload=init_payload, subprotocols=[subprotocol])
    client = Client(transport=transport)
    session = await client.connect_async(reconnecting=True)
    try:
        try:
            await session.execute(GraphQLRequest(JOIN, variable_values={"room": room}))
        except TransportQueryError as exc:
            if (exc.errors or [{}])[0].get("extensions", {}).get("code") != "NOT_FOUND":
                raise
            await session.execute(
                GraphQLRequest(CREATE, variable_values={"room": room, "name": room})
            )
        # From the newest message on; after a reconnect, from the last one received.
        last = await session.execute(GraphQLRequest(LAST, variable_values={"room": room}))
        after = last["history"]["pageInfo"]["endCursor"]
        request = GraphQLRequest(MESSAGES, variable_values={"room": room, "after": after})
        received = 0
        async with aclosing(resume.subscribe(session, request)) as results:
            if text:
                await session.execute(
                    GraphQLRequest(SEND, variable_values={"room": room, "text": text})
                )
            async for result in results:
                message = result["roomMessages"]
                print(json.dumps(message), flush=True)
                if message["type"] == "MESSAGE":
                    received += 1
                    if received >= count:
                        break
    finally:
        await client.close_async()


if __name__ == "__main__":
    parser = options.parser(__doc__, url="ws://127.0.0.1:8000/graphql", text="")
    parser.add_argument("--count", type=int, default=1, help="MESSAGE messages to wait for")
    parser.add_argument(
        "--subprotocol",
        default=WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL,
        choices=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, WebsocketsTransport.APOLLO_SUBPROTOCOL],
    )
    args = parser.parse_args()
    asyncio.run(main(args.url, args.token, args.room, args.text, args.count, args.subprotocol))
