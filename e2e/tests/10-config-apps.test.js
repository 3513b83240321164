'use strict';
// Several apps from a --config file (SPEC §1): tenant isolation, client_events = false,
// a disabled app, per-app limits.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, sdkJson } = require('../lib/setup');
const { sdkFor, channelAuth } = require('../lib/auth');
const {
  connect,
  makeClient,
  subscribe,
  waitForEvent,
  waitForState,
  collect,
  barrier,
  framesOf,
  currentRecording,
} = require('../lib/client');

const CONFIG = `
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"

[[apps]]
id = "quiet"
key = "quiet-key"
secret = "quiet-secret-5f0c2a"
client_events = false

[[apps]]
id = "off"
key = "off-key"
secret = "off-secret-91bd"
enabled = false

[[apps]]
id = "tiny"
key = "tiny-key"
secret = "tiny-secret-77aa"
max_presence_members = 2
client_events_per_sec = 2
`;

const ctx = useServer({ config: CONFIG });
const T = { timeout: 20000 };

const APPS = {
  quiet: { appId: 'quiet', key: 'quiet-key', secret: 'quiet-secret-5f0c2a' },
  off: { appId: 'off', key: 'off-key', secret: 'off-secret-91bd' },
  tiny: { appId: 'tiny', key: 'tiny-key', secret: 'tiny-secret-77aa' },
};

function appServer(name) {
  return { ...ctx.server, ...APPS[name] };
}

function authed(app, userId) {
  const sdk = sdkFor(app);
  return connect(
    app,
    {
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, cb) =>
          cb(null, channelAuth(sdk, socketId, channelName, userId ? { id: userId } : undefined)),
      },
    },
    { key: app.key, label: `${app.appId}:${userId || 'anon'}` },
  );
}

test('a second app: its own key and secret work, and tenants are isolated', T, async () => {
  const quiet = appServer('quiet');
  const quietSdk = sdkFor(quiet);
  const qc = await connect(quiet, {}, { key: quiet.key, label: 'quiet' });
  const dc = await connect(ctx.server, {}, { label: 'default' });
  const qch = await subscribe(qc, 'shared');
  const dch = await subscribe(dc, 'shared');
  const qSeen = collect(qch, 'ev');
  const dSeen = collect(dch, 'ev');

  const r = await sdkJson(quietSdk.trigger('shared', 'ev', { from: 'quiet' }));
  assert.equal(r.status, 200, r.text);
  await ctx.sdk.trigger('shared', 'ev', { from: 'app' });
  await barrier(quietSdk, 'shared', [{ channel: qch, client: qc }]);
  await barrier(ctx.sdk, 'shared', [{ channel: dch, client: dc }]);
  assert.deepEqual(qSeen.map((s) => s.data), [{ from: 'quiet' }], framesOf(qc));
  assert.deepEqual(dSeen.map((s) => s.data), [{ from: 'app' }], framesOf(dc));

  // Signing for app "quiet" with the default app's secret is a 401.
  const crossed = sdkFor({ ...quiet, secret: ctx.server.secret });
  const bad = await sdkJson(crossed.trigger('shared', 'ev', {}));
  assert.equal(bad.status, 401, `answered ${bad.status} ${bad.text}`);
});

test('client_events = false: client events are not delivered', T, async () => {
  const quiet = appServer('quiet');
  const a = await authed(quiet, null);
  const b = await authed(quiet, null);
  const chA = await subscribe(a, 'private-q');
  const chB = await subscribe(b, 'private-q');
  const seen = collect(chB, 'client-nope');
  chA.trigger('client-nope', { x: 1 });
  await subscribe(a, 'q-sync'); // the server has read a's client event by now
  await barrier(sdkFor(quiet), 'private-q', [{ channel: chB, client: b }]);
  assert.equal(seen.length, 0, framesOf(b));
});

test('disabled app: WebSocket refused with 4003, HTTP API 403', T, async () => {
  const off = appServer('off');
  const client = makeClient(off, {}, { key: off.key, label: 'off' });
  const { data } = await waitForEvent(client.connection, 'error', {
    filter: (e) => e && e.error && e.error.data && e.error.data.code != null,
    label: 'connection errors of a disabled app',
  });
  assert.equal(data.error.data.code, 4003, `got ${JSON.stringify(data)}`);
  await waitForState(client, ['disconnected', 'failed']);
  assert.ok(!client.__states.includes('connected'));

  const r = await sdkJson(sdkFor(off).trigger('x', 'ev', {}));
  assert.equal(r.status, 403, `answered ${r.status} ${r.text}`);
});

test('max_presence_members: a member over the limit is refused', T, async () => {
  const tiny = appServer('tiny');
  const c1 = await authed(tiny, 't1');
  const c2 = await authed(tiny, 't2');
  const c3 = await authed(tiny, 't3');
  await subscribe(c1, 'presence-small');
  await subscribe(c2, 'presence-small');
  const ch3 = c3.subscribe('presence-small');
  const outcome = await Promise.race([
    waitForEvent(ch3, 'pusher:subscription_error', { client: c3 }).then((r) => ({ error: r.data })),
    waitForEvent(ch3, 'pusher:subscription_succeeded', { client: c3 }).then(() => ({ ok: true })),
    waitForEvent(c3.connection, 'error', { client: c3, label: 'connection errors' }).then((r) => ({ connError: r.data })),
  ]);
  assert.ok(!outcome.ok, `third member joined a channel limited to 2\n${framesOf(c3)}`);
  // A second connection of an existing member is not a new member.
  const c1b = await authed(tiny, 't1');
  await subscribe(c1b, 'presence-small');
});

test('client_events_per_sec: flooding client events closes with 4301', T, async () => {
  const tiny = appServer('tiny');
  const a = await authed(tiny, null);
  const b = await authed(tiny, null);
  const chA = await subscribe(a, 'private-flood');
  await subscribe(b, 'private-flood');
  const rec = currentRecording(a);
  for (let i = 0; i < 40; i++) chA.trigger('client-flood', { i });
  let timer;
  const close = await Promise.race([
    rec.closed,
    new Promise((r) => (timer = setTimeout(() => r(null), 5000))),
  ]);
  clearTimeout(timer);
  assert.ok(close, `40 client events at once (limit 2/s) did not close the connection\n${framesOf(a)}`);
  assert.equal(close.code, 4301, framesOf(a));
});
