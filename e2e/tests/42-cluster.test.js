'use strict';
// Two Crier nodes sharing one Redis act as one server for stock clients: pusher-js on
// node A gets what the official pusher SDK publishes on node B, with the same id on
// both nodes, and presence members on both nodes see each other.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer } = require('../lib/server');
const { startRedis } = require('../lib/redis');
const { sdkFor, startAuthServer } = require('../lib/auth');
const { connect, subscribe, waitForEvent, incoming, framesOf, disconnectAll } = require('../lib/client');

const T = { timeout: 30000 };
let redis;
let nodes;
let auth;

before(async () => {
  redis = await startRedis();
  const prefix = `e2e${process.pid}`;
  const config = `
[broker]
kind = "redis"
url = "${redis.url}"
prefix = "${prefix}"
`;
  nodes = [await startServer({ config }), await startServer({ config })];
  auth = await startAuthServer(nodes[0]);
});

after(async () => {
  await disconnectAll();
  if (auth) await auth.close();
  for (const n of nodes || []) await n.stop();
  if (redis) await redis.stop();
});

test('pusher-js on node A receives what the pusher SDK publishes on node B', T, async () => {
  const [a, b] = nodes;
  const onA = await connect(a);
  const onB = await connect(b);
  const chA = await subscribe(onA, 'orders');
  const chB = await subscribe(onB, 'orders');
  const gotA = waitForEvent(chA, 'new-order', { client: onA });
  const gotB = waitForEvent(chB, 'new-order', { client: onB });
  const res = await sdkFor(b).trigger('orders', 'new-order', { no: 42, item: 'pallet' });
  assert.equal(res.status, 200);
  assert.deepEqual((await gotA).data, { no: 42, item: 'pallet' });
  assert.deepEqual((await gotB).data, { no: 42, item: 'pallet' });
  const frameA = incoming(onA).find((f) => f.event === 'new-order');
  const frameB = incoming(onB).find((f) => f.event === 'new-order');
  assert.ok(frameA && frameB, framesOf(onA));
  assert.equal(frameA.id, frameB.id, 'one id for the message on every node');
});

test('presence members on two nodes see each other, joining and leaving', T, async () => {
  const [a, b] = nodes;
  const asUser = (node, id) =>
    connect(node, {
      channelAuthorization: {
        endpoint: auth.channelEndpoint,
        transport: 'ajax',
        params: { user_id: id, user_name: `User ${id}` },
      },
    });
  const alice = await asUser(a, 'alice');
  const chAlice = await subscribe(alice, 'presence-desk');
  assert.equal(chAlice.members.count, 1);
  const added = waitForEvent(chAlice, 'pusher:member_added', { client: alice });
  const bob = await asUser(b, 'bob');
  const chBob = await subscribe(bob, 'presence-desk');
  const ids = [];
  chBob.members.each((m) => ids.push(m.id));
  assert.deepEqual(ids.sort(), ['alice', 'bob'], 'bob on B sees alice on A');
  const { data: member } = await added;
  assert.equal(member.id, 'bob');
  assert.deepEqual(member.info, { name: 'User bob' });
  const removed = waitForEvent(chBob, 'pusher:member_removed', { client: bob });
  alice.disconnect();
  assert.equal((await removed).data.id, 'alice');
  assert.equal(chBob.members.count, 1);
});
