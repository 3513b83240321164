'use strict';
// pusher-js (its Node build, unmodified) driven with promises and timeouts.
//
// Every WebSocket that pusher-js opens is recorded (frames in and out, close code) so a
// failing wait can show the exact exchange with the server.

const PusherJs = require('pusher-js');

const DEFAULT_TIMEOUT_MS = Number(process.env.E2E_WAIT_MS || 5000);

if (process.env.E2E_DEBUG === '1') PusherJs.logToConsole = true;

// ---- frame recording -------------------------------------------------------------------

const Runtime = PusherJs.Runtime;
const origCreateWebSocket = Runtime.createWebSocket;
Runtime.createWebSocket = function createRecordedWebSocket(url) {
  const ws = origCreateWebSocket.call(this, url);
  const rec = { url, frames: [], close: null, closed: null };
  rec.closed = new Promise((resolve) => {
    ws.addEventListener('close', (e) => {
      rec.close = { code: e.code, reason: e.reason };
      resolve(rec.close);
    });
  });
  ws.addEventListener('message', (e) => rec.frames.push({ dir: 'in', data: String(e.data) }));
  const send = ws.send;
  ws.send = function recordedSend(data) {
    rec.frames.push({ dir: 'out', data: String(data) });
    return send.call(this, data);
  };
  ws.__crierRec = rec;
  unclaimed.push(rec);
  return ws;
};

// Sockets not (yet) tied to a client: e.g. ones whose handshake failed.
const unclaimed = [];

function currentRecording(client) {
  const conn = client.connection.connection;
  const sock = conn && conn.transport && conn.transport.socket;
  return sock ? sock.__crierRec : null;
}

/** The client's frames (all its connections, oldest first), for error messages. */
function framesOf(client, last = 25) {
  let recs = client.__recs || [];
  const lines = [];
  if (recs.length === 0 && unclaimed.length > 0) {
    lines.push('  (no socket of this client reached "connected"; sockets not tied to a client follow)');
    recs = unclaimed;
  }
  recs.forEach((rec, i) => {
    lines.push(`  -- connection #${i + 1} ${rec.url}`);
    for (const f of rec.frames) lines.push(`  ${f.dir === 'in' ? '<<' : '>>'} ${f.data}`);
    if (rec.close) lines.push(`  -- closed: code ${rec.close.code} ${JSON.stringify(rec.close.reason || '')}`);
  });
  const shown = lines.length > last ? ['  ...', ...lines.slice(-last)] : lines;
  return `frames of client ${client.__label || '?'} (state ${client.connection.state}):\n${shown.join('\n')}`;
}

/** Parsed incoming frames of the client (all its connections). */
function incoming(client) {
  const out = [];
  for (const rec of client.__recs || []) {
    for (const f of rec.frames) {
      if (f.dir !== 'in') continue;
      try {
        out.push(JSON.parse(f.data));
      } catch (_) {
        out.push({ unparsable: f.data });
      }
    }
  }
  return out;
}

// ---- clients ---------------------------------------------------------------------------

const live = new Set();
let counter = 0;

function baseOptions(server) {
  return {
    wsHost: '127.0.0.1',
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
  };
}

/** Creates a pusher-js client (it starts connecting at once). */
function makeClient(server, extra = {}, { key, label } = {}) {
  const client = new PusherJs(key || server.key, { ...baseOptions(server), ...extra });
  client.__label = label || `c${++counter}`;
  client.__recs = [];
  client.__errors = [];
  client.__states = [client.connection.state];
  const track = () => {
    const rec = currentRecording(client);
    if (rec && !client.__recs.includes(rec)) {
      client.__recs.push(rec);
      const i = unclaimed.indexOf(rec);
      if (i >= 0) unclaimed.splice(i, 1);
    }
  };
  client.connection.bind('state_change', ({ current }) => {
    client.__states.push(current);
    track();
  });
  client.connection.bind('error', (e) => client.__errors.push(e));
  live.add(client);
  return client;
}

/** Resolves when the client is `connected`; rejects on failed/unavailable/timeout. */
function whenConnected(client, timeout = DEFAULT_TIMEOUT_MS) {
  if (client.connection.state === 'connected') return Promise.resolve(client);
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      client.connection.unbind('state_change', onChange);
    };
    const onChange = ({ current }) => {
      if (current === 'connected') {
        cleanup();
        resolve(client);
      } else if (current === 'failed' || current === 'unavailable') {
        cleanup();
        reject(new Error(`client ${client.__label} went ${current}; errors: ${JSON.stringify(client.__errors)}\n${framesOf(client)}`));
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`client ${client.__label} not connected after ${timeout} ms (states ${client.__states.join(' -> ')}); errors: ${JSON.stringify(client.__errors)}\n${framesOf(client)}`));
    }, timeout);
    client.connection.bind('state_change', onChange);
  });
}

async function connect(server, extra = {}, meta = {}) {
  const client = makeClient(server, extra, meta);
  await whenConnected(client);
  return client;
}

/** Disconnects and waits until the WebSocket has closed (bounded). */
async function disconnect(client, timeout = 3000) {
  live.delete(client);
  const rec = currentRecording(client);
  client.disconnect();
  if (rec && !rec.close) {
    let timer;
    await Promise.race([rec.closed, new Promise((r) => (timer = setTimeout(r, timeout)))]);
    clearTimeout(timer);
  }
}

