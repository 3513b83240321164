'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, getJson } = require('../lib/setup');
const { channelAuth } = require('../lib/auth');
const { connect, subscribe, disconnect, waitUntil } = require('../lib/client');

const ctx = useServer();
const T = { timeout: 20000 };

function asUser(userId) {
  return connect(
    ctx.server,
    {
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, cb) =>
          cb(null, channelAuth(ctx.sdk, socketId, channelName, { id: userId, info: { n: userId } })),
      },
    },
    { label: userId },
  );
}

// Occupancy for the whole file: presence-q (u1 twice, u2), presence-solo (u3),
// public q-public (two connections), private-q (one).
async function populate() {
  // Closes from the previous test may still be in flight on the server: start clean.
  await waitUntil(
    async () => JSON.stringify((await getJson(ctx.sdk, '/channels')).body) === '{"channels":{}}',
    { label: 'no channel left occupied by the previous test (GET /channels == {"channels":{}})' },
  );
  const u1a = await asUser('u1');
  const u1b = await asUser('u1');
  const u2 = await asUser('u2');
  const u3 = await asUser('u3');
  await subscribe(u1a, 'presence-q');
  await subscribe(u1b, 'presence-q');
  await subscribe(u2, 'presence-q');
  await subscribe(u3, 'presence-solo');
  await subscribe(u1a, 'q-public');
  await subscribe(u2, 'q-public');
  await subscribe(u3, 'private-q');
  return [u1a, u1b, u2, u3];
}

test('GET /channels?filter_by_prefix=presence-&info=user_count', T, async () => {
  await populate();
  const r = await getJson(ctx.sdk, '/channels', { filter_by_prefix: 'presence-', info: 'user_count' });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body, {
    channels: {
      'presence-q': { user_count: 2 },
      'presence-solo': { user_count: 1 },
    },
  });
});

test('GET /channels lists every occupied channel (attributes empty without info)', T, async () => {
  await populate();
  const r = await getJson(ctx.sdk, '/channels');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body, {
    channels: {
      'presence-q': {},
      'presence-solo': {},
      'q-public': {},
      'private-q': {},
    },
  });
  const pub = await getJson(ctx.sdk, '/channels', { filter_by_prefix: 'q-' });
  assert.deepEqual(pub.body, { channels: { 'q-public': {} } });
});

test('GET /channels?info=user_count without a presence- prefix filter is a 400', T, async () => {
  const r = await getJson(ctx.sdk, '/channels', { info: 'user_count' });
  assert.equal(r.status, 400, `answered ${r.status} ${r.text}`);
});

test('GET /channels/{presence} info=subscription_count,user_count', T, async () => {
  await populate();
  const r = await getJson(ctx.sdk, '/channels/presence-q', { info: 'subscription_count,user_count' });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body, { occupied: true, user_count: 2, subscription_count: 3 });
});

test('GET /channels/{public} info=subscription_count; unoccupied channel', T, async () => {
  await populate();
  const r = await getJson(ctx.sdk, '/channels/q-public', { info: 'subscription_count' });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body, { occupied: true, subscription_count: 2 });

  const plain = await getJson(ctx.sdk, '/channels/q-public');
  assert.deepEqual(plain.body, { occupied: true });

  const empty = await getJson(ctx.sdk, '/channels/nobody-here', { info: 'subscription_count' });
  assert.equal(empty.status, 200, empty.text);
  // An empty channel asked for its count reports 0 (README, Endpoints).
  assert.deepEqual(empty.body, { occupied: false, subscription_count: 0 }, empty.text);
});

test('GET /channels/{non-presence}?info=user_count is a 400', T, async () => {
  const r = await getJson(ctx.sdk, '/channels/q-public', { info: 'user_count' });
  assert.equal(r.status, 400, `answered ${r.status} ${r.text}`);
});

test('GET /channels/presence-q/users lists each user once', T, async () => {
  await populate();
  const r = await getJson(ctx.sdk, '/channels/presence-q/users');
  assert.equal(r.status, 200, r.text);
  assert.ok(Array.isArray(r.body.users), r.text);
  assert.deepEqual(
    [...r.body.users].sort((a, b) => a.id.localeCompare(b.id)),
    [{ id: 'u1' }, { id: 'u2' }],
  );
});

test('GET /channels/{non-presence}/users is a 400', T, async () => {
  const r = await getJson(ctx.sdk, '/channels/q-public/users');
  assert.equal(r.status, 400, `answered ${r.status} ${r.text}`);
});

test('queries follow disconnects: channel vacated, user gone', T, async () => {
  const [u1a, u1b, u2, u3] = await populate();
  await disconnect(u3);
  await waitUntil(async () => {
    const r = await getJson(ctx.sdk, '/channels/presence-solo');
    return r.body && r.body.occupied === false;
  }, { label: 'presence-solo to become unoccupied' });
  await disconnect(u2);
  await waitUntil(async () => {
    const r = await getJson(ctx.sdk, '/channels/presence-q/users');
    return r.body && JSON.stringify(r.body.users) === JSON.stringify([{ id: 'u1' }]);
  }, { label: 'presence-q users to be [u1]' });
  const r = await getJson(ctx.sdk, '/channels', { filter_by_prefix: 'presence-', info: 'user_count' });
  assert.deepEqual(r.body, { channels: { 'presence-q': { user_count: 1 } } });
  void u1a;
  void u1b;
});

test('queries with a bad signature are 401', T, async () => {
  const { sdkFor } = require('../lib/auth');
  const bad = sdkFor(ctx.server, { secret: 'wrong' });
  const r = await getJson(bad, '/channels');
  assert.equal(r.status, 401, `answered ${r.status} ${r.text}`);
});

