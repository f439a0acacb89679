// Reference server for bench/: graphql-js + ws + graphql-ws (useServer) with an
// in-memory pub/sub and the subset of Forge Streaming's schema that the fan-out
// benchmark uses. No authentication: an Authorization header or connection_init
// payload is accepted and ignored (ours verifies a JWT on every request and
// connection, and checks room membership and rate limits on every send).
//
//   node server.mjs --port 4000 [--host 127.0.0.1]
//
// POST /graphql            queries and mutations (JSON body)
// ws://HOST:PORT/graphql   subscriptions over graphql-transport-ws
// GET  /health             {"status":"ok"}
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { buildSchema, graphql } from 'graphql';
import { WebSocketServer } from 'ws';
import { useServer } from 'graphql-ws/lib/use/ws';

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const host = option('host', '127.0.0.1');
const port = Number(option('port', '4000'));

const schema = buildSchema(`
  scalar JSON
  scalar DateTime
  enum MessageType { MESSAGE SYSTEM JOIN LEAVE }
  type Message {
    id: ID!
    type: MessageType!
    roomId: ID
    userId: ID!
    data: JSON
    timestamp: DateTime!
    cursor: String!
  }
  input SendMessageInput { roomId: ID!, data: JSON = null }
  type Query { health: String! }
  type Mutation { sendMessage(input: SendMessageInput!): Message! }
  type Subscription { roomMessages(roomId: ID!): Message! }
`);

// In-memory pub/sub: one bounded-less queue per subscriber, like
// graphql-subscriptions' PubSub.
const topics = new Map(); // topic -> Set of push functions

function subscribe(topic) {
  const pending = [];
  let wake = null;
  let done = false;
  const push = (value) => {
    if (wake) {
      const w = wake;
      wake = null;
      w({ value, done: false });
    } else {
      pending.push(value);
    }
  };
  let set = topics.get(topic);
  if (!set) topics.set(topic, (set = new Set()));
  set.add(push);
  const stop = () => {
    if (done) return;
    done = true;
    set.delete(push);
    if (set.size === 0) topics.delete(topic);
    if (wake) wake({ value: undefined, done: true });
  };
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    next() {
      if (pending.length) return Promise.resolve({ value: pending.shift(), done: false });
      if (done) return Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve) => (wake = resolve));
    },
    return() {
      stop();
      return Promise.resolve({ value: undefined, done: true });
    },
    throw(error) {
      stop();
      return Promise.reject(error);
    },
  };
}

function publish(topic, payload) {
  const set = topics.get(topic);
  if (set) for (const push of set) push(payload);
}

const epoch = randomUUID().slice(0, 8);
const offsets = new Map(); // roomId -> last offset

const root = {
  health: () => 'ok',
  sendMessage: ({ input }) => {
    const offset = (offsets.get(input.roomId) ?? 0) + 1;
    offsets.set(input.roomId, offset);
    const message = {
      id: randomUUID().replaceAll('-', ''),
      type: 'MESSAGE',
      roomId: input.roomId,
      userId: 'bench',
      data: input.data,
      timestamp: new Date().toISOString(),
      cursor: `${epoch}:${offset}`,
    };
    publish(`room:${input.roomId}`, { roomMessages: message });
    return message;
  },
  roomMessages: ({ roomId }) => subscribe(`room:${roomId}`),
};

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

const server = http.createServer((req, res) => {
  const url = req.url.split('?')[0];
  if (req.method === 'GET' && url === '/health') return send(res, 200, { status: 'ok' });
  if (url !== '/graphql' || req.method !== 'POST') return send(res, 404, { error: 'not found' });
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', async () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return send(res, 400, { errors: [{ message: 'invalid JSON body' }] });
    }
    const result = await graphql({
      schema,
      source: body.query,
      rootValue: root,
      variableValues: body.variables,
      operationName: body.operationName,
    });
    send(res, 200, result);
  });
});

const wss = new WebSocketServer({ server, path: '/graphql', perMessageDeflate: false });
useServer({ schema, roots: { subscription: root, mutation: root, query: root } }, wss);
// graphql-ws resolves subscription fields through the root's value.
server.listen(port, host, () => {
  console.log(`node reference listening on http://${host}:${port}/graphql`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const client of wss.clients) client.terminate();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
