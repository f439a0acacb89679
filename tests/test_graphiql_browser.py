"""GraphiQL in a real headless Chromium, offline: token in the Headers tab,
a roomMessages subscription run from the page, a message sent by the test
over HTTP arriving in the result pane."""

from __future__ import annotations

import json

from tests.live import LiveServer, unique
from tests.tools import EXAMPLES, Script, chromium, node, npm_ci

CREATE = "mutation($room: ID!) { createRoom(input: {id: $room, name: $room}) { id } }"
SEND = """mutation($room: ID!, $text: String!) {
  sendMessage(input: {roomId: $room, data: {text: $text}}) { id cursor }
}"""


async def test_graphiql_subscription_receives_a_live_message(server: LiveServer) -> None:
    folder = npm_ci(EXAMPLES / "browser")  # playwright-core lives there
    user, room = unique("alice"), unique("room")
    client = server.client(user)
    token = server.token(user)
    await client.execute(CREATE.replace("name: $room", f'name: "{room}"'), room=room)
    text = f"hello GraphiQL {unique('m')}"
    subscription = f'subscription {{ roomMessages(roomId: "{room}") {{ type userId data }} }}'
    script = await Script.start(
        [node(), "e2e/graphiql.mjs"],
        folder,
        {
            "GRAPHIQL_URL": f"{server.url}/graphql",
            "TOKEN": token,
            "QUERY": subscription,
            "EXPECT": text,
            "CHROMIUM": chromium(),
        },
    )
    try:
        await script.step("subscribed")
        # GraphiQL opened its WebSocket, sent the Headers tab's token in
        # connection_init and subscribed: the server holds the subscription.
        await server.wait_subscribers(1)
        sent = await client.execute(SEND, room=room, text=text)
        received = await script.step("received")
        await script.finish()
    finally:
        await script.kill()
    assert received["result"] == {
        "data": {"roomMessages": {"type": "MESSAGE", "userId": user, "data": {"text": text}}}
    }
    assert json.loads(received["headers"]) == {"Authorization": f"Bearer {token}"}
    assert sent["sendMessage"]["cursor"]
    assert received["external"] == [], "GraphiQL tried to load something from the internet"
    assert received["errors"] == []
