'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, getJson } = require('../lib/setup');
const {
  connect,
  disconnect,
  subscribe,
  waitForEvent,
  waitUntil,
  collect,
  barrier,
  incoming,
  framesOf,
} = require('../lib/client');

const ctx = useServer();
const T = { timeout: 20000 };

/** A pusher-js client that joins presence channels as `userId` (via the auth endpoint). */
function asUser(userId, name) {
  return connect(
    ctx.server,
    {
      channelAuthorization: {
        endpoint: ctx.auth.channelEndpoint,
        transport: 'ajax',
        params: { user_id: userId, user_name: name || `User ${userId}` },
      },
    },
    { label: `${userId}` },
  );
}

function memberIds(channel) {
  const ids = [];
  channel.members.each((m) => ids.push(m.id));
  return ids.sort();
}

/** Waits until the server has processed the close of a connection: subscription_count drops. */
async function subscriptionCount(channelName) {
  const r = await getJson(ctx.sdk, `/channels/${channelName}`, { info: 'subscription_count' });
  return r.body && r.body.subscription_count;
}

test('presence: members count users not connections; member_added/removed once per user', T, async () => {
  const CH = 'presence-room';

  // user 1, first connection
  const u1a = await asUser('u1', 'Ann');
  const ch1a = await subscribe(u1a, CH);
  assert.equal(ch1a.members.count, 1);
  assert.deepEqual(ch1a.members.me, { id: 'u1', info: { name: 'Ann' } });
  const added1a = collect(ch1a, 'pusher:member_added');
  const removed1a = collect(ch1a, 'pusher:member_removed');

  // The raw subscription_succeeded payload: {presence: {ids, hash, count}}.
  const ok = incoming(u1a).find((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === CH);
  assert.ok(ok, framesOf(u1a));
  const okData = typeof ok.data === 'string' ? JSON.parse(ok.data) : ok.data;
  assert.deepEqual(okData, { presence: { ids: ['u1'], hash: { u1: { name: 'Ann' } }, count: 1 } });

  // user 2
  const addedSeen = waitForEvent(ch1a, 'pusher:member_added', { client: u1a });
  const u2 = await asUser('u2', 'Bob');
  const ch2 = await subscribe(u2, CH);
  assert.equal(ch2.members.count, 2);
  assert.deepEqual(memberIds(ch2), ['u1', 'u2']);
  assert.deepEqual(ch2.members.get('u1'), { id: 'u1', info: { name: 'Ann' } });
  const { data: addedU2 } = await addedSeen;
  assert.deepEqual(addedU2, { id: 'u2', info: { name: 'Bob' } });
  assert.equal(ch1a.members.count, 2);
  const added2 = collect(ch2, 'pusher:member_added');
  const removed2 = collect(ch2, 'pusher:member_removed');

  // user 1 again, on a second connection: no member_added for anybody
  const u1b = await asUser('u1', 'Ann');
  const ch1b = await subscribe(u1b, CH);
  assert.equal(ch1b.members.count, 2, `the second connection of u1 sees ${JSON.stringify(memberIds(ch1b))}`);
  assert.deepEqual(memberIds(ch1b), ['u1', 'u2']);
  await barrier(ctx.sdk, CH, [
    { channel: ch1a, client: u1a },
    { channel: ch2, client: u2 },
    { channel: ch1b, client: u1b },
  ]);
  assert.equal(added2.length, 0, `u2 got member_added for a second connection of u1: ${JSON.stringify(added2)}\n${framesOf(u2)}`);
  assert.equal(added1a.length, 1, `u1a got member_added: ${JSON.stringify(added1a)}\n${framesOf(u1a)}`);
  assert.equal(ch2.members.count, 2);
  assert.equal(ch1a.members.count, 2);

  const users = await getJson(ctx.sdk, `/channels/${CH}/users`);
  assert.equal(users.status, 200, users.text);
  assert.deepEqual(
    users.body.users.map((u) => u.id).sort(),
    ['u1', 'u2'],
  );

  // Close one of u1's two connections: u1 stays a member.
  assert.equal(await subscriptionCount(CH), 3, 'subscription_count with 3 connections');
  await disconnect(u1b);
  await waitUntil(async () => (await subscriptionCount(CH)) === 2, {
    label: `subscription_count of ${CH} to drop to 2 after closing u1's second connection`,
  });
  await barrier(ctx.sdk, CH, [
    { channel: ch1a, client: u1a },
    { channel: ch2, client: u2 },
  ]);
  assert.equal(removed2.length, 0, `member_removed fired although u1 still has a connection: ${JSON.stringify(removed2)}\n${framesOf(u2)}`);
  assert.equal(ch2.members.count, 2);
  assert.ok(ch2.members.get('u1'));

  // Close the other one: u1 leaves, once.
  const removedSeen = waitForEvent(ch2, 'pusher:member_removed', { client: u2 });
  await disconnect(u1a);
  const { data: removedU1 } = await removedSeen;
  assert.equal(removedU1.id, 'u1');
  await barrier(ctx.sdk, CH, [{ channel: ch2, client: u2 }]);
  assert.equal(removed2.length, 1, `member_removed events: ${JSON.stringify(removed2)}`);
  assert.equal(ch2.members.count, 1);
  assert.deepEqual(memberIds(ch2), ['u2']);
  assert.equal(removed1a.length, 0);

  const after = await getJson(ctx.sdk, `/channels/${CH}/users`);
  assert.deepEqual(after.body, { users: [{ id: 'u2' }] });
});

test('presence: unsubscribing (not closing) also removes the member', T, async () => {
  const CH = 'presence-unsub';
  const a = await asUser('ua');
  const b = await asUser('ub');
  const chA = await subscribe(a, CH);
  const chB = await subscribe(b, CH);
  await waitUntil(() => chA.members.count === 2, { label: 'member ub in ua\'s list' });
  const removed = waitForEvent(chA, 'pusher:member_removed', { client: a });
  b.unsubscribe(CH);
  assert.equal((await removed).data.id, 'ub');
  assert.equal(chA.members.count, 1);
  void chB;
});

test('presence: a member rejoining after leaving is announced again', T, async () => {
  const CH = 'presence-rejoin';
  const watcher = await asUser('w');
  const chW = await subscribe(watcher, CH);
  const added = collect(chW, 'pusher:member_added');
  const removed = collect(chW, 'pusher:member_removed');

  for (let i = 0; i < 2; i++) {
    const join = waitForEvent(chW, 'pusher:member_added', { client: watcher, filter: (m) => m.id === 'r' });
    const c = await asUser('r');
    await subscribe(c, CH);
    await join;
    const leave = waitForEvent(chW, 'pusher:member_removed', { client: watcher, filter: (m) => m.id === 'r' });
    await disconnect(c);
    await leave;
  }
  assert.equal(added.length, 2);
  assert.equal(removed.length, 2);
});

test('presence: channel_data without user_id is refused', T, async () => {
  const client = await connect(ctx.server, {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        // Signed correctly, but channel_data has no user_id.
        const channelData = JSON.stringify({ user_info: { name: 'nobody' } });
        const crypto = require('node:crypto');
        const sig = crypto
          .createHmac('sha256', ctx.server.secret)
          .update(`${socketId}:${channelName}:${channelData}`)
          .digest('hex');
        cb(null, { auth: `${ctx.server.key}:${sig}`, channel_data: channelData });
      },
    },
  });
  const ch = client.subscribe('presence-nouser');
  const res = await Promise.race([
    waitForEvent(ch, 'pusher:subscription_error', { client }).then((r) => ({ error: r.data })),
    waitForEvent(ch, 'pusher:subscription_succeeded', { client }).then(() => ({ ok: true })),
    waitForEvent(client.connection, 'error', { client, label: 'connection errors' }).then((r) => ({ connError: r.data })),
  ]);
  assert.ok(!res.ok, `subscription with channel_data lacking user_id succeeded\n${framesOf(client)}`);
});
