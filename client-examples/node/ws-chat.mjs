// graphql-ws (graphql-transport-ws): join a room, subscribe to its messages,
// send one over the same socket, print what arrives, resume with `after`.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws'; // Node 20 has no global WebSocket; Node 22+ may drop this
import { options } from './args.mjs';
import { execute, joinOrCreateRoom } from './room.mjs';

const LAST = 'query Last($room: ID!) { history(roomId: $room, last: 1) { pageInfo { endCursor } } }';
const SEND =
  'mutation Send($room: ID!, $text: String!) { sendMessage(input: {roomId: $room, data: {text: $text}}) { id cursor } }';
const MESSAGES =
  'subscription Messages($room: ID!, $after: String) { roomMessages(roomId: $room, after: $after) { type userId data cursor } }';

const { url, token, room, text } = options({
  url: 'ws://127.0.0.1:8000/graphql',
  text: 'hello from graphql-ws',
});

const connect = () =>
  createClient({
    url,
    webSocketImpl: WebSocket,
    // The token travels in connection_init, as GraphiQL's Headers tab sends it.
    connectionParams: { Authorization: `Bearer ${token}` },
    lazy: true,
  });

let client = connect();
try {
  await joinOrCreateRoom(client, room);
  // Start after the newest message: nothing sent from now on can be missed.
  const last = await execute(client, LAST, { room });
  let cursor = last.history.pageInfo.endCursor;

  const messages = client.iterate({ query: MESSAGES, variables: { room, after: cursor } });
  // The subscription is sent when iteration starts; send once the first
  // next() is pending, so the message is replayed even if it beats the live feed.
  const first = messages.next();
  await execute(client, SEND, { room, text });
  for (let step = await first; !step.done; step = await messages.next()) {
    if (step.value.errors) throw step.value.errors;
    const message = step.value.data.roomMessages;
    console.log(JSON.stringify(message));
    cursor = message.cursor;
    if (message.type === 'MESSAGE') break;
  }
  await messages.return(); // completes the subscription on the server
  await client.dispose();

  // Later, on a new connection: `after` replays what was missed, then goes live.
  client = connect();
  await execute(client, SEND, { room, text: `${text} (again)` });
  for await (const result of client.iterate({ query: MESSAGES, variables: { room, after: cursor } })) {
    if (result.errors) throw result.errors;
    console.log(JSON.stringify(result.data.roomMessages));
    break; // leaving the loop completes the subscription
  }
} catch (err) {
  console.error(err instanceof Error ? err : JSON.stringify(err));
  process.exitCode = 1;
} finally {
  await client.dispose();
}
