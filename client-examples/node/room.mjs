// What the graphql-ws and graphql-sse examples share: one operation at a
// time over the client's `iterate` (both clients have it), and the first step
// of each example, joining the room, or creating it when there is none.
import { errorCode } from './args.mjs';

const JOIN = 'mutation Join($room: ID!) { joinRoom(roomId: $room) { id } }';
const CREATE =
  'mutation Create($room: ID!, $name: String!) { createRoom(input: {id: $room, name: $name}) { id } }';

// One query or mutation; throws the GraphQL errors.
export async function execute(client, query, variables) {
  for await (const result of client.iterate({ query, variables })) {
    if (result.errors) throw result.errors;
    return result.data;
  }
  throw new Error('the operation completed without a result');
}

// Join `room`; a room that does not exist yet is created, named as its id.
export async function joinOrCreateRoom(client, room) {
  try {
    await execute(client, JOIN, { room });
  } catch (err) {
    if (errorCode(err) !== 'NOT_FOUND') throw err;
    await execute(client, CREATE, { room, name: room });
  }
}
