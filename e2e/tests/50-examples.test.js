'use strict';
// Runs every program under examples/ against a Crier this file starts, and checks with a
// real subscriber (pusher-js here, or the example's own subscriber) that each message
// arrived with exactly the event and data the example sends. So the examples cannot rot.
//
// Needs php-cli (+ php-redis), python3 with the `pusher` SDK, redis-server: .ci/run and
// scripts/test install them.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const Pusher = require('pusher');
const { useServer, getJson } = require('../lib/setup');
const { startServer, DEV_APP } = require('../lib/server');
const { connect, subscribe, subscribeExpectingError, waitForEvent, waitUntil, barrier, disconnect, framesOf } = require('../lib/client');
const { freePort, spawnProc, runProc } = require('../lib/proc');
const { startRedis } = require('../lib/redis');

const EXAMPLES = path.resolve(__dirname, '..', '..', 'examples');
const PHP = path.join(EXAMPLES, 'php');
const PY = path.join(EXAMPLES, 'python');
const NODE = path.join(EXAMPLES, 'node');
const T = { timeout: 30000 };

const ctx = useServer({ udp: true });

/** What the examples read to find Crier (the same names as their defaults document). */
function exampleEnv(server, extra = {}) {
  return {
    CRIER_URL: server.url,
    CRIER_UDP: `127.0.0.1:${server.udpPort}`,
    CRIER_APP_ID: server.appId,
    CRIER_APP_KEY: server.key,
    CRIER_APP_SECRET: server.secret,
    ...extra,
  };
}

async function runOk(cmd, args, opts) {
  const r = await runProc(cmd, args, opts);
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} failed:\n${r.describe}`);
  return r;
}

/** Every non-pusher: event on `channel`, in arrival order, as {event, data}. */
function record(channel) {
  const seen = [];
  channel.bind_global((event, data) => {
    if (!event.startsWith('pusher:')) seen.push({ event, data });
  });
  return seen;
}

// php -S serving auth.php, shared by the tests that need channel authorization.
let phpAuth;
let authUrl;
before(async () => {
  const port = await freePort();
  authUrl = `http://127.0.0.1:${port}`;
  // auth.php needs only the app's key and secret (the dev app's, as every Crier here has).
  const env = { CRIER_APP_ID: DEV_APP.appId, CRIER_APP_KEY: DEV_APP.key, CRIER_APP_SECRET: DEV_APP.secret };
  phpAuth = spawnProc('php', ['-S', `127.0.0.1:${port}`, 'auth.php'], { cwd: PHP, env });
  await waitUntil(() => fetch(`${authUrl}/nothing`).then((r) => r.status === 404), { label: 'php -S auth.php', timeout: 10000 });
});
after(() => phpAuth && phpAuth.stop());

/** pusher-js options for a user logged in to the PHP app (auth.php). */
function asUser(userId) {
  return {
    channelAuthorization: { endpoint: `${authUrl}/pusher/auth`, transport: 'ajax', params: { user_id: userId } },
    userAuthentication: { endpoint: `${authUrl}/pusher/user-auth`, transport: 'ajax', params: { user_id: userId } },
  };
}

const ORDER_1001 = { id: 1001, customer: 'ACME GmbH', total: '249.00' };
const ORDER_1002 = { id: 1002, customer: 'Globex Ltd', total: '1200.50' };

test('php/udp-order.php: the unsigned and the signed datagram both reach a pusher-js subscriber', T, async () => {
  const client = await connect(ctx.server);
  const orders = record(await subscribe(client, 'orders'));
  await runOk('php', ['udp-order.php', '1001'], { cwd: PHP, env: exampleEnv(ctx.server) });
  await waitUntil(() => orders.length >= 2, { label: 'two orders over UDP', describe: () => framesOf(client) });
  assert.deepEqual(orders, [
    { event: 'order-created', data: ORDER_1001 },
    { event: 'order-created', data: ORDER_1002 },
  ]);
});

