// The admin dashboard: Preact components written with htm (tagged templates,
// no build step), uPlot for the charts. Everything shown comes from the
// GraphQL API: queries and mutations over HTTP, live parts over
// graphql-transport-ws. Text from users (messages, room names, user ids) is
// only ever rendered as Preact text nodes, never as HTML.
'use strict';
(() => {
  const { h, render } = preact;
  const { useState, useEffect, useRef, useCallback } = preactHooks;
  const html = htm.bind(h);

  const TOKEN_KEY = 'forge-admin-token'; // sessionStorage: this tab only
  const GRAPHQL = '/graphql';
  const ROOMS_PAGE = 10; // two aliases a room for online count and activity: under max_aliases
  const TAIL_LIMIT = 200;
  const CHART_POINTS = 150; // five minutes at the default 2 s interval
  const CHART_WINDOW = 300; // seconds on a chart's time axis

  class SignedOut extends Error {}
  class ApiError extends Error {
    constructor(message, code) {
      super(message);
      this.code = code;
    }
  }

  const sessionEnded = (reason) => `Your session ended (${reason || 'the token was refused'}). Sign in again.`;

  // One signed-in session. When the server refuses its token, the session
  // ends once: every socket closes, every later call throws SignedOut
  // without a request, and the page goes back to sign-in. Nothing retries
  // on its own, so an expired token never starts a loop of failing requests.
  function createSession(token, onEnd) {
    let ended = false;
    const sockets = new Set();
    const end = (message) => {
      if (ended) return;
      ended = true;
      for (const ws of sockets) ws.close(1000);
      sockets.clear();
      onEnd(message);
    };

    async function request(query, variables = {}) {
      if (ended) throw new SignedOut();
      let response;
      try {
        response = await fetch(GRAPHQL, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json', Authorization: `Bearer ${token}` },
          body: JSON.stringify({ query, variables }),
        });
      } catch {
        throw new ApiError('the server cannot be reached', 'NETWORK');
      }
      let body = null;
      try {
        body = await response.json();
      } catch {
        // not JSON: reported below by status
      }
      if (ended) throw new SignedOut();
      const errors = (body && body.errors) || [];
      if (response.status === 401 || errors.some((e) => e.extensions && e.extensions.code === 'UNAUTHENTICATED')) {
        end(sessionEnded(errors[0] && errors[0].message));
        throw new SignedOut();
      }
      if (errors.length) throw new ApiError(errors[0].message, errors[0].extensions && errors[0].extensions.code);
      if (!response.ok || !body || !body.data) throw new ApiError(`HTTP ${response.status}`, 'HTTP');
      return body.data;
    }

    // One socket per live view, so ending a view ends its socket. Returns
    // the function that stops it. A socket that ends is reported to
    // `onError` and not reopened: the view offers to restart it.
    function subscribe(query, variables, onNext, onError) {
      if (ended) return () => {};
      const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
      const ws = new WebSocket(`${scheme}://${location.host}${GRAPHQL}`, 'graphql-transport-ws');
      sockets.add(ws);
      let done = false;
      const stop = (error) => {
        if (done) return;
        done = true;
        sockets.delete(ws);
        // Also while still connecting: a view left at once (sign-in, then
        // straight to a room) must not open its subscription afterwards.
        if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000);
        if (error) onError(error);
      };
      ws.onopen = () => done || ws.send(JSON.stringify({ type: 'connection_init', payload: { Authorization: `Bearer ${token}` } }));
      ws.onmessage = (event) => {
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch {
          return;
        }
        if (frame.type === 'connection_ack') {
          ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query, variables } }));
        } else if (frame.type === 'ping') {
          ws.send(JSON.stringify({ type: 'pong' }));
        } else if (frame.type === 'next' && !done) {
          const errors = frame.payload.errors || [];
          if (errors.length) stop(new ApiError(errors[0].message, errors[0].extensions && errors[0].extensions.code));
          else onNext(frame.payload.data);
        } else if (frame.type === 'error') {
          const first = (frame.payload || [])[0] || {};
          const code = first.extensions && first.extensions.code;
          if (code === 'UNAUTHENTICATED') end(sessionEnded(first.message));
          stop(new ApiError(first.message || 'the subscription failed', code));
        } else if (frame.type === 'complete') {
          stop(new ApiError('the server ended the subscription', 'COMPLETE'));
        }
      };
      ws.onclose = (event) => {
        // 4403: connection_init refused or the token expired; 4401: not acknowledged.
        if (event.code === 4403 || event.code === 4401) end(sessionEnded(event.reason.replace(/^[A-Z_]+: /, '')));
        stop(new ApiError(event.reason || `the connection closed (${event.code})`, 'CLOSED'));
      };
      return () => {
        if (!done && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ id: '1', type: 'complete' }));
        stop(null);
      };
    }

    return { request, subscribe, end: () => end('') };
  }

  // ---- small pieces -------------------------------------------------------

  function useRoute() {
    const [hash, setHash] = useState(location.hash);
    useEffect(() => {
      const changed = () => setHash(location.hash);
      addEventListener('hashchange', changed);
      return () => removeEventListener('hashchange', changed);
    }, []);
    return hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  }

  const roomHref = (id) => `#/rooms/${encodeURIComponent(id)}`;
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : '—');
  const bytes = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.round(n / 1024)} KiB`);
  const rate = (n) => (Math.round(n * 10) / 10).toString();

  // What a message says, as plain text (rendered as a text node).
  function messageText(data) {
    if (data && typeof data === 'object' && typeof data.text === 'string') return data.text;
    if (typeof data === 'string') return data;
    return data == null ? '' : JSON.stringify(data);
  }

  // Failures other than the end of the session show where they happened.
  function useFailure() {
    const [failure, setFailure] = useState('');
    const report = useCallback((err) => {
      if (err instanceof SignedOut) return;
      setFailure(err.message || String(err));
    }, []);
    return [failure, report, setFailure];
  }

  const Failure = ({ text }) => (text ? html`<p class="failure" role="alert">${text}</p>` : null);

  function Table({ caption, columns, rows, empty }) {
    return html`<div class="table-wrap" tabindex="0" role="region" aria-label=${caption}>
      <table>
        <caption>${caption}</caption>
        <thead><tr>${columns.map((c) => html`<th scope="col">${c}</th>`)}</tr></thead>
        <tbody>
          ${rows.length ? rows : html`<tr><td colspan=${columns.length} class="empty">${empty}</td></tr>`}
        </tbody>
      </table>
    </div>`;
  }

  // The confirmation every action asks for: a modal <dialog> (focus stays in
  // it, Escape cancels), answered with a promise.
  function ConfirmDialog({ ask, onAnswer }) {
    const dialog = useRef(null);
    useEffect(() => {
      if (ask && !dialog.current.open) dialog.current.showModal();
      if (!ask && dialog.current.open) dialog.current.close();
    }, [ask]);
    return html`<dialog ref=${dialog} class="confirm" aria-labelledby="confirm-question"
        onCancel=${(e) => { e.preventDefault(); onAnswer(false); }}>
      <p id="confirm-question">${ask ? ask.question : ''}</p>
      <div class="buttons">
        <button type="button" onClick=${() => onAnswer(false)}>Cancel</button>
        <button type="button" class="danger" onClick=${() => onAnswer(true)}>${ask ? ask.action : 'OK'}</button>
      </div>
    </dialog>`;
  }

  // ---- sign-in ------------------------------------------------------------

  function SignIn({ notice, onSignIn }) {
    const [token, setToken] = useState('');
    const [busy, setBusy] = useState(false);
    const [failure, setFailure] = useState('');
    const submit = async (e) => {
      e.preventDefault();
      setBusy(true);
      setFailure('');
      try {
        await onSignIn(token.trim());
      } catch (err) {
        if (!(err instanceof SignedOut)) setFailure(err.message);
      } finally {
        setBusy(false);
      }
    };
    return html`<main class="signin">
      <h1>Forge Streaming admin</h1>
      ${notice && html`<p class="notice" role="alert">${notice}</p>`}
      <${Failure} text=${failure} />
      <form onSubmit=${submit}>
        <label for="token">Admin token</label>
        <input id="token" name="token" type="password" autocomplete="off" required
          value=${token} onInput=${(e) => setToken(e.target.value)} />
        <p class="hint">A token with the admin role (<code>python server.py token USER --admin</code>).
          It is kept in this tab only and forgotten when the tab closes.</p>
        <button type="submit" disabled=${busy}>${busy ? 'Signing in…' : 'Sign in'}</button>
      </form>
    </main>`;
  }

  // ---- overview -----------------------------------------------------------

  const CLUSTER_FIELDS = `connections users subscriptions rooms
    nodes { id startedAt version backend connections subscriptions sharedExecutions
            messagesPerSecond deliveriesPerSecond memoryBytes lastSeen }`;

  function Chart({ title, points }) {
    const box = useRef(null);
    const plot = useRef(null);
    useEffect(() => {
      const width = () => Math.max(240, box.current.clientWidth);
      plot.current = new uPlot(
        {
          title,
          width: width(),
          height: 160,
          // The last CHART_WINDOW seconds, from the first point on (uPlot
          // would otherwise stretch one point over years).
          scales: { x: { time: true, range: (u, min, max) => [(max ?? Date.now() / 1000) - CHART_WINDOW, max ?? Date.now() / 1000] } },
          series: [{}, { label: title, stroke: '#1f5fbf', width: 2, fill: 'rgba(31,95,191,0.12)' }],
          legend: { show: false },
        },
        points,
        box.current,
      );
      const resize = new ResizeObserver(() => plot.current.setSize({ width: width(), height: 160 }));
      resize.observe(box.current);
      return () => {
        resize.disconnect();
        plot.current.destroy();
      };
    }, []);
    useEffect(() => {
      if (plot.current) plot.current.setData(points);
    }, [points]);
    const last = points[1].length ? points[1][points[1].length - 1] : null;
    return html`<figure class="chart" ref=${box} data-title=${title} data-points=${points[0].length}
      data-last=${last === null ? '' : String(last)} aria-label=${`${title}: ${last === null ? 'no data yet' : rate(last)}`}></figure>`;
  }

  function Overview({ session, hasCluster }) {
    const [cluster, setCluster] = useState(null);
    const [series, setSeries] = useState({ t: [], connections: [], deliveries: [], messages: [] });
    const [failure, report, setFailure] = useFailure();
    const [run, setRun] = useState(0);
    useEffect(() => {
      if (!hasCluster) return undefined;
      setFailure('');
      return session.subscribe(
        `subscription { clusterStats(intervalMs: 2000) { ${CLUSTER_FIELDS} } }`,
        {},
        (data) => {
          const c = data.clusterStats;
          setCluster(c);
          setSeries((s) => {
            const keep = (list, value) => [...list, value].slice(-CHART_POINTS);
            const sum = (field) => c.nodes.reduce((total, n) => total + n[field], 0);
            return {
              t: keep(s.t, Date.now() / 1000),
              connections: keep(s.connections, c.connections),
              deliveries: keep(s.deliveries, sum('deliveriesPerSecond')),
              messages: keep(s.messages, sum('messagesPerSecond')),
            };
          });
        },
        (err) => report(new Error(`Live statistics stopped: ${err.message}`)),
      );
    }, [session, hasCluster, run]);
    if (!hasCluster) {
      return html`<section><h2>Overview</h2>
        <p class="notice">This server has no cluster API (<code>Query.cluster</code>), so nodes and live charts cannot be shown.</p></section>`;
    }
    const nodes = cluster ? cluster.nodes : [];
    return html`<section>
      <h2>Overview</h2>
      <${Failure} text=${failure} />
      ${failure && html`<button type="button" onClick=${() => setRun(run + 1)}>Restart live statistics</button>`}
      ${cluster && html`<dl class="totals">
        <div><dt>Nodes</dt><dd>${nodes.length}</dd></div>
        <div><dt>Connections</dt><dd>${cluster.connections}</dd></div>
        <div><dt>Users</dt><dd>${cluster.users}</dd></div>
        <div><dt>Subscriptions</dt><dd>${cluster.subscriptions}</dd></div>
        <div><dt>Rooms</dt><dd>${cluster.rooms}</dd></div>
      </dl>`}
      <div class="charts">
        <${Chart} title="Connections" points=${[series.t, series.connections]} />
        <${Chart} title="Deliveries/s" points=${[series.t, series.deliveries]} />
        <${Chart} title="Messages/s" points=${[series.t, series.messages]} />
      </div>
      <${Table} caption="Nodes" empty=${cluster ? 'No node reported itself.' : 'Waiting for the first statistics…'}
        columns=${['Node', 'Version', 'Backend', 'Connections', 'Subscriptions', 'Shared', 'Messages/s', 'Deliveries/s', 'Memory', 'Started', 'Last seen']}
        rows=${nodes.map((n) => html`<tr class="node">
          <th scope="row">${n.id}</th><td>${n.version}</td><td>${n.backend}</td><td>${n.connections}</td>
          <td>${n.subscriptions}</td><td>${n.sharedExecutions}</td><td>${rate(n.messagesPerSecond)}</td>
          <td>${rate(n.deliveriesPerSecond)}</td><td>${bytes(n.memoryBytes)}</td><td>${when(n.startedAt)}</td><td>${when(n.lastSeen)}</td>
        </tr>`)} />
    </section>`;
  }

  // ---- rooms --------------------------------------------------------------

  // Query.adminRooms: every room, private ones too, a page at a time; the
  // search is an id prefix, matched by the server before it reads a room.
  const ADMIN_ROOMS = `query($first: Int, $after: String, $prefix: ID) {
    adminRooms(first: $first, after: $after, idPrefix: $prefix) {
      edges { id name isPrivate memberCount owner } pageInfo { hasNextPage endCursor } } }`;
  const ID_PREFIX = /^[A-Za-z0-9_-]{1,64}$/;

  function Rooms({ session }) {
    const [search, setSearch] = useState('');
    // The cursors of the pages before this one (to go back), this page's, the next's.
    const [page, setPage] = useState({ rooms: null, before: [], at: null, next: null });
    const [activity, setActivity] = useState({});
    const [failure, report] = useFailure();
    const prefix = search.trim();
    const usable = !prefix || ID_PREFIX.test(prefix);
    const load = useCallback((at, before) => {
      if (!usable) return;
      session.request(ADMIN_ROOMS, { first: ROOMS_PAGE, after: at, prefix: prefix || null }).then((d) => {
        const info = d.adminRooms.pageInfo;
        setPage({ rooms: d.adminRooms.edges, before, at, next: info.hasNextPage ? info.endCursor : null });
      }, report);
    }, [session, prefix, usable]);
    useEffect(() => { load(null, []); }, [load]);
    const shown = page.rooms || [];
    const shownKey = shown.map((r) => r.id).join('\n');
    useEffect(() => {
      if (!shown.length) return;
      // Online count and last activity of the rooms on screen, in one request.
      const vars = {};
      const fields = shown.map((r, i) => {
        vars[`r${i}`] = r.id;
        return `o${i}: roomPresence(roomId: $r${i}) { status } a${i}: history(roomId: $r${i}, last: 1) { edges { node { timestamp } } }`;
      });
      const params = shown.map((_, i) => `$r${i}: ID!`).join(', ');
      session.request(`query(${params}) { ${fields.join(' ')} }`, vars).then((d) => {
        const next = {};
        shown.forEach((r, i) => {
          const last = d[`a${i}`].edges[0];
          next[r.id] = { online: d[`o${i}`].filter((p) => p.status !== 'OFFLINE').length, last: last ? last.node.timestamp : null };
        });
        setActivity((a) => ({ ...a, ...next }));
      }, report);
    }, [session, shownKey]);
    const number = page.before.length + 1;
    return html`<section>
      <h2>Rooms</h2>
      <${Failure} text=${failure} />
      <form class="inline" onSubmit=${(e) => {
        e.preventDefault();
        const id = e.target.elements.roomId.value.trim();
        if (id) location.hash = roomHref(id);
      }}>
        <label for="room-open">Open a room by id</label>
        <input id="room-open" name="roomId" />
        <button type="submit">Open</button>
      </form>
      <label for="room-search">Search rooms</label>
      <input id="room-search" type="search" value=${search} placeholder="start of a room id"
        aria-describedby="room-search-hint" onInput=${(e) => setSearch(e.target.value)} />
      <p id="room-search-hint" class="hint">${usable ? 'Every room, private ones too, by the start of its id.'
        : 'Room ids have only letters, digits, "_" and "-" (at most 64).'}</p>
      <${Table} caption=${page.rooms ? `Page ${number}: ${shown.length} room(s)` : 'Loading rooms…'} empty="No room matches."
        columns=${['Room', 'Name', 'Private', 'Members', 'Online', 'Last activity']}
        rows=${shown.map((r) => {
          const a = activity[r.id];
          return html`<tr class="room"><th scope="row"><a href=${roomHref(r.id)}>${r.id}</a></th><td>${r.name}</td>
            <td>${r.isPrivate ? 'yes' : 'no'}</td><td>${r.memberCount}</td><td>${a ? a.online : '…'}</td><td>${a ? when(a.last) : '…'}</td></tr>`;
        })} />
      <nav class="pager" aria-label="Room pages">
        <button type="button" disabled=${!page.before.length}
          onClick=${() => load(page.before[page.before.length - 1], page.before.slice(0, -1))}>Previous</button>
        <span>Page ${number}</span>
        <button type="button" disabled=${!page.next} onClick=${() => load(page.next, [...page.before, page.at])}>Next</button>
      </nav>
    </section>`;
  }

  const MESSAGE_FIELDS = 'id type event userId data timestamp cursor';

  function MessageItem({ m }) {
    return html`<li class=${`message ${m.type.toLowerCase()}`}>
      <time datetime=${m.timestamp}>${when(m.timestamp)}</time>
      <span class="user">${m.userId}</span>
      ${m.type !== 'MESSAGE' && html`<span class="kind">${m.event || m.type}</span>`}
      <span class="text">${messageText(m.data)}</span>
    </li>`;
  }

  function RoomPage({ session, roomId, confirm }) {
    const [room, setRoom] = useState(undefined);
    const [presence, setPresence] = useState({});
    const [tail, setTail] = useState([]);
    const [tailState, setTailState] = useState('connecting');
    const [tailRun, setTailRun] = useState(0);
    const [history, setHistory] = useState({ items: [], before: null, more: true, loading: false });
    const [systemText, setSystemText] = useState('');
    const [roles, setRoles] = useState({});
    const [status, setStatus] = useState('');
    const [failure, report, setFailure] = useFailure();

    const load = useCallback(() => session.request(
      `query($id: ID!) { room(id: $id) { id name description owner isPrivate memberCount createdAt members { userId role joinedAt } }
         roomPresence(roomId: $id) { userId status lastSeen } }`,
      { id: roomId },
    ).then((d) => {
      setRoom(d.room);
      setPresence(Object.fromEntries(d.roomPresence.map((p) => [p.userId, p.status])));
    }, report), [session, roomId]);
    useEffect(() => { load(); }, [load]);

    useEffect(() => {
      setTailState('live');
      return session.subscribe(
        `subscription($id: ID!) { roomMessages(roomId: $id) { ${MESSAGE_FIELDS} } }`,
        { id: roomId },
        (d) => setTail((t) => [...t, d.roomMessages].slice(-TAIL_LIMIT)),
        (err) => setTailState(`stopped: ${err.message}`),
      );
    }, [session, roomId, tailRun]);

    const older = () => {
      setHistory((s) => ({ ...s, loading: true }));
      session.request(
        `query($id: ID!, $before: String) { history(roomId: $id, last: 20, before: $before) {
           edges { node { ${MESSAGE_FIELDS} } } pageInfo { hasPreviousPage startCursor } } }`,
        { id: roomId, before: history.before },
      ).then((d) => {
        const page = d.history;
        setHistory((s) => ({
          items: [...page.edges.map((e) => e.node), ...s.items],
          before: page.pageInfo.startCursor || s.before,
          more: page.pageInfo.hasPreviousPage,
          loading: false,
        }));
      }, (err) => { setHistory((s) => ({ ...s, loading: false })); report(err); });
    };

    // Every action: ask first, then run, then say what happened and reload.
    const act = async (question, action, mutation, variables, done) => {
      if (!(await confirm(question, action))) return;
      setFailure('');
      try {
        await session.request(mutation, variables);
        setStatus(done);
        load();
      } catch (err) {
        report(err);
      }
    };

    if (room === undefined) return html`<section><h2>Room ${roomId}</h2><${Failure} text=${failure} /><p>Loading…</p></section>`;
    if (room === null) return html`<section><h2>Room ${roomId}</h2><p class="notice">No such room (or it was deleted).</p><a href="#/rooms">All rooms</a></section>`;
    const R = { room: roomId };
    return html`<section class="room-page">
      <p><a href="#/rooms">← All rooms</a></p>
      <h2>Room <span class="id">${room.id}</span></h2>
      <p class="meta">${`${room.name} · owner `}<span class="user">${room.owner}</span>${` · ${room.isPrivate ? 'private' : 'public'} · ${room.memberCount} member(s) · created ${when(room.createdAt)}`}</p>
      ${room.description && html`<p>${room.description}</p>`}
      <${Failure} text=${failure} />
      <p class="status" role="status">${status}</p>
      <${Table} caption="Members" empty="No members."
        columns=${['User', 'Role', 'Presence', 'Actions']}
        rows=${room.members.map((m) => {
          const chosen = roles[m.userId] || m.role;
          const label = `Role of ${m.userId}`;
          return html`<tr class="member" data-user=${m.userId}>
            <th scope="row" class="user">${m.userId}</th><td>${m.role}</td><td>${presence[m.userId] || 'OFFLINE'}</td>
            <td class="actions">
              <select aria-label=${label} value=${chosen} onChange=${(e) => setRoles({ ...roles, [m.userId]: e.target.value })}>
                ${['OWNER', 'ADMIN', 'MEMBER'].map((r) => html`<option value=${r}>${r}</option>`)}
              </select>
              <button type="button" disabled=${chosen === m.role} aria-label=${`Change role of ${m.userId}`}
                onClick=${() => act(`Make ${m.userId} ${chosen} in room ${roomId}?`, 'Change role',
                  'mutation($room: ID!, $user: ID!, $role: RoomRole!) { setMemberRole(roomId: $room, userId: $user, role: $role) { role } }',
                  { ...R, user: m.userId, role: chosen }, `${m.userId} is now ${chosen}.`)}>Change role</button>
              <button type="button" aria-label=${`Remove ${m.userId}`}
                onClick=${() => act(`Remove ${m.userId} from room ${roomId}?`, 'Remove',
                  'mutation($room: ID!, $user: ID!) { removeMember(roomId: $room, userId: $user) }',
                  { ...R, user: m.userId }, `${m.userId} was removed.`)}>Remove</button>
              <button type="button" class="danger" aria-label=${`Ban ${m.userId}`}
                onClick=${() => act(`Ban ${m.userId} from room ${roomId}? Their subscriptions to it end.`, 'Ban',
                  'mutation($room: ID!, $user: ID!) { banMember(roomId: $room, userId: $user) }',
                  { ...R, user: m.userId }, `${m.userId} was banned.`)}>Ban</button>
            </td></tr>`;
        })} />

      <h3>Live</h3>
      <p class="tail-state" aria-live="polite">Live tail: ${tailState}
        ${tailState !== 'live' && html` <button type="button" onClick=${() => setTailRun(tailRun + 1)}>Restart</button>`}</p>
      <ol class="messages live" aria-label="Live messages">${tail.map((m) => html`<${MessageItem} key=${m.id} m=${m} />`)}</ol>

      <h3>History</h3>
      <button type="button" disabled=${!history.more || history.loading} onClick=${older}>
        ${history.items.length ? 'Older messages' : 'Load history'}</button>
      <ol class="messages history" aria-label="History">${history.items.map((m) => html`<${MessageItem} key=${m.id} m=${m} />`)}</ol>

      <h3>Actions</h3>
      <form class="system-message" onSubmit=${(e) => {
        e.preventDefault();
        const text = systemText.trim();
        if (text) act(`Send this system message to room ${roomId}?`, 'Send',
          'mutation($room: ID!, $data: JSON!) { broadcastSystemMessage(roomId: $room, data: $data) { id } }',
          { ...R, data: { text } }, 'The system message was sent.').then(() => setSystemText(''));
      }}>
        <label for="system-text">System message</label>
        <textarea id="system-text" rows="2" maxlength="4000" value=${systemText} onInput=${(e) => setSystemText(e.target.value)}></textarea>
        <button type="submit" disabled=${!systemText.trim()}>Send system message</button>
      </form>
      <button type="button" class="danger" onClick=${async () => {
        if (!(await confirm(`Delete room ${roomId} and its history? This cannot be undone.`, 'Delete room'))) return;
        try {
          await session.request('mutation($room: ID!) { deleteRoom(id: $room) }', R);
          location.hash = '#/rooms';
        } catch (err) {
          report(err);
        }
      }}>Delete room</button>
    </section>`;
  }

  // ---- connections --------------------------------------------------------

  function Connections({ session, hasCluster, confirm }) {
    const [userId, setUserId] = useState('');
    const [filter, setFilter] = useState('');
    const [page, setPage] = useState({ edges: null, after: [], next: null });
    const [revoke, setRevoke] = useState(false);
    const [status, setStatus] = useState('');
    const [failure, report, setFailure] = useFailure();
    const load = useCallback((after) => session.request(
      `query($user: ID, $after: String) { connections(userId: $user, first: 50, after: $after) {
         edges { id nodeId userId transport protocol connectedAt subscriptions } pageInfo { hasNextPage endCursor } } }`,
      { user: filter || null, after: after || null },
    ).then((d) => setPage((p) => ({ ...p, edges: d.connections.edges, next: d.connections.pageInfo.hasNextPage ? d.connections.pageInfo.endCursor : null })), report),
    [session, filter]);
    useEffect(() => { if (hasCluster) load(null); }, [load, hasCluster]);
    if (!hasCluster) {
      return html`<section><h2>Connections</h2>
        <p class="notice">This server has no cluster API (<code>Query.connections</code>).</p></section>`;
    }
    const disconnect = async (user) => {
      const extra = revoke ? ' and refuse the tokens they hold now' : '';
      if (!(await confirm(`Disconnect every connection of ${user}${extra}, on every node?`, 'Disconnect'))) return;
      setFailure('');
      try {
        const d = await session.request(
          'mutation($user: ID!, $revoke: Boolean) { disconnectUser(userId: $user, reason: "disconnected by an admin", revokeTokens: $revoke) }',
          { user, revoke },
        );
        setStatus(`${d.disconnectUser} connection(s) of ${user} closed.`);
        load(null);
      } catch (err) {
        report(err);
      }
    };
    const edges = page.edges || [];
    return html`<section>
      <h2>Connections</h2>
      <${Failure} text=${failure} />
      <p class="status" role="status">${status}</p>
      <form class="inline" onSubmit=${(e) => { e.preventDefault(); setFilter(userId.trim()); }}>
        <label for="conn-user">User id</label>
        <input id="conn-user" value=${userId} onInput=${(e) => setUserId(e.target.value)} />
        <button type="submit">Filter</button>
      </form>
      <label class="check"><input type="checkbox" checked=${revoke} onChange=${(e) => setRevoke(e.target.checked)} />
        Also refuse their current tokens when disconnecting</label>
      <${Table} caption=${page.edges ? `${edges.length} connection(s) shown` : 'Loading…'} empty="No connections."
        columns=${['User', 'Node', 'Transport', 'Protocol', 'Since', 'Subscriptions', 'Actions']}
        rows=${edges.map((c) => html`<tr class="connection" data-user=${c.userId}>
          <th scope="row" class="user">${c.userId}</th><td>${c.nodeId}</td><td>${c.transport}</td><td>${c.protocol}</td>
          <td>${when(c.connectedAt)}</td><td>${c.subscriptions}</td>
          <td><button type="button" class="danger" aria-label=${`Disconnect ${c.userId}`} onClick=${() => disconnect(c.userId)}>Disconnect</button></td>
        </tr>`)} />
      <nav class="pager" aria-label="Connection pages">
        <button type="button" onClick=${() => load(null)}>First page</button>
        <button type="button" disabled=${!page.next} onClick=${() => load(page.next)}>Next</button>
      </nav>
    </section>`;
  }

  // ---- channels and presence ---------------------------------------------

  function Channels({ session }) {
    const [channels, setChannels] = useState(null);
    const [search, setSearch] = useState('');
    const [failure, report] = useFailure();
    useEffect(() => {
      session.request('{ channels { id name description isPrivate createdBy createdAt } }').then((d) => setChannels(d.channels), report);
    }, [session]);
    const needle = search.trim().toLowerCase();
    const found = (channels || []).filter((c) => !needle || c.id.toLowerCase().includes(needle) || c.name.toLowerCase().includes(needle));
    return html`<section>
      <h2>Channels</h2>
      <${Failure} text=${failure} />
      <label for="channel-search">Search channels</label>
      <input id="channel-search" type="search" value=${search} onInput=${(e) => setSearch(e.target.value)} />
      <${Table} caption=${channels ? `${found.length} channel(s)` : 'Loading channels…'} empty="No channel matches."
        columns=${['Channel', 'Name', 'Private', 'Created by', 'Created']}
        rows=${found.slice(0, 200).map((c) => html`<tr class="channel"><th scope="row">${c.id}</th><td>${c.name}</td>
          <td>${c.isPrivate ? 'yes' : 'no'}</td><td class="user">${c.createdBy}</td><td>${when(c.createdAt)}</td></tr>`)} />
    </section>`;
  }

  function PresenceView({ session }) {
    const [ids, setIds] = useState('');
    const [rows, setRows] = useState(null);
    const [failure, report, setFailure] = useFailure();
    const look = (e) => {
      e.preventDefault();
      const userIds = [...new Set(ids.split(/[\s,]+/).filter(Boolean))].slice(0, 100);
      if (!userIds.length) return;
      setFailure('');
      session.request('query($ids: [ID!]!) { presence(userIds: $ids) { userId status statusText lastSeen } }', { ids: userIds })
        .then((d) => setRows(d.presence), report);
    };
    return html`<section>
      <h2>Presence</h2>
      <${Failure} text=${failure} />
      <form class="inline" onSubmit=${look}>
        <label for="presence-ids">User ids (comma or space separated, up to 100)</label>
        <input id="presence-ids" value=${ids} onInput=${(e) => setIds(e.target.value)} />
        <button type="submit">Look up</button>
      </form>
      <p class="hint">A room's presence is on its page (Rooms).</p>
      ${rows && html`<${Table} caption="Presence" empty="None of these users was ever seen."
        columns=${['User', 'Status', 'Status text', 'Last seen']}
        rows=${rows.map((p) => html`<tr><th scope="row" class="user">${p.userId}</th><td>${p.status}</td>
          <td>${p.statusText || ''}</td><td>${when(p.lastSeen)}</td></tr>`)} />`}
    </section>`;
  }

  // ---- the shell ----------------------------------------------------------

  const VIEWS = [['overview', 'Overview'], ['rooms', 'Rooms'], ['connections', 'Connections'], ['channels', 'Channels'], ['presence', 'Presence']];

  function App() {
    const [signedIn, setSignedIn] = useState(null); // { session, me, hasCluster }
    const [notice, setNotice] = useState('');
    const [checking, setChecking] = useState(Boolean(sessionStorage.getItem(TOKEN_KEY)));
    const [ask, setAsk] = useState(null);
    const route = useRoute();

    const signOut = useCallback((message) => {
      sessionStorage.removeItem(TOKEN_KEY);
      setSignedIn(null);
      setAsk(null);
      setNotice(message);
    }, []);

    const signIn = useCallback(async (token) => {
      const session = createSession(token, signOut);
      const d = await session.request('{ me clusterType: __type(name: "Cluster") { name } }');
      const hasCluster = Boolean(d.clusterType);
      if (hasCluster) {
        try {
          await session.request('{ cluster { nodes { id } } }');
        } catch (err) {
          if (err instanceof ApiError && err.code === 'FORBIDDEN') {
            session.end();
            throw new ApiError(`${d.me} is not a server admin: sign in with an admin token.`, 'FORBIDDEN');
          }
          throw err;
        }
      }
      sessionStorage.setItem(TOKEN_KEY, token);
      setNotice('');
      setSignedIn({ session, me: d.me, hasCluster });
    }, [signOut]);

    useEffect(() => {
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (!token) return;
      signIn(token).catch((err) => {
        if (!(err instanceof SignedOut)) signOut(err.message);
      }).finally(() => setChecking(false));
    }, []);

    const confirm = useCallback((question, action) => new Promise((resolve) => setAsk({ question, action, resolve })), []);
    const answer = (yes) => {
      if (ask) ask.resolve(yes);
      setAsk(null);
    };

    if (checking) return html`<p class="loading">Checking the saved token…</p>`;
    if (!signedIn) return html`<${SignIn} notice=${notice} onSignIn=${signIn} />`;
    const { session, me, hasCluster } = signedIn;
    const view = route[0] || 'overview';
    let body;
    if (view === 'rooms' && route[1]) body = html`<${RoomPage} key=${route[1]} session=${session} roomId=${route[1]} confirm=${confirm} />`;
    else if (view === 'rooms') body = html`<${Rooms} session=${session} />`;
    else if (view === 'connections') body = html`<${Connections} session=${session} hasCluster=${hasCluster} confirm=${confirm} />`;
    else if (view === 'channels') body = html`<${Channels} session=${session} />`;
    else if (view === 'presence') body = html`<${PresenceView} session=${session} />`;
    else body = html`<${Overview} session=${session} hasCluster=${hasCluster} />`;
    return html`<div class="shell">
      <header>
        <h1>Forge Streaming admin</h1>
        <nav aria-label="Views">
          ${VIEWS.map(([id, label]) => html`<a href=${`#/${id}`} aria-current=${view === id ? 'page' : undefined}>${label}</a>`)}
        </nav>
        <p class="who">Signed in as <span class="user">${me}</span>
          <button type="button" onClick=${() => { session.end(); signOut('You signed out.'); }}>Sign out</button></p>
      </header>
      <main>${body}</main>
      <${ConfirmDialog} ask=${ask} onAnswer=${answer} />
    </div>`;
  }

  const root = document.getElementById('app');
  root.textContent = ''; // the static "Loading…" (Preact would render beside it)
  render(html`<${App} />`, root);
})();
