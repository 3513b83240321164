'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, sdkJson } = require('../lib/setup');
const {
  connect,
  subscribe,
  waitForEvent,
  waitForState,
  collect,
  barrier,
  incoming,
  framesOf,
  currentRecording,
} = require('../lib/client');

const ctx = useServer();
const T = { timeout: 20000 };

function viaEndpoint(userId) {
  return {
    userAuthentication: {
      endpoint: ctx.auth.userEndpoint,
      transport: 'ajax',
      params: { user_id: userId },
    },
  };
}

function viaHandler(userId) {
  return {
    userAuthentication: {
      customHandler: ({ socketId }, cb) =>
        cb(null, ctx.sdk.authenticateUser(socketId, { id: userId, user_info: { via: 'handler' } })),
    },
  };
}

/** signin() and wait for signin_success and the #server-to-user channel subscription. */
async function signIn(client, userId) {
  const success = waitForEvent(client.connection, 'message', {
    filter: (m) => m.event === 'pusher:signin_success',
    client,
    label: 'pusher:signin_success',
  });
  const serverToUser = waitForEvent(client.connection, 'message', {
    filter: (m) =>
      m.event === 'pusher_internal:subscription_succeeded' && m.channel === `#server-to-user-${userId}`,
    client,
    label: `subscription_succeeded for #server-to-user-${userId}`,
  });
  client.signin();
  const { data: msg } = await success;
  const userData = JSON.parse(msg.data.user_data);
  assert.equal(userData.id, userId, `signin_success user_data: ${msg.data.user_data}`);
  await serverToUser;
}

test('signin via endpoint, sendToUser reaches the signed-in client', T, async () => {
  const client = await connect(ctx.server, viaEndpoint('u-end'), { label: 'u-end' });
  await signIn(client, 'u-end');
  const got = waitForEvent(client.user, 'notify', { client, label: 'pusher.user' });
  const res = await sdkJson(ctx.sdk.sendToUser('u-end', 'notify', { n: 1 }));
  assert.equal(res.status, 200, res.text);
  assert.deepEqual((await got).data, { n: 1 });
});

test('signin via customHandler; every connection of the user gets sendToUser, others do not', T, async () => {
  const a1 = await connect(ctx.server, viaHandler('u-h'), { label: 'u-h#1' });
  const a2 = await connect(ctx.server, viaHandler('u-h'), { label: 'u-h#2' });
  const other = await connect(ctx.server, viaHandler('u-other'), { label: 'u-other' });
  await signIn(a1, 'u-h');
  await signIn(a2, 'u-h');
  await signIn(other, 'u-other');
  const otherSeen = collect(other.user, 'ping-user');
  const g1 = waitForEvent(a1.user, 'ping-user', { client: a1, label: 'a1 user' });
  const g2 = waitForEvent(a2.user, 'ping-user', { client: a2, label: 'a2 user' });
  await ctx.sdk.sendToUser('u-h', 'ping-user', { hello: 'u-h' });
  assert.deepEqual((await g1).data, { hello: 'u-h' });
  assert.deepEqual((await g2).data, { hello: 'u-h' });
  // Barrier on the other user's own channel.
  const done = waitForEvent(other.user, 'done', { client: other, label: 'other user' });
  await ctx.sdk.sendToUser('u-other', 'done', {});
  await done;
  assert.equal(otherSeen.length, 0, framesOf(other));
});

