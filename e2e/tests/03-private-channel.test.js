'use strict';
const crypto = require('node:crypto');
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer } = require('../lib/setup');
const { channelAuth, sdkFor } = require('../lib/auth');
const {
  connect,
  subscribe,
  subscribeExpectingError,
  waitForEvent,
  incoming,
  framesOf,
} = require('../lib/client');

const ctx = useServer();
const T = { timeout: 20000 };

function endpointAuth(params) {
  return {
    channelAuthorization: {
      endpoint: ctx.auth.channelEndpoint,
      transport: 'ajax',
      ...(params ? { params } : {}),
    },
  };
}

function handlerAuth(sign = (socketId, channelName) => channelAuth(ctx.sdk, socketId, channelName)) {
  return {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        try {
          callback(null, sign(socketId, channelName));
        } catch (e) {
          callback(e, null);
        }
      },
    },
  };
}

async function expectDelivery(client, channel, channelName, payload) {
  const got = waitForEvent(channel, 'secret-ev', { client });
  await ctx.sdk.trigger(channelName, 'secret-ev', payload);
  assert.deepEqual((await got).data, payload);
}

/** The subscription_error frame the server sent, checked against SPEC §2. */
function assertAuthErrorFrame(client, channelName, errorData) {
  const frame = incoming(client).find((f) => f.event === 'pusher:subscription_error');
  assert.ok(frame, `no pusher:subscription_error frame from the server\n${framesOf(client)}`);
  assert.equal(frame.channel, channelName, `subscription_error must name the channel\n${framesOf(client)}`);
  assert.equal(errorData.status, 401, `status must be 401: ${JSON.stringify(errorData)}`);
  assert.equal(typeof errorData.type, 'string', `"type" missing: ${JSON.stringify(errorData)}`);
  assert.equal(typeof errorData.error, 'string', `"error" missing: ${JSON.stringify(errorData)}`);
}

test('private channel authorized by an HTTP auth endpoint (ajax transport)', T, async () => {
  const client = await connect(ctx.server, endpointAuth());
  const channel = await subscribe(client, 'private-orders');
  const req = ctx.auth.requests.find((r) => r.params.channel_name === 'private-orders');
  assert.ok(req, 'pusher-js never called the auth endpoint');
  assert.equal(req.params.socket_id, client.connection.socket_id);
  await expectDelivery(client, channel, 'private-orders', { order: 42 });
});

test('private channel authorized by channelAuthorization.customHandler', T, async () => {
  const client = await connect(ctx.server, handlerAuth());
  const channel = await subscribe(client, 'private-handler');
  await expectDelivery(client, channel, 'private-handler', { via: 'customHandler' });
});

test('private channel authorized by the (deprecated) authorizer option', T, async () => {
  const client = await connect(ctx.server, {
    authorizer: (channel) => ({
      authorize: (socketId, callback) => callback(null, channelAuth(ctx.sdk, socketId, channel.name)),
    }),
  });
  const channel = await subscribe(client, 'private-authorizer');
  await expectDelivery(client, channel, 'private-authorizer', { via: 'authorizer' });
});

test('bad signature: pusher:subscription_error status 401, connection stays usable', T, async () => {
  const client = await connect(ctx.server, endpointAuth({ bad: '1' }));
  const { error } = await subscribeExpectingError(client, 'private-bad');
  assertAuthErrorFrame(client, 'private-bad', error);
  assert.equal(client.connection.state, 'connected');

  // Same connection: a public subscription and a publish still work.
  const pub = await subscribe(client, 'after-bad');
  const got = waitForEvent(pub, 'ev', { client });
  await ctx.sdk.trigger('after-bad', 'ev', { still: 'alive' });
  assert.deepEqual((await got).data, { still: 'alive' });
  assert.equal(client.connection.state, 'connected');
  assert.equal(client.__recs.length, 1, 'the client had to reconnect');
});

test('a valid signature for another channel is refused (401)', T, async () => {
  const client = await connect(
    ctx.server,
    handlerAuth((socketId) => channelAuth(ctx.sdk, socketId, 'private-other')),
  );
  const { error } = await subscribeExpectingError(client, 'private-mine');
  assertAuthErrorFrame(client, 'private-mine', error);
});

test('a valid signature for another socket id is refused (401)', T, async () => {
  const client = await connect(
    ctx.server,
    handlerAuth((socketId, channelName) => {
      const [a, b] = socketId.split('.');
      return channelAuth(ctx.sdk, `${a}.${Number(b) + 1}`, channelName);
    }),
  );
  const { error } = await subscribeExpectingError(client, 'private-socket');
  assertAuthErrorFrame(client, 'private-socket', error);
});

test('a private subscribe without auth is refused and nothing is delivered', T, async () => {
  const client = await connect(ctx.server);
  const errFrame = waitForEvent(client.connection, 'message', {
    filter: (m) => m.event === 'pusher:subscription_error' || m.event === 'pusher_internal:subscription_succeeded',
    client,
    label: 'connection messages',
  });
  client.send_event('pusher:subscribe', { channel: 'private-noauth' });
  const { data: msg } = await errFrame;
  assert.equal(msg.event, 'pusher:subscription_error', `got ${JSON.stringify(msg)}`);
  assert.equal(msg.channel, 'private-noauth');
  assert.equal(msg.data.status, 401);
  // Still usable.
  await subscribe(client, 'after-noauth');
});

test('private-encrypted channel: SDK-encrypted payload is decrypted by pusher-js', T, async () => {
  const masterKey = crypto.randomBytes(32).toString('base64');
  const sdk = sdkFor(ctx.server, { encryptionMasterKeyBase64: masterKey });
  const client = await connect(ctx.server, {
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => cb(null, sdk.authorizeChannel(socketId, channelName)),
    },
  });
  const channel = await subscribe(client, 'private-encrypted-vault');
  const got = waitForEvent(channel, 'sealed', { client });
  await sdk.trigger('private-encrypted-vault', 'sealed', { gold: 3 });
  assert.deepEqual((await got).data, { gold: 3 });
  // The server only ever saw ciphertext.
  const frame = incoming(client).find((f) => f.event === 'sealed');
  const wire = JSON.parse(frame.data);
  assert.ok(wire.nonce && wire.ciphertext, `expected {nonce, ciphertext} on the wire, got ${frame.data}`);
});
