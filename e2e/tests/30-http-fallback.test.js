'use strict';
// Stock pusher-js forced onto its HTTP fallbacks (xhr_streaming, then xhr_polling), as
// when WebSocket is blocked: public, private and presence channels, events published
// with the SDK, presence member events and client events.

const test = require('node:test');
const assert = require('node:assert/strict');
const Pusher = require('pusher-js');
const { startServer } = require('../lib/server');
const { sdkFor } = require('../lib/auth');

const TIMEOUT = 15000;
if (process.env.PUSHER_LOG) Pusher.logToConsole = true;

function client(server, transport, userId) {
  const sdk = sdkFor({ appId: '1', key: 'app-key', secret: 'app-secret', port: server.port });
  return new Pusher('app-key', {
    wsHost: '127.0.0.1',
    wsPort: server.port,
    httpHost: '127.0.0.1',
    httpPort: server.port,
    forceTLS: false,
    enabledTransports: [transport],
    disabledTransports: ['ws', 'wss', 'sockjs'],
    cluster: 'mt1',
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const presence = channelName.startsWith('presence-') ? { user_id: userId, user_info: { name: userId } } : undefined;
        callback(null, sdk.authorizeChannel(socketId, channelName, presence));
      },
    },
  });
}

function once(target, event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${TIMEOUT} ms`)), TIMEOUT);
    const handler = (data, meta) => {
      clearTimeout(timer);
      target.unbind(event, handler);
      resolve({ data, meta });
    };
    target.bind(event, handler);
  });
}

async function connected(p) {
  if (p.connection.state === 'connected') return;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not connected (state ${p.connection.state})`)), TIMEOUT);
    p.connection.bind('connected', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

for (const transport of ['xhr_streaming', 'xhr_polling']) {
  test(`pusher-js over ${transport}: public, private, presence and client events`, { timeout: 60000 }, async (t) => {
    const server = await startServer();
    t.after(() => server.stop());
    const sdk = sdkFor({ appId: '1', key: 'app-key', secret: 'app-secret', port: server.port });
    const alice = client(server, transport, 'alice');
    const bob = client(server, transport, 'bob');
    t.after(() => {
      alice.disconnect();
      bob.disconnect();
    });
    await connected(alice);
    await connected(bob);
    assert.equal(alice.connection.connection.transport.name, transport);
    assert.match(alice.connection.socket_id, /^\d+\.\d+$/);

    // Public channel.
    const pub = alice.subscribe('news');
    await once(pub, 'pusher:subscription_succeeded');
    const got = once(pub, 'headline');
    await sdk.trigger('news', 'headline', { title: 'fallback' });
    assert.deepEqual((await got).data, { title: 'fallback' });

    // Private channel and a client event between the two.
    const pa = alice.subscribe('private-room');
    const pb = bob.subscribe('private-room');
    // Both listeners first: either subscription may succeed first.
    await Promise.all([once(pa, 'pusher:subscription_succeeded'), once(pb, 'pusher:subscription_succeeded')]);
    const typing = once(pb, 'client-typing');
    assert.ok(pa.trigger('client-typing', { on: true }));
    assert.deepEqual((await typing).data, { on: true });
    const priv = once(pa, 'secret');
    await sdk.trigger('private-room', 'secret', 'x');
    assert.equal((await priv).data, 'x');

    // Presence: bob sees alice arrive and leave.
    const prb = bob.subscribe('presence-lobby');
    await once(prb, 'pusher:subscription_succeeded');
    const added = once(prb, 'pusher:member_added');
    const pra = alice.subscribe('presence-lobby');
    await once(pra, 'pusher:subscription_succeeded');
    assert.equal((await added).data.id, 'alice');
    assert.equal(pra.members.count, 2);
    const removed = once(prb, 'pusher:member_removed');
    alice.unsubscribe('presence-lobby');
    assert.equal((await removed).data.id, 'alice');
  });
}
