'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer } = require('../lib/setup');
const { channelAuth } = require('../lib/auth');
const { connect, subscribe, waitForEvent, collect, barrier, incoming, framesOf } = require('../lib/client');

const ctx = useServer();
const T = { timeout: 20000 };

function asUser(userId) {
  return connect(
    ctx.server,
    {
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, cb) =>
          cb(null, channelAuth(ctx.sdk, socketId, channelName, { id: userId, info: { name: userId } })),
      },
    },
    { label: userId },
  );
}

test('client event on a private channel reaches the other subscriber, not the sender', T, async () => {
  const alice = await asUser('alice');
  const bob = await asUser('bob');
  const chA = await subscribe(alice, 'private-chat');
  const chB = await subscribe(bob, 'private-chat');
  const echoed = collect(chA, 'client-x');
  const got = waitForEvent(chB, 'client-x', { client: bob });
  assert.equal(chA.trigger('client-x', { text: 'hi bob' }), true, 'pusher-js could not send');
  assert.deepEqual((await got).data, { text: 'hi bob' });
  // A server event after it: whatever alice was sent before, she has now.
  await barrier(ctx.sdk, 'private-chat', [{ channel: chA, client: alice }]);
  assert.equal(echoed.length, 0, `client event echoed to its sender\n${framesOf(alice)}`);
  // The frame bob got: a plain channel event, no user_id on private channels needed.
  const frame = incoming(bob).find((f) => f.event === 'client-x');
  assert.equal(frame.channel, 'private-chat');
});

test('client event on a presence channel carries metadata.user_id of the sender', T, async () => {
  const alice = await asUser('alice');
  const bob = await asUser('bob');
  const chA = await subscribe(alice, 'presence-chat');
  const chB = await subscribe(bob, 'presence-chat');
  const echoed = collect(chA, 'client-typing');
  const got = waitForEvent(chB, 'client-typing', { client: bob });
  chA.trigger('client-typing', { typing: true });
  const { data, metadata } = await got;
  assert.deepEqual(data, { typing: true });
  assert.equal(metadata && metadata.user_id, 'alice', `metadata: ${JSON.stringify(metadata)}\n${framesOf(bob)}`);
  await barrier(ctx.sdk, 'presence-chat', [{ channel: chA, client: alice }]);
  assert.equal(echoed.length, 0, framesOf(alice));
});

test('client events on a public channel are not delivered', T, async () => {
  const a = await connect(ctx.server, {}, { label: 'a' });
  const b = await connect(ctx.server, {}, { label: 'b' });
  const chA = await subscribe(a, 'public-chat');
  const chB = await subscribe(b, 'public-chat');
  const seen = collect(chB, 'client-x');
  chA.trigger('client-x', { no: 1 });
  // The server answers the illegal event on a's connection (pusher:error) or drops it;
  // either way b must not see it. Make sure the server has read it: a round trip on a.
  await subscribe(a, 'public-chat-sync');
  await barrier(ctx.sdk, 'public-chat', [{ channel: chB, client: b }]);
  assert.equal(seen.length, 0, framesOf(b));
});

test('client events from a connection not subscribed to the channel are not delivered', T, async () => {
  const a = await asUser('alice');
  const b = await asUser('bob');
  const chB = await subscribe(b, 'private-closed');
  const seen = collect(chB, 'client-sneak');
  a.send_event('client-sneak', { x: 1 }, 'private-closed');
  await subscribe(a, 'public-sync-2');
  await barrier(ctx.sdk, 'private-closed', [{ channel: chB, client: b }]);
  assert.equal(seen.length, 0, framesOf(b));
});
