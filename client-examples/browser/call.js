// A call in the room (WebRTC, mesh): the reference client of the server's
// signaling (README: Calls). "Call" joins the room's live call, or starts
// one. Who joins later sends an OFFER to each session already in the call;
// a session answers every OFFER it gets. Candidates trickle as
// ICE_CANDIDATE signals. A data channel carries the text typed below.
'use strict';

(() => {
  const $ = (selector) => document.querySelector(selector);
  const ops = {
    calls: 'query($room: ID!) { calls(roomId: $room) { id participants { sessionId } } }',
    start: 'mutation($room: ID!) { startCall(roomId: $room) { id } }',
    join: 'mutation($call: ID!) { joinCall(callId: $call) { sessionId } }',
    send: 'mutation($call: ID!, $to: ID!, $kind: SignalKind!, $payload: JSON!) { sendSignal(input: {callId: $call, toSessionId: $to, kind: $kind, payload: $payload}) }',
    signals: 'subscription($call: ID!) { callSignals(callId: $call) { fromSessionId kind payload } }',
    ice: 'query { iceServers { urls username credential } }',
  };
  let live = null; // { execute, client, room } from app.js
  let call = null; // { id, session }
  const peers = new Map(); // sessionId -> { pc, channel, pending: [] }
  let outbox = Promise.resolve(); // signals leave one after the other, in order

  const setCallStatus = (state, text) => {
    $('#call-status').dataset.state = state;
    $('#call-status').textContent = text;
  };
  const log = (from, text) => {
    const li = document.createElement('li');
    li.dataset.from = from;
    li.textContent = `${from}: ${text}`;
    $('#call-log').append(li);
  };

  function signal(to, kind, payload) {
    outbox = outbox.then(() => live.execute(ops.send, { call: call.id, to, kind, payload }))
      .catch((err) => setCallStatus('error', JSON.stringify(err)));
    return outbox;
  }

  function useChannel(sessionId, channel) {
    peers.get(sessionId).channel = channel;
    channel.onopen = () => {
      setCallStatus('connected', `connected (${[...peers.values()].filter((p) => p.channel?.readyState === 'open').length})`);
      for (const el of $('#call-send').elements) el.disabled = false;
    };
    channel.onmessage = (event) => log('them', event.data);
  }

  async function peer(sessionId) {
    if (peers.has(sessionId)) return peers.get(sessionId);
    const { iceServers } = await live.execute(ops.ice, {});
    const pc = new RTCPeerConnection({ iceServers: iceServers.map(({ urls, username, credential }) => ({ urls, username: username ?? undefined, credential: credential ?? undefined })) });
    const entry = { pc, channel: null, pending: [] };
    peers.set(sessionId, entry);
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) signal(sessionId, 'ICE_CANDIDATE', candidate.toJSON());
    };
    pc.ondatachannel = ({ channel }) => useChannel(sessionId, channel);
    return entry;
  }

  async function onSignal({ fromSessionId: from, kind, payload }) {
    if (kind === 'HANGUP') {
      peers.get(from)?.pc.close();
      peers.delete(from);
      return;
    }
    const entry = await peer(from);
    const { pc } = entry;
    if (kind === 'OFFER') {
      await pc.setRemoteDescription(payload);
      await pc.setLocalDescription(await pc.createAnswer());
      signal(from, 'ANSWER', { type: 'answer', sdp: pc.localDescription.sdp });
    } else if (kind === 'ANSWER') {
      await pc.setRemoteDescription(payload);
    } else if (kind === 'ICE_CANDIDATE') {
      // A candidate may come before the description it belongs to.
      if (!pc.remoteDescription) { entry.pending.push(payload); return; }
      await pc.addIceCandidate(payload);
    }
    if (pc.remoteDescription) {
      for (const c of entry.pending.splice(0)) await pc.addIceCandidate(c);
    }
  }

  async function startOrJoin() {
    $('#call-button').disabled = true;
    const { calls } = await live.execute(ops.calls, { room: live.room });
    const id = calls.length ? calls[0].id : (await live.execute(ops.start, { room: live.room })).startCall.id;
    const { joinCall } = await live.execute(ops.join, { call: id });
    call = { id, session: joinCall.sessionId };
    // One after another: the signals of one sender are handled in order.
    let inbox = Promise.resolve();
    live.client().subscribe({ query: ops.signals, variables: { call: id } }, {
      next: ({ data, errors }) => {
        if (errors) { setCallStatus('error', errors.map((e) => e.message).join('; ')); return; }
        inbox = inbox.then(() => onSignal(data.callSignals)).catch((err) => setCallStatus('error', String(err)));
      },
      error: (err) => setCallStatus('error', String(err?.message ?? err)),
      complete: () => {},
    });
    const others = calls.length ? calls[0].participants.map((p) => p.sessionId) : [];
    setCallStatus(others.length ? 'calling' : 'waiting', others.length ? 'calling…' : 'waiting for others');
    for (const other of others) {
      const { pc } = await peer(other);
      useChannel(other, pc.createDataChannel('chat'));
      await pc.setLocalDescription(await pc.createOffer());
      signal(other, 'OFFER', { type: 'offer', sdp: pc.localDescription.sdp });
    }
  }

  document.addEventListener('room-live', ({ detail }) => {
    live = detail;
    $('#call-button').disabled = false;
  });
  $('#call-button').addEventListener('click', () => {
    startOrJoin().catch((err) => setCallStatus('error', JSON.stringify(err)));
  });
  $('#call-send').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('#call-send').elements.text;
    for (const { channel } of peers.values()) if (channel?.readyState === 'open') channel.send(input.value);
    log('me', input.value);
    input.value = '';
  });
})();
