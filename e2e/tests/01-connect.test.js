'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer } = require('../lib/setup');
const {
  connect,
  makeClient,
  waitForState,
  waitForEvent,
  incoming,
  framesOf,
  currentRecording,
} = require('../lib/client');

const ctx = useServer();
const T = { timeout: 20000 };

test('pusher-js connects: state connected, socket_id <digits>.<digits>', T, async () => {
  const client = await connect(ctx.server);
  assert.equal(client.connection.state, 'connected');
  assert.match(client.connection.socket_id, /^\d+\.\d+$/);

  // The handshake frame itself, as pusher-js got it.
  const established = incoming(client).find((f) => f.event === 'pusher:connection_established');
  assert.ok(established, `no pusher:connection_established frame\n${framesOf(client)}`);
  assert.equal(typeof established.data, 'string', 'connection_established data must be a JSON string (Pusher protocol)');
  const data = JSON.parse(established.data);
  assert.equal(data.socket_id, client.connection.socket_id);
  assert.equal(typeof data.activity_timeout, 'number');
  assert.ok(data.activity_timeout > 0);

  // The URL pusher-js used is the documented one.
  const rec = currentRecording(client);
  assert.match(rec.url, /^ws:\/\/127\.0\.0\.1:\d+\/app\/app-key\?protocol=7&client=js&version=[\d.]+/);
});

test('two connections get different socket ids', T, async () => {
  const [a, b] = await Promise.all([connect(ctx.server), connect(ctx.server)]);
  assert.notEqual(a.connection.socket_id, b.connection.socket_id);
});

test('pusher:ping is answered with pusher:pong', T, async () => {
  const client = await connect(ctx.server);
  const pong = waitForEvent(client.connection, 'message', {
    filter: (m) => m.event === 'pusher:pong',
    client,
    label: 'connection messages',
  });
  client.send_event('pusher:ping', {});
  await pong;
});

test('unknown app key: pusher:error 4001, pusher-js does not connect and does not retry', T, async () => {
  const client = makeClient(ctx.server, {}, { key: 'no-such-key', label: 'unknown-key' });
  const err = waitForEvent(client.connection, 'error', {
    label: 'connection errors',
    filter: (e) => e && e.error && e.error.data && e.error.data.code === 4001,
  });
  const { data } = await err.catch((e) => {
    throw new Error(`${e.message}; errors seen: ${JSON.stringify(client.__errors)}\n${framesOf(client)}`);
  });
  assert.equal(data.type, 'WebSocketError');
  assert.equal(data.error.data.code, 4001);
  // "refused" (4000-4099) makes pusher-js disconnect for good.
  const state = await waitForState(client, ['disconnected', 'failed']);
  assert.ok(['disconnected', 'failed'].includes(state));
  assert.ok(!client.__states.includes('connected'), `states: ${client.__states.join(' -> ')}`);
});
