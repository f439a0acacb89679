// urql (@urql/core): queries and mutations over HTTP (fetchExchange),
// subscriptions over graphql-ws (subscriptionExchange), both with their
// default settings. The subscriptionExchange forwards to
// `createResumableClient` (resume.mjs) instead of graphql-ws's `createClient`:
// after a reconnect its subscriptions resume where they were, each message
// exactly once, in order.
import { Client, cacheExchange, fetchExchange, gql, subscriptionExchange } from '@urql/core';
import WebSocket from 'ws'; // Node 20 has no global WebSocket
import { describe, errorCode, options } from './args.mjs';
import { createResumableClient } from './resume.mjs';

const JOIN = gql`mutation Join($room: ID!) { joinRoom(roomId: $room) { id } }`;
const CREATE = gql`mutation Create($room: ID!, $name: String!) { createRoom(input: {id: $room, name: $name}) { id } }`;
const LAST = gql`query Last($room: ID!) { history(roomId: $room, last: 1) { pageInfo { endCursor } } }`;
const SEND = gql`mutation Send($room: ID!, $text: String!) { sendMessage(input: {roomId: $room, data: {text: $text}}) { id } }`;
const MESSAGES = gql`subscription Messages($room: ID!, $after: String) {
  roomMessages(roomId: $room, after: $after) { id type userId data cursor }
}`;

const { url, token, room, text, count } = options({ url: 'http://127.0.0.1:8000/graphql', text: '' });
const Authorization = `Bearer ${token}`;

const ws = createResumableClient({
  url: url.replace(/^http/, 'ws'),
  webSocketImpl: WebSocket,
  connectionParams: { Authorization },
});
const client = new Client({
  url,
  fetchOptions: { headers: { Authorization } },
  exchanges: [
    cacheExchange,
    // As urql's documentation wires graphql-ws.
    subscriptionExchange({
      forwardSubscription: (request) => ({
        subscribe: (sink) => ({ unsubscribe: ws.subscribe({ ...request, query: request.query || '' }, sink) }),
      }),
    }),
    fetchExchange,
  ],
});

async function execute(operation) {
  const result = await operation.toPromise();
  if (result.error) throw result.error;
  return result.data;
}

try {
  try {
    await execute(client.mutation(JOIN, { room }));
  } catch (err) {
    if (errorCode(err) !== 'NOT_FOUND') throw err;
    await execute(client.mutation(CREATE, { room, name: room }));
  }
  // From the newest message on; after a reconnect, from the last one received.
  const last = await execute(client.query(LAST, { room }));
  const after = last.history.pageInfo.endCursor;
  await new Promise((resolve, reject) => {
    let received = 0;
    const { unsubscribe } = client.subscription(MESSAGES, { room, after }).subscribe((result) => {
      if (result.error) return reject(result.error);
      console.log(JSON.stringify(result.data.roomMessages));
      if (result.data.roomMessages.type === 'MESSAGE' && ++received >= Number(count)) {
        unsubscribe();
        resolve();
      }
    });
    if (text) execute(client.mutation(SEND, { room, text })).catch(reject);
  });
} catch (err) {
  console.error(describe(err));
  process.exitCode = 1;
} finally {
  await ws.dispose();
}