test('php/udp-order.php: its signature is valid (require_signature keeps only the signed datagram)', T, async () => {
  const strict = await startServer({ udp: true, config: '[ingest.udp]\nrequire_signature = true\n' });
  try {
    const client = await connect(strict);
    const channel = await subscribe(client, 'orders');
    const orders = record(channel);
    await runOk('php', ['udp-order.php', '1001'], { cwd: PHP, env: exampleEnv(strict) });
    await waitUntil(() => orders.length >= 1, { label: 'the signed order', describe: () => framesOf(client) });
    const sdk = new Pusher({ appId: strict.appId, key: strict.key, secret: strict.secret, host: '127.0.0.1', port: String(strict.port), useTLS: false });
    await barrier(sdk, 'orders', [{ channel, client }]);
    assert.deepEqual(orders.filter((o) => o.event !== 'e2e-marker'), [{ event: 'order-created', data: ORDER_1002 }]);
    await disconnect(client);
  } finally {
    await strict.stop();
  }
});

test('php/http-publish.php: trigger and batch trigger, signed by hand, arrive in order', T, async () => {
  const client = await connect(ctx.server);
  const orders = record(await subscribe(client, 'orders'));
  const dashboard = record(await subscribe(client, 'dashboard'));
  const r = await runOk('php', ['http-publish.php'], { cwd: PHP, env: exampleEnv(ctx.server) });
  assert.match(r.stdout, /^trigger: 200 \{\}\nbatch: 200 /);
  await waitUntil(() => orders.length >= 2 && dashboard.length >= 1, { label: 'three events', describe: () => framesOf(client) });
  assert.deepEqual(orders, [
    { event: 'order-shipped', data: { id: 1001, carrier: 'DHL' } },
    { event: 'order-packed', data: { id: 1002 } },
  ]);
  assert.deepEqual(dashboard, [{ event: 'stats', data: { open_orders: 7 } }]);
});

test('php/auth.php: private, presence and user sign-in for pusher-js; refuses other users\' channels', T, async () => {
  const alice = await connect(ctx.server, asUser('7'), { label: 'alice' });
  const own = await subscribe(alice, 'private-user-7');
  const { error } = await subscribeExpectingError(alice, 'private-user-8');
  assert.equal(error.status, 403, JSON.stringify(error));

  const team = await subscribe(alice, 'presence-team');
  assert.deepEqual(team.members.me, { id: '7', info: { name: 'Alice (sales)' } });
  const bob = await connect(ctx.server, asUser('8'), { label: 'bob' });
  const joined = waitForEvent(team, 'pusher:member_added', { client: alice });
  await subscribe(bob, 'presence-team');
  assert.deepEqual((await joined).data, { id: '8', info: { name: 'Bob (approvals)' } });

  const got = waitForEvent(own, 'invoice-paid', { client: alice });
  await ctx.sdk.trigger('private-user-7', 'invoice-paid', { invoice: 'R-7' });
  assert.deepEqual((await got).data, { invoice: 'R-7' });

  // Signed in once the user's own channel is subscribed: sendToUser reaches it from then.
  const signedIn = waitForEvent(alice.connection, 'message', {
    filter: (m) => m.event === 'pusher_internal:subscription_succeeded' && m.channel === '#server-to-user-7',
    client: alice,
    label: 'the #server-to-user-7 subscription',
  });
  alice.signin();
  await signedIn;
  const toUser = waitForEvent(alice.user, 'reminder', { client: alice });
  await ctx.sdk.sendToUser('7', 'reminder', { text: 'approve PO-42' });
  assert.deepEqual((await toUser).data, { text: 'approve PO-42' });
});