test('#server-to-user-X cannot be subscribed without signing in as X', T, async () => {
  const client = await connect(ctx.server, viaHandler('mallory'), { label: 'mallory' });
  await signIn(client, 'mallory');
  const answer = waitForEvent(client.connection, 'message', {
    filter: (m) =>
      m.channel === '#server-to-user-victim' &&
      (m.event === 'pusher:subscription_error' || m.event === 'pusher_internal:subscription_succeeded'),
    client,
    label: 'answer to subscribing #server-to-user-victim',
  });
  answer.catch(() => {}); // awaited below; a timeout fails the test there
  client.send_event('pusher:subscribe', { channel: '#server-to-user-victim' });
  const sync = await subscribe(client, 'mallory-sync');
  // Whatever reached mallory for the victim would come before this barrier message.
  const victim = await connect(ctx.server, viaHandler('victim'), { label: 'victim' });
  await signIn(victim, 'victim');
  await ctx.sdk.sendToUser('victim', 'secret', { pin: 1234 });
  await barrier(ctx.sdk, 'mallory-sync', [{ channel: sync, client }]);
  const leaked = incoming(client).filter((f) => f.event === 'secret');
  assert.equal(leaked.length, 0, `another user's event leaked\n${framesOf(client)}`);
  // Refused, as any channel the connection may not join: pusher:subscription_error, 403.
  const a = await answer;
  assert.equal(a.data.event, 'pusher:subscription_error', framesOf(client));
  assert.deepEqual(
    a.data.data,
    { type: 'InvalidChannel', error: 'server-to-user channels are joined by signing in', status: 403 },
    framesOf(client),
  );
});

test('a bad user signature is refused: pusher:error 4009, then close 4009', T, async () => {
  const client = await connect(
    ctx.server,
    {
      userAuthentication: {
        endpoint: ctx.auth.userEndpoint,
        transport: 'ajax',
        params: { user_id: 'forger', bad: '1' },
      },
    },
    { label: 'forger' },
  );
  const outcome = waitForEvent(client.connection, 'message', {
    filter: (m) => m.event === 'pusher:signin_success' || m.event === 'pusher:error',
    client,
    label: 'answer to a forged pusher:signin',
  });
  const rec = currentRecording(client);
  client.signin();
  const { data: res } = await outcome;
  assert.equal(res.event, 'pusher:error', `forged signin accepted\n${framesOf(client)}`);
  assert.deepEqual(res.data, { code: 4009, message: 'Invalid signin signature' }, framesOf(client));
  let timer;
  const close = await Promise.race([rec.closed, new Promise((r) => (timer = setTimeout(() => r(null), 5000)))]);
  clearTimeout(timer);
  assert.equal(close && close.code, 4009, framesOf(client));
});

test('terminateUserConnections disconnects every connection of that user only', T, async (t) => {
  const victim1 = await connect(ctx.server, viaEndpoint('u-term'), { label: 'u-term#1' });
  const victim2 = await connect(ctx.server, viaEndpoint('u-term'), { label: 'u-term#2' });
  const bystander = await connect(ctx.server, viaEndpoint('u-stay'), { label: 'u-stay' });
  await signIn(victim1, 'u-term');
  await signIn(victim2, 'u-term');
  await signIn(bystander, 'u-stay');
  const rec1 = currentRecording(victim1);
  const rec2 = currentRecording(victim2);

  const left1 = waitForState(victim1, ['disconnected', 'connecting', 'unavailable', 'failed']);
  const left2 = waitForState(victim2, ['disconnected', 'connecting', 'unavailable', 'failed']);
  const res = await sdkJson(ctx.sdk.terminateUserConnections('u-term'));
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.body, {});
  await left1;
  await left2;

  const close1 = await rec1.closed;
  const close2 = await rec2.closed;
  t.diagnostic(`terminate: close codes ${close1.code}, ${close2.code}; errors ${JSON.stringify(victim1.__errors)}`);
  // Pusher's clients must not come straight back: a 4000-4099 close ("refused") leaves
  // pusher-js disconnected; a 4200-4299 one would make it reconnect and sign in again.
  assert.ok(
    close1.code >= 4000 && close1.code < 4100,
    `terminate closed with ${close1.code}: pusher-js reconnects unless the code is 4000-4099\n${framesOf(victim1)}`,
  );
  assert.equal(await waitForState(victim1, ['disconnected']), 'disconnected');

  // The bystander is untouched.
  assert.equal(bystander.connection.state, 'connected');
  const ch = await subscribe(bystander, 'bystander-ch');
  const got = waitForEvent(ch, 'still', { client: bystander });
  await ctx.sdk.trigger('bystander-ch', 'still', { here: true });
  await got;
});
