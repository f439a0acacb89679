// Resume after a reconnect for graphql-ws, and for Apollo Client and urql
// through it.
//
// Stock clients resubscribe after a reconnect with the variables they started
// with: `after` would replay everything since the first cursor, or (without
// one) nothing that was missed. Only the client knows what it received, so
// this keeps, per live roomMessages subscription, the cursor of the last
// message it got, and sends them all in connection_init on every (re)connect:
// the server's resume map, version 1 (README "Resuming after a reconnect"):
//
//   {"Authorization": "Bearer …",
//    "resume": {"version": 1,
//               "roomMessages": [{"roomId": "r1", "after": "<cursor>"},
//                                {"roomId": "r1", "threadId": "t1", "after": "<cursor>"}]}}
//
// The server starts each roomMessages subscription of that connection after
// its room's (and thread's) cursor: what was missed is replayed once, then it
// goes live. Select `cursor` in the subscription; pass ids as literals or variables.
//
//   const client = createResumableClient({ url, connectionParams: { Authorization } });
//   // use it as a graphql-ws client, or hand it to GraphQLWsLink / urql's subscriptionExchange
import { createClient } from 'graphql-ws';
import { Kind, parse } from 'graphql';

export const RESUME_VERSION = 1;
const MAX_ENTRIES = 100; // the server refuses a longer map

function valueOf(node, variables) {
  if (!node || node.kind === Kind.NULL) return null;
  if (node.kind === Kind.VARIABLE) return variables?.[node.name.value] ?? null;
  return node.value ?? null; // an ID literal: string or int
}

// The roomMessages field of a subscription, with its arguments resolved:
// { key (the result's key, an alias or the name), roomId, threadId } or null.
export function roomMessagesField(query, variables, operationName) {
  const document = typeof query === 'string' ? parse(query) : query;
  for (const definition of document.definitions) {
    if (definition.kind !== Kind.OPERATION_DEFINITION || definition.operation !== 'subscription') continue;
    if (operationName && definition.name?.value !== operationName) continue;
    const [field] = definition.selectionSet.selections;
    if (field?.kind !== Kind.FIELD || field.name.value !== 'roomMessages') return null;
    const arg = (name) => valueOf(field.arguments?.find((a) => a.name.value === name)?.value, variables);
    const roomId = arg('roomId');
    return roomId == null ? null : { key: field.alias?.value ?? 'roomMessages', roomId: String(roomId), threadId: arg('threadId') };
  }
  return null;
}

// The cursors of the live subscriptions, and the resume map made of them.
export function createResumeTracker() {
  const live = new Map(); // one token per subscription -> { roomId, threadId, after, at }
  let clock = 0;
  return {
    // Call when a subscription starts: `next(result)` for each result, `done()` when it ends.
    track({ query, variables, operationName }) {
      const field = roomMessagesField(query, variables, operationName);
      const token = {};
      return {
        next(result) {
          const cursor = result?.data?.[field?.key]?.cursor;
          if (field && typeof cursor === 'string') {
            live.set(token, { roomId: field.roomId, threadId: field.threadId, after: cursor, at: ++clock });
          }
        },
        done: () => live.delete(token),
      };
    },
    map() {
      // Two live subscriptions of one room and thread: the one updated
      // longest ago has the older cursor; the other may see a message twice.
      const byKey = new Map();
      for (const entry of live.values()) {
        const key = JSON.stringify([entry.roomId, entry.threadId ?? null]);
        if (!byKey.has(key) || entry.at < byKey.get(key).at) byKey.set(key, entry);
      }
      const roomMessages = [...byKey.values()]
        .slice(0, MAX_ENTRIES)
        .map(({ roomId, threadId, after }) => (threadId == null ? { roomId, after } : { roomId, threadId, after }));
      return { version: RESUME_VERSION, roomMessages };
    },
    // graphql-ws evaluates a function `connectionParams` at every connect.
    connectionParams(params = {}) {
      return async () => ({ ...(typeof params === 'function' ? await params() : params), resume: this.map() });
    },
  };
}

// A graphql-ws client (same options, same methods) whose subscriptions resume
// where they were after a reconnect. Reconnecting is graphql-ws's own, with
// its default retry settings but one: graphql-ws retries only after a close
// event, and a server that is down (restarting, say) fails the connection
// attempt with an error event first, which would end every subscription.
// Here any failure is retried (within `retryAttempts`, 5 by default, with
// graphql-ws's backoff); fatal close codes such as 4400 and 4401 still end them.
export function createResumableClient(options, tracker = createResumeTracker()) {
  const client = createClient({
    shouldRetry: () => true,
    ...options,
    connectionParams: tracker.connectionParams(options.connectionParams),
  });
  function subscribe(payload, sink) {
    const tracked = tracker.track(payload);
    const unsubscribe = client.subscribe(payload, {
      next: (result) => {
        tracked.next(result);
        sink.next(result);
      },
      error: (error) => {
        tracked.done();
        sink.error(error);
      },
      complete: () => {
        tracked.done();
        sink.complete();
      },
    });
    return () => {
      tracked.done();
      unsubscribe();
    };
  }
  return { ...client, subscribe, iterate: (payload) => iterate(subscribe, payload), tracker };
}

// graphql-ws's `iterate`, on the tracking `subscribe`.
function iterate(subscribe, payload) {
  const results = [];
  let ended = false;
  let failure = null;
  let wake = () => {};
  const unsubscribe = subscribe(payload, {
    next: (result) => (results.push(result), wake()),
    error: (error) => ((failure = error), (ended = true), wake()),
    complete: () => ((ended = true), wake()),
  });
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    async next() {
      while (!results.length && !ended) await new Promise((resolve) => (wake = resolve));
      if (results.length) return { value: results.shift(), done: false };
      if (failure) throw failure;
      return { value: undefined, done: true };
    },
    async return() {
      ended = true;
      unsubscribe();
      return { value: undefined, done: true };
    },
  };
}