test('php/auth.php /token: a JWT that opens a private channel over SSE (python/sse_subscriber.py) and long-poll', T, async () => {
  const refused = await fetch(`${authUrl}/token?channels=private-user-8&user_id=7`);
  assert.equal(refused.status, 403);
  const { token } = await (await fetch(`${authUrl}/token?channels=private-user-7&user_id=7`)).json();

  const noToken = await fetch(`${ctx.server.url}/app/${ctx.server.key}/poll?channels=private-user-7&timeout=1`);
  assert.equal(noToken.status, 401);
  const poll = await fetch(`${ctx.server.url}/app/${ctx.server.key}/poll?channels=private-user-7&timeout=1&token=${token}`);
  assert.equal(poll.status, 200, await poll.text());

  const sse = spawnProc('python3', ['sse_subscriber.py', 'private-user-7', '--token', token, '--count', '1'], {
    cwd: PY,
    env: exampleEnv(ctx.server),
  });
  try {
    await waitUntil(
      async () => (await getJson(ctx.sdk, '/channels/private-user-7', { info: 'subscription_count' })).body.subscription_count === 1,
      { label: 'the SSE subscriber on private-user-7', describe: sse.describe },
    );
    await ctx.sdk.trigger('private-user-7', 'approval-decided', { approval: 501, decision: 'approved' });
    const envelope = await sse.waitLine((l) => typeof l === 'object', 'an SSE envelope');
    assert.match(envelope.id, /^[A-Za-z0-9._~-]+$/);
    assert.deepEqual(
      { channel: envelope.channel, event: envelope.event, data: envelope.data },
      { channel: 'private-user-7', event: 'approval-decided', data: '{"approval":501,"decision":"approved"}' },
    );
    assert.equal((await sse.exited).code, 0, sse.describe());
  } finally {
    await sse.stop();
  }
});

test('php/redis-queue.php: an approval pushed through the Redis queue reaches the approver\'s private channel', T, async () => {
  const redis = await startRedis();
  const redisPort = redis.port;
  let crier;
  try {
    crier = await startServer({
      config: `[ingest.redis_queue]\nurl = "redis://127.0.0.1:${redisPort}"\nkey = "crier:publish"\n`,
    });
    // auth.php signs with the same dev app, so it serves this Crier too.
    const bob = await connect(crier, asUser('8'), { label: 'bob' });
    const inbox = await subscribe(bob, 'private-user-8');
    const got = waitForEvent(inbox, 'approval-requested', { client: bob });
    const r = await runOk('php', ['redis-queue.php', '501'], {
      cwd: PHP,
      env: exampleEnv(crier, { CRIER_REDIS: `127.0.0.1:${redisPort}` }),
    });
    assert.match(r.stdout, /queued approval 501 on crier:publish/);
    assert.deepEqual((await got).data, { approval: 501, document: 'PO-2024-0042', amount: '1200.50' });
    await disconnect(bob);
  } finally {
    if (crier) await crier.stop();
    await redis.stop();
  }
});

test('python/publish.py: the official SDK triggers, batches and queries', T, async () => {
  const client = await connect(ctx.server, asUser('7'));
  const orders = record(await subscribe(client, 'orders'));
  const dashboard = record(await subscribe(client, 'dashboard'));
  await subscribe(client, 'presence-team');
  const r = await runOk('python3', ['publish.py'], { cwd: PY, env: exampleEnv(ctx.server) });
  await waitUntil(() => orders.length >= 2 && dashboard.length >= 1, { label: 'three events', describe: () => framesOf(client) });
  assert.deepEqual(orders, [
    { event: 'order-shipped', data: { id: 1001, carrier: 'DHL' } },
    { event: 'order-packed', data: { id: 1002 } },
  ]);
  assert.deepEqual(dashboard, [{ event: 'stats', data: { open_orders: 7 } }]);
  const [channels, one, users] = r.stdout.split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(channels, { channels: { channels: { 'presence-team': { user_count: 1 } } } });
  assert.deepEqual(one, { orders: { occupied: true, subscription_count: 1 } });
  assert.deepEqual(users, { 'presence-team': { users: [{ id: '7' }] } });
});

