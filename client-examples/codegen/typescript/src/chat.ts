// A typed graphql-ws client: every operation's result and variables are
// types generated from the schema (npm run codegen), so a schema change that
// breaks this code fails `tsc`.
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { parseArgs } from 'node:util';
import type {
  CreateRoomMutation,
  CreateRoomMutationVariables,
  JoinRoomMutation,
  JoinRoomMutationVariables,
  LastCursorQuery,
  LastCursorQueryVariables,
  RoomMessagesSubscription,
  RoomMessagesSubscriptionVariables,
  SendTextMutation,
  SendTextMutationVariables,
} from './generated/graphql.js';

const JOIN = /* GraphQL */ `
  mutation JoinRoom($room: ID!) {
    joinRoom(roomId: $room) { id name }
  }
`;
const CREATE = /* GraphQL */ `
  mutation CreateRoom($room: ID!, $name: String!) {
    createRoom(input: { id: $room, name: $name }) { id name }
  }
`;
const LAST = /* GraphQL */ `
  query LastCursor($room: ID!) {
    history(roomId: $room, last: 1) { pageInfo { endCursor } }
  }
`;
const SEND = /* GraphQL */ `
  mutation SendText($room: ID!, $text: String!) {
    sendMessage(input: { roomId: $room, data: { text: $text } }) { id cursor }
  }
`;
const MESSAGES = /* GraphQL */ `
  subscription RoomMessages($room: ID!, $after: String) {
    roomMessages(roomId: $room, after: $after) { type userId data cursor timestamp }
  }
`;

interface GraphQLErrorShape {
  message: string;
  extensions?: { code?: string };
}

class OperationError extends Error {
  constructor(readonly errors: readonly GraphQLErrorShape[]) {
    super(errors.map((e) => e.message).join('; '));
  }
  get code(): string | undefined {
    return this.errors[0]?.extensions?.code;
  }
}

// One query or mutation over the socket, typed by its generated types.
async function execute<TData, TVariables extends Record<string, unknown>>(
  client: Client,
  query: string,
  variables: TVariables,
): Promise<TData> {
  for await (const result of client.iterate<TData>({ query, variables })) {
    if (result.errors) throw new OperationError(result.errors);
    if (result.data) return result.data;
  }
  throw new Error('the operation completed without a result');
}

const { values } = parseArgs({
  options: {
    url: { type: 'string', default: 'ws://127.0.0.1:8000/graphql' },
    token: { type: 'string', default: process.env.TOKEN },
    room: { type: 'string', default: 'general' },
    text: { type: 'string', default: 'hello from typed TypeScript' },
  },
});
const { url, token, room, text } = values;
if (!token || !url || !room || !text) throw new Error('--token is required');

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
});
try {
  try {
    await execute<JoinRoomMutation, JoinRoomMutationVariables>(client, JOIN, { room });
  } catch (err) {
    if (!(err instanceof OperationError && err.code === 'NOT_FOUND')) throw err;
    await execute<CreateRoomMutation, CreateRoomMutationVariables>(client, CREATE, { room, name: room });
  }
  const last = await execute<LastCursorQuery, LastCursorQueryVariables>(client, LAST, { room });
  const variables: RoomMessagesSubscriptionVariables = { room, after: last.history.pageInfo.endCursor };
  const messages = client.iterate<RoomMessagesSubscription>({ query: MESSAGES, variables });
  const first = messages.next();
  const sent = await execute<SendTextMutation, SendTextMutationVariables>(client, SEND, { room, text });
  for (let step = await first; !step.done; step = await messages.next()) {
    if (step.value.errors) throw new OperationError(step.value.errors);
    const message: RoomMessagesSubscription['roomMessages'] | undefined = step.value.data?.roomMessages;
    if (!message) continue;
    const cursor: string = message.cursor;
    console.log(JSON.stringify({ type: message.type, userId: message.userId, data: message.data, cursor, sentCursor: sent.sendMessage.cursor }));
    if (message.type === 'MESSAGE') break;
  }
  await messages.return?.(undefined);
} finally {
  await client.dispose();
}