async function disconnectAll() {
  const all = [...live];
  await Promise.all(all.map((c) => disconnect(c)));
}

// ---- waiting for things ----------------------------------------------------------------

/**
 * Resolves with {data, metadata} the first time `event` fires on `target` (a Channel,
 * `pusher.user`, or the connection) and `filter(data, metadata)` is true.
 */
function waitForEvent(target, event, { timeout = DEFAULT_TIMEOUT_MS, filter, client, label } = {}) {
  return new Promise((resolve, reject) => {
    const handler = (data, metadata) => {
      if (filter && !filter(data, metadata)) return;
      clearTimeout(timer);
      target.unbind(event, handler);
      resolve({ data, metadata });
    };
    const timer = setTimeout(() => {
      target.unbind(event, handler);
      const where = label || (target.name ? `channel ${target.name}` : 'target');
      reject(
        new Error(
          `timed out after ${timeout} ms waiting for "${event}" on ${where}` +
            (client ? `\n${framesOf(client)}` : ''),
        ),
      );
    }, timeout);
    target.bind(event, handler);
  });
}

/** Records every `event` on `target`: returns an array of {data, metadata}. */
function collect(target, event) {
  const seen = [];
  target.bind(event, (data, metadata) => seen.push({ data, metadata }));
  return seen;
}

/**
 * Subscribes and resolves with the channel once `pusher:subscription_succeeded` fires;
 * rejects with the error data on `pusher:subscription_error`.
 */
function subscribe(client, name, { timeout = DEFAULT_TIMEOUT_MS } = {}) {
  const channel = client.subscribe(name);
  if (channel.subscribed) return Promise.resolve(channel);
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      channel.unbind('pusher:subscription_succeeded', ok);
      channel.unbind('pusher:subscription_error', bad);
    };
    const ok = () => {
      cleanup();
      resolve(channel);
    };
    const bad = (err) => {
      cleanup();
      const e = new Error(`subscription to ${name} failed: ${JSON.stringify(err)}\n${framesOf(client)}`);
      e.data = err;
      reject(e);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no pusher:subscription_succeeded for ${name} after ${timeout} ms\n${framesOf(client)}`));
    }, timeout);
    channel.bind('pusher:subscription_succeeded', ok);
    channel.bind('pusher:subscription_error', bad);
  });
}

/** Subscribes and resolves with the `pusher:subscription_error` data. */
function subscribeExpectingError(client, name, { timeout = DEFAULT_TIMEOUT_MS } = {}) {
  const channel = client.subscribe(name);
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      channel.unbind('pusher:subscription_succeeded', ok);
      channel.unbind('pusher:subscription_error', bad);
    };
    const ok = () => {
      cleanup();
      reject(new Error(`subscription to ${name} succeeded but should have been refused\n${framesOf(client)}`));
    };
    const bad = (err) => {
      cleanup();
      resolve({ channel, error: err });
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`neither subscription_succeeded nor subscription_error for ${name} after ${timeout} ms\n${framesOf(client)}`));
    }, timeout);
    channel.bind('pusher:subscription_succeeded', ok);
    channel.bind('pusher:subscription_error', bad);
  });
}

/**
 * A barrier: publishes a unique marker event on `channelName` through the HTTP API and
 * waits until every given channel object (subscribed to it) has received it. Messages on
 * one channel arrive in order, so whatever a client did not get before the marker, it did
 * not get at all. This replaces "sleep and check nothing arrived".
 */
let markerSeq = 0;
async function barrier(sdk, channelName, receivers, { timeout = DEFAULT_TIMEOUT_MS } = {}) {
  const id = `m${process.pid}-${++markerSeq}`;
  const waits = receivers.map(({ channel, client }) =>
    waitForEvent(channel, 'e2e-marker', { timeout, client, filter: (d) => d && d.marker === id }),
  );
  await sdk.trigger(channelName, 'e2e-marker', { marker: id });
  await Promise.all(waits);
}

/** Polls `fn` (async, returns truthy when done) every 50 ms until it holds. */
async function waitUntil(fn, { timeout = DEFAULT_TIMEOUT_MS, label = 'condition', describe } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const extra = describe ? await describe() : last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${label}; last: ${extra}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resolves with the first state in `states` the connection changes to. */
function waitForState(client, states, { timeout = DEFAULT_TIMEOUT_MS } = {}) {
  const wanted = Array.isArray(states) ? states : [states];
  if (wanted.includes(client.connection.state)) return Promise.resolve(client.connection.state);
  return new Promise((resolve, reject) => {
    const onChange = ({ current }) => {
      if (!wanted.includes(current)) return;
      clearTimeout(timer);
      client.connection.unbind('state_change', onChange);
      resolve(current);
    };
    const timer = setTimeout(() => {
      client.connection.unbind('state_change', onChange);
      reject(new Error(`client ${client.__label} did not reach ${wanted.join('/')} within ${timeout} ms (states ${client.__states.join(' -> ')})\n${framesOf(client)}`));
    }, timeout);
    client.connection.bind('state_change', onChange);
  });
}

module.exports = {
  PusherJs,
  baseOptions,
  makeClient,
  connect,
  whenConnected,
  disconnect,
  disconnectAll,
  waitForEvent,
  waitForState,
  collect,
  subscribe,
  subscribeExpectingError,
  barrier,
  waitUntil,
  framesOf,
  incoming,
  currentRecording,
  DEFAULT_TIMEOUT_MS,
};
