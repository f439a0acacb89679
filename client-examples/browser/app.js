// One room, live: messages (with the last few from history), who is typing,
// who is here. Everything goes over one graphql-ws WebSocket, so the page
// needs no CORS: only the server's `allowed_origins` must list its origin.
'use strict';

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.search);
const connectForm = $('#connect');
const sendForm = $('#send');

for (const name of ['url', 'token', 'room']) {
  if (params.get(name)) connectForm.elements[name].value = params.get(name);
}
if (!connectForm.elements.url.value) {
  connectForm.elements.url.value = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.hostname || '127.0.0.1'}:8000/graphql`;
}

const MESSAGE_FIELDS = 'id type userId event data cursor timestamp';
const ops = {
  join: 'mutation($room: ID!) { joinRoom(roomId: $room) { id name } }',
  create: 'mutation($room: ID!, $name: String!) { createRoom(input: {id: $room, name: $name}) { id name } }',
  recent: `query($room: ID!) { history(roomId: $room, last: 20) { edges { node { ${MESSAGE_FIELDS} } } pageInfo { endCursor } } roomPresence(roomId: $room) { userId status } }`,
  messages: `subscription($room: ID!, $after: String) { roomMessages(roomId: $room, after: $after) { ${MESSAGE_FIELDS} } }`,
  typing: 'subscription($room: ID!) { typing(roomId: $room) { userId isTyping expiresAt } }',
  presence: 'subscription($room: ID!) { presence(roomId: $room) { userId status } }',
  send: 'mutation($room: ID!, $text: String!) { sendMessage(input: {roomId: $room, data: {text: $text}}) { id } }',
  startTyping: 'mutation($room: ID!) { startTyping(roomId: $room) }',
};

let client = null;
let me = null;
let room = null;
const typing = new Map(); // userId -> timer that clears it
const presence = new Map(); // userId -> status

function setStatus(state, text) {
  $('#status').dataset.state = state;
  $('#status').textContent = text;
}

function fail(err) {
  const errors = Array.isArray(err) ? err : [err];
  setStatus('error', errors.map((e) => e.message || e.reason || String(e)).join('; ') || 'error');
}

// A query or mutation over the socket: resolves with data, rejects with the errors.
function execute(query, variables) {
  return new Promise((resolve, reject) => {
    let result;
    client.subscribe({ query, variables }, {
      next: (value) => { result = value; },
      error: reject,
      complete: () => (result && !result.errors ? resolve(result.data) : reject(result ? result.errors : new Error('no result'))),
    });
  });
}

function subscribe(query, onData) {
  return client.subscribe({ query, variables: subscribe.variables }, {
    next: (result) => (result.errors ? fail(result.errors) : onData(result.data)),
    error: fail,
    complete: () => {},
  });
}

function showMessage(m) {
  const li = document.createElement('li');
  li.dataset.type = m.type;
  li.dataset.user = m.userId;
  li.dataset.cursor = m.cursor;
  if (m.type === 'MESSAGE') {
    const user = document.createElement('span');
    user.className = 'user';
    user.textContent = m.userId;
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = typeof m.data?.text === 'string' ? m.data.text : JSON.stringify(m.data);
    li.append(user, text);
  } else {
    li.className = 'system';
    const what = { JOIN: 'joined', LEAVE: 'left' }[m.type] || m.event || m.type.toLowerCase();
    li.textContent = `${m.userId} ${what}`;
  }
  $('#messages').append(li);
  li.scrollIntoView({ block: 'nearest' });
}

function renderTyping() {
  const users = [...typing.keys()].filter((u) => u !== me).sort();
  $('#typing').textContent = users.length === 0 ? ''
    : `${users.join(', ')} ${users.length === 1 ? 'is' : 'are'} typing…`;
}

function onTyping({ userId, isTyping, expiresAt }) {
  clearTimeout(typing.get(userId));
  typing.delete(userId);
  if (isTyping) {
    // The server sends isTyping: false on expiry too; the timer is a fallback.
    const ms = expiresAt ? Math.max(0, Date.parse(expiresAt) - Date.now()) + 1000 : 6000;
    typing.set(userId, setTimeout(() => { typing.delete(userId); renderTyping(); }, ms));
  }
  renderTyping();
}

function renderPresence() {
  const list = $('#presence');
  list.replaceChildren(...[...presence.entries()].sort().map(([userId, status]) => {
    const li = document.createElement('li');
    li.dataset.user = userId;
    li.dataset.status = status;
    li.textContent = `${userId} ${status.toLowerCase()}`;
    return li;
  }));
}

async function join(url, token, roomId) {
  if (client) await client.dispose();
  room = roomId;
  $('#messages').replaceChildren();
  typing.clear();
  presence.clear();
  setStatus('connecting', 'connecting…');
  client = graphqlWs.createClient({
    url,
    connectionParams: { Authorization: `Bearer ${token}` },
    on: {
      connected: (_socket, payload) => { me = payload?.userId ?? null; },
      closed: (event) => { if (event.code !== 1000) fail(event); },
    },
  });
  try {
    try {
      await execute(ops.join, { room });
    } catch (errors) {
      if (errors?.[0]?.extensions?.code !== 'NOT_FOUND') throw errors;
      await execute(ops.create, { room, name: room });
    }
    const recent = await execute(ops.recent, { room });
    recent.history.edges.forEach(({ node }) => showMessage(node));
    recent.roomPresence.forEach(({ userId, status }) => presence.set(userId, status));
    renderPresence();
    // `after` the newest message shown: nothing between the query and the
    // subscription is lost, nothing is shown twice.
    subscribe.variables = { room, after: recent.history.pageInfo.endCursor };
    subscribe(ops.messages, (data) => {
      showMessage(data.roomMessages);
    });
    subscribe.variables = { room };
    subscribe(ops.typing, (data) => onTyping(data.typing));
    subscribe(ops.presence, ({ presence: p }) => { presence.set(p.userId, p.status); renderPresence(); });
    setStatus('live', `live in ${room} as ${me}`);
    for (const el of sendForm.elements) el.disabled = false;
    document.dispatchEvent(new CustomEvent('room-live', { detail: { execute, client: () => client, room } }));
    sendForm.elements.text.focus();
  } catch (err) {
    fail(err);
  }
}

connectForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const { url, token, room: r } = connectForm.elements;
  join(url.value, token.value.replace(/^Bearer\s+/i, ''), r.value);
});

let lastTyping = 0;
sendForm.elements.text.addEventListener('input', () => {
  if (Date.now() - lastTyping < 2000) return; // refresh, don't flood
  lastTyping = Date.now();
  execute(ops.startTyping, { room }).catch(fail);
});

sendForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const input = sendForm.elements.text;
  if (!input.value) return;
  lastTyping = 0; // sending stops typing on the server
  execute(ops.send, { room, text: input.value }).catch(fail);
  input.value = '';
});

if (params.get('token')) connectForm.requestSubmit();
