'use strict';
const { test, before, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { useServer } = require('../lib/setup');
const { PusherJs, baseOptions, whenConnected, framesOf, disconnect } = require('../lib/client');

const ctx = useServer();
const T = { timeout: 20000 };

let Echo;
before(async () => {
  // laravel-echo 2.x: its CommonJS entry is not loadable with require(); use its ESM one.
  Echo = (await import('laravel-echo')).default;
});

const echoes = [];
afterEach(async () => {
  for (const echo of echoes.splice(0)) {
    const client = echo.connector.pusher;
    await disconnect(client);
  }
});

/** Echo with the pusher broadcaster, configured as a Laravel app would (plus our host). */
async function makeEcho(extra = {}) {
  const echo = new Echo({
    broadcaster: 'pusher',
    key: ctx.server.key,
    Pusher: PusherJs,
    ...baseOptions(ctx.server),
    authEndpoint: ctx.auth.channelEndpoint,
    ...extra,
  });
  echoes.push(echo);
  const client = echo.connector.pusher;
  client.__label = 'echo';
  client.__recs = [];
  client.__errors = [];
  client.__states = [];
  client.connection.bind('state_change', () => {
    const conn = client.connection.connection;
    const rec = conn && conn.transport && conn.transport.socket && conn.transport.socket.__crierRec;
    if (rec && !client.__recs.includes(rec)) client.__recs.push(rec);
  });
  await whenConnected(client);
  assert.match(echo.socketId(), /^\d+\.\d+$/);
  return echo;
}

function within(ms, what, promise, client) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`timed out after ${ms} ms waiting for ${what}\n${client ? framesOf(client) : ''}`)),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

test("Echo.channel('orders').listen('.OrderShipped') receives an SDK-triggered event", T, async () => {
  const echo = await makeEcho();
  const client = echo.connector.pusher;
  const channel = echo.channel('orders');
  await within(5000, 'Echo subscribed()', new Promise((resolve) => channel.subscribed(resolve)), client);
  const got = within(5000, '.OrderShipped', new Promise((resolve) => channel.listen('.OrderShipped', resolve)), client);
  await ctx.sdk.trigger('orders', 'OrderShipped', { order: { id: 7, status: 'shipped' } });
  assert.deepEqual(await got, { order: { id: 7, status: 'shipped' } });
});

test("Echo namespaced listen('OrderShipped') gets App\\Events\\OrderShipped", T, async () => {
  const echo = await makeEcho();
  const client = echo.connector.pusher;
  const channel = echo.channel('orders-ns');
  await within(5000, 'Echo subscribed()', new Promise((resolve) => channel.subscribed(resolve)), client);
  const got = within(5000, 'OrderShipped', new Promise((resolve) => channel.listen('OrderShipped', resolve)), client);
  await ctx.sdk.trigger('orders-ns', 'App\\Events\\OrderShipped', { id: 8 });
  assert.deepEqual(await got, { id: 8 });
});

test('Echo.private() authorizes through authEndpoint and receives events', T, async () => {
  const echo = await makeEcho();
  const client = echo.connector.pusher;
  const channel = echo.private('invoices');
  const subscribed = within(
    5000,
    'private-invoices subscribed()',
    new Promise((resolve, reject) => {
      channel.subscribed(resolve);
      channel.error((e) => reject(new Error(`Echo private channel error: ${JSON.stringify(e)}\n${framesOf(client)}`)));
    }),
    client,
  );
  await subscribed;
  const got = within(5000, '.InvoicePaid', new Promise((resolve) => channel.listen('.InvoicePaid', resolve)), client);
  await ctx.sdk.trigger('private-invoices', 'InvoicePaid', { amount: 10 });
  assert.deepEqual(await got, { amount: 10 });
});

test('Echo.join() presence: here() lists the members, joining() fires for a newcomer', T, async () => {
  const first = await makeEcho({ auth: { params: { user_id: 'e1', user_name: 'Eve' } } });
  const room1 = first.join('lobby');
  const here = await within(5000, 'here()', new Promise((resolve) => room1.here(resolve)), first.connector.pusher);
  assert.deepEqual(here, [{ name: 'Eve' }]);
  const joined = within(5000, 'joining()', new Promise((resolve) => room1.joining(resolve)), first.connector.pusher);

  const second = await makeEcho({ auth: { params: { user_id: 'e2', user_name: 'Eli' } } });
  const room2 = second.join('lobby');
  const here2 = await within(5000, 'here() of the second', new Promise((resolve) => room2.here(resolve)), second.connector.pusher);
  assert.deepEqual(here2.map((u) => u.name).sort(), ['Eli', 'Eve']);
  assert.deepEqual(await joined, { name: 'Eli' });

  const left = within(5000, 'leaving()', new Promise((resolve) => room1.leaving(resolve)), first.connector.pusher);
  second.leave('lobby');
  assert.deepEqual(await left, { name: 'Eli' });
});