test('python/webhook_receiver.py: validates Crier\'s signed webhooks with the SDK', T, async () => {
  const receiver = spawnProc('python3', ['webhook_receiver.py', '0'], { cwd: PY, env: exampleEnv(ctx.server) });
  let crier;
  try {
    const { listening } = await receiver.waitLine((l) => l && l.listening, 'the receiver\'s port');
    const forged = await fetch(`http://127.0.0.1:${listening}/hook`, {
      method: 'POST',
      headers: { 'X-Pusher-Key': 'app-key', 'X-Pusher-Signature': '0'.repeat(64), 'Content-Type': 'application/json' },
      body: JSON.stringify({ time_ms: Date.now(), events: [{ name: 'channel_occupied', channel: 'forged' }] }),
    });
    assert.equal(forged.status, 401);
    crier = await startServer({
      config: `[[apps]]\nid = "1"\nkey = "app-key"\nsecret = "app-secret"\nwebhooks = [{ url = "http://127.0.0.1:${listening}/hook", events = ["channel_occupied"] }]\n`,
    });
    const client = await connect(crier);
    await subscribe(client, 'orders');
    const event = await receiver.waitLine((l) => l && l.name === 'channel_occupied', 'channel_occupied');
    assert.deepEqual(event, { name: 'channel_occupied', channel: 'orders' });
    await disconnect(client);
  } finally {
    if (crier) await crier.stop();
    await receiver.stop();
  }
});

test('node/: the pusher-js and laravel-echo subscribers see each other in presence, trade client events, get orders', T, async () => {
  // The examples resolve pusher-js and laravel-echo from examples/node/node_modules
  // (`npm install` there); the test lends them the suite's own.
  const modules = path.join(NODE, 'node_modules');
  if (!fs.existsSync(modules)) fs.symlinkSync(path.resolve(__dirname, '..', 'node_modules'), modules, 'dir');
  const env = exampleEnv(ctx.server, { AUTH_URL: authUrl });
  const alice = spawnProc('node', ['pusher-js-subscriber.js', '7'], { cwd: NODE, env, label: 'pusher-js example' });
  let bob;
  try {
    const here = await alice.waitLine((l) => l.event === 'here', 'alice in presence-team');
    assert.deepEqual(here, { channel: 'presence-team', event: 'here', members: ['7'], me: '7' });
    bob = spawnProc('node', ['laravel-echo-subscriber.js', '8'], { cwd: NODE, env, label: 'laravel-echo example' });
    const bobHere = await bob.waitLine((l) => l.event === 'here', 'bob in presence-team');
    assert.deepEqual(bobHere.members, ['Alice (sales)', 'Bob (approvals)']);
    assert.deepEqual(await alice.waitLine((l) => l.event === 'joining', 'alice sees bob join'), {
      channel: 'presence-team', event: 'joining', user_id: '8', info: { name: 'Bob (approvals)' },
    });
    // Each says "typing" when it sees the other; each gets the other's, with the sender.
    assert.deepEqual(await alice.waitLine((l) => l.event === 'client-typing', 'bob typing, at alice'), {
      channel: 'presence-team', event: 'client-typing', data: { user_id: '8' }, from: '8',
    });
    assert.deepEqual(await bob.waitLine((l) => l.event === 'client-typing', 'alice typing, at bob'), {
      channel: 'presence-team', event: 'client-typing', data: { user_id: '7' },
    });
    // Both are subscribed to orders; a published order reaches both.
    await waitUntil(async () => (await getJson(ctx.sdk, '/channels/orders', { info: 'subscription_count' })).body.subscription_count === 2, { label: 'two subscribers on orders' });
    await ctx.sdk.trigger('orders', 'order-shipped', { id: 1003, carrier: 'UPS' });
    const want = { channel: 'orders', event: 'order-shipped', data: { id: 1003, carrier: 'UPS' } };
    assert.deepEqual(await alice.waitLine((l) => l.channel === 'orders', 'the order at alice'), want);
    assert.deepEqual(await bob.waitLine((l) => l.channel === 'orders', 'the order at bob'), want);
  } finally {
    if (bob) await bob.stop();
    await alice.stop();
  }
});
