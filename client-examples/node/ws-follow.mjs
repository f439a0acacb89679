// graphql-ws, resuming after reconnects: follow a room's messages across
// server restarts and network drops, each message exactly once, in order.
// The one change from a plain graphql-ws client is `createResumableClient`
// (resume.mjs) in place of `createClient`; reconnecting is graphql-ws's own,
// with its default settings.
import WebSocket from 'ws'; // Node 20 has no global WebSocket
import { describe, options } from './args.mjs';
import { execute, joinOrCreateRoom } from './room.mjs';
import { createResumableClient } from './resume.mjs';

const LAST = 'query Last($room: ID!) { history(roomId: $room, last: 1) { pageInfo { endCursor } } }';
const SEND =
  'mutation Send($room: ID!, $text: String!) { sendMessage(input: {roomId: $room, data: {text: $text}}) { id } }';
const MESSAGES =
  'subscription Messages($room: ID!, $after: String) { roomMessages(roomId: $room, after: $after) { type userId data cursor } }';

const { url, token, room, text, count } = options({ url: 'ws://127.0.0.1:8000/graphql', text: '' });

const client = createResumableClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
});

try {
  await joinOrCreateRoom(client, room);
  // From the newest message on; after a reconnect, from the last one received.
  const after = (await execute(client, LAST, { room })).history.pageInfo.endCursor;
  const messages = client.iterate({ query: MESSAGES, variables: { room, after } });
  if (text) await execute(client, SEND, { room, text });
  let received = 0;
  for await (const result of messages) {
    if (result.errors) throw result.errors;
    const message = result.data.roomMessages;
    console.log(JSON.stringify(message));
    if (message.type === 'MESSAGE' && ++received >= Number(count)) break;
  }
} catch (err) {
  console.error(describe(err));
  process.exitCode = 1;
} finally {
  await client.dispose();
}
