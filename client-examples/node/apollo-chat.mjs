// Apollo Client 4: queries and mutations over HTTP (HttpLink), subscriptions
// over graphql-ws (GraphQLWsLink), both with their default settings. The
// GraphQLWsLink gets `createResumableClient` (resume.mjs) instead of graphql-ws's
// `createClient`: after a reconnect its subscriptions resume where they were,
// each message exactly once, in order.
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition } from '@apollo/client/utilities';
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

// Node 20 has no global WebSocket, and GraphQLWsLink reads the global one when
// it reports a connection error: set it (graphql-ws then uses it too).
globalThis.WebSocket ??= WebSocket;
const wsLink = new GraphQLWsLink(
  createResumableClient({ url: url.replace(/^http/, 'ws'), connectionParams: { Authorization } }),
);
const httpLink = new HttpLink({ uri: url, headers: { Authorization } });
const isSubscription = ({ query }) => {
  const definition = getMainDefinition(query);
  return definition.kind === 'OperationDefinition' && definition.operation === 'subscription';
};
const client = new ApolloClient({
  link: ApolloLink.split(isSubscription, wsLink, httpLink),
  cache: new InMemoryCache(),
});

try {
  try {
    await client.mutate({ mutation: JOIN, variables: { room } });
  } catch (err) {
    if (errorCode(err) !== 'NOT_FOUND') throw err;
    await client.mutate({ mutation: CREATE, variables: { room, name: room } });
  }
  // From the newest message on; after a reconnect, from the last one received.
  const last = await client.query({ query: LAST, variables: { room } });
  const after = last.data.history.pageInfo.endCursor;
  await new Promise((resolve, reject) => {
    let received = 0;
    const subscription = client.subscribe({ query: MESSAGES, variables: { room, after } }).subscribe({
      next: ({ data, error }) => {
        if (error) return reject(error);
        console.log(JSON.stringify(data.roomMessages));
        if (data.roomMessages.type === 'MESSAGE' && ++received >= Number(count)) {
          subscription.unsubscribe();
          resolve();
        }
      },
      error: reject,
      complete: () => reject(new Error('the subscription completed')),
    });
    if (text) client.mutate({ mutation: SEND, variables: { room, text } }).catch(reject);
  });
} catch (err) {
  console.error(describe(err));
  process.exitCode = 1;
} finally {
  client.stop();
  await wsLink.client.dispose();
}
