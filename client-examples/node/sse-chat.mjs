// graphql-sse: the same room chat over Server-Sent Events, in either of the
// protocol's modes: --mode distinct (a stream per operation, the default) or
// --mode single (one stream per client, reserved with PUT; operations POSTed
// with its token).
import { createClient } from 'graphql-sse';
import { options } from './args.mjs';
import { execute, joinOrCreateRoom } from './room.mjs';

const LAST = 'query Last($room: ID!) { history(roomId: $room, last: 1) { pageInfo { endCursor } } }';
const SEND =
  'mutation Send($room: ID!, $text: String!) { sendMessage(input: {roomId: $room, data: {text: $text}}) { id cursor } }';
const MESSAGES =
  'subscription Messages($room: ID!, $after: String) { roomMessages(roomId: $room, after: $after) { type userId data cursor } }';

const { url, token, room, text, mode } = options({
  url: 'http://127.0.0.1:8000/graphql',
  text: 'hello from graphql-sse',
});
if (!['distinct', 'single'].includes(mode)) {
  console.error('--mode is distinct or single');
  process.exit(2);
}

const client = createClient({
  url,
  singleConnection: mode === 'single',
  headers: { Authorization: `Bearer ${token}` },
  retryAttempts: 0,
});

try {
  await joinOrCreateRoom(client, room);
  const last = await execute(client, LAST, { room });
  // `after` the newest message: what is sent next is replayed if it beats the live feed.
  const messages = client.iterate({ query: MESSAGES, variables: { room, after: last.history.pageInfo.endCursor } });
  const first = messages.next();
  await execute(client, SEND, { room, text });
  for (let step = await first; !step.done; step = await messages.next()) {
    if (step.value.errors) throw step.value.errors;
    const message = step.value.data.roomMessages;
    console.log(JSON.stringify({ mode, ...message }));
    if (message.type === 'MESSAGE') break;
  }
  await messages.return(); // ends the stream (distinct) or DELETEs the operation (single)
} catch (err) {
  console.error(err instanceof Error ? err : JSON.stringify(err));
  process.exitCode = 1;
} finally {
  client.dispose();
}
