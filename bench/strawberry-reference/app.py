"""Reference server for bench/: plain Strawberry + broadcaster, as their docs show it.

The same schema subset as the Node.js reference and as Forge Streaming uses
for the fan-out benchmark: `Mutation.sendMessage(input: {roomId, data})` and
`Subscription.roomMessages(roomId)`. In-memory broadcast (`memory://`), one
`broadcast.subscribe(channel)` per subscriber, `strawberry.asgi.GraphQL` on
Starlette, served by uvicorn with its defaults. No authentication.

    python bench/strawberry-reference/app.py --port 4001
"""

from __future__ import annotations

import argparse
import enum
import itertools
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import strawberry
import uvicorn
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.scalars import JSON

broadcast = Broadcast("memory://")
_offsets = itertools.count(1)
_epoch = uuid.uuid4().hex[:8]


@strawberry.enum
class MessageType(enum.Enum):
    MESSAGE = "MESSAGE"
    SYSTEM = "SYSTEM"
    JOIN = "JOIN"
    LEAVE = "LEAVE"


@strawberry.type
class Message:
    id: strawberry.ID
    type: MessageType
    room_id: strawberry.ID | None
    user_id: strawberry.ID
    data: JSON | None
    timestamp: datetime
    cursor: str


@strawberry.input
class SendMessageInput:
    room_id: strawberry.ID
    data: JSON | None = None


@strawberry.type
class Query:
    @strawberry.field
    def health(self) -> str:
        return "ok"


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def send_message(self, input: SendMessageInput) -> Message:
        message = {
            "id": uuid.uuid4().hex,
            "type": "MESSAGE",
            "room_id": input.room_id,
            "user_id": "bench",
            "data": input.data,
            "timestamp": datetime.now(UTC).isoformat(),
            "cursor": f"{_epoch}:{next(_offsets)}",
        }
        await broadcast.publish(channel=f"room:{input.room_id}", message=json.dumps(message))
        return _message(message)


def _message(fields: dict[str, object]) -> Message:
    return Message(
        id=strawberry.ID(str(fields["id"])),
        type=MessageType(fields["type"]),
        room_id=strawberry.ID(str(fields["room_id"])),
        user_id=strawberry.ID(str(fields["user_id"])),
        data=fields["data"],
        timestamp=datetime.fromisoformat(str(fields["timestamp"])),
        cursor=str(fields["cursor"]),
    )


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def room_messages(self, room_id: strawberry.ID) -> AsyncGenerator[Message, None]:
        async with broadcast.subscribe(channel=f"room:{room_id}") as subscriber:
            async for event in subscriber:  # type: ignore[union-attr]
                yield _message(json.loads(event.message))


schema = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)
graphql_app: GraphQL[None, None] = GraphQL(schema)


async def health(request: object) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await broadcast.connect()
    try:
        yield
    finally:
        await broadcast.disconnect()


app = Starlette(
    routes=[
        Route("/graphql", graphql_app, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql_app),
        Route("/health", health),
    ],
    lifespan=lifespan,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4001)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
